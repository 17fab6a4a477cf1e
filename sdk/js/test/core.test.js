import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  Batch,
  checkResponse,
  HttpStatusError,
  LOG_LEVELS,
  MAX_WAIT_S,
  Rejected,
  Retryable,
  makeDestination,
  makeLog,
  retryAfterSeconds,
} from '../src/core.js';

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

test('an async writeRecords is awaited: its value, its Retryable and other rejections', async () => {
  const write = (fn) => opened({ writeRecords: fn }).writeRecords(info(2), ndjson([{}, {}]));
  assert.equal(await write(async () => undefined), 2n);
  assert.equal(await write(async () => 1), 1n);
  await assert.rejects(write(async () => { throw new Retryable('busy'); }), { tag: 'retryable', val: 'busy' });
  const fatal = await write(async () => { throw new RangeError('bad'); }).catch((e) => e);
  assert.equal(fatal.tag, 'fatal');
  assert.match(fatal.val, /^writeRecords: RangeError: bad/);
});

test('fetch failures with no response are retried, a refusal by the host is not', async () => {
  const write = (error) => opened({ writeRecords: async () => { throw error; } }).writeRecords(info(1), ndjson([{}])).catch((e) => e);
  const timeout = new Error('The operation timed out.');
  timeout.name = 'TimeoutError';
  assert.equal((await write(timeout)).tag, 'retryable');
  const refused = Object.assign(new TypeError('fetch http://api.test/: connection-refused'), { code: 'connection-refused' });
  assert.equal((await write(refused)).tag, 'retryable');
  const denied = Object.assign(new TypeError('egress denied: http://127.0.0.1:9: allow.hosts is empty, so the plugin has no network'), {
    code: 'internal-error',
    denied: true,
  });
  const stopped = await write(denied);
  assert.equal(stopped.tag, 'fatal');
  assert.match(stopped.val, /egress denied/);
  assert.equal((await write(new TypeError('x is not a function'))).tag, 'fatal');
});

test('checkResponse: 408, 429 and 5xx are Retryable with their Retry-After, other 4xx fatal', () => {
  const response = (status, headers = {}) => ({ status, statusText: '', url: 'http://api.test/in', headers: new Headers(headers) });
  const ok = response(204);
  assert.equal(checkResponse(ok), ok);
  const busy = thrown(() => checkResponse(response(429, { 'retry-after': '2' })));
  assert.ok(busy instanceof Retryable);
  assert.equal(busy.after, '2');
  assert.match(busy.message, /HTTP 429 from http:\/\/api.test\/in/);
  assert.ok(thrown(() => checkResponse(response(503))) instanceof Retryable);
  const missing = thrown(() => checkResponse(response(404)));
  assert.ok(missing instanceof HttpStatusError && missing.status === 404);
});

test('a Retryable asking to wait is handed back after the wait, at most MAX_WAIT_S', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const write = (after) => opened({ writeRecords() { throw new Retryable('busy', { after }); } }).writeRecords(info(1), ndjson([{}]));
  const settled = write(2).catch((e) => e);
  t.mock.timers.tick(1999);
  let done = false;
  settled.then(() => (done = true));
  await Promise.resolve();
  assert.equal(done, false);
  t.mock.timers.tick(1);
  assert.deepEqual(await settled, { tag: 'retryable', val: 'busy (waited 2 s, as Retry-After asked)' });
  const capped = write(60).catch((e) => e);
  t.mock.timers.tick(MAX_WAIT_S * 1000);
  assert.match((await capped).val, /Retry-After asked 60 s; waited 10 s/);
  assert.equal(retryAfterSeconds('soon'), null);
  assert.ok(Math.abs(retryAfterSeconds(new Date(Date.now() + 5000).toUTCString()) - 5) <= 1);
});

test('async open, checkConnection and finalize are awaited; a false or a rejection fails them', async () => {
  const d = makeDestination({ writeRecords() {}, open: async () => {}, checkConnection: async () => false, finalize: async () => { throw new Error('gone'); } });
  await d.open('{}');
  await assert.rejects(d.checkConnection(), (e) => e === 'checkConnection returned false');
  await assert.rejects(d.finalize(), (e) => typeof e === 'string' && /^finalize: Error: gone/.test(e));
  const late = makeDestination({ writeRecords() {}, open: async () => { throw new Error('no'); } });
  await assert.rejects(late.open('{}'), (e) => /^open: Error: no/.test(e));
  assert.equal(thrown(() => late.writeRecords(info(0), ndjson([]))).tag, 'fatal', 'not opened');
});

test('a batch carries where its rows were read when the host says, offsets as Numbers', () => {
  const seen = [];
  const answers = [
    { batchId: 'ab'.repeat(16), ranges: [{ topic: 'orders', partition: 2, first: 40n, last: 49n }] },
    undefined,
  ];
  const d = makeDestination({ writeRecords: (batch) => void seen.push(batch.source) }, { batchSource: () => answers.shift() });
  d.open('{}');
  d.writeRecords(info(1), ndjson([{ a: 1 }]));
  d.writeRecords(info(1, 1n), ndjson([{ a: 2 }]));
  assert.deepEqual(seen[0], { batchId: 'ab'.repeat(16), ranges: [{ topic: 'orders', partition: 2, first: 40, last: 49 }] });
  assert.equal(seen[1], undefined);
});
