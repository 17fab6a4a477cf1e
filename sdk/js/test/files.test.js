import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { FileError, makeFiles, resolve, segments } from '../src/files.js';

const grant = (path, writable) => ({ segments: segments(path), writable });

function thrown(fn) {
  try {
    fn();
  } catch (e) {
    return e;
  }
  assert.fail('nothing was thrown');
}

test('paths are rooted at / whatever their spelling; .. is refused', () => {
  assert.deepEqual(segments('/out/a/./b.jsonl'), ['out', 'a', 'b.jsonl']);
  assert.deepEqual(segments('./out//b'), ['out', 'b']);
  assert.deepEqual(segments('out'), ['out']);
  const e = thrown(() => segments('/out/../etc/passwd'));
  assert.ok(e instanceof FileError);
  assert.match(e.message, /"\.\." is not allowed/);
  assert.match(thrown(() => segments('')).message, /non-empty string/);
});

test('a path resolves to its deepest grant, relative to it', () => {
  const grants = [grant('/out', true), grant('/out/archive', false), grant('./data', false)];
  assert.deepEqual(resolve('/out/a/b.jsonl', grants), { grant: grants[0], rel: ['a', 'b.jsonl'] });
  assert.deepEqual(resolve('/out/archive/x', grants), { grant: grants[1], rel: ['x'] });
  assert.deepEqual(resolve('data/x', grants), { grant: grants[2], rel: ['x'] });
  assert.deepEqual(resolve('/out', grants).rel, []);
  // A prefix of a name is not a grant.
  assert.match(thrown(() => resolve('/outside/x', grants)).message, /not inside a directory granted/);
});

test('outside every grant, or writing under a read-only one, says what is granted', () => {
  const grants = [grant('/out', true), grant('/in', false)];
  const outside = thrown(() => resolve('/etc/x', grants, { write: true }));
  assert.equal(outside.code, 'not-granted');
  assert.equal(outside.message, '/etc/x: not inside a directory granted to this plugin (granted: /out (writable), /in (read-only))');
  const readOnly = thrown(() => resolve('/in/x', grants, { write: true }));
  assert.equal(readOnly.code, 'read-only');
  assert.equal(readOnly.message, '/in/x: /in is granted read-only; set writable: true on it in allow.dirs (:rw with --allow-dir)');
  assert.deepEqual(resolve('/in/x', grants).rel, ['x'], 'reading under a read-only grant is fine');
  assert.match(thrown(() => resolve('/x', [])).message, /no directory is granted: add allow\.dirs to the pipeline, or --allow-dir/);
});

// What componentize-js's resources are dropped by (Symbol.dispose is missing
// from early Node 20 releases).
const DISPOSE = Symbol.dispose ?? Symbol.for('dispose');

// wasi:filesystem descriptors over a real directory, throwing WASI error
// codes the way componentize-js does (an error whose payload is the code).
class Descriptor {
  static opened = [];
  constructor(path, flags) {
    this.path = path;
    this.flags = flags;
    this.disposed = false;
  }
  static wasi(fn) {
    try {
      return fn();
    } catch (e) {
      const code = { ENOENT: 'no-entry', EEXIST: 'exist', EISDIR: 'is-directory', ENOTDIR: 'not-directory' }[e.code];
      throw Object.assign(new Error(code), { payload: code ?? 'io' });
    }
  }
  getFlags() {
    return { read: true, mutateDirectory: this.flags.mutateDirectory };
  }
  createDirectoryAt(p) {
    Descriptor.wasi(() => fs.mkdirSync(join(this.path, p)));
  }
  openAt(_, p, open, flags) {
    const path = join(this.path, p);
    Descriptor.wasi(() => {
      if (open.directory) return fs.readdirSync(path);
      if (open.create && !fs.existsSync(path)) fs.writeFileSync(path, '');
      if (open.truncate) fs.truncateSync(path);
      return fs.statSync(path).isDirectory() ? null : fs.readFileSync(path);
    });
    const file = new Descriptor(path, flags);
    Descriptor.opened.push(file);
    return file;
  }
  write(bytes, offset) {
    // At most 3 bytes per call, to exercise the write loop.
    const n = Math.min(bytes.length, 3);
    const fd = fs.openSync(this.path, 'r+');
    fs.writeSync(fd, bytes, 0, n, Number(offset));
    fs.closeSync(fd);
    return BigInt(n);
  }
  stat() {
    return { size: BigInt(fs.statSync(this.path).size) };
  }
  read(length, offset) {
    const all = fs.readFileSync(this.path);
    const bytes = new Uint8Array(all.subarray(Number(offset), Number(offset) + Math.min(Number(length), 4)));
    return [bytes, Number(offset) + bytes.length >= all.length];
  }
  readDirectory() {
    const names = fs.readdirSync(this.path).reverse();
    return { readDirectoryEntry: () => (names.length ? { name: names.pop() } : undefined), [DISPOSE]() {} };
  }
  unlinkFileAt(p) {
    Descriptor.wasi(() => fs.unlinkSync(join(this.path, p)));
  }
  [DISPOSE]() {
    this.disposed = true;
  }
}

function sandbox() {
  const root = fs.mkdtempSync(join(tmpdir(), 'bizon-files-'));
  fs.mkdirSync(join(root, 'out'));
  fs.mkdirSync(join(root, 'in'));
  fs.writeFileSync(join(root, 'in/seed.txt'), 'Zoë 🚀\n');
  const dirs = [
    [new Descriptor(join(root, 'out'), { mutateDirectory: true }), '/out'],
    [new Descriptor(join(root, 'in'), { mutateDirectory: false }), 'in'],
  ];
  return { root, files: makeFiles(() => dirs) };
}

test('write, append, read and list over granted directories', () => {
  const { root, files } = sandbox();
  files.write('/out/a/b/records.jsonl', '{"id":1}\n');
  files.append('/out/a/b/records.jsonl', new TextEncoder().encode('{"id":2}\n'));
  files.append('/out/new.txt', 'first\n');
  assert.equal(fs.readFileSync(join(root, 'out/a/b/records.jsonl'), 'utf8'), '{"id":1}\n{"id":2}\n');
  assert.equal(files.read('/out/a/b/records.jsonl'), '{"id":1}\n{"id":2}\n');
  assert.equal(files.read('/in/seed.txt'), 'Zoë 🚀\n', 'multi-byte text read across chunks');
  assert.deepEqual([...files.readBytes('/out/new.txt')], [...new TextEncoder().encode('first\n')]);
  files.write('/out/new.txt', 'replaced');
  assert.equal(files.read('/out/new.txt'), 'replaced');
  assert.deepEqual(files.list('/out'), ['a', 'new.txt']);
  assert.deepEqual(files.list('/out/a/b'), ['records.jsonl']);
  files.remove('/out/new.txt');
  assert.deepEqual(files.list('/out'), ['a']);
  assert.ok(Descriptor.opened.length > 0 && Descriptor.opened.every((d) => d.disposed), 'every file opened is dropped');
  assert.deepEqual(files.grants(), [
    { path: '/out', writable: true },
    { path: '/in', writable: false },
  ]);
});

test('denied and failing file calls name the path and the reason', () => {
  const { root, files } = sandbox();
  assert.match(thrown(() => files.write('/etc/passwd', 'x')).message, /^\/etc\/passwd: not inside a directory granted to this plugin \(granted: \/out \(writable\), \/in \(read-only\)\)$/);
  assert.match(thrown(() => files.append('/in/seed.txt', 'x')).message, /\/in is granted read-only/);
  assert.equal(fs.readFileSync(join(root, 'in/seed.txt'), 'utf8'), 'Zoë 🚀\n', 'nothing written');
  const missing = thrown(() => files.read('/out/nope.txt'));
  assert.equal(missing.code, 'no-entry');
  assert.equal(missing.message, '/out/nope.txt: opening: no such file or directory');
  assert.match(thrown(() => files.write('/out', 'x')).message, /is a granted directory, not a file/);
  assert.match(thrown(() => files.write('/out/x', 42)).message, /write a string or bytes/);
});
