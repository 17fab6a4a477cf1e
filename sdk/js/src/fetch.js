// `fetch` over wasi:http, sent by the host through its egress point
// (allow.hosts, secrets, timeouts, response cap: docs/plugins.md, Network).
// StarlingMonkey has a fetch of its own over the same interface, but it
// rejects every failure with a bare "NetworkError when attempting to fetch
// resource": a plugin could not tell a host the pipeline does not grant from
// a server that is down. This one keeps StarlingMonkey's Request, Response
// and Headers, sends through wasi:http/outgoing-handler itself, and rejects
// with a TypeError carrying what the host said (`error.code` is the
// wasi:http error code, `error.denied` true for a refused destination).
//
// Waiting never blocks the event loop: it polls the wasi pollable between
// timers, so AbortSignal.timeout and other timers keep running while a
// request is out. For its first SPIN_MS a wait polls on every turn of the
// loop (setTimeout 0: ~10 us a turn); after that once a millisecond, which
// StarlingMonkey's timers make ~2 ms (measured here: 1 ms sleeps of 2.2 ms,
// so polling that way from the start made a local GET 2.7 ms against the
// engine's own fetch's 0.9 ms).

const MAX_REDIRECTS = 20;
const SPIN_MS = 5;
const READ_BYTES = 65536n;
const WRITE_BYTES = 65536;
// Set by the host from the URL, or hop-by-hop: wasmtime-wasi-http refuses them.
const DROPPED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'te', 'http2-settings']);
const METHODS = new Set(['get', 'head', 'post', 'put', 'delete', 'connect', 'options', 'trace', 'patch']);
// The methods fetch upper-cases, whatever case they are given in.
const STANDARD = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT']);
// A request that got no response for one of these may pass on a retry.
export const PASSING_CODES = new Set([
  'DNS-timeout', 'destination-unavailable', 'connection-refused', 'connection-terminated', 'connection-timeout',
  'connection-read-timeout', 'connection-write-timeout', 'connection-limit-reached', 'HTTP-response-incomplete',
  'HTTP-response-timeout',
]);
const NULL_BODY = new Set([101, 103, 204, 205, 304]);
const REASONS = {
  200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content', 301: 'Moved Permanently', 302: 'Found',
  303: 'See Other', 304: 'Not Modified', 307: 'Temporary Redirect', 308: 'Permanent Redirect', 400: 'Bad Request',
  401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 408: 'Request Timeout', 409: 'Conflict',
  413: 'Content Too Large', 422: 'Unprocessable Content', 429: 'Too Many Requests', 500: 'Internal Server Error',
  502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function failure(url, code) {
  const tag = code && code.tag ? code.tag : String(code);
  const detail = code && typeof code.val === 'string' ? code.val : code && code.val ? JSON.stringify(code.val) : '';
  const denied = tag === 'internal-error' && detail.startsWith('egress denied');
  const error = new TypeError(denied ? detail : `fetch ${url}: ${tag}${detail ? ` (${detail})` : ''}`);
  error.code = tag;
  error.denied = denied;
  return error;
}

function dispose(...resources) {
  for (const resource of resources) if (resource) resource[Symbol.dispose]();
}

// Resolves once `pollable` is ready; rejects with the signal's reason if it
// aborts first. The pollable is disposed either way.
async function until(pollable, signal) {
  const started = Date.now();
  try {
    while (!pollable.ready()) {
      if (signal && signal.aborted) throw signal.reason;
      await sleep(Date.now() - started < SPIN_MS ? 0 : 1);
    }
    if (signal && signal.aborted) throw signal.reason;
  } finally {
    dispose(pollable);
  }
}

export function makeFetch({ handle, Fields, OutgoingRequest, OutgoingBody }) {
  const encoder = new TextEncoder();

  async function writeBody(outgoingBody, body, signal) {
    const stream = outgoingBody.write();
    try {
      for (let start = 0; start < body.length; ) {
        const permitted = Number(stream.checkWrite());
        if (permitted === 0) {
          await until(stream.subscribe(), signal);
          continue;
        }
        const end = Math.min(body.length, start + permitted, start + WRITE_BYTES);
        stream.write(body.subarray(start, end));
        start = end;
      }
      stream.blockingFlush();
    } catch (error) {
      // A write the host no longer takes: the request failed, and the
      // response says why. An abort goes on up.
      if (signal && signal.aborted) throw error;
    } finally {
      dispose(stream);
    }
  }

  async function readBody(stream, signal) {
    const chunks = [];
    let total = 0;
    for (;;) {
      let chunk;
      try {
        chunk = stream.read(READ_BYTES);
      } catch (error) {
        if (error.payload && error.payload.tag === 'closed') break;
        throw new TypeError(`reading the response failed: ${error.payload ? error.payload.tag : error}`);
      }
      if (chunk.length === 0) {
        await until(stream.subscribe(), signal);
        continue;
      }
      chunks.push(chunk);
      total += chunk.length;
    }
    const body = new Uint8Array(total);
    let at = 0;
    for (const chunk of chunks) {
      body.set(chunk, at);
      at += chunk.length;
    }
    return body;
  }

  // One exchange: the response's status, headers and whole body.
  async function send(method, url, headers, body, signal) {
    const target = new URL(url);
    if (target.protocol !== 'http:' && target.protocol !== 'https:') throw new TypeError(`fetch ${url}: not an http(s) URL`);
    const entries = [];
    for (const [name, value] of headers) if (!DROPPED.has(name.toLowerCase())) entries.push([name, encoder.encode(value)]);
    if (body !== null && !entries.some(([name]) => name.toLowerCase() === 'content-length')) {
      entries.push(['content-length', encoder.encode(String(body.length))]);
    }
    let fields;
    try {
      fields = Fields.fromList(entries);
    } catch (error) {
      throw new TypeError(`fetch ${url}: a header was refused (${error.payload ? error.payload.tag : error})`);
    }
    const request = new OutgoingRequest(fields);
    const lower = method.toLowerCase();
    request.setMethod(METHODS.has(lower) ? { tag: lower } : { tag: 'other', val: method });
    request.setScheme({ tag: target.protocol === 'https:' ? 'HTTPS' : 'HTTP' });
    request.setAuthority(target.host);
    request.setPathWithQuery(`${target.pathname}${target.search}`);
    const outgoingBody = request.body();
    let future;
    try {
      future = handle(request, undefined);
    } catch (error) {
      dispose(outgoingBody);
      throw failure(url, error.payload);
    }
    let response;
    let incoming;
    let stream;
    try {
      if (body !== null) await writeBody(outgoingBody, body, signal);
      try {
        OutgoingBody.finish(outgoingBody, undefined);
      } catch {
        // a body cut short because the request failed: the response says why
      }
      await until(future.subscribe(), signal);
      const result = future.get();
      if (!result || result.tag !== 'ok') throw new TypeError(`fetch ${url}: no response`);
      if (result.val.tag !== 'ok') throw failure(url, result.val.val);
      response = result.val.val;
      const status = response.status();
      const fieldsIn = response.headers();
      const received = fieldsIn.entries().map(([name, value]) => [name, new TextDecoder().decode(value)]);
      dispose(fieldsIn);
      incoming = response.consume();
      stream = incoming.stream();
      const bytes = method === 'HEAD' || NULL_BODY.has(status) ? null : await readBody(stream, signal);
      return { status, headers: received, body: bytes };
    } finally {
      // Children before parents: wasi:http traps otherwise.
      dispose(stream, incoming, response, future);
    }
  }

  // A URL and a string or bytes body, the usual call, read directly: a
  // Request made only to read it back costs a copy (0.2 ms for 375 kB).
  // Anything else (a Request, FormData, URLSearchParams, Blob, a stream)
  // goes through StarlingMonkey's Request, which knows them all.
  function direct(input, init) {
    if (typeof input !== 'string' && !(input instanceof URL)) return null;
    let url;
    try {
      url = new URL(input).href;
    } catch {
      return null;
    }
    const given = init.body;
    let body;
    if (given === undefined || given === null) body = null;
    else if (typeof given === 'string') body = encoder.encode(given);
    else if (given instanceof Uint8Array) body = given;
    else if (given instanceof ArrayBuffer) body = new Uint8Array(given);
    else return null;
    const upper = String(init.method ?? 'GET').toUpperCase();
    const method = STANDARD.has(upper) ? upper : String(init.method);
    if (body !== null && (method === 'GET' || method === 'HEAD')) return null; // Request throws the spec's TypeError
    const headers = new Headers(init.headers);
    if (typeof given === 'string' && !headers.has('content-type')) headers.set('content-type', 'text/plain;charset=UTF-8');
    return { url, method, headers: [...headers], body };
  }

  async function read(input, init) {
    const request = new Request(input, init);
    const body = request.body === null ? null : new Uint8Array(await request.arrayBuffer());
    return { url: request.url, method: request.method, headers: [...request.headers], body };
  }

  return async function fetch(input, init = {}) {
    const signal = init.signal ?? (input instanceof Request ? input.signal : undefined);
    if (signal && signal.aborted) throw signal.reason;
    const redirect = init.redirect ?? (input instanceof Request ? input.redirect : 'follow');
    let { method, url, headers, body } = direct(input, init) ?? (await read(input, init));
    for (let hops = 0; ; hops++) {
      const got = await send(method, url, headers, body, signal);
      const location = got.headers.find(([name]) => name.toLowerCase() === 'location');
      if ([301, 302, 303, 307, 308].includes(got.status) && location && redirect !== 'manual') {
        if (redirect === 'error') throw new TypeError(`fetch ${url}: redirected to ${location[1]} (redirect: 'error')`);
        if (hops >= MAX_REDIRECTS) throw new TypeError(`fetch ${url}: more than ${MAX_REDIRECTS} redirects`);
        // Each hop is a new request, checked by the host like the first.
        url = new URL(location[1], url).href;
        if (got.status === 303 || ((got.status === 301 || got.status === 302) && method === 'POST')) {
          method = 'GET';
          body = null;
          headers = headers.filter(([name]) => !/^content-/i.test(name));
        }
        continue;
      }
      const response = new Response(got.body, {
        status: got.status,
        statusText: REASONS[got.status] ?? '',
        headers: got.headers,
      });
      Object.defineProperty(response, 'url', { value: url });
      Object.defineProperty(response, 'redirected', { value: hops > 0 });
      return response;
    }
  };
}
