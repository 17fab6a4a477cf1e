// Transforms (world `transformer` of wit/transform.wit): what runs the same
// in Node (the SDK's tests) and in the component. The host sends NDJSON, one
// record a line: {source_record_id, source_timestamp (microseconds),
// destination_id (or null), source_data (the record's JSON value)}. Each line
// sent back names the input `row` it comes from and only the metadata that
// changed, or, for a record made from scratch, all of it.
import { describe, parseNdjson } from './core.js';

const FIELDS = ['data', 'source_record_id', 'source_timestamp', 'destination_id'];
const RETURNS = 'return the record, an object (its new data), an array of them, or [] to drop it';

export class Record {
  // `data` is source_data parsed; the metadata keeps Bizon's names.
  // source_timestamp: microseconds since the Unix epoch, UTC.
  constructor(data, source_record_id, source_timestamp, destination_id = null, row = undefined) {
    this.data = data;
    this.source_record_id = source_record_id;
    this.source_timestamp = source_timestamp;
    this.destination_id = destination_id;
    this.row = row;
  }

  // A copy with `changes` ({data, source_record_id, ...}).
  replace(changes = {}) {
    const copy = new Record(this.data, this.source_record_id, this.source_timestamp, this.destination_id, this.row);
    for (const [name, value] of Object.entries(changes)) {
      if (!FIELDS.includes(name)) throw new TypeError(`Record has no field ${JSON.stringify(name)}`);
      copy[name] = value;
    }
    return copy;
  }
}

// A problem with what the transform returned, reported without a stack.
class ResultError extends Error {}

function results(result, record) {
  const one = (item) => {
    if (item instanceof Record) return item;
    if (item !== null && typeof item === 'object' && !Array.isArray(item)) return record.replace({ data: item });
    throw new ResultError(`transform returned an array holding ${item === null ? 'null' : typeof item}; it may hold records or objects`);
  };
  if (Array.isArray(result)) return result.map(one);
  if (result === undefined || result === null) throw new ResultError(`transform returned ${result}; ${RETURNS}`);
  if (typeof result !== 'object') throw new ResultError(`transform returned a ${typeof result}; ${RETURNS}`);
  return [one(result)];
}

function stringify(value) {
  const text = JSON.stringify(value);
  // JSON.stringify gives undefined for a function or undefined, and writes
  // NaN as null: only the first loses the record.
  if (text === undefined) throw new ResultError(`data is not JSON: ${typeof value}`);
  return text;
}

function line(record, rows) {
  const { source_record_id: id, source_timestamp: ts, destination_id: dest } = record;
  if (typeof id !== 'string') throw new ResultError(`source_record_id must be a string, not ${typeof id}`);
  if (!Number.isSafeInteger(ts)) throw new ResultError(`source_timestamp must be an integer (microseconds), not ${ts}`);
  if (dest !== null && typeof dest !== 'string') throw new ResultError(`destination_id must be a string or null, not ${typeof dest}`);
  const data = stringify(record.data);
  const source = rows[record.row];
  if (source === undefined) {
    return `{"source_record_id":${JSON.stringify(id)},"source_timestamp":${ts},"destination_id":${JSON.stringify(dest)},"source_data":${data}}`;
  }
  let out = `{"row":${record.row}`;
  if (id !== source.source_record_id) out += `,"source_record_id":${JSON.stringify(id)}`;
  if (ts !== source.source_timestamp) out += `,"source_timestamp":${ts}`;
  if (dest !== source.destination_id) out += `,"destination_id":${JSON.stringify(dest)}`;
  return `${out},"source_data":${data}}`;
}

// The exports componentize-js wants for interface `transform`, around an
// author's spec. open() throws a string (the contract's error); a record's
// failure is an entry of `errors`, never a throw.
export function makeTransform(spec) {
  if (typeof spec.transform !== 'function') throw new TypeError('defineTransform: transform(record) is required');
  const name = spec.name || 'js-transform';
  const version = spec.version || '0.1.0';
  let opened = false;
  const encoder = new TextEncoder();
  return {
    describe() {
      return { name, version, inputFormat: 'ndjson' };
    },
    open(config) {
      try {
        if (spec.open) spec.open(JSON.parse(config));
      } catch (error) {
        throw `open: ${typeof error === 'string' ? error : describe(error)}`;
      }
      opened = true;
    },
    transformRecords(bytes) {
      if (!opened) throw 'transform-records called before open succeeded';
      let rows;
      try {
        rows = parseNdjson(bytes);
      } catch (error) {
        throw `transform-records: the batch is not NDJSON records: ${describe(error)}`;
      }
      const out = [];
      const errors = [];
      const fail = (index, error) => {
        const reason = error instanceof ResultError ? error.message : describe(error);
        errors.push({ row: BigInt(index), reason });
      };
      const take = (index, record, result) => {
        try {
          for (const l of results(result, record).map((r) => line(r, rows))) out.push(l);
        } catch (error) {
          fail(index, error);
        }
      };
      const finish = () => ({ batch: encoder.encode(out.join('\n')), errors });
      const record = (index) => {
        const row = rows[index];
        return new Record(row.source_data, row.source_record_id, row.source_timestamp, row.destination_id, index);
      };
      // An async transform (one that awaits fetch): records are awaited one
      // at a time, in order, so one batch never holds more requests open
      // than the host allows an instance (allow.network.max_connections).
      const rest = async (index, first, pending) => {
        for (let i = index; i < rows.length; i++) {
          const current = i === index ? first : record(i);
          try {
            take(i, current, await (i === index ? pending : spec.transform(current)));
          } catch (error) {
            fail(i, error);
          }
        }
        return finish();
      };
      for (let index = 0; index < rows.length; index++) {
        const current = record(index);
        let result;
        try {
          result = spec.transform(current);
        } catch (error) {
          fail(index, error);
          continue;
        }
        if (result && typeof result.then === 'function') return rest(index, current, result);
        take(index, current, result);
      }
      return finish();
    },
  };
}
