// @bizon/plugin: a bizon-host destination in JavaScript.
//
//   import { defineDestination, log, Retryable, Rejected } from '@bizon/plugin';
//   export const destination = defineDestination({ open, checkConnection, writeRecords, finalize });
//
// Built into a component by `npx bizon-plugin build app.js -o my_dest.wasm`.
import { log as hostLog } from 'bizon:destination/host@0.1.0';
import { makeDestination, makeLog } from './core.js';

export { Batch, Rejected, Retryable, Row } from './core.js';

export const log = makeLog(hostLog);

export function defineDestination(spec) {
  return makeDestination(spec);
}
