// A JavaScript destination that POSTs each batch to a webhook with `fetch`,
// as JSON arrays of up to 1,000 records.
//
// plugin_config: {"url": "https://hooks.example.com/in"} and optionally
// {"timeout_ms": 10000}; the pipeline grants the host (allow.hosts). A
// timeout, a failed connection, 408, 429 and 5xx are retried by the host
// (after the wait a 429's or 503's Retry-After asks); a host the pipeline
// does not grant, or another 4xx, stops the run. The idempotency key
// (destination_id, sequence and part: the same on a retry) lets the receiver
// drop a duplicate.
import { checkResponse, defineDestination } from '@bizon/plugin';

const ROWS_PER_REQUEST = 1000;
let url;
let timeoutMs;

export const destination = defineDestination({
  name: 'js-webhook',

  open(config) {
    url = config.url;
    timeoutMs = config.timeout_ms ?? 10000;
  },

  async writeRecords(batch) {
    const records = batch.column('source_data'); // each record's JSON text, as it came
    for (let start = 0, part = 0; start < records.length; start += ROWS_PER_REQUEST, part++) {
      const response = await fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'idempotency-key': `${batch.destinationId}-${batch.sequence}-${part}`,
        },
        body: `[${records.slice(start, start + ROWS_PER_REQUEST).join(',')}]`,
        signal: AbortSignal.timeout(timeoutMs),
      });
      checkResponse(response); // 408, 429, 5xx: Retryable (after Retry-After); other 4xx: fatal
      await response.arrayBuffer(); // read to its end: the host frees the connection
    }
  },
});
