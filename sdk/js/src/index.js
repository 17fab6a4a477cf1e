// @bizon/plugin: a bizon-host destination or transform in JavaScript.
//
//   import { defineDestination, files, log, Retryable, Rejected, checkResponse } from '@bizon/plugin';
//   export const destination = defineDestination({ open, checkConnection, writeRecords, finalize });
//
//   import { defineTransform } from '@bizon/plugin';
//   export const transform = defineTransform({ open, transform });
//
// Built into a component by `npx bizon-plugin build app.js -o my_dest.wasm`.
import { batchSource as hostBatchSource, log as hostLog } from 'bizon:destination/host@0.1.0';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingBody, OutgoingRequest } from 'wasi:http/types@0.2.12';
import { makeDestination, makeLog } from './core.js';
import { makeFetch } from './fetch.js';
import { makeFiles } from './files.js';
import { makeTransform } from './transform.js';

export { Batch, checkResponse, HttpStatusError, Rejected, Retryable, Row } from './core.js';

export { FileError } from './files.js';

export { Record } from './transform.js';

export const log = makeLog(hostLog);

// StarlingMonkey's own fetch, kept for whoever wants it: its failures are a
// bare "NetworkError when attempting to fetch resource".
export const nativeFetch = globalThis.fetch;

// `fetch` everywhere in the plugin: over wasi:http, its failures carrying
// the host's reason (src/fetch.js).
globalThis.fetch = makeFetch({ handle, Fields, OutgoingRequest, OutgoingBody });

// files.write/append/read/readBytes/list/remove over allow.dirs.
export const files = makeFiles(getDirectories);

// batch.source: where the batch's rows were read (Kafka offset ranges and a
// batch id), or undefined.
export function defineDestination(spec) {
  return makeDestination(spec, { batchSource: hostBatchSource });
}

// transform(record) returns the record, an object (its new data), an array
// of them, or [] to drop it; a throw fails that record alone.
export function defineTransform(spec) {
  return makeTransform(spec);
}
