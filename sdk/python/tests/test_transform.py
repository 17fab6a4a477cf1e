import json
import textwrap

import pytest

from bizon_plugin import Record, Transform
from bizon_plugin.cli import main
from bizon_plugin.transform import TransformRunner


def batch(*records):
    """NDJSON as the host sends it: (source_record_id, data[, destination_id])."""
    lines = []
    for i, (rid, data, *dest) in enumerate(records):
        line = {"source_record_id": rid, "source_timestamp": 1000 + i, "destination_id": dest[0] if dest else None, "source_data": data}
        lines.append(json.dumps(line))
    return ("\n".join(lines) + "\n").encode()


def run(cls, data, config=None):
    runner = TransformRunner(cls)
    assert runner.open(config or {}) is None
    out, errors = runner.run(data)
    return [json.loads(line) for line in out.decode().splitlines()], errors


class Split(Transform):
    def transform(self, record):
        n = record.data["n"]
        if n == "bad":
            raise ValueError("n is bad")
        return [record.replace(data={**record.data, "i": i}) for i in range(n)]


def test_records_may_be_dropped_split_or_refused_one_by_one():
    out, errors = run(Split, batch(("a", {"n": 2}), ("b", {"n": 0}), ("c", {"n": "bad"}), ("d", {"n": 1})))
    assert out == [
        {"row": 0, "source_data": {"n": 2, "i": 0}},
        {"row": 0, "source_data": {"n": 2, "i": 1}},
        {"row": 3, "source_data": {"n": 1, "i": 0}},
    ]
    assert [row for row, _ in errors] == [2]
    reason = errors[0][1]
    # The author's frame and the exception; nothing of the SDK's own frames.
    assert "in transform" in reason and reason.endswith("ValueError: n is bad") and "bizon_plugin" not in reason


class Reshape(Transform):
    def open(self, config):
        self.key = config["key"]

    def transform(self, record):
        if record.data.get("move"):
            record.destination_id = "elsewhere"
            record.source_record_id += "-moved"
            return record
        if record.data.get("new"):
            return Record({"made": True}, "fresh", 42)
        return {self.key: record.data["v"]}


def test_a_dict_is_the_new_data_and_only_changed_metadata_is_sent():
    data = batch(("a", {"v": "é"}, "d"), ("b", {"move": 1}, "d"), ("c", {"new": 1}))
    out, errors = run(Reshape, data, {"key": "k"})
    assert errors == []
    assert out == [
        {"row": 0, "source_data": {"k": "é"}},
        {"row": 1, "source_record_id": "b-moved", "destination_id": "elsewhere", "source_data": {"move": 1}},
        {"source_record_id": "fresh", "source_timestamp": 42, "destination_id": None, "source_data": {"made": True}},
    ]
    # Bizon's json.dumps: ASCII escapes, default separators.
    assert TransformRunner(Reshape).open({}) is not None  # no "key": open fails
    runner = TransformRunner(Reshape)
    runner.open({"key": "k"})
    text, _ = runner.run(batch(("a", {"v": "é"})))
    assert text == b'{"row":0,"source_data":{"k": "\\u00e9"}}'


class Wrong(Transform):
    def transform(self, record):
        return {"none": None, "nan": {"x": float("nan")}, "int": 3, "ts": record.replace(source_timestamp="x")}[record.data["k"]]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("none", "transform returned None; return the record"),
        ("nan", "data is not JSON: Out of range float values"),
        ("int", "transform returned int"),
        ("ts", "source_timestamp must be an int"),
    ],
)
def test_what_cannot_become_a_record_fails_that_record_with_why(kind, message):
    out, errors = run(Wrong, batch(("a", {"k": kind}), ("b", {"k": "none"})))
    assert out == []
    assert [row for row, _ in errors] == [0, 1]
    assert errors[0][1].startswith(message), errors[0][1]


def test_an_empty_batch_is_an_empty_batch():
    assert run(Split, b"") == ([], [])


FLATTEN = """
    from bizon_plugin import Transform

    class Flatten(Transform):
        def transform(self, record):
            if record.data.get("value") is None:
                raise KeyError("value")
            return {**record.data["value"], "__kafka_offset": record.data["offset"]}
"""


def test_the_cli_runs_a_transform_module_on_records(tmp_path, capsys):
    app = tmp_path / "flatten.py"
    app.write_text(textwrap.dedent(FLATTEN))
    records = tmp_path / "in.jsonl"
    records.write_text('{"offset": 3, "value": {"a": 1}}\n{"offset": 4}\n')
    code = main(["test", str(app), "--records", str(records)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "PASS  open" in out
    assert 'PASS  record 0: 1 record(s) out\n        {"a": 1, "__kafka_offset": 3}' in out
    assert "FAIL  record 1: Traceback" in out and "KeyError: 'value'" in out


def test_a_module_defines_one_destination_or_one_transform(tmp_path, capsys):
    app = tmp_path / "both.py"
    app.write_text("from bizon_plugin import Destination, Transform\nclass D(Destination): pass\nclass T(Transform): pass\n")
    assert main(["build", str(app), "--no-check"]) == 1
    err = capsys.readouterr().err
    assert "exactly one subclass of bizon_plugin.Destination or bizon_plugin.Transform" in err
    assert "D (line 2), T (line 3)" in err
