import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Record, makeTransform } from '../src/transform.js';

// NDJSON as the host sends it: [source_record_id, data, destination_id?].
const batch = (...records) =>
  new TextEncoder().encode(
    records
      .map(([id, data, dest = null], i) => JSON.stringify({ source_record_id: id, source_timestamp: 1000 + i, destination_id: dest, source_data: data }))
      .join('\n') + '\n',
  );

function run(spec, bytes, config = '{}') {
  const t = makeTransform(spec);
  t.open(config);
  const { batch: out, errors } = t.transformRecords(bytes);
  const text = new TextDecoder().decode(out);
  return { rows: text ? text.split('\n').map((l) => JSON.parse(l)) : [], errors, text };
}

const split = {
  transform(record) {
    const n = record.data.n;
    if (n === 'bad') throw new Error('n is bad');
    return Array.from({ length: n }, (_, i) => record.replace({ data: { ...record.data, i } }));
  },
};

test('records may be dropped, split or refused one by one', () => {
  const { rows, errors } = run(split, batch(['a', { n: 2 }], ['b', { n: 0 }], ['c', { n: 'bad' }], ['d', { n: 1 }]));
  assert.deepEqual(rows, [
    { row: 0, source_data: { n: 2, i: 0 } },
    { row: 0, source_data: { n: 2, i: 1 } },
    { row: 3, source_data: { n: 1, i: 0 } },
  ]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].row, 2n);
  assert.match(errors[0].reason, /^Error: n is bad\n/);
});

test('an object is the new data and only changed metadata is sent', () => {
  let key;
  const reshape = {
    open(config) {
      key = config.key;
    },
    transform(record) {
      if (record.data.move) {
        record.destination_id = 'elsewhere';
        record.source_record_id += '-moved';
        return record;
      }
      if (record.data.fresh) return new Record({ made: true }, 'fresh', 42);
      return { [key]: record.data.v };
    },
  };
  const { rows, errors, text } = run(reshape, batch(['a', { v: 'é' }, 'd'], ['b', { move: 1 }, 'd'], ['c', { fresh: 1 }]), '{"key":"k"}');
  assert.deepEqual(errors, []);
  assert.deepEqual(rows, [
    { row: 0, source_data: { k: 'é' } },
    { row: 1, source_record_id: 'b-moved', destination_id: 'elsewhere', source_data: { move: 1 } },
    { source_record_id: 'fresh', source_timestamp: 42, destination_id: null, source_data: { made: true } },
  ]);
  assert.ok(text.startsWith('{"row":0,"source_data":{"k":"é"}}\n'));
});

test('what cannot become a record fails that record, saying why', () => {
  const wrong = {
    transform(record) {
      return { undef: undefined, num: 3, ts: record.replace({ source_timestamp: 'x' }), list: [1] }[record.data.k];
    },
  };
  const { rows, errors } = run(wrong, batch(['a', { k: 'undef' }], ['b', { k: 'num' }], ['c', { k: 'ts' }], ['d', { k: 'list' }]));
  assert.deepEqual(rows, []);
  assert.deepEqual(
    errors.map((e) => [e.row, e.reason.split(';')[0]]),
    [
      [0n, 'transform returned undefined'],
      [1n, 'transform returned a number'],
      [2n, 'source_timestamp must be an integer (microseconds), not x'],
      [3n, 'transform returned an array holding number'],
    ],
  );
});

test('open errors are strings for the host; transform is required', () => {
  const t = makeTransform({
    open() {
      throw new Error('no table');
    },
    transform: (r) => r,
  });
  assert.throws(() => t.open('{}'), (e) => typeof e === 'string' && e.startsWith('open: Error: no table'));
  assert.throws(() => t.transformRecords(batch(['a', {}])), (e) => e === 'transform-records called before open succeeded');
  assert.throws(() => makeTransform({}), /transform\(record\) is required/);
  assert.deepEqual(makeTransform({ name: 'x', transform: (r) => r }).describe(), { name: 'x', version: '0.1.0', inputFormat: 'ndjson' });
});

test('an empty batch is an empty batch', () => {
  const { rows, errors } = run(split, new Uint8Array());
  assert.deepEqual([rows, errors], [[], []]);
});

test('an async transform is awaited record by record, in order, a rejection failing its record only', async () => {
  const order = [];
  const t = makeTransform({
    async transform(record) {
      order.push(record.source_record_id);
      await new Promise((resolve) => setTimeout(resolve, 1));
      if (record.data.n === 'bad') throw new Error('n is bad');
      return { ...record.data, looked_up: true };
    },
  });
  t.open('{}');
  const { batch: out, errors } = await t.transformRecords(batch(['a', { n: 1 }], ['b', { n: 'bad' }], ['c', { n: 3 }]));
  const rows = new TextDecoder().decode(out).split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(order, ['a', 'b', 'c']);
  assert.deepEqual(rows, [
    { row: 0, source_data: { n: 1, looked_up: true } },
    { row: 2, source_data: { n: 3, looked_up: true } },
  ]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].row, 1n);
});
