// What runs the same in Node (the SDK's tests) and in the component: the
// batch view, the errors an author throws, and the rules that turn what
// their functions return or throw into what the host understands.
import { PASSING_CODES } from './fetch.js';

export class Retryable extends Error {
  // A passing failure: the host retries the whole batch with backoff.
  // `after`: what the server asked to wait (seconds, or a Retry-After
  // header's value); the SDK waits that long (at most MAX_WAIT_S) before
  // handing the batch back.
  constructor(message, { after } = {}) {
    super(message);
    this.name = 'Retryable';
    this.after = after;
  }
}

// The longest Retry-After honoured inside the call: a third of the default
// 30 s call time limit (limits.call_timeout_ms). A longer ask waits this
// long, then the host's own backoff (`retry:`) adds its wait.
export const MAX_WAIT_S = 10;

// Seconds from a number or a Retry-After value (delta-seconds or an HTTP
// date); null when absent or unreadable.
export function retryAfterSeconds(value) {
  if (value === null || value === undefined || value === '') return null;
  if (typeof value === 'number') return Math.max(0, value);
  const text = String(value).trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const when = Date.parse(text);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

// A response with a status the plugin cannot pass: fatal.
export class HttpStatusError extends Error {
  constructor(response, message) {
    super(message);
    this.name = 'HttpStatusError';
    this.status = response.status;
    this.response = response;
  }
}

// `fetch`'s response as requests' raise_for_status() sees it: returned when
// it is not an error; 408, 429 and 5xx throw Retryable (after the response's
// Retry-After), other 4xx and 5xx HttpStatusError (the run stops).
export function checkResponse(response) {
  if (response.status < 400) return response;
  const message = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''} from ${response.url}`;
  if (response.status === 408 || response.status === 429 || response.status >= 500) {
    throw new Retryable(message, { after: response.headers.get('retry-after') });
  }
  throw new HttpStatusError(response, message);
}

export class Rejected extends Error {
  // These rows were refused and the others written. `rows`: an object or Map
  // {rowIndex: reason}, or an array of [rowIndex, reason] (or bare indexes).
  constructor(rows, reason = 'rejected') {
    const entries = rows instanceof Map ? [...rows] : Array.isArray(rows) ? rows : Object.entries(rows);
    const list = entries.map((r) => (Array.isArray(r) ? [Number(r[0]), String(r[1])] : [Number(r), reason]));
    super(`${list.length} row(s) rejected`);
    this.name = 'Rejected';
    this.rows = list;
  }
}

const CHUNK_BYTES = 4 << 20;

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

// u64 values arrive as BigInt under StarlingMonkey; authors get Numbers.
export function toNumber(value) {
  return typeof value === 'bigint' ? Number(value) : value;
}

// NDJSON bytes (or text) as the array of their parsed lines. Decoded and
// parsed a few MB at a time, cut at row ends: one string of a whole 100 MB
// batch fails to decode in StarlingMonkey, and one JSON.parse per chunk
// (rows joined as an array: a raw newline only ever separates rows) beats
// one per row under an interpreter.
export function parseNdjson(bytes) {
  if (typeof bytes === 'string') bytes = new TextEncoder().encode(bytes);
  const decoder = new TextDecoder();
  const rows = [];
  for (let start = 0; start < bytes.length; ) {
    let end = bytes.indexOf(10, Math.min(start + CHUNK_BYTES, bytes.length - 1));
    if (end === -1) end = bytes.length;
    const text = decoder.decode(bytes.subarray(start, end)).trim();
    if (text.length > 0) {
      for (const fields of JSON.parse(`[${text.replaceAll('\n', ',')}]`)) rows.push(fields);
    }
    start = end + 1;
  }
  return rows;
}

export class Row {
  // One NDJSON row: Bizon's columns as properties; `data` is source_data
  // parsed on first use. Plain fields set in the constructor keep every row
  // the same shape, which StarlingMonkey's interpreter reads fastest.
  constructor(fields, index) {
    Object.assign(this, fields);
    this.index = index;
    this._data = undefined;
  }

  get data() {
    if (this._data === undefined) this._data = JSON.parse(this.source_data);
    return this._data;
  }
}

export class Batch {
  constructor(rows, info) {
    this.rows = rows;
    this.destinationId = info.destinationId;
    this.sequence = toNumber(info.sequence);
    this.numRows = toNumber(info.numRows);
    // Set by the destination: where the rows were read (Kafka), or undefined.
    this.source = undefined;
  }

  static fromNdjson(bytes, info) {
    const rows = [];
    for (const fields of parseNdjson(bytes)) rows.push(new Row(fields, rows.length));
    return new Batch(rows, info);
  }

  get length() {
    return this.rows.length;
  }

  column(name) {
    return this.rows.map((r) => r[name]);
  }

  [Symbol.iterator]() {
    return this.rows[Symbol.iterator]();
  }
}

// The default input: NDJSON rows, decoded by the SDK.
export const ndjson = Object.freeze({ format: 'ndjson', decode: (bytes, info) => Batch.fromNdjson(bytes, info) });

// A failure with no response behind it that may pass on a retry: the SDK
// fetch's TypeError for a connection refused, cut or timed out (its `code`),
// an AbortSignal's TimeoutError. A host the pipeline does not grant is not
// passing; a 429 or 5xx is a Response: checkResponse decides.
export function passing(error) {
  if (!(error instanceof Error) || error.denied) return false;
  return error.name === 'TimeoutError' || (error instanceof TypeError && PASSING_CODES.has(error.code));
}

export function describe(error) {
  if (error instanceof Error) return error.stack && error.stack.includes(error.message) ? error.stack : `${error.name}: ${error.message}\n${error.stack || ''}`.trim();
  try {
    return `thrown: ${JSON.stringify(error)}`;
  } catch {
    return `thrown: ${String(error)}`;
  }
}

// StarlingMonkey's heap has its own cap, whatever memory_mb says: a 20 MB
// buffer of dummy records (126,000 rows as objects) runs out, 10 MB does not.
function memoryHint(error, bytes) {
  const text = error instanceof Error ? error.message : String(error);
  if (!/out of memory/i.test(text)) return '';
  const mb = (bytes.length / 2 ** 20).toFixed(1);
  return ` (a batch of ${mb} MB: set buffer_size to 10 or less for a JavaScript plugin)`;
}

// Where a batch's rows were read, from the host's `batch-source` answer
// (undefined for a source without positions): { batchId, ranges: [{ topic,
// partition, first, last }] }, offsets as Numbers. batchId depends on the
// destination_id and the ranges only: the same for a retry and for a replay
// cut at the same offsets (an idempotency key; docs/plugins.md).
export function batchSourceOf(origin) {
  if (origin === undefined || origin === null) return undefined;
  return {
    batchId: origin.batchId,
    ranges: origin.ranges.map((r) => ({
      topic: r.topic,
      partition: r.partition,
      first: toNumber(r.first),
      last: toNumber(r.last),
    })),
  };
}

// The exports componentize-js wants, around an author's spec. Errors are
// thrown as the contract's values: a string for open/check/finalize, a
// write-error variant ({tag, val}) for writeRecords. Anything else thrown
// out of an export (an Error object) traps as "invalid variant tag".
// `batchSource`: the host's `batch-source` import (none outside a component).
export function makeDestination(
  spec,
  { name = spec.name || 'js-plugin', version = spec.version || '0.1.0', batchSource = () => undefined } = {},
) {
  if (typeof spec.writeRecords !== 'function') {
    throw new TypeError('defineDestination: writeRecords(batch) is required');
  }
  const input = spec.input ?? ndjson;
  if (typeof input !== 'object' || typeof input.decode !== 'function') {
    throw new TypeError(`defineDestination: input ${JSON.stringify(input)} is not an input: leave it out for NDJSON, or import { arrow } from '@bizon/plugin/arrow' and pass input: arrow`);
  }
  let opened = false;
  // Runs open, checkConnection or finalize; an async one is returned as a
  // promise, which componentize-js settles before the call returns.
  const step = (label, fn, then = () => {}) => {
    const fail = (error) => {
      if (typeof error === 'string') throw error;
      throw `${label}: ${describe(error)}`;
    };
    const check = (result) => {
      if (result === false) throw `${label} returned false`;
      then();
    };
    let result;
    try {
      result = fn();
    } catch (error) {
      fail(error);
    }
    if (result && typeof result.then === 'function') return result.then(check, fail);
    return check(result);
  };
  return {
    describe() {
      return { name, version, inputFormat: input.format };
    },
    open(config) {
      return step('open', () => spec.open && spec.open(JSON.parse(config)), () => (opened = true));
    },
    checkConnection() {
      if (!opened) throw 'checkConnection called before open succeeded';
      return step('checkConnection', () => spec.checkConnection && spec.checkConnection());
    },
    writeRecords(info, bytes) {
      if (!opened) throw { tag: 'fatal', val: 'writeRecords called before open succeeded' };
      const failed = (error) => {
        if (error instanceof Retryable) return { tag: 'retryable', val: error.message || 'Retryable' };
        if (error instanceof Rejected) {
          return { tag: 'rejected', val: error.rows.map(([row, reason]) => ({ row: BigInt(row), reason })) };
        }
        // fetch rejects with a TypeError when the request never got a
        // response (a timeout, a refused connection): worth a retry, unless
        // the host refused the destination (allow.hosts).
        if (passing(error)) return { tag: 'retryable', val: `writeRecords: ${error.name}: ${error.message}` };
        return { tag: 'fatal', val: `writeRecords: ${describe(error)}${memoryHint(error, bytes)}` };
      };
      const written = (result) => {
        if (result === undefined || result === true) return BigInt(info.numRows);
        if (typeof result === 'number' || typeof result === 'bigint') return BigInt(result);
        throw { tag: 'fatal', val: `writeRecords returned ${String(result)}; return nothing or the row count` };
      };
      // Throws the contract's error, or, for a Retryable that asks to wait,
      // returns a promise that does so once the wait is over.
      const settle = (error) => {
        const variant = failed(error);
        const asked = error instanceof Retryable ? retryAfterSeconds(error.after) : null;
        if (!asked) throw variant;
        const wait = Math.min(asked, MAX_WAIT_S);
        variant.val += wait < asked
          ? ` (Retry-After asked ${asked} s; waited ${wait} s, the host's backoff adds its own)`
          : ` (waited ${wait} s, as Retry-After asked)`;
        return new Promise((_, reject) => setTimeout(() => reject(variant), wait * 1000));
      };
      let result;
      try {
        const batch = input.decode(bytes, info);
        batch.source = batchSourceOf(batchSource());
        result = spec.writeRecords(batch);
      } catch (error) {
        return settle(error);
      }
      // An async writeRecords: componentize-js runs the event loop (fetch
      // included) until the promise settles, then returns its value.
      if (result && typeof result.then === 'function') return result.then(written, settle);
      return written(result);
    },
    finalize() {
      return step('finalize', () => spec.finalize && spec.finalize());
    },
  };
}

// log.info(...), log.warn(...): to the host's log. An unknown level is a
// TypeError at the call, not a trap in the host.
export function makeLog(hostLog) {
  const line = (level, parts) => parts.map((p) => (typeof p === 'string' ? p : JSON.stringify(p, (_, v) => (typeof v === 'bigint' ? v.toString() : v)))).join(' ');
  const log = (level, ...parts) => {
    if (!LOG_LEVELS.includes(level)) {
      throw new TypeError(`unknown log level ${JSON.stringify(level)}: use ${LOG_LEVELS.join(', ')}`);
    }
    hostLog(level, line(level, parts));
  };
  for (const level of LOG_LEVELS) log[level] = (...parts) => log(level, ...parts);
  return log;
}
