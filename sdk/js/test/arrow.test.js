import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Field, Float64, Int64, List, Table, Utf8, tableFromArrays, tableToIPC, vectorFromArray } from 'apache-arrow';

import { ArrowBatch, arrow, plain } from '../src/arrow.js';
import { makeDestination } from '../src/core.js';

const info = (numRows, sequence = 3n) => ({ destinationId: 't', sequence, numRows: BigInt(numRows) });

// What the host sends: an Arrow IPC stream of Bizon's columns.
function ipc(columns) {
  return tableToIPC(tableFromArrays(columns), 'stream');
}

test('an Arrow destination asks for arrow-ipc and gets rows from the table', () => {
  let seen;
  const d = makeDestination({ input: arrow, writeRecords: (b) => void (seen = b) });
  assert.equal(d.describe().inputFormat, 'arrow-ipc');
  d.open('{}');
  const bytes = ipc({
    source_record_id: ['0', '1'],
    source_data: ['{"id":1}', '{"id":2,"s":"Zoë 🚀"}'],
    destination_id: ['t', 't'],
  });
  assert.equal(d.writeRecords(info(2), bytes), 2n);
  assert.ok(seen instanceof ArrowBatch);
  assert.equal(seen.sequence, 3);
  assert.equal(seen.length, 2);
  assert.deepEqual(seen.columns, ['source_record_id', 'source_data', 'destination_id']);
  assert.deepEqual(seen.column('source_data'), ['{"id":1}', '{"id":2,"s":"Zoë 🚀"}']);
  assert.equal(seen.table.numRows, 2);
  const rows = [...seen];
  assert.deepEqual(rows.map((r) => r.data), [{ id: 1 }, { id: 2, s: 'Zoë 🚀' }]);
  assert.deepEqual(rows.map((r) => [r.index, r.source_record_id]), [[0, '0'], [1, '1']]);
});

test('typed (unnested) columns arrive as plain values: int64 as Number, lists as arrays, nulls as null', () => {
  const table = new Table({
    id: vectorFromArray([1n, 2n, 9007199254740993n], new Int64()),
    score: vectorFromArray([0.5, 1, null], new Float64()),
    tags: vectorFromArray([['a', 'b'], null, []], new List(new Field('item', new Utf8(), true))),
  });
  // Through IPC, as the host sends it.
  const batch = ArrowBatch.fromIpc(tableToIPC(table, 'stream'), info(3));
  assert.deepEqual(batch.column('id'), [1, 2, 9007199254740993n], 'a value past 2^53 stays BigInt');
  assert.deepEqual(batch.column('score'), [0.5, 1, null]);
  assert.deepEqual(batch.column('tags'), [['a', 'b'], null, []]);
  const row = batch.rows[0];
  assert.deepEqual([row.id, row.score, row.tags, row.index], [1, 0.5, ['a', 'b'], 0]);
  assert.equal(batch.rows, batch.rows, 'rows made once');
});

test('an input that is not one says how to ask for Arrow', () => {
  assert.throws(() => makeDestination({ input: 'arrow', writeRecords() {} }), /import \{ arrow \} from '@bizon\/plugin\/arrow' and pass input: arrow/);
  assert.equal(makeDestination({ writeRecords() {} }).describe().inputFormat, 'ndjson');
});

test('a missing column is a clear error naming the columns there are', () => {
  const batch = ArrowBatch.fromIpc(ipc({ a: ['x'] }), info(1));
  assert.throws(() => batch.column('source_data'), /no column "source_data" in this batch \(columns: a\)/);
});
