"""The transform an author writes (world `transformer` of wit/transform.wit),
and the rules that turn a batch of records through it into what the host
reads back. Nothing here needs the WebAssembly runtime, so the same rules run
under `bizon-plugin test` and in the SDK's tests.

The host sends NDJSON, one record a line: {"source_record_id",
"source_timestamp" (microseconds), "destination_id" (or null), "source_data"
(the record's JSON value)}. Each output line says which input `row` it comes
from and only the metadata that changed, or, for a record made from scratch,
all of it.
"""

import json
import traceback

__all__ = ["Record", "Transform", "TransformRunner", "find_transform"]


class Record:
    """One record: `data` is its source_data as Python objects (a dict for
    most sources); the metadata is Bizon's. Change what you like and return
    it, or `replace(...)` it into several."""

    __slots__ = ("data", "source_record_id", "source_timestamp", "destination_id", "_row")

    def __init__(self, data, source_record_id, source_timestamp, destination_id=None, _row=None):
        self.data = data
        self.source_record_id = source_record_id
        # Microseconds since the Unix epoch, UTC.
        self.source_timestamp = source_timestamp
        # None: the pipeline's default destination.
        self.destination_id = destination_id
        self._row = _row

    def replace(self, **changes):
        """A copy with `changes` (data=..., source_record_id=..., ...)."""
        copy = Record(self.data, self.source_record_id, self.source_timestamp, self.destination_id, self._row)
        for name, value in changes.items():
            if name not in ("data", "source_record_id", "source_timestamp", "destination_id"):
                raise TypeError(f"Record has no field {name!r}")
            setattr(copy, name, value)
        return copy

    def __repr__(self):
        return (
            f"Record(source_record_id={self.source_record_id!r}, source_timestamp={self.source_timestamp!r}, "
            f"destination_id={self.destination_id!r}, data={self.data!r})"
        )


class Transform:
    """Subclass this, once per module. `transform(record)` returns what
    replaces the record: the record, a dict (the record's new data), a list of
    those (several records), or [] to drop it. An exception fails that record
    alone: the host dead-letters it or stops the run, naming it.

    Class attributes: `name` (shown in the host's logs and errors; defaults
    to the class name), `version`.
    """

    name = None
    version = "0.1.0"

    def open(self, config):
        """Called once per instance with the pipeline's `config:` for the
        transform (a dict). Raise to stop the pipeline before any record moves."""
        self.config = config

    def transform(self, record):
        raise NotImplementedError(f"{type(self).__name__} does not define transform(self, record)")


class RecordError(Exception):
    """A record the transform's result cannot be made of."""


def _traceback(error):
    """The exception as Python prints it, from the author's code on: frames
    of this module say nothing to them."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__ and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb)).rstrip()


def _dumps(value, what):
    try:
        # allow_nan=False: NaN is not JSON, and the host would refuse the batch.
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RecordError(f"{what} is not JSON: {e}") from None


def _results(result, record):
    """What `transform` returned, as Records."""
    if isinstance(result, Record):
        return [result]
    if isinstance(result, dict):
        return [record.replace(data=result)]
    if isinstance(result, (list, tuple)) or hasattr(result, "__next__"):
        out = []
        for item in result:
            if isinstance(item, Record):
                out.append(item)
            elif isinstance(item, dict):
                out.append(record.replace(data=item))
            else:
                raise RecordError(f"transform returned a list holding {type(item).__name__}; it may hold records or dicts")
        return out
    if result is None:
        raise RecordError("transform returned None; return the record, a dict (its new data), a list of them, or [] to drop it")
    raise RecordError(
        f"transform returned {type(result).__name__}; return the record, a dict (its new data), a list of them, or [] to drop it"
    )


def _line(record, rows):
    """One output line: the input row it comes from and what changed, or all
    the metadata for a record made from scratch."""
    rid, ts, dest = record.source_record_id, record.source_timestamp, record.destination_id
    if not isinstance(rid, str):
        raise RecordError(f"source_record_id must be a str, not {type(rid).__name__}")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise RecordError(f"source_timestamp must be an int (microseconds), not {type(ts).__name__}")
    if dest is not None and not isinstance(dest, str):
        raise RecordError(f"destination_id must be a str or None, not {type(dest).__name__}")
    data = _dumps(record.data, "data")
    row = record._row
    if row is None or not 0 <= row < len(rows):
        return '{"source_record_id":%s,"source_timestamp":%d,"destination_id":%s,"source_data":%s}' % (
            json.dumps(rid),
            ts,
            json.dumps(dest),
            data,
        )
    source = rows[row]
    parts = ['{"row":%d' % row]
    if rid != source["source_record_id"]:
        parts.append('"source_record_id":' + json.dumps(rid))
    if ts != source["source_timestamp"]:
        parts.append('"source_timestamp":%d' % ts)
    if dest != source["destination_id"]:
        parts.append('"destination_id":' + json.dumps(dest))
    parts.append('"source_data":' + data + "}")
    return ",".join(parts)


class TransformRunner:
    """Calls a Transform the way the host does. Catches BaseException:
    inside the component an escaped exception is an anonymous trap."""

    def __init__(self, cls):
        self.cls = cls
        self.transform = None

    @property
    def plugin_name(self):
        return self.cls.name or self.cls.__name__

    def open(self, config):
        """None, or why the transform refused to open."""
        try:
            transform = self.cls()
            transform.open(config)
        except BaseException as e:  # noqa: BLE001 - see the class docstring
            return f"open: {_traceback(e)}"
        self.transform = transform
        return None

    def run(self, batch):
        """NDJSON bytes in; (NDJSON bytes out, [(row, reason)])."""
        if self.transform is None:
            raise RuntimeError("transform_records called before open succeeded")
        body = batch.strip()
        if not body:
            return b"", []
        # JSON text never holds a raw newline, so the lines join into one
        # array parsed in one call.
        rows = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
        out = []
        errors = []
        call = self.transform.transform
        for index, row in enumerate(rows):
            record = Record(row["source_data"], row["source_record_id"], row["source_timestamp"], row["destination_id"], index)
            try:
                lines = [_line(r, rows) for r in _results(call(record), record)]
            except RecordError as e:
                errors.append((index, str(e)))
                continue
            except BaseException as e:  # noqa: BLE001 - `exit()` fails its record, as any error
                errors.append((index, _traceback(e)))
                continue
            out.extend(lines)
        return "\n".join(out).encode(), errors


def find_transform(module):
    """The one Transform subclass a module defines."""
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Transform) and value is not Transform and value.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise TypeError(f"{module.__name__}: a transform module defines exactly one subclass of bizon_plugin.Transform; found {names}")
    return found[0]
