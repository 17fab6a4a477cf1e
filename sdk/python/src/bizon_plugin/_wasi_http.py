"""One HTTP exchange over wasi:http, streamed both ways: what
`bizon_plugin.http` and the `requests`/`urllib3`/`urllib` transports
(`_compat`) are built on. The host sends the request (allow.hosts, its
timeouts, response cap and secrets: plugins.md, Network); the caller's own,
shorter timeouts are enforced here by polling against a clock.

Resources are dropped children first (pollable, stream, body, response,
future): wasi:http traps on a parent dropped before its children, which
Python's garbage collector would otherwise do in any order.
"""

from urllib.parse import urlsplit

try:  # inside the component; componentize-py bundles what is imported at build time
    from componentize_py_types import Err
    from wit_world.imports import monotonic_clock, outgoing_handler, poll, streams
    from wit_world.imports import wasi_http_types as t
except ImportError:  # plain CPython (bizon-plugin test): no wasi:http
    outgoing_handler = None

__all__ = ["HttpError", "Incoming", "Pending", "start", "available"]

_READ = 65536
# Set by the host from the URL, or hop-by-hop (wasmtime-wasi-http refuses
# them): `requests` and `urllib` add some of these to every request.
_DROPPED = frozenset(
    ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te", "http2-settings")
)
_METHODS = {
    "GET": "Method_Get", "HEAD": "Method_Head", "POST": "Method_Post", "PUT": "Method_Put",
    "DELETE": "Method_Delete", "PATCH": "Method_Patch", "OPTIONS": "Method_Options", "TRACE": "Method_Trace",
}
_TIMEOUTS = ("ConnectionTimeout", "ConnectionReadTimeout", "ConnectionWriteTimeout", "HttpResponseTimeout", "DnsTimeout")


class HttpError(Exception):
    """`kind` is "denied" (allow.hosts refused it; the message is the host's
    reason), "request" (bad URL or header), "connect", "tls" (the host's TLS
    handshake failed), "timeout" (`phase` is "connect" or "read"), "status"
    (raise_for_status) or "protocol"."""

    def __init__(self, kind, message, status=None, phase=None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.phase = phase

    @property
    def retryable(self):
        if self.kind in ("connect", "timeout"):
            return True
        return self.kind == "status" and (self.status in (408, 429) or self.status >= 500)


def available():
    return outgoing_handler is not None


def _drop(*resources):
    for resource in resources:
        if resource is not None:
            resource.__exit__(None, None, None)


def _wait(pollable, timeout):
    """Whether `pollable` became ready within `timeout` seconds (None: no
    limit here; the host's own limits still apply)."""
    if timeout is None:
        pollable.block()
        return True
    timer = monotonic_clock.subscribe_duration(max(0, int(timeout * 1e9)))
    try:
        return 0 in poll.poll([pollable, timer])
    finally:
        _drop(timer)


def _error(code, url):
    name = type(code).__name__.removeprefix("ErrorCode_")
    detail = getattr(code, "value", None)
    if isinstance(code, t.ErrorCode_InternalError) and detail and detail.startswith("egress denied"):
        return HttpError("denied", detail)
    if name in _TIMEOUTS:
        phase = "connect" if name in ("ConnectionTimeout", "DnsTimeout") else "read"
        return HttpError("timeout", f"{url}: {name}", phase=phase)
    if name.startswith("Tls"):
        return HttpError("tls", f"{url}: {name}" + (f" ({detail})" if detail else ""))
    if name.startswith(("Connection", "Dns", "Destination")):
        return HttpError("connect", f"{url}: {name}" + (f" ({detail})" if detail else ""))
    if name.startswith("HttpRequest"):
        return HttpError("request", f"{url}: {name}")
    return HttpError("protocol", f"{url}: {name}" + (f" ({detail})" if detail else ""))


def _fields(headers):
    fields = t.Fields()
    for name, value in headers:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if name.lower() in _DROPPED:
            continue
        try:
            fields.append(name, value if isinstance(value, bytes) else str(value).encode("latin-1"))
        except Err as e:
            _drop(fields)
            why = type(e.value).__name__.removeprefix("HeaderError_")
            raise HttpError("request", f"header {name!r}: {why}") from None
        except UnicodeEncodeError:
            _drop(fields)
            raise HttpError("request", f"header {name!r}: not latin-1 text") from None
    return fields


def start(method, url, headers=(), body=None, timeout=None):
    """Sends the request line, headers and `body` (bytes, str, an iterable of
    them, or a file-like object; None for none) and returns the `Pending`
    response. `timeout` (seconds) bounds each wait to write the body."""
    if outgoing_handler is None:
        raise HttpError("request", "wasi:http is available inside the component only")
    parts = urlsplit(url)
    schemes = {"http": t.Scheme_Http(), "https": t.Scheme_Https()}
    if parts.scheme not in schemes or not parts.hostname:
        raise HttpError("request", f"not an http(s) URL: {url!r}")
    headers = list(headers)
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)) and not any(
        (k.decode("latin-1") if isinstance(k, bytes) else k).lower() == "content-length" for k, _ in headers
    ):
        # The body is known whole: say its length rather than stream it chunked.
        headers.append(("content-length", str(len(body))))
    outgoing = t.OutgoingRequest(_fields(headers))
    method = method.upper()
    try:
        outgoing.set_method(getattr(t, _METHODS[method])() if method in _METHODS else t.Method_Other(method))
        outgoing.set_scheme(schemes[parts.scheme])
        # User information is never sent (the host refuses it): credentials go in allow.secrets.
        outgoing.set_authority(parts.netloc.rpartition("@")[2])
        outgoing.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    except Err:
        _drop(outgoing)
        raise HttpError("request", f"{method} {url}: not a valid request") from None
    outgoing_body = outgoing.body()
    try:
        future = outgoing_handler.handle(outgoing, None)
    except Err as e:
        _drop(outgoing_body)
        raise _error(e.value, url) from None
    try:
        _write_body(outgoing_body, body, timeout, url)
    except BaseException:
        _drop(future)
        raise
    return Pending(future, url)


def _chunks(body):
    if body is None:
        return
    if isinstance(body, (bytes, bytearray, memoryview)):
        yield bytes(body)
    elif hasattr(body, "read"):
        while chunk := body.read(_READ):
            yield chunk.encode("utf-8") if isinstance(chunk, str) else chunk
    else:
        for chunk in body:
            yield chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)


def _write_body(outgoing_body, body, timeout, url):
    stream = outgoing_body.write()
    pollable = None
    try:
        for chunk in _chunks(body):
            view = memoryview(chunk)
            while view:
                permitted = stream.check_write()
                if permitted == 0:
                    pollable = pollable or stream.subscribe()
                    if not _wait(pollable, timeout):
                        raise HttpError("timeout", f"{url}: the server did not take the body", phase="read")
                    continue
                stream.write(bytes(view[:permitted]))
                view = view[permitted:]
        stream.blocking_flush()
    except Err:
        pass  # the request failed (the host refused it, the server hung up): the response says why
    finally:
        _drop(pollable, stream)
    try:
        t.OutgoingBody.finish(outgoing_body, None)
    except Err:
        pass  # a body cut short because the request failed: the response says why


class Pending:
    """A request sent, its response not read yet."""

    def __init__(self, future, url):
        self._future = future
        self.url = url

    def wait(self, timeout=None):
        """The `Incoming` response, or HttpError (a refusal, a connection
        error, `timeout` seconds passed without the response's headers)."""
        future, self._future = self._future, None
        response = incoming = None
        try:
            with future.subscribe() as pollable:
                ready = _wait(pollable, timeout)
            if not ready:
                raise HttpError("timeout", f"{self.url}: no response within {timeout:g} s", phase="read")
            result = future.get()  # None, Err(None), Ok(Err(error-code)) or Ok(Ok(response))
            if result is None or isinstance(result, Err):
                raise HttpError("protocol", f"{self.url}: no response")
            if isinstance(result.value, Err):
                raise _error(result.value.value, self.url)
            response = result.value.value
            status = response.status()
            with response.headers() as fields:
                headers = [(k, v.decode("latin-1")) for k, v in fields.entries()]
            incoming = response.consume()
            stream = incoming.stream()
        except BaseException:
            _drop(incoming, response, future)
            raise
        return Incoming(status, headers, self.url, (stream, incoming, response, future))

    def cancel(self):
        future, self._future = self._future, None
        _drop(future)


class Incoming:
    """A response: `status`, `headers` [(name, value)], and its body read
    with `read(n)` or `readinto(buffer)`, each wait bounded by `timeout`."""

    def __init__(self, status, headers, url, resources):
        self.status = status
        self.headers = headers
        self.url = url
        self.timeout = None
        self._resources = resources  # stream, body, response, future: children first
        self._pollable = None

    @property
    def closed(self):
        return self._resources is None

    def read(self, n=_READ):
        """Up to `n` bytes, b"" at the end."""
        if self._resources is None:
            return b""
        stream = self._resources[0]
        while True:
            try:
                data = stream.read(n)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    self.close()
                    return b""
                self.close()
                raise HttpError("protocol", f"{self.url}: reading the response failed") from None
            if data:
                return data
            self._pollable = self._pollable or stream.subscribe()
            if not _wait(self._pollable, self.timeout):
                self.close()
                raise HttpError("timeout", f"{self.url}: no data for {self.timeout:g} s", phase="read")

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read_all(self):
        chunks = []
        while chunk := self.read(_READ):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self):
        resources, self._resources = self._resources, None
        if resources is not None:
            pollable, self._pollable = self._pollable, None
            _drop(pollable, *resources)

    def __del__(self):
        self.close()
