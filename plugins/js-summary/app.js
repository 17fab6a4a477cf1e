// A JavaScript destination that checks records and reports on them: per
// destination_id, how many records arrived and the sum of a numeric field,
// logged per batch and at the end. A record missing a required field is
// rejected by row; the others count as written.
//
// plugin_config: {"required": ["id"], "sum": "id"} (both optional).
import { defineDestination, log, Rejected } from '@bizon/plugin';

const totals = new Map(); // destination_id -> {records, sum}
let required = [];
let sumField = null;

export const destination = defineDestination({
  name: 'js-summary',
  version: '0.1.0',

  open(config) {
    required = config.required ?? [];
    sumField = config.sum ?? null;
  },

  writeRecords(batch) {
    const total = totals.get(batch.destinationId) ?? { records: 0, sum: 0 };
    const rejected = [];
    for (const row of batch) {
      const record = row.data;
      const missing = required.filter((field) => !(field in record));
      if (missing.length > 0) {
        rejected.push([row.index, `missing ${missing.join(', ')}`]);
        continue;
      }
      total.records += 1;
      if (sumField !== null) total.sum += Number(record[sumField]) || 0;
    }
    totals.set(batch.destinationId, total);
    log.debug(`${batch.destinationId} batch ${batch.sequence}: ${batch.length} records`);
    if (rejected.length > 0) throw new Rejected(rejected);
  },

  finalize() {
    for (const [id, total] of totals) {
      log.info(`${id}: ${total.records} records` + (sumField !== null ? `, ${sumField} sum ${total.sum}` : ''));
    }
  },
});
