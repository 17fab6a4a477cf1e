// The end-to-end tests' JavaScript transform over `fetch`: each record's
// `id` is looked up with GET {url}/{id}, and the answer's text added to the
// record as `looked_up`. config: {"url": "http://..."}.
import { checkResponse, defineTransform } from '@bizon/plugin';

let url;

export const transform = defineTransform({
  name: 'js-enrich',

  open(config) {
    url = config.url;
  },

  async transform(record) {
    const response = checkResponse(await fetch(`${url}/${record.data.id}`, { signal: AbortSignal.timeout(5000) }));
    return { ...record.data, looked_up: await response.text() };
  },
});
