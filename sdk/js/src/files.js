// File helpers over the directories a pipeline grants (allow.dirs), on
// wasi:filesystem: StarlingMonkey has no `fs` module. Every path is resolved
// here against the grants first, so a path outside them, or a write under a
// read-only one, fails with a message that says which grants there are
// instead of WASI's bare "not-permitted". Runs in Node too (the SDK's tests
// hand makeFiles a fake getDirectories).

export class FileError extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'FileError';
    this.code = code;
  }
}

const READ_CHUNK = 1n << 20n;

// "/out/a/./b" -> ["out", "a", "b"]. Guest paths are all rooted at "/", as a
// grant's guest path is ("out", "./out" and "/out" are the same grant).
export function segments(path) {
  if (typeof path !== 'string' || path.length === 0) throw new FileError(`a path must be a non-empty string, got ${JSON.stringify(path)}`, 'invalid');
  const parts = path.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.includes('..')) throw new FileError(`${path}: ".." is not allowed in a plugin path`, 'invalid');
  return parts;
}

export function describeGrants(grants) {
  if (grants.length === 0) return 'no directory is granted: add allow.dirs to the pipeline, or --allow-dir';
  return `granted: ${grants.map((g) => `/${g.segments.join('/')} (${g.writable ? 'writable' : 'read-only'})`).join(', ')}`;
}

// The grant a path falls under (the deepest, when grants nest) and the path
// relative to it. `write`: the caller will create or change something.
export function resolve(path, grants, { write = false } = {}) {
  const parts = segments(path);
  let best = null;
  for (const grant of grants) {
    const g = grant.segments;
    if (g.length <= parts.length && g.every((s, i) => s === parts[i]) && (best === null || g.length > best.segments.length)) best = grant;
  }
  if (best === null) throw new FileError(`${path}: not inside a directory granted to this plugin (${describeGrants(grants)})`, 'not-granted');
  if (write && !best.writable) {
    throw new FileError(`${path}: /${best.segments.join('/')} is granted read-only; set writable: true on it in allow.dirs (:rw with --allow-dir)`, 'read-only');
  }
  return { grant: best, rel: parts.slice(best.segments.length) };
}

const WASI_ERRORS = {
  'no-entry': 'no such file or directory',
  exist: 'already exists',
  'is-directory': 'is a directory',
  'not-directory': 'not a directory',
  'insufficient-space': 'no space left (the grant is full: see allow.dirs[].max_mb)',
  access: 'permission denied',
  'not-permitted': 'not permitted',
  'read-only': 'read-only',
};

// componentize-js throws a WASI error code as a ComponentError whose payload
// is the code's name.
function wasiError(path, what, error) {
  const code = error && typeof error.payload === 'string' ? error.payload : null;
  if (code === null) return error;
  return new FileError(`${path}: ${what}: ${WASI_ERRORS[code] ?? code}`, code);
}

function wasiCall(path, what, fn) {
  try {
    return fn();
  } catch (error) {
    throw wasiError(path, what, error);
  }
}

// A WASI resource is released when dropped; waiting for the GC would keep
// one open file per call in the host's table.
function drop(resource) {
  const dispose = resource[Symbol.dispose ?? Symbol.for('dispose')];
  if (typeof dispose === 'function') dispose.call(resource);
}

function toBytes(data) {
  if (typeof data === 'string') return new TextEncoder().encode(data);
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new FileError(`files: write a string or bytes (Uint8Array), got ${data === null ? 'null' : typeof data}`, 'invalid');
}

// files.write / append / read / readBytes / list / remove over the grants
// that `getDirectories` (wasi:filesystem/preopens) reports.
export function makeFiles(getDirectories) {
  let grants = null;
  const granted = () => {
    grants ??= getDirectories().map(([descriptor, guest]) => ({
      descriptor,
      segments: segments(guest),
      writable: Boolean(descriptor.getFlags().mutateDirectory),
    }));
    return grants;
  };

  // Creates the directories between the grant and the file that are missing.
  function makeParents(path, grant, rel) {
    for (let i = 1; i < rel.length; i++) {
      const dir = rel.slice(0, i).join('/');
      try {
        grant.descriptor.createDirectoryAt(dir);
      } catch (error) {
        if (!(error && error.payload === 'exist')) throw wasiError(path, `creating directory ${dir}`, error);
      }
    }
  }

  function withFile(path, { write, create, truncate }, fn) {
    const { grant, rel } = resolve(path, granted(), { write });
    if (rel.length === 0) throw new FileError(`${path}: is a granted directory, not a file`, 'is-directory');
    if (create) makeParents(path, grant, rel);
    const open = write ? { create, truncate } : {};
    const file = wasiCall(path, 'opening', () => grant.descriptor.openAt({}, rel.join('/'), open, write ? { write: true } : { read: true }));
    try {
      return fn(file);
    } finally {
      drop(file);
    }
  }

  function writeAt(path, file, bytes, offset) {
    for (let done = 0; done < bytes.length; ) {
      const n = Number(wasiCall(path, 'writing', () => file.write(bytes.subarray(done), offset + BigInt(done))));
      if (n === 0) throw new FileError(`${path}: writing: no byte written at offset ${offset + BigInt(done)}`, 'io');
      done += n;
    }
  }

  function readBytes(path) {
    return withFile(path, { write: false }, (file) => {
      const chunks = [];
      let size = 0;
      for (let offset = 0n; ; ) {
        const [bytes, end] = wasiCall(path, 'reading', () => file.read(READ_CHUNK, offset));
        chunks.push(bytes);
        size += bytes.length;
        offset += BigInt(bytes.length);
        if (end || bytes.length === 0) break;
      }
      const all = new Uint8Array(size);
      let at = 0;
      for (const c of chunks) {
        all.set(c, at);
        at += c.length;
      }
      return all;
    });
  }

  return {
    // Replaces the file (creating it and its directories) with `data`.
    write(path, data) {
      const bytes = toBytes(data);
      withFile(path, { write: true, create: true, truncate: true }, (file) => writeAt(path, file, bytes, 0n));
    },
    // Adds `data` at the end of the file, creating it if needed.
    append(path, data) {
      const bytes = toBytes(data);
      withFile(path, { write: true, create: true, truncate: false }, (file) => {
        const { size } = wasiCall(path, 'reading its size', () => file.stat());
        writeAt(path, file, bytes, BigInt(size));
      });
    },
    read(path) {
      return new TextDecoder().decode(readBytes(path));
    },
    readBytes,
    // The names in a directory, sorted.
    list(dir) {
      const { grant, rel } = resolve(dir, granted());
      let handle = grant.descriptor;
      if (rel.length > 0) handle = wasiCall(dir, 'opening', () => grant.descriptor.openAt({}, rel.join('/'), { directory: true }, { read: true }));
      try {
        const stream = wasiCall(dir, 'listing', () => handle.readDirectory());
        const names = [];
        try {
          for (let entry; (entry = wasiCall(dir, 'listing', () => stream.readDirectoryEntry())); ) names.push(entry.name);
        } finally {
          drop(stream);
        }
        return names.sort();
      } finally {
        if (handle !== grant.descriptor) drop(handle);
      }
    },
    remove(path) {
      const { grant, rel } = resolve(path, granted(), { write: true });
      if (rel.length === 0) throw new FileError(`${path}: is a granted directory, not a file`, 'is-directory');
      wasiCall(path, 'removing', () => grant.descriptor.unlinkFileAt(rel.join('/')));
    },
    // What is granted, for a plugin's checkConnection or its messages.
    grants() {
      return granted().map((g) => ({ path: `/${g.segments.join('/')}`, writable: g.writable }));
    },
  };
}
