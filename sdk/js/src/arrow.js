// Arrow input: `defineDestination({ input: arrow, ... })` asks the host for
// Arrow IPC batches, read by apache-arrow's tableFromIPC (bundled into the
// plugins that import this module only: it adds about 3 MB).
//
//   import { arrow } from '@bizon/plugin/arrow';
//
// The batch keeps the NDJSON batch's shape (rows, column, iteration, the
// same Row with a lazy `data`), so switching input changes no other line;
// `batch.table` is the Arrow Table, and `batch.column(name)` reads the Arrow
// column without making rows at all.
import { Vector, tableFromIPC } from 'apache-arrow';
import { Row, toNumber } from './core.js';

// Values as plain JavaScript: 64-bit integers (BigInt in apache-arrow) as
// Numbers, as from NDJSON, when no precision is lost; lists (Arrow vectors)
// as arrays; structs and maps as objects.
export function plain(value) {
  if (typeof value === 'bigint') {
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }
  if (value instanceof Vector) return Array.from(value, plain);
  if (value !== null && typeof value === 'object' && typeof value.toJSON === 'function' && !(value instanceof Date)) {
    const object = value.toJSON();
    for (const key of Object.keys(object)) object[key] = plain(object[key]);
    return object;
  }
  return value;
}

function values(vector) {
  const out = new Array(vector.length);
  let i = 0;
  for (const v of vector) out[i++] = v === undefined ? null : plain(v);
  return out;
}

export class ArrowBatch {
  constructor(table, info) {
    this.table = table;
    this.destinationId = info.destinationId;
    this.sequence = toNumber(info.sequence);
    this.numRows = toNumber(info.numRows);
    this.source = undefined;
    this._columns = new Map();
    this._rows = null;
  }

  static fromIpc(bytes, info) {
    return new ArrowBatch(tableFromIPC(bytes), info);
  }

  get length() {
    return this.table.numRows;
  }

  get columns() {
    return this.table.schema.fields.map((f) => f.name);
  }

  // All values of a column, as an array (null for nulls); read once, kept.
  column(name) {
    let column = this._columns.get(name);
    if (column === undefined) {
      const vector = this.table.getChild(name);
      if (vector === null) throw new TypeError(`no column ${JSON.stringify(name)} in this batch (columns: ${this.columns.join(', ')})`);
      column = values(vector);
      this._columns.set(name, column);
    }
    return column;
  }

  // Rows made on first use, from the columns.
  get rows() {
    if (this._rows === null) {
      const names = this.columns;
      const columns = names.map((name) => this.column(name));
      this._rows = new Array(this.length);
      for (let i = 0; i < this.length; i++) {
        const fields = {};
        for (let c = 0; c < names.length; c++) fields[names[c]] = columns[c][i];
        this._rows[i] = new Row(fields, i);
      }
    }
    return this._rows;
  }

  [Symbol.iterator]() {
    return this.rows[Symbol.iterator]();
  }
}

export const arrow = Object.freeze({ format: 'arrow-ipc', decode: ArrowBatch.fromIpc });
