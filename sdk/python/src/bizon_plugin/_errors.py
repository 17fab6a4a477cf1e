"""Which exceptions out of `write_records` are worth a retry: the ones the
HTTP libraries raise for a passing failure (a timeout, a connection that
failed, 408, 429 or 5xx), with the wait a 429's or 503's `Retry-After`
asks. A host the pipeline does not grant is never retried: the grant will
not appear between two attempts."""

import email.utils
import sys
import time

# The longest Retry-After honoured inside the call: a third of the default
# 30 s call time limit (limits.call_timeout_ms). A longer ask waits this
# long, then the host's own backoff (`retry:`) adds its wait.
MAX_WAIT_S = 10.0

_RETRY_STATUS = frozenset((408, 429))


def retryable_status(status):
    return status in _RETRY_STATUS or 500 <= status <= 599


def seconds(after):
    """`after` as seconds: a number, or a Retry-After value (delta-seconds
    or an HTTP date); None when absent or unreadable."""
    if after is None or isinstance(after, bool):
        return None
    if isinstance(after, (int, float)):
        return max(0.0, float(after))
    text = str(after).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _denied(error):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if "egress denied" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _loaded(module, *names):
    """The classes `module.names` if the plugin imported that library."""
    found = sys.modules.get(module)
    if found is None:
        return ()
    return tuple(c for c in (getattr(found, n, None) for n in names) if isinstance(c, type))


def _retry_after(headers):
    if headers is None:
        return None
    return next((v for k, v in headers.items() if k.lower() == "retry-after"), None)


def retryable(error):
    """(message, after) when `error` is a passing failure, else None."""
    if _denied(error):
        return None
    message = f"{type(error).__module__}.{type(error).__qualname__}: {error}"
    # A response that came back with a status: retry 408, 429 and 5xx.
    for cls in _loaded("requests.exceptions", "HTTPError") + _loaded("httpx", "HTTPStatusError"):
        if isinstance(error, cls):
            response = error.response
            status = getattr(response, "status_code", None)
            if status is None or not retryable_status(status):
                return None
            return message, _retry_after(response.headers)
    for cls in _loaded("urllib.error", "HTTPError"):
        if isinstance(error, cls):
            return (message, _retry_after(error.headers)) if retryable_status(error.code) else None
    ours = _loaded("bizon_plugin._wasi_http", "HttpError")
    if ours and isinstance(error, ours):
        return (message, None) if error.retryable else None
    # urllib.request wraps what failed before a response (ours, or an OSError).
    urlerror = _loaded("urllib.error", "URLError")
    if urlerror and isinstance(error, urlerror):
        reason = error.reason
        passing = reason.retryable if ours and isinstance(reason, ours) else isinstance(reason, OSError)
        return (message, None) if passing else None
    # No response: a timeout or a connection that failed. TLS errors are not
    # passing (a certificate will not become valid between two attempts).
    fatal = _loaded("requests.exceptions", "SSLError", "InvalidURL", "InvalidHeader", "InvalidSchema", "MissingSchema")
    fatal += _loaded("urllib3.exceptions", "SSLError", "LocationParseError")
    if fatal and isinstance(error, fatal):
        return None
    passing = (TimeoutError, ConnectionError)
    passing += _loaded("requests.exceptions", "ConnectionError", "Timeout", "ChunkedEncodingError", "RetryError")
    passing += _loaded("urllib3.exceptions", "MaxRetryError", "TimeoutError", "ProtocolError", "NewConnectionError")
    passing += _loaded("httpx", "TransportError")
    if isinstance(error, passing):
        return message, None
    return None


def wait(after):
    """Sleeps for what `after` asks (at most MAX_WAIT_S); a note for the
    message, or ""."""
    wanted = seconds(after)
    if not wanted:
        return ""
    slept = min(wanted, MAX_WAIT_S)
    time.sleep(slept)
    if slept < wanted:
        return f" (Retry-After asked {wanted:g} s; waited {slept:g} s, the host's backoff adds its own)"
    return f" (waited {slept:g} s, as Retry-After asked)"
