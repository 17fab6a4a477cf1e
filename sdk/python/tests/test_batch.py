import json

import pytest

from bizon_plugin import Batch


def make():
    return Batch.from_columns(
        {"source_record_id": ["a", "b"], "source_data": ['{"x": 1}', '{"x": [2, 3]}']}, "t", 7
    )


def test_rows_read_columns_by_attribute_and_by_name():
    rows = list(make().rows())
    assert [r.source_record_id for r in rows] == ["a", "b"]
    assert rows[1]["source_data"] == '{"x": [2, 3]}'
    assert rows[0].get("missing", "d") == "d"


def test_data_is_parsed_only_when_read(monkeypatch):
    calls = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda s: calls.append(s) or real(s))
    rows = list(make().rows())
    assert [r.source_record_id for r in rows] and calls == []
    assert rows[1].data == {"x": [2, 3]}
    assert rows[1].data is rows[1].data and len(calls) == 1


def test_polars_style_iter_rows_and_height():
    b = make()
    assert b.height == 2 and b.sequence == 7 and b.destination_id == "t"
    assert list(b.iter_rows(named=True))[0] == {"source_record_id": "a", "source_data": '{"x": 1}'}
    assert list(b.iter_rows()) == [("a", '{"x": 1}'), ("b", '{"x": [2, 3]}')]


def test_a_missing_column_names_the_ones_there_are():
    with pytest.raises(KeyError, match="source_record_id"):
        make().column("nope")
    with pytest.raises(AttributeError, match="nope"):
        next(make().rows()).nope
