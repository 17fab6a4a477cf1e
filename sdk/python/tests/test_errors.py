"""What the Runner makes of the HTTP libraries' exceptions out of
write_records: a passing failure is retryable (after what Retry-After
asks), a refusal by the host and a client error are fatal."""

import email.utils
import time
import urllib.error

import pytest
import requests
import urllib3

from bizon_plugin import Batch, Destination, Retryable, _errors
from bizon_plugin.destination import Runner


def outcome(raise_it, monkeypatch, slept=None):
    """What write_records comes to when it raises `raise_it()`."""
    monkeypatch.setattr(time, "sleep", lambda s: (slept if slept is not None else []).append(s))

    class Raises(Destination):
        def write_records(self, batch):
            raise raise_it()

    runner = Runner(Raises)
    runner.open({})
    return runner.write_records(Batch.from_columns({"source_data": ["{}"]}), "d", 0, 1)


def response(status, **headers):
    r = requests.models.Response()
    r.status_code = status
    r.url = "http://api.test/in"
    r.headers.update(headers)
    return r


def status_error(status, **headers):
    r = response(status, **headers)
    return lambda: requests.HTTPError(f"{status} Server Error for url: {r.url}", response=r)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_raise_for_status_on_a_passing_status_is_retried(status, monkeypatch):
    out = outcome(status_error(status), monkeypatch)
    assert out.kind == "retryable" and f"HTTPError: {status}" in out.value


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_raise_for_status_on_a_client_error_stops_the_run(status, monkeypatch):
    out = outcome(status_error(status), monkeypatch)
    assert out.kind == "fatal" and "Traceback" in out.value


def test_retry_after_is_waited_for_before_the_batch_goes_back(monkeypatch):
    slept = []
    out = outcome(status_error(429, **{"Retry-After": "2"}), monkeypatch, slept)
    assert slept == [2.0] and "waited 2 s, as Retry-After asked" in out.value


def test_a_long_retry_after_is_capped_and_says_so(monkeypatch):
    slept = []
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    out = outcome(lambda: urllib.error.HTTPError("http://x", 503, "busy", {"Retry-After": later}, None), monkeypatch, slept)
    assert out.kind == "retryable" and slept == [_errors.MAX_WAIT_S]
    assert "the host's backoff adds its own" in out.value


@pytest.mark.parametrize(
    "error",
    [
        lambda: requests.ConnectTimeout("connect timed out"),
        lambda: requests.ReadTimeout("read timed out"),
        lambda: requests.ConnectionError("Connection refused"),
        lambda: urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),
        lambda: urllib.error.URLError(TimeoutError("timed out")),
        lambda: TimeoutError("timed out"),
    ],
)
def test_timeouts_and_failed_connections_are_retried(error, monkeypatch):
    assert outcome(error, monkeypatch).kind == "retryable"


@pytest.mark.parametrize(
    "error",
    [
        lambda: requests.ConnectionError(
            "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded (Caused by NewConnectionError("
            "'Failed to establish a new connection: egress denied: http://127.0.0.1:9: no rule allows it'))"
        ),
        lambda: urllib.error.URLError("unknown url type: ftp"),
        lambda: requests.exceptions.SSLError("certificate verify failed"),
        lambda: requests.exceptions.InvalidURL("no host"),
    ],
)
def test_a_refused_host_and_bad_requests_stop_the_run(error, monkeypatch):
    assert outcome(error, monkeypatch).kind == "fatal"


def test_a_refusal_behind_a_chain_of_exceptions_is_still_a_refusal(monkeypatch):
    def chained():
        try:
            raise OSError("egress denied: https://api.test:443: no rule allows it")
        except OSError as e:
            try:
                raise requests.ConnectionError("Max retries exceeded") from e
            except requests.ConnectionError as outer:
                return outer

    assert outcome(chained, monkeypatch).kind == "fatal"


def test_retryable_with_after_waits_too(monkeypatch):
    slept = []
    out = outcome(lambda: Retryable("busy", after="1.5"), monkeypatch, slept)
    assert out.kind == "retryable" and slept == [1.5] and out.value.startswith("busy")


@pytest.mark.parametrize("value, expected", [("3", 3.0), (" 0 ", 0.0), ("soon", None), (None, None), (-4, 0.0)])
def test_retry_after_values(value, expected):
    assert _errors.seconds(value) == expected
