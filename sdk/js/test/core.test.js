import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Batch, LOG_LEVELS, Rejected, Retryable, makeDestination, makeLog } from '../src/core.js';

const ndjson = (records) =>
  new TextEncoder().encode(
    records.map((r, i) => JSON.stringify({ source_record_id: String(i), source_data: JSON.stringify(r), destination_id: 't' })).join('\n') + '\n',
  );
const info = (numRows, sequence = 0n) => ({ destinationId: 't', sequence, numRows: BigInt(numRows) });

function opened(spec) {
  const d = makeDestination(spec);
  d.open('{"dir": "/out"}');
  return d;
}

function thrown(fn) {
  try {
    fn();
  } catch (e) {
    return e;
  }
  assert.fail('nothing was thrown');
}

test('rows carry Bizon columns, data is parsed lazily, BigInt becomes Number', () => {
  let seen;
  const d = opened({
    writeRecords(b) {
      seen = b;
    },
  });
  assert.equal(d.writeRecords(info(2, 7n), ndjson([{ id: 1 }, { id: 2, s: 'Zoë 🚀' }])), 2n);
  assert.equal(seen.sequence, 7);
  assert.equal(seen.numRows, 2);
  assert.equal(seen.length, 2);
  assert.deepEqual(seen.column('source_record_id'), ['0', '1']);
  const row = seen.rows[1];
  assert.equal(row.source_data, '{"id":2,"s":"Zoë 🚀"}');
  assert.deepEqual(row.data, { id: 2, s: 'Zoë 🚀' });
  assert.equal(row.data, row.data, 'parsed once');
  assert.equal(row.index, 1);
  assert.deepEqual([...seen].map((r) => r.data.id), [1, 2]);
});

test('open receives the config as an object; errors become strings with the stack', () => {
  let config;
  makeDestination({ open: (c) => (config = c), writeRecords() {} }).open('{"a": 1}');
  assert.deepEqual(config, { a: 1 });
  const e = thrown(() =>
    makeDestination({
      open() {
        throw new Error('no dir');
      },
      writeRecords() {},
    }).open('{}'),
  );
  assert.equal(typeof e, 'string');
  assert.match(e, /^open: Error: no dir/);
  assert.match(e, /core\.test\.js/);
});

test('Retryable, Rejected and any other throw map to write-error variants, never an Error object', () => {
  const write = (fn) => thrown(() => opened({ writeRecords: fn }).writeRecords(info(3), ndjson([{}, {}, {}])));
  assert.deepEqual(
    write(() => {
      throw new Retryable('busy');
    }),
    { tag: 'retryable', val: 'busy' },
  );
  assert.deepEqual(
    write(() => {
      throw new Rejected({ 1: 'bad email' });
    }),
    { tag: 'rejected', val: [{ row: 1n, reason: 'bad email' }] },
  );
  assert.deepEqual(
    write(() => {
      throw new Rejected([[0, 'x'], 2]);
    }).val,
    [
      { row: 0n, reason: 'x' },
      { row: 2n, reason: 'rejected' },
    ],
  );
  const fatal = write(() => {
    throw new TypeError('x is not a function');
  });
  assert.equal(fatal.tag, 'fatal');
  assert.match(fatal.val, /^writeRecords: TypeError: x is not a function/);
  assert.deepEqual(
    write(() => {
      throw 'a string';
    }),
    { tag: 'fatal', val: 'writeRecords: thrown: "a string"' },
  );
});

test('the return value: nothing, or the row count as a u64', () => {
  assert.equal(opened({ writeRecords: () => 2 }).writeRecords(info(3), ndjson([{}, {}, {}])), 2n);
  const e = thrown(() => opened({ writeRecords: () => 'yes' }).writeRecords(info(1), ndjson([{}])));
  assert.equal(e.tag, 'fatal');
  assert.match(e.val, /return nothing or the row count/);
});

test('calls before open, false from checkConnection and finalize fail', () => {
  const d = makeDestination({ writeRecords() {}, checkConnection: () => false, finalize: () => false });
  assert.match(thrown(() => d.checkConnection()), /before open/);
  assert.equal(thrown(() => d.writeRecords(info(0), ndjson([]))).tag, 'fatal');
  d.open('{}');
  assert.equal(thrown(() => d.checkConnection()), 'checkConnection returned false');
  assert.equal(thrown(() => d.finalize()), 'finalize returned false');
  assert.throws(() => makeDestination({}), /writeRecords\(batch\) is required/);
});

test('log levels are checked and values are rendered, BigInt included', () => {
  const lines = [];
  const log = makeLog((level, message) => lines.push([level, message]));
  log.info('rows', 3, { seq: 2n });
  log('warn', 'careful');
  assert.deepEqual(lines, [
    ['info', 'rows 3 {"seq":"2"}'],
    ['warn', 'careful'],
  ]);
  assert.throws(() => log('warning', 'x'), /unknown log level "warning": use trace, debug, info, warn, error/);
  assert.deepEqual(LOG_LEVELS, ['trace', 'debug', 'info', 'warn', 'error']);
});

test('an empty batch has no rows', () => {
  const b = Batch.fromNdjson(new Uint8Array(), info(0));
  assert.equal(b.length, 0);
  assert.deepEqual(b.column('source_data'), []);
});

test('a batch larger than one decoding chunk keeps every row, in order', () => {
  const records = Array.from({ length: 60000 }, (_, i) => ({ id: i, pad: 'é'.repeat(40) }));
  const b = Batch.fromNdjson(ndjson(records), info(records.length));
  assert.equal(b.length, 60000);
  assert.deepEqual(b.rows[59999].data, records[59999]);
  assert.ok(b.rows.every((r, i) => r.index === i && r.source_record_id === String(i)));
});

test('running out of engine memory says which option to lower', () => {
  const e = thrown(() =>
    opened({
      writeRecords() {
        throw 'out of memory';
      },
    }).writeRecords(info(1), ndjson([{}])),
  );
  assert.equal(e.tag, 'fatal');
  assert.match(e.val, /out of memory.*set buffer_size to 10 or less for a JavaScript plugin/);
});
