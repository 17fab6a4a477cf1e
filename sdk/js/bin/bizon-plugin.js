#!/usr/bin/env node
// npx bizon-plugin build app.js [-o app.wasm] [--no-check] [--plugin-config JSON]
//     [--allow-dir D]... [--allow-env N]... [--allow-host H]... [--bizon-host PATH]
// Bundles app.js and @bizon/plugin with rolldown into one module, makes a
// component of it with componentize-js (StarlingMonkey) with its `fetch` but
// without its HTTP server feature, then checks it with `bizon-host plugin test`. app.js
// exports `destination` (defineDestination) or `transform` (defineTransform,
// world js-transformer; not checked: plugin test speaks destinations only).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function fail(message) {
  console.error(`bizon-plugin: ${message}`);
  process.exit(1);
}

function parse(argv) {
  const [command, app, ...rest] = argv;
  if (command !== 'build' || !app) fail('usage: bizon-plugin build app.js [-o app.wasm] [--no-check] [host options]');
  const opts = { app: resolve(app), check: true, hostArgs: [], bizonHost: process.env.BIZON_HOST || 'bizon-host' };
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i];
    const value = () => rest[++i] ?? fail(`${flag} needs a value`);
    if (flag === '-o' || flag === '--output') opts.output = resolve(value());
    else if (flag === '--no-check') opts.check = false;
    else if (flag === '--bizon-host') opts.bizonHost = value();
    else if (['--plugin-config', '--allow-dir', '--allow-env', '--allow-host'].includes(flag)) opts.hostArgs.push(flag, value());
    else fail(`unknown option ${flag}`);
  }
  opts.output ??= opts.app.replace(/\.[cm]?js$/, '') + '.wasm';
  return opts;
}

async function build(opts) {
  if (!existsSync(opts.app)) fail(`${opts.app}: no such file`);
  const { rolldown } = await import('rolldown');
  const { componentize } = await import('@bytecodealliance/componentize-js');
  const bundle = await rolldown({
    input: opts.app,
    platform: 'neutral',
    external: [/^(bizon|wasi):/],
    // neutral ignores package.json main fields unless named (flatbuffers, under apache-arrow, has only main).
    resolve: { mainFields: ['module', 'main'], alias: { '@bizon/plugin/arrow': join(sdk, 'src/arrow.js'), '@bizon/plugin': join(sdk, 'src/index.js') } },
    logLevel: 'warn',
  });
  const { output } = await bundle.generate({ format: 'esm' });
  const exported = (name) => new RegExp(`export\\s*\\{[^}]*\\b${name}\\b`).test(output[0].code);
  const kinds = ['destination', 'transform'].filter(exported);
  if (kinds.length !== 1) {
    fail(
      `${basename(opts.app)}: export a destination or a transform (found ${kinds.join(' and ') || 'neither'}): ` +
        'export const destination = defineDestination({...}) or export const transform = defineTransform({...})',
    );
  }
  opts.kind = kinds[0];
  const work = mkdtempSync(join(tmpdir(), 'bizon-plugin-'));
  try {
    const source = join(work, 'bundle.js');
    writeFileSync(source, output[0].code);
    const { component } = await componentize({
      sourcePath: source,
      witPath: join(sdk, 'wit'),
      worldName: opts.kind === 'transform' ? 'js-transformer' : 'js-plugin',
      // `fetch` stays (over wasi:http/outgoing-handler, through the host's
      // allow.hosts); the HTTP server feature would export
      // wasi:http/incoming-handler, which a plugin must not have.
      disableFeatures: ['fetch-event'],
    });
    writeFileSync(opts.output, component);
  } catch (error) {
    fail(`componentize-js failed building ${basename(opts.app)}:\n${error.message || error}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  console.log(`built ${opts.output} (${(statSync(opts.output).size / 1e6).toFixed(1)} MB)`);
}

const opts = parse(process.argv.slice(2));
await build(opts);
if (opts.kind === 'transform') {
  if (opts.check) console.log('not checked: `bizon-host plugin test` checks destinations; run the transform in a pipeline');
} else if (opts.check) {
  const args = ['plugin', 'test', opts.output, ...opts.hostArgs];
  console.log(`checking: ${opts.bizonHost} ${args.join(' ')}`);
  const run = spawnSync(opts.bizonHost, args, { stdio: 'inherit' });
  if (run.error) fail(`built ${opts.output}, but ${opts.bizonHost} could not be run (${run.error.code}): put bizon-host on PATH, set BIZON_HOST or --bizon-host, or pass --no-check`);
  process.exit(run.status ?? 1);
}
