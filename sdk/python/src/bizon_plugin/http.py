"""HTTP requests from a plugin, over wasi:http: the host makes the connection,
only to what the pipeline's `allow.hosts` grants, and never follows a
redirect. Python's own `urllib`/`http.client` need sockets the host refuses
for HTTP; use this instead.

    from bizon_plugin import http
    response = http.post(url, body, headers={"content-type": "application/json"})
    response.raise_for_status()

Failures raise `HttpError`; raising it out of `write_records` is retryable
for connection errors, timeouts, 408, 429 and 5xx, fatal otherwise (a refused
host, a bad URL, another 4xx), so the host retries what can succeed.
"""

import json as _json
from urllib.parse import urlsplit

from .destination import Retryable

try:  # inside the component; componentize-py bundles what is imported at build time
    from componentize_py_types import Err
    from wit_world.imports import outgoing_handler, streams
    from wit_world.imports import wasi_http_types as t
except ImportError:  # plain CPython (bizon-plugin test): no wasi:http
    outgoing_handler = None

__all__ = ["HttpError", "Response", "request", "get", "post"]

_CHUNK = 4096  # what wasi:io lets one blocking write carry


class HttpError(Exception):
    """`kind` is "denied" (allow.hosts), "request" (bad URL or header),
    "connect", "timeout", "status" (raise_for_status) or "protocol"."""

    def __init__(self, kind, message, status=None):
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def retryable(self):
        if self.kind in ("connect", "timeout"):
            return True
        return self.kind == "status" and (self.status in (408, 429) or self.status >= 500)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        """The first value of a header (names are case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return _json.loads(self.body)

    def raise_for_status(self):
        """HttpError("status") for 4xx and 5xx; as Retryable for 408, 429, 5xx."""
        if self.status >= 400:
            error = HttpError("status", f"HTTP {self.status}: {self.text()[:200]}", self.status)
            if error.retryable:
                raise Retryable(str(error)) from error
            raise error
        return self


def get(url, headers=None):
    return request("GET", url, headers=headers)


def post(url, body=b"", headers=None):
    return request("POST", url, body, headers)


def request(method, url, body=b"", headers=None):
    """Sends one request and reads the whole response. A connection error or
    timeout raises Retryable (the host retries the batch); a refusal by the
    host or a bad request raises HttpError."""
    try:
        return _send(method, url, body, headers or {})
    except HttpError as e:
        if e.retryable:
            raise Retryable(str(e)) from e
        raise


def _send(method, url, body, headers):
    if outgoing_handler is None:
        raise HttpError("request", "bizon_plugin.http works inside the component only; in tests, replace http.request")
    parts = urlsplit(url)
    schemes = {"http": t.Scheme_Http(), "https": t.Scheme_Https()}
    if parts.scheme not in schemes or not parts.netloc:
        raise HttpError("request", f"not an http(s) URL: {url!r}")
    if isinstance(body, str):
        body = body.encode("utf-8")
    if (body or method.upper() in ("POST", "PUT", "PATCH")) and not any(k.lower() == "content-length" for k in headers):
        # The body is known whole: say its length rather than stream it chunked.
        headers = {**headers, "content-length": str(len(body))}
    try:
        fields = t.Fields.from_list([(k, v.encode("utf-8") if isinstance(v, str) else v) for k, v in headers.items()])
    except Err as e:
        raise HttpError("request", f"bad header: {e.value}") from None
    outgoing = t.OutgoingRequest(fields)
    methods = {
        "GET": t.Method_Get(), "HEAD": t.Method_Head(), "POST": t.Method_Post(), "PUT": t.Method_Put(),
        "DELETE": t.Method_Delete(), "PATCH": t.Method_Patch(), "OPTIONS": t.Method_Options(),
    }
    outgoing.set_method(methods.get(method.upper()) or t.Method_Other(method))
    outgoing.set_scheme(schemes[parts.scheme])
    outgoing.set_authority(parts.netloc)
    outgoing.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    outgoing_body = outgoing.body()
    try:
        future = outgoing_handler.handle(outgoing, None)
    except Err as e:
        outgoing_body.__exit__(None, None, None)
        raise _error(e.value, url) from None
    if body:
        stream = outgoing_body.write()
        for start in range(0, len(body), _CHUNK):
            try:
                stream.blocking_write_and_flush(body[start : start + _CHUNK])
            except Err:
                break  # the request failed; the response says why
        stream.__exit__(None, None, None)
    try:
        t.OutgoingBody.finish(outgoing_body, None)
    except Err:
        pass  # a body cut short because the request failed (the host refused it): the response says why

    # Resources are dropped children first (stream, body, headers, response,
    # future): wasi:http traps on a parent dropped before its children, which
    # Python's garbage collector would otherwise do in any order.
    try:
        with future.subscribe() as pollable:
            pollable.block()
        result = future.get()  # None, Err(None), Ok(Err(error-code)) or Ok(Ok(response))
        if result is None or isinstance(result, Err):
            raise HttpError("protocol", f"{url}: no response")
        if isinstance(result.value, Err):
            raise _error(result.value.value, url)
        with result.value.value as response:
            status = response.status()
            with response.headers() as fields:
                response_headers = [(k, v.decode("utf-8", errors="replace")) for k, v in fields.entries()]
            with response.consume() as incoming, incoming.stream() as stream:
                chunks = _read_all(stream, url)
    finally:
        future.__exit__(None, None, None)
    return Response(status, response_headers, b"".join(chunks))


def _read_all(stream, url):
    chunks = []
    while True:
        try:
            chunks.append(stream.blocking_read(65536))
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                return chunks
            raise HttpError("protocol", f"{url}: reading the response failed") from None


def _error(code, url):
    name = type(code).__name__.removeprefix("ErrorCode_")
    detail = getattr(code, "value", None)
    if isinstance(code, t.ErrorCode_InternalError) and detail and detail.startswith("egress denied"):
        return HttpError("denied", f"{url}: {detail}")
    if name in ("ConnectionTimeout", "ConnectionReadTimeout", "ConnectionWriteTimeout", "HttpResponseTimeout", "DnsTimeout"):
        return HttpError("timeout", f"{url}: {name}")
    if name.startswith(("Connection", "Dns", "Destination", "Tls")):
        return HttpError("connect", f"{url}: {name}" + (f" ({detail})" if detail else ""))
    if name.startswith("HttpRequest"):
        return HttpError("request", f"{url}: {name}")
    return HttpError("protocol", f"{url}: {name}" + (f" ({detail})" if detail else ""))
