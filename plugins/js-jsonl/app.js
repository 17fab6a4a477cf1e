// A JavaScript destination: each record appended to `{dir}/{destination_id}.jsonl`
// in a granted directory, with the SDK's file helpers.
//
// plugin_config: {"dir": "/out"} (a granted, writable directory) and optionally
// {"fields": ["id", "name"]} to keep only those keys of each record; a record
// that is not a JSON object is then rejected, by row, and the others written.
// A retried batch (same destination_id and sequence) is skipped, not written twice.
import { defineDestination, files, log, Rejected } from '@bizon/plugin';

let dir = '/out';
let fields = null;
const written = new Map(); // destination_id -> last sequence written

export const destination = defineDestination({
  name: 'js-jsonl',
  version: '0.1.0',

  open(config) {
    dir = config.dir ?? '/out';
    fields = config.fields ?? null;
  },

  checkConnection() {
    files.write(`${dir}/.bizon-check`, '');
    files.remove(`${dir}/.bizon-check`);
  },

  writeRecords(batch) {
    if ((written.get(batch.destinationId) ?? -1) >= batch.sequence) {
      log.info(`skipping ${batch.destinationId} batch ${batch.sequence}: already written`);
      return;
    }
    const lines = [];
    const rejected = [];
    for (const row of batch) {
      if (fields === null) {
        lines.push(row.source_data); // the record's JSON text as it came
        continue;
      }
      const record = row.data;
      if (record === null || typeof record !== 'object' || Array.isArray(record)) {
        rejected.push([row.index, `not a JSON object: ${row.source_data.slice(0, 40)}`]);
        continue;
      }
      lines.push(JSON.stringify(Object.fromEntries(fields.map((k) => [k, record[k] ?? null]))));
    }
    const name = batch.destinationId.replace(/[^A-Za-z0-9_.-]/g, '_') || '_';
    if (lines.length > 0) files.append(`${dir}/${name}.jsonl`, lines.join('\n') + '\n');
    written.set(batch.destinationId, batch.sequence);
    if (rejected.length > 0) throw new Rejected(rejected);
  },

  finalize() {
    log.info(`wrote ${[...written.keys()].sort().join(', ') || 'nothing'} in ${dir}`);
  },
});
