// The end-to-end tests' JavaScript destination: logs how many records it
// took and the sum of their ids at the end, and fails on purpose as `fail`
// says: "retry_once" (the first attempt at each batch throws Retryable),
// "reject" (rejects the records whose id ends in 7), "crash" (a helper
// reads a field of undefined).
import { defineDestination, log, Rejected, Retryable } from '@bizon/plugin';

let fail = null;
const attempted = new Set();
let records = 0;
let sum = 0;

function parseAmount(record) {
  return record.payment.amount;
}

export const destination = defineDestination({
  name: 'js-faults',
  open(config) {
    fail = config.fail ?? null;
  },
  writeRecords(batch) {
    const key = `${batch.destinationId}/${batch.sequence}`;
    if (fail === 'retry_once' && !attempted.has(key)) {
      attempted.add(key);
      throw new Retryable(`busy on batch ${batch.sequence}, try again`);
    }
    const rejected = [];
    for (const row of batch) {
      if (fail === 'reject' && row.data.id % 10 === 7) {
        rejected.push([row.index, `id ${row.data.id} ends in 7`]);
        continue;
      }
      if (fail === 'crash') parseAmount(row.data);
      records += 1;
      sum += row.data.id;
    }
    if (rejected.length > 0) throw new Rejected(rejected);
  },
  finalize() {
    log.info(`took ${records} records, id sum ${sum}`);
  },
});
