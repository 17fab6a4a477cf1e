import types

import pytest

from bizon_plugin import Batch, BatchSource, Destination, OffsetRange, Rejected, Retryable
from bizon_plugin.destination import Runner, find_destination


def run(write, rows=3):
    class D(Destination):
        def write_records(self, batch):
            return write(batch)

    runner = Runner(D)
    assert runner.open({}).kind == "ok"
    batch = Batch.from_columns({"source_data": ["{}"] * rows}, "t", 0)
    return runner.write_records(batch, "t", 0, rows)


@pytest.mark.parametrize("result", [None, True, (True, None), 3])
def test_success_returns_the_row_count(result):
    out = run(lambda b: result)
    assert (out.kind, out.value) == ("ok", 3)


def test_bizon_false_tuple_is_fatal_with_its_error():
    out = run(lambda b: (False, "table missing"))
    assert out.kind == "fatal" and "table missing" in out.value


def test_retryable_is_retryable():
    def write(b):
        raise Retryable("busy, try later")

    out = run(write)
    assert (out.kind, out.value) == ("retryable", "busy, try later")


@pytest.mark.parametrize(
    "rows, expected",
    [
        ({1: "bad email"}, [(1, "bad email")]),
        ([(0, "x"), (2, "y")], [(0, "x"), (2, "y")]),
        ([2], [(2, "rejected")]),
    ],
)
def test_rejected_rows_keep_their_index_and_reason(rows, expected):
    def write(b):
        raise Rejected(rows)

    out = run(write)
    assert (out.kind, out.value) == ("rejected", expected)


def test_any_other_exception_is_fatal_with_the_traceback():
    def write(b):
        return {}["missing_key"]

    out = run(write)
    assert out.kind == "fatal"
    assert out.value.startswith("write_records: Traceback (most recent call last):")
    assert "KeyError: 'missing_key'" in out.value
    assert "bizon_plugin/destination.py" not in out.value, "the SDK frame is left out"
    assert "test_destination.py" in out.value and 'return {}["missing_key"]' in out.value


def test_system_exit_does_not_escape():
    def write(b):
        raise SystemExit(3)

    assert run(write).kind == "fatal"


def test_a_strange_return_value_is_fatal_and_says_what_to_return():
    out = run(lambda b: "yes")
    assert out.kind == "fatal" and "return None" in out.value


def test_open_failure_and_calls_before_open():
    class D(Destination):
        def open(self, config):
            raise ValueError(f"no dir in {config}")

    runner = Runner(D)
    out = runner.open({"x": 1})
    assert out.kind == "fatal" and "ValueError: no dir in {'x': 1}" in out.value
    assert "before open" in runner.write_records(b"", "t", 0, 0).value


def test_check_connection_and_finalize_false_fail():
    class D(Destination):
        def check_connection(self):
            return False

        def finalize(self):
            return False

        def write_records(self, batch):
            pass

    runner = Runner(D)
    runner.open({})
    assert runner.check_connection().kind == "fatal"
    assert runner.finalize().value == "finalize returned False"


def test_open_keeps_the_config_and_name_defaults_to_the_class():
    class MyDest(Destination):
        pass

    runner = Runner(MyDest)
    runner.open({"a": 1})
    assert runner.destination.config == {"a": 1} and runner.plugin_name == "MyDest"
    assert "does not define write_records" in runner.write_records(Batch.from_columns({}), "t", 0, 0).value


def module_with(*classes):
    m = types.ModuleType("m")
    for c in classes:
        c.__module__ = "m"
        setattr(m, c.__name__, c)
    m.Destination = Destination  # imported names do not count
    return m


def test_find_destination_wants_exactly_one_subclass():
    class A(Destination):
        pass

    class B(Destination):
        pass

    assert find_destination(module_with(A)) is A
    with pytest.raises(TypeError, match="found A, B"):
        find_destination(module_with(A, B))
    with pytest.raises(TypeError, match="found none"):
        find_destination(module_with())


def test_a_batch_carries_its_source_when_the_host_gives_one():
    seen = []

    class D(Destination):
        def write_records(self, batch):
            seen.append(batch.source)

    runner = Runner(D)
    runner.open({})
    source = BatchSource("ab" * 16, [OffsetRange("orders", 2, 40, 49)])
    assert runner.write_records(Batch.from_columns({"source_data": ["{}"]}), "t", 0, 1, source).kind == "ok"
    assert runner.write_records(Batch.from_columns({"source_data": ["{}"]}), "t", 1, 1).kind == "ok"
    assert seen[0].batch_id == "ab" * 16 and seen[0].ranges == [OffsetRange("orders", 2, 40, 49)]
    assert seen[1] is None
