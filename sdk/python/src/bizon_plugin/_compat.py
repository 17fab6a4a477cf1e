"""`requests`, `urllib3` and `urllib.request` inside the component, over
wasi:http (the host's egress chokepoint) instead of sockets, which a
component has only for raw TCP rules: the approach of pyodide-http, at the
layer each library lets a platform replace.

- urllib3 2.x: its connection classes (`HTTPConnectionPool.ConnectionCls`,
  the extension point urllib3's own Emscripten support uses). Everything
  above them is urllib3's own: pools, `Retry` (with Retry-After), timeouts,
  redirects (each hop a new request the host checks), content decoding.
- requests: rides on urllib3; only its CA-bundle check is replaced (the host
  verifies TLS with its own roots; `verify` cannot turn that off).
- urllib.request: the http and https handlers of every opener.
- httpx: the default transport of `httpx.Client` (httpx's own HTTPTransport
  needs the ssl module, which the component's CPython does not have).

`building()` runs around the import of the plugin module while
componentize-py snapshots it: any socket created then would leave wasi-libc
holding a network handle that does not exist in the instances made from the
snapshot (urllib3's import probes IPv6 by binding a socket), and the first
name lookup at run time would trap on it.
"""

import contextlib
import http.client
import io
import socket
import sys

from . import _wasi_http
from ._wasi_http import HttpError

__all__ = ["building", "install"]


@contextlib.contextmanager
def building():
    """No socket can be created, nor a name looked up, inside the block."""

    why = "no network while the plugin is built (bizon-plugin build imports it)"

    class NoSocket(socket.socket):  # a class still, for code that subclasses socket.socket
        def __init__(self, *_args, **_kwargs):
            raise OSError(why)

    def refuse(*_args, **_kwargs):
        raise OSError(why)

    def refuse_lookup(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_FAIL, why)

    saved = {name: getattr(socket, name) for name in ("socket", "create_connection", "getaddrinfo", "gethostbyname")}
    socket.socket = NoSocket
    socket.create_connection = refuse
    socket.getaddrinfo = refuse_lookup
    socket.gethostbyname = refuse_lookup
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(socket, name, value)


def install():
    """Routes the HTTP libraries the plugin imported through wasi:http."""
    if "urllib3" in sys.modules:
        _install_urllib3()
    if "requests" in sys.modules:
        _install_requests()
    if "urllib.request" in sys.modules:
        _install_urllib()
    if "httpx" in sys.modules:
        _install_httpx()


# --- the body of a response as a file, for urllib3 and urllib ---------------


class _Body(io.RawIOBase):
    """An `Incoming` response body as a raw file. A timeout between two
    pieces raises TimeoutError and a broken body OSError: what the libraries
    expect of a socket."""

    def __init__(self, incoming):
        super().__init__()
        self._incoming = incoming

    def readable(self):
        return True

    def readinto(self, buffer):
        try:
            return self._incoming.readinto(buffer)
        except HttpError as e:
            if e.kind == "timeout":
                raise TimeoutError(str(e)) from None
            raise OSError(str(e)) from None

    def close(self):
        self._incoming.close()
        super().close()


def _message(headers):
    message = http.client.HTTPMessage()
    for name, value in headers:
        message[name] = value
    return message


def _reason(status):
    return http.client.responses.get(status, "")


# --- urllib3 -----------------------------------------------------------------


def _install_urllib3():
    import urllib3
    import urllib3.connection
    from urllib3 import connectionpool, exceptions
    from urllib3.response import HTTPResponse
    from urllib3.util import SKIP_HEADER
    from urllib3.util.request import body_to_chunks
    from urllib3.util.timeout import _DEFAULT_TIMEOUT

    if not hasattr(connectionpool.HTTPConnectionPool, "ConnectionCls") or int(urllib3.__version__.split(".")[0]) < 2:
        raise ImportError(
            f"urllib3 {urllib3.__version__} cannot run inside a plugin: bizon-plugin needs urllib3 2 or newer "
            "(pip install 'urllib3>=2')"
        )

    class _Original:
        """What urllib3 and requests read of http.client's response: the
        headers as a message (cookies), whether it is closed."""

        def __init__(self, method, headers, body):
            self.msg = _message(headers)
            self._method = method  # urllib3 reads it to tell a response to HEAD
            self._body = body

        def isclosed(self):
            return self._body.closed

        def close(self):
            self._body.close()

    class WasiHTTPConnection:
        """One urllib3 connection, each request sent by the host over
        wasi:http. The host connects (and for https verifies the
        certificate) per request; there is no socket here."""

        default_port = 80
        default_socket_options = []
        scheme = "http"
        is_verified = False
        proxy_is_verified = None

        def __init__(self, host, port=None, *, timeout=_DEFAULT_TIMEOUT, source_address=None, blocksize=16384,
                     socket_options=None, proxy=None, proxy_config=None, **_tls):
            self.host = host
            self.port = port or self.default_port
            self.timeout = timeout if isinstance(timeout, (int, float)) else None
            self.blocksize = blocksize
            self.source_address = source_address
            self.socket_options = socket_options
            self.proxy = proxy
            self.proxy_config = proxy_config
            self.cert_file = _tls.get("cert_file")
            self._pending = None
            self._options = None
            self._connect_timeout = None
            self._incoming = None
            self._closed = True

        def __repr__(self):
            # urllib3 puts the connection in its errors' messages.
            return f"<wasi:http connection to {self.scheme}://{self.host}:{self.port}>"

        def set_tunnel(self, host, port=None, headers=None, scheme="http"):
            raise exceptions.ProxyError(
                "a proxy cannot be used from a plugin: the host makes the connection itself (allow.hosts)", None
            )

        def connect(self):
            pass

        def request(self, method, url, body=None, headers=None, *, chunked=False, preload_content=True,
                    decode_content=True, enforce_content_length=True):
            if self.proxy is not None:
                self.set_tunnel(self.host)
            if self.cert_file:
                raise exceptions.SSLError(
                    "client certificates cannot be used from a plugin: the host makes the TLS connection"
                )
            self.close()
            self._closed = False
            if url.startswith("/"):
                host = f"[{self.host}]" if ":" in self.host else self.host
                url = f"{self.scheme}://{host}:{self.port}{url}"
            given = dict(headers or {})
            names = {k.lower() for k in given}
            # SKIP_HEADER: "do not send the default one" (urllib3's own request()).
            headers = {k: v for k, v in given.items() if v != SKIP_HEADER}
            chunks = body_to_chunks(body, method=method, blocksize=self.blocksize)
            if not chunked and "content-length" not in names and chunks.content_length is not None:
                headers["Content-Length"] = str(chunks.content_length)
            if "user-agent" not in names:
                headers["User-Agent"] = f"python-urllib3/{urllib3.__version__}"
            self._options = (method, url, preload_content, decode_content, enforce_content_length)
            self._connect_timeout = self.timeout
            try:
                self._pending = _wasi_http.start(method, url, headers.items(), chunks.chunks, self.timeout)
            except HttpError as e:
                raise self._error(e) from None

        def getresponse(self):
            if self._pending is None:
                raise http.client.ResponseNotReady()
            pending, self._pending = self._pending, None
            method, url, preload_content, decode_content, enforce_content_length = self._options
            # The host connects while this waits: both timeouts count.
            waits = [t for t in (self._connect_timeout, self.timeout) if t is not None]
            try:
                incoming = pending.wait(sum(waits) if waits else None)
            except HttpError as e:
                if e.kind == "timeout" and e.phase == "read":
                    raise TimeoutError(str(e)) from None  # urllib3 makes it a ReadTimeoutError
                raise self._error(e) from None
            incoming.timeout = self.timeout
            self._incoming = incoming
            body = io.BufferedReader(_Body(incoming), 65536)
            return HTTPResponse(
                body=body,
                headers=incoming.headers,
                status=incoming.status,
                version=11,
                version_string="HTTP/1.1",
                reason=_reason(incoming.status),
                preload_content=preload_content,
                decode_content=decode_content,
                original_response=_Original(method, incoming.headers, body),
                enforce_content_length=enforce_content_length,
                request_method=method,
                request_url=url,
            )

        def _error(self, error):
            if error.kind == "timeout":
                return exceptions.ConnectTimeoutError(self, f"{error} (connect timeout={self._connect_timeout})")
            if error.kind in ("denied", "connect"):
                return exceptions.NewConnectionError(self, f"Failed to establish a new connection: {error}")
            if error.kind == "tls":
                return exceptions.SSLError(f"the host's TLS connection failed: {error}")
            if error.kind == "request":
                return ValueError(str(error))  # a bad URL or header: not worth a retry
            return exceptions.ProtocolError(str(error), error)

        def close(self):
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.cancel()
            incoming, self._incoming = self._incoming, None
            if incoming is not None:
                incoming.close()
            self._closed = True

        @property
        def is_closed(self):
            return self._closed

        @property
        def is_connected(self):
            return not self._closed

        @property
        def has_connected_to_proxy(self):
            return False

    class WasiHTTPSConnection(WasiHTTPConnection):
        default_port = 443
        scheme = "https"
        # The host verifies every certificate against the system's roots.
        is_verified = True
        cert_reqs = "CERT_REQUIRED"
        ca_certs = ca_cert_dir = ca_cert_data = None
        assert_hostname = assert_fingerprint = ssl_context = None
        ssl_version = ssl_minimum_version = ssl_maximum_version = None
        key_file = key_password = None

        def set_cert(self, key_file=None, cert_file=None, **_ignored):
            self.cert_file = cert_file

    connectionpool.HTTPConnectionPool.ConnectionCls = WasiHTTPConnection
    connectionpool.HTTPSConnectionPool.ConnectionCls = WasiHTTPSConnection
    urllib3.connection.HTTPConnection = WasiHTTPConnection
    urllib3.connection.HTTPSConnection = WasiHTTPSConnection


# --- requests ------------------------------------------------------------------


def _install_requests():
    import requests.adapters
    import requests.exceptions

    def cert_verify(self, conn, url, verify, cert):
        # The host verifies TLS with the system's roots: there is no bundle
        # to find here, and `verify=False` does not turn verification off.
        if cert:
            raise requests.exceptions.SSLError(
                "client certificates (cert=) cannot be used from a plugin: the host makes the TLS connection"
            )

    requests.adapters.HTTPAdapter.cert_verify = cert_verify


# --- urllib.request --------------------------------------------------------------


def _install_urllib():
    import urllib.error
    import urllib.request
    from urllib.response import addinfourl

    def wasi_open(self, req):
        headers = dict(req.unredirected_hdrs)
        headers.update((k, v) for k, v in req.headers.items() if k not in headers)
        timeout = req.timeout if isinstance(req.timeout, (int, float)) else None
        try:
            incoming = _wasi_http.start(req.get_method(), req.full_url, headers.items(), req.data, timeout).wait(timeout)
        except HttpError as e:
            raise urllib.error.URLError(e) from None
        incoming.timeout = timeout
        response = addinfourl(io.BufferedReader(_Body(incoming), 65536), _message(incoming.headers), req.full_url,
                              incoming.status)
        response.msg = response.reason = _reason(incoming.status)
        return response

    class HTTPSHandler(urllib.request.AbstractHTTPHandler):
        """urlopen(context=...) builds one; the host makes the TLS
        connection, so the context is not used."""

        def __init__(self, debuglevel=None, context=None, check_hostname=None):
            super().__init__(debuglevel)

        https_open = wasi_open
        https_request = urllib.request.AbstractHTTPHandler.do_request_

    # Every opener has an HTTPHandler: it answers for https too (CPython
    # without the ssl module, as in the component, has no HTTPSHandler).
    urllib.request.HTTPHandler.http_open = wasi_open
    urllib.request.HTTPHandler.https_open = wasi_open
    urllib.request.HTTPHandler.https_request = urllib.request.AbstractHTTPHandler.do_request_
    urllib.request.HTTPSHandler = HTTPSHandler
    urllib.request.install_opener(None)


# --- httpx ---------------------------------------------------------------------


def _install_httpx():
    import httpx
    import httpx._client

    class _Stream(httpx.SyncByteStream):
        def __init__(self, incoming, request):
            self._incoming = incoming
            self._request = request

        def __iter__(self):
            while True:
                try:
                    chunk = self._incoming.read()
                except HttpError as e:
                    if e.kind == "timeout":
                        raise httpx.ReadTimeout(str(e), request=self._request) from None
                    raise httpx.RemoteProtocolError(str(e), request=self._request) from None
                if not chunk:
                    return
                yield chunk

        def close(self):
            self._incoming.close()

    class WasiTransport(httpx.BaseTransport):
        """httpx's transport over wasi:http: the host connects (and verifies
        TLS) per request; `verify`, `cert` and pool limits do not apply."""

        def __init__(self, *_args, proxy=None, **_kwargs):
            if proxy is not None:
                raise ValueError("a proxy cannot be used from a plugin: the host makes the connection itself")

        def handle_request(self, request):
            timeouts = request.extensions.get("timeout", {})
            connect, read = timeouts.get("connect"), timeouts.get("read")
            waits = [t for t in (connect, read) if t is not None]
            try:
                pending = _wasi_http.start(request.method, str(request.url), request.headers.raw, request.stream, read)
                incoming = pending.wait(sum(waits) if waits else None)
            except HttpError as e:
                if e.kind == "timeout":
                    raise (httpx.ConnectTimeout if e.phase == "connect" else httpx.ReadTimeout)(str(e), request=request)
                if e.kind in ("denied", "connect", "tls"):
                    raise httpx.ConnectError(str(e), request=request) from None
                if e.kind == "request":
                    raise httpx.UnsupportedProtocol(str(e), request=request) from None
                raise httpx.RemoteProtocolError(str(e), request=request) from None
            incoming.timeout = read
            return httpx.Response(
                incoming.status,
                headers=incoming.headers,
                stream=_Stream(incoming, request),
                request=request,
                extensions={"http_version": b"HTTP/1.1"},
            )

    httpx.HTTPTransport = WasiTransport
    httpx._client.HTTPTransport = WasiTransport
