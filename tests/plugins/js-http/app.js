// The end-to-end tests' JavaScript destination over `fetch`, sent by the
// host over wasi:http. plugin_config:
// - {url, timeout_ms, native}: POSTs each batch's records to `url` as JSON
//   arrays of up to 1,000 records and checks each response (408, 429, 5xx
//   retried after Retry-After); `native: true` sends with StarlingMonkey's
//   own fetch instead of the SDK's (bench/sdk-http.sh compares them).
// - {tour: BASE}: walks fetch's surface against BASE (Request, Headers, JSON
//   and text bodies, AbortSignal.timeout, redirects, a refused host) and logs
//   one line per step, `tour NAME: ...`.
import { checkResponse, defineDestination, log, nativeFetch } from '@bizon/plugin';

let config;

async function tour(base) {
  const step = async (name, run) => {
    try {
      log.info(`tour ${name}: ${await run()}`);
    } catch (error) {
      log.info(`tour ${name}: rejected ${error.name}: ${error.message}`);
    }
  };
  await step('get', async () => (await fetch(`${base}/get?q=a%20b`, { headers: { 'x-team': 'data' } })).text());
  await step('json', async () => {
    const response = await fetch(new Request(`${base}/json`, {
      method: 'POST',
      headers: new Headers({ 'content-type': 'application/json' }),
      body: JSON.stringify({ n: 1 }),
    }));
    return JSON.stringify(await response.json());
  });
  await step('put', async () => (await fetch(`${base}/put`, { method: 'PUT', body: 'raw text' })).status);
  await step('delete', async () => (await fetch(`${base}/delete`, { method: 'DELETE' })).status);
  await step('headers', async () => {
    const response = await fetch(`${base}/get`);
    return `${response.headers.get('content-type')} ${response.ok} ${response.statusText}`;
  });
  await step('big', async () => (await (await fetch(`${base}/big`)).arrayBuffer()).byteLength);
  await step('redirect', async () => {
    const response = await fetch(`${base}/redirect`);
    return `${response.status} ${response.url} ${response.redirected}`;
  });
  await step('not-found', async () => checkResponse(await fetch(`${base}/missing`)));
  await step('timeout', async () => (await fetch(`${base}/slow`, { signal: AbortSignal.timeout(300) })).text());
  await step('denied', async () => (await fetch('http://127.0.0.1:9/')).status);
  // The server speaks plain HTTP: the host's TLS handshake fails.
  await step('https', async () => (await fetch(`${base.replace('http://', 'https://')}/get`)).status);
}

export const destination = defineDestination({
  name: 'js-http',
  open(c) {
    config = c;
  },
  async writeRecords(batch) {
    if (config.tour) return tour(config.tour);
    const send = config.native ? nativeFetch : fetch;
    const records = batch.column('source_data');
    for (let start = 0, part = 0; start < records.length; start += 1000, part++) {
      const response = await send(config.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': `${batch.destinationId}-${batch.sequence}-${part}` },
        body: `[${records.slice(start, start + 1000).join(',')}]`,
        signal: AbortSignal.timeout(config.timeout_ms ?? 10000),
      });
      checkResponse(response);
      await response.text();
    }
  },
});
