"""bizon-host's Python transform runtime: Bizon's `transforms: [{label, python}]`
run inside a CPython WebAssembly component (componentize-py), one instance
per pipeline worker, a batch of records per call.

Semantics are Bizon 0.6.4's (`bizon/transform/transform.py`): each transform's
code, dedented, is exec'd once per record with empty globals and `data` (the
record's source_data, parsed with `json.loads`) as its only local; whatever
`data` holds afterwards is `json.dumps`'d (default separators, ASCII escapes)
and becomes the new source_data, which the next transform parses again.
Unlike Bizon, the code is compiled once (at `open`), and an exception fails
only its record, reported with the transform's label and the traceback.

The world is `transformer` in wit/transform.wit; batches are NDJSON, one
record a line: {"source_record_id", "source_timestamp", "destination_id",
"source_data": <JSON value>} in, {"row": <input index>, "source_data": ...}
out (the record keeps its metadata).

`open` takes {"transforms": [{"label": ..., "python": ...}]}. A transform that
does not compile fails `open` with a JSON object {"transform": index,
"label", "line", "message"}, which the host turns into the file and line of
the pipeline.
"""

import json
import linecache
import textwrap
import traceback

import preload  # noqa: F401 (what a transform may import; see preload.py)

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.transform import RecordError, TransformInfo, Transformed
from wit_world.imports.types import InputFormat

VERSION = "0.1.0"

_IMPORTABLE = ", ".join(preload.AVAILABLE)

_loads = json.loads
_dumps = json.dumps

# (label, code object) of each transform, in order; set by `open`.
_steps = []


def _compile(index, spec):
    label = str(spec["label"])
    source = textwrap.dedent(str(spec["python"]))
    # The label is the code's file name, so a traceback reads
    # `File "<label>", line N`; linecache gives it the line's text too.
    linecache.cache[label] = (len(source), None, source.splitlines(True), label)
    try:
        code = compile(source, label, "exec")
    except SyntaxError as e:
        raise Err(
            _dumps(
                {
                    "transform": index,
                    "label": label,
                    "line": e.lineno or 0,
                    "message": f"{type(e).__name__}: {e.msg}",
                }
            )
        )
    return label, code


def _traceback(error):
    # Skip this module's own frame: the user's code starts below it.
    tb = error.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb)).rstrip()


class Transform(exports.Transform):
    def describe(self):
        return TransformInfo(name="python", version=VERSION, input_format=InputFormat.NDJSON)

    def open(self, config):
        global _steps
        specs = _loads(config).get("transforms", [])
        _steps = [_compile(i, spec) for i, spec in enumerate(specs)]

    def transform_records(self, batch):
        body = batch.strip()
        if not body:
            return Transformed(batch=b"", errors=[])
        # JSON text never holds a raw newline, so the lines join into one
        # array parsed in one call.
        rows = _loads(b"[" + body.replace(b"\n", b",") + b"]")
        steps = _steps
        last = len(steps) - 1
        kept = []
        datas = []
        errors = []
        for index, row in enumerate(rows):
            data = row["source_data"]
            label = None
            try:
                for n, (label, code) in enumerate(steps):
                    if n:
                        # Bizon hands each transform the text the previous one produced.
                        data = _loads(text)
                    local = {"data": data}
                    exec(code, {}, local)
                    data = local["data"]
                    if n < last:
                        text = _dumps(data)
            # SystemExit too: `exit()` in a transform fails its record, as any error.
            except BaseException as error:
                errors.append(_failed(index, label, error))
                continue
            kept.append(index)
            datas.append(data)
        # One `json.dumps` of the whole list writes each record as its own
        # call would (same encoder, same separators) at a fraction of the
        # per-call cost; the host splits it (`rows`, wit/transform.wit).
        try:
            text = _dumps(datas)
        except BaseException:
            text = None
        if text is None or "NaN" in text or "Infinity" in text:
            # A record that does not dump, or dumps to what is not JSON (a
            # NaN): a line per record, so that it fails alone.
            batch = _each(kept, datas, errors, steps[-1][0])
            errors.sort(key=lambda e: e.row)
            return Transformed(batch=batch, errors=errors)
        line = '{"rows":%s,"source_data":%s}' % (_dumps(kept), text)
        return Transformed(batch=line.encode(), errors=errors)


def _failed(index, label, error):
    reason = f"transform `{label}` raised:\n{_traceback(error)}"
    if isinstance(error, ImportError):
        reason += f"\n(the sandbox has no files to import from; what it holds: {_IMPORTABLE})"
    return RecordError(row=index, reason=reason)


def _each(kept, datas, errors, label):
    out = []
    for index, data in zip(kept, datas):
        try:
            text = _dumps(data)
        except BaseException as error:
            errors.append(_failed(index, label, error))
            continue
        # `row` stands for the input record's metadata (wit/transform.wit).
        out.append('{"row":%d,"source_data":%s}' % (index, text))
    return "\n".join(out).encode()
