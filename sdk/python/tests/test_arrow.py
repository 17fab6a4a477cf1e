import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from bizon_plugin import ArrowError, Batch
from bizon_plugin.arrow import read_stream

FIXTURES = Path(__file__).parent / "fixtures"
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=UTC)


def batch(name):
    return Batch.from_arrow((FIXTURES / name).read_bytes(), "users", 4)


def test_bizon_layout_columns_and_types():
    b = batch("bizon.arrow")
    assert b.columns == [
        "bizon_id", "bizon_extracted_at", "bizon_loaded_at", "source_record_id",
        "source_timestamp", "source_data", "destination_id",
    ]
    assert [f.type for f in b.fields][:2] == ["utf8", "timestamp[us, UTC]"]
    assert len(b) == b.height == 3
    assert b.column("source_record_id") == ["0", "1", "2"]
    assert b.column("destination_id") == ["users"] * 3


def test_non_ascii_text_is_cut_at_byte_offsets():
    data = batch("bizon.arrow").column("source_data")
    assert data[1] == '{"text":"Zoë 🚀 日本語"}'
    assert data[2] == '{"q":"say \\"hi\\"\\n\\ttab \\\\"}'


def test_timestamps_are_aware_utc_datetimes_also_before_the_epoch():
    ts = batch("bizon.arrow").column("source_timestamp")
    assert ts[0] == T0 and ts[0].tzinfo is not None
    assert list(ts) == [T0, T0 + dt.timedelta(seconds=1), dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)]
    assert ts.micros[2] == -1_000_000


def test_several_record_batches_read_as_one():
    b = batch("bizon_two_batches.arrow")
    assert len(b) == 5
    assert b.column("source_data") == [f'{{"i":{i}}}' for i in range(5)]
    assert [r.data["i"] for r in b.rows()] == [0, 1, 2, 3, 4]
    assert len(b.column("bizon_loaded_at")) == 5


def test_an_empty_batch_has_columns_and_no_rows():
    b = batch("empty.arrow")
    assert len(b) == 0 and list(b.rows()) == [] and b.column("source_data") == []
    assert "source_data" in b.columns


def test_unnested_typed_columns_with_nulls():
    rows = batch("typed.arrow").to_pylist()
    assert rows[0] == {
        "name": "ada",
        "age": 36,
        "score": 1.5,
        "active": True,
        "born": dt.date(1815, 12, 10),
        "seen_at": T0,
        "local": dt.datetime(2026, 1, 2, 3, 4, 5),
        "at": dt.time(13, 14, 15, 16),
        "price": Decimal("12.345000000"),
        "blob": b"\x00\xff",
        "tags": ["a", "b"],
        "address": {"city": "Paris", "zip": 75001},
    }
    assert rows[1] == {
        "name": None, "age": 7, "score": None, "active": False, "born": None, "seen_at": None,
        "local": None, "at": None, "price": Decimal("-1E-9"), "blob": None, "tags": [], "address": None,
    }
    assert rows[2]["name"] == "zoë" and rows[2]["age"] is None and rows[2]["active"] is None
    assert rows[2]["tags"] is None and rows[2]["address"] == {"city": None, "zip": 1}
    assert rows[2]["at"] == dt.time(0, 0) and rows[2]["blob"] == b""


def test_columns_are_decoded_once_and_kept():
    b = batch("bizon.arrow")
    assert b.column("source_data") is b.column("source_data")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "no schema"),
        (b"\xff\xff\xff\xff\x00\x01\x00\x00abc", "truncated"),
    ],
)
def test_garbage_is_a_clear_error(data, message):
    with pytest.raises(ArrowError, match=message):
        read_stream(data)


def test_a_truncated_real_stream_is_an_error():
    data = (FIXTURES / "bizon.arrow").read_bytes()
    with pytest.raises(ArrowError):
        read_stream(data[:100])
