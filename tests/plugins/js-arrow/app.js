// Test plugin: Arrow input. Each record appended to `/out/{destination_id}.jsonl`:
// the source_data column as it came (read as a column, no rows made), or,
// with `unnest: true`, each row's typed columns as one JSON object.
import { defineDestination, files } from '@bizon/plugin';
import { arrow } from '@bizon/plugin/arrow';

export const destination = defineDestination({
  name: 'js-arrow',
  input: arrow,

  writeRecords(batch) {
    let lines;
    if (batch.columns.includes('source_data')) {
      lines = batch.column('source_data');
    } else {
      lines = batch.rows.map((row) => JSON.stringify(Object.fromEntries(batch.columns.map((name) => [name, row[name]]))));
    }
    files.append(`/out/${batch.destinationId}.jsonl`, lines.join('\n') + '\n');
  },
});
