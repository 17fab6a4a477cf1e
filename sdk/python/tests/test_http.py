import pytest

from bizon_plugin import Retryable, http


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_statuses_that_can_pass_are_retryable(status):
    with pytest.raises(Retryable, match=f"HTTP {status}"):
        http.Response(status, [], b"later").raise_for_status()


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_client_errors_are_fatal(status):
    with pytest.raises(http.HttpError) as e:
        http.Response(status, [], b"no").raise_for_status()
    assert e.value.kind == "status" and e.value.status == status and not e.value.retryable


def test_a_response_reads_headers_case_insensitively_and_json():
    r = http.Response(200, [("Content-Type", "application/json")], b'{"ok": true}')
    assert r.raise_for_status() is r
    assert r.header("content-type") == "application/json" and r.header("x") is None
    assert r.json() == {"ok": True} and r.text() == '{"ok": true}'


def test_connection_errors_are_retryable_and_refusals_are_not():
    assert http.HttpError("connect", "refused").retryable
    assert http.HttpError("timeout", "slow").retryable
    assert not http.HttpError("denied", "egress denied").retryable


def test_outside_the_component_a_request_says_so():
    with pytest.raises(http.HttpError, match="inside the component only"):
        http.get("https://example.com/")
