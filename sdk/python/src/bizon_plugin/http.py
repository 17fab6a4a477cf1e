"""HTTP requests from a plugin, over wasi:http: the host makes the connection,
only to what the pipeline's `allow.hosts` grants, and never follows a
redirect. `requests`, `urllib3` and `urllib.request` work inside a plugin
too, over the same path (docs/sdk-python.md); this is the small client with
no dependency.

    from bizon_plugin import http
    response = http.post(url, body, headers={"content-type": "application/json"})
    response.raise_for_status()

Failures raise `HttpError`; raising it out of `write_records` is retryable
for connection errors, timeouts, 408, 429 and 5xx, fatal otherwise (a refused
host, a bad URL, another 4xx), so the host retries what can succeed.
"""

import json as _json

from . import _wasi_http
from ._wasi_http import HttpError
from .destination import Retryable

__all__ = ["HttpError", "Response", "request", "get", "post"]


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
        """HttpError("status") for 4xx and 5xx; as Retryable for 408, 429, 5xx
        (waiting first for what a 429's or 503's Retry-After asks)."""
        if self.status >= 400:
            error = HttpError("status", f"HTTP {self.status}: {self.text()[:200]}", self.status)
            if error.retryable:
                raise Retryable(str(error), after=self.header("retry-after")) from error
            raise error
        return self


def get(url, headers=None, timeout=None):
    return request("GET", url, headers=headers, timeout=timeout)


def post(url, body=b"", headers=None, timeout=None):
    return request("POST", url, body, headers, timeout)


def request(method, url, body=b"", headers=None, timeout=None):
    """Sends one request and reads the whole response. A connection error or
    a timeout (`timeout` seconds for the response, and then between two
    pieces of its body) raises Retryable (the host retries the batch); a
    refusal by the host or a bad request raises HttpError."""
    if not _wasi_http.available():
        raise HttpError("request", "bizon_plugin.http works inside the component only; in tests, replace http.request")
    try:
        incoming = _wasi_http.start(method, url, (headers or {}).items(), body, timeout).wait(timeout)
        incoming.timeout = timeout
        return Response(incoming.status, incoming.headers, incoming.read_all())
    except HttpError as e:
        if e.retryable:
            raise Retryable(str(e)) from e
        raise
