"""A pure-Python reader of Arrow IPC streams, the encoding bizon-host hands a
plugin (schema message, record batches, end marker).

pyarrow and polars do not run inside a WebAssembly component, so this reads
the format directly: the flatbuffer messages with `struct`, the buffers with
`memoryview.cast`. Columns are decoded only when asked for, whole, into plain
Python lists: one pass in C per buffer is what keeps Python fast here.
"""

import datetime as _dt
import struct
from decimal import Decimal

__all__ = ["ArrowError", "Field", "read_stream"]


class ArrowError(ValueError):
    """The bytes are not an Arrow IPC stream this reader understands."""


# Message header and type ids of Arrow's Message.fbs / Schema.fbs.
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3
_NULL, _INT, _FLOAT, _BINARY, _UTF8, _BOOL, _DECIMAL, _DATE, _TIME, _TIMESTAMP = range(1, 11)
_LIST, _STRUCT, _FIXED_SIZE_BINARY, _FIXED_SIZE_LIST = 12, 13, 15, 16
_LARGE_BINARY, _LARGE_UTF8, _LARGE_LIST = 19, 20, 21
_TYPE_NAMES = {
    14: "Union", 11: "Interval", 17: "Map", 18: "Duration", 22: "RunEndEncoded",
    23: "BinaryView", 24: "Utf8View", 25: "ListView", 26: "LargeListView",
}

_EPOCH = _dt.datetime(1970, 1, 1)
_EPOCH_UTC = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_UNIT_US = (1_000_000, 1_000, 1, 0.001)  # second, milli, micro, nano -> microseconds

_i32 = struct.Struct("<i").unpack_from
_u32 = struct.Struct("<I").unpack_from
_u16 = struct.Struct("<H").unpack_from
_i64 = struct.Struct("<q").unpack_from
_node = struct.Struct("<qq").unpack_from


class _Table:
    """A flatbuffer table: fields by index through its vtable."""

    __slots__ = ("buf", "pos", "vt", "vt_len")

    def __init__(self, buf, pos):
        self.buf = buf
        self.pos = pos
        self.vt = pos - _i32(buf, pos)[0]
        self.vt_len = _u16(buf, self.vt)[0]

    def _field(self, index):
        slot = 4 + 2 * index
        if slot >= self.vt_len:
            return 0
        return _u16(self.buf, self.vt + slot)[0]

    def scalar(self, index, fmt, default):
        off = self._field(index)
        return struct.unpack_from(fmt, self.buf, self.pos + off)[0] if off else default

    def _target(self, index):
        off = self._field(index)
        if not off:
            return None
        at = self.pos + off
        return at + _u32(self.buf, at)[0]

    def table(self, index):
        at = self._target(index)
        return None if at is None else _Table(self.buf, at)

    def string(self, index):
        at = self._target(index)
        if at is None:
            return None
        n = _u32(self.buf, at)[0]
        return bytes(self.buf[at + 4 : at + 4 + n]).decode("utf-8")

    def vector(self, index):
        """(position of the first element, length)."""
        at = self._target(index)
        if at is None:
            return 0, 0
        return at + 4, _u32(self.buf, at)[0]

    def tables(self, index):
        start, n = self.vector(index)
        out = []
        for i in range(n):
            at = start + 4 * i
            out.append(_Table(self.buf, at + _u32(self.buf, at)[0]))
        return out


class Field:
    """A column of the schema: name, Arrow type and, for nested types, children."""

    __slots__ = ("name", "type", "nullable", "children", "params")

    def __init__(self, name, type_name, nullable, children, params):
        self.name = name
        self.type = type_name
        self.nullable = nullable
        self.children = children
        self.params = params

    def __repr__(self):
        return f"Field({self.name!r}, {self.type})"


def _field(table):
    name = table.string(0) or ""
    nullable = bool(table.scalar(1, "<B", 0))
    type_id = table.scalar(2, "<B", 0)
    t = table.table(3)
    if table.table(4) is not None:
        raise ArrowError(f"column {name!r} is dictionary-encoded, which this reader does not read")
    children = [_field(c) for c in table.tables(5)]
    params = {}
    if type_id == _INT:
        bits, signed = t.scalar(0, "<i", 0), bool(t.scalar(1, "<B", 0))
        code = {8: "b", 16: "h", 32: "i", 64: "q"}[bits]
        params["code"] = code if signed else code.upper()
        type_name = f"{'int' if signed else 'uint'}{bits}"
    elif type_id == _FLOAT:
        precision = t.scalar(0, "<h", 0)
        params["code"] = "efd"[precision]
        type_name = ("float16", "float32", "float64")[precision]
    elif type_id in (_UTF8, _LARGE_UTF8, _BINARY, _LARGE_BINARY):
        type_name = {_UTF8: "utf8", _LARGE_UTF8: "large_utf8", _BINARY: "binary", _LARGE_BINARY: "large_binary"}[type_id]
        params["code"] = "q" if type_id in (_LARGE_UTF8, _LARGE_BINARY) else "i"
    elif type_id == _BOOL:
        type_name = "bool"
    elif type_id == _DECIMAL:
        params["scale"] = t.scalar(1, "<i", 0)
        params["width"] = t.scalar(2, "<i", 128)
        type_name = f"decimal({t.scalar(0, '<i', 0)}, {params['scale']})"
    elif type_id == _DATE:
        params["unit"] = t.scalar(0, "<h", 1)
        type_name = ("date32", "date64")[params["unit"]]
    elif type_id == _TIME:
        params["unit"] = t.scalar(0, "<h", 1)
        params["code"] = "i" if t.scalar(1, "<i", 32) == 32 else "q"
        type_name = f"time[{('s', 'ms', 'us', 'ns')[params['unit']]}]"
    elif type_id == _TIMESTAMP:
        params["unit"] = t.scalar(0, "<h", 0)
        params["tz"] = t.string(1)
        unit = ("s", "ms", "us", "ns")[params["unit"]]
        type_name = f"timestamp[{unit}, {params['tz']}]" if params["tz"] else f"timestamp[{unit}]"
    elif type_id in (_LIST, _LARGE_LIST):
        params["code"] = "q" if type_id == _LARGE_LIST else "i"
        type_name = "list"
    elif type_id == _FIXED_SIZE_LIST:
        params["size"] = t.scalar(0, "<i", 0)
        type_name = "fixed_size_list"
    elif type_id == _FIXED_SIZE_BINARY:
        params["size"] = t.scalar(0, "<i", 0)
        type_name = "fixed_size_binary"
    elif type_id == _STRUCT:
        type_name = "struct"
    elif type_id == _NULL:
        type_name = "null"
    else:
        raise ArrowError(f"column {name!r} has Arrow type {_TYPE_NAMES.get(type_id, type_id)}, which this reader does not read")
    return Field(name, type_name, nullable, children, params)


class _Reader:
    """Walks one record batch's nodes and buffers in schema order."""

    def __init__(self, body, nodes, buffers):
        self.body = body
        self.nodes = nodes
        self.buffers = buffers
        self.node_at = 0
        self.buffer_at = 0

    def node(self):
        node = self.nodes[self.node_at]
        self.node_at += 1
        return node

    def buffer(self):
        offset, length = self.buffers[self.buffer_at]
        self.buffer_at += 1
        return self.body[offset : offset + length]

    def column(self, field):
        """The column's values as a list, None for nulls."""
        length, null_count = self.node()
        t = field.type
        if t == "null":
            return [None] * length
        validity = self.buffer()
        valid = _validity(validity, length) if null_count else None
        if t in ("utf8", "large_utf8", "binary", "large_binary"):
            offsets = self.buffer().cast(field.params["code"]).tolist()
            data = self.buffer()
            values = _strings(offsets, data, length, t.endswith("utf8"))
        elif t == "fixed_size_binary":
            size = field.params["size"]
            data = bytes(self.buffer())
            values = [data[i * size : (i + 1) * size] for i in range(length)]
        elif t == "bool":
            values = _bits(self.buffer(), length)
        elif t == "list":
            offsets = self.buffer().cast(field.params["code"]).tolist()
            items = self.column(field.children[0])
            values = [items[offsets[i] : offsets[i + 1]] for i in range(length)]
        elif t == "fixed_size_list":
            size = field.params["size"]
            items = self.column(field.children[0])
            values = [items[i * size : (i + 1) * size] for i in range(length)]
        elif t == "struct":
            names = [c.name for c in field.children]
            columns = [self.column(c) for c in field.children]
            values = [dict(zip(names, row)) for row in zip(*columns)] if columns else [{} for _ in range(length)]
        else:
            values = _fixed(field, self.buffer(), length)
        if valid is not None:
            values = [v if ok else None for v, ok in zip(values, valid)]
        return values


def _bits(buffer, length):
    raw = bytes(buffer)
    return [bool(raw[i >> 3] >> (i & 7) & 1) for i in range(length)]


def _validity(buffer, length):
    if len(buffer) == 0:
        return None
    return _bits(buffer, length)


def _strings(offsets, data, length, text):
    data = bytes(data)
    pairs = zip(offsets[:length], offsets[1 : length + 1])
    if not text:
        return [data[a:b] for a, b in pairs]
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError:
        whole = None
    if whole is not None and len(whole) == len(data):
        # ASCII: byte offsets are character offsets, so slice the decoded text.
        return [whole[a:b] for a, b in pairs]
    return [data[a:b].decode("utf-8") for a, b in pairs]


def _fixed(field, buffer, length):
    t = field.type
    params = field.params
    if t.startswith(("int", "uint", "float")):
        return buffer.cast(params["code"]).tolist()[:length]
    if t.startswith("timestamp"):
        raw = buffer.cast("q").tolist()[:length]
        return _LazyTimes(raw, params["unit"], params["tz"])
    if t == "date32":
        return [_dt.date.fromordinal(_EPOCH_ORDINAL + d) for d in buffer.cast("i").tolist()[:length]]
    if t == "date64":
        return [_dt.date.fromordinal(_EPOCH_ORDINAL + ms // 86_400_000) for ms in buffer.cast("q").tolist()[:length]]
    if t.startswith("time["):
        per_us = _UNIT_US[params["unit"]]
        return [_time_of_day(v * per_us) for v in buffer.cast(params["code"]).tolist()[:length]]
    if t.startswith("decimal"):
        width = params["width"] // 8
        scale = params["scale"]
        raw = bytes(buffer)
        return [
            Decimal(int.from_bytes(raw[i * width : (i + 1) * width], "little", signed=True)).scaleb(-scale)
            for i in range(length)
        ]
    raise ArrowError(f"column {field.name!r}: cannot read type {t}")


def _time_of_day(us):
    us = int(us)
    seconds, micro = divmod(us, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return _dt.time(hour, minute, second, micro)


class _LazyTimes(list):
    """Timestamps stay integers until read: converting a million of them to
    datetime costs more than the rest of the batch, and most plugins never
    look. Indexing and iterating give datetimes (aware when the column has a
    time zone; bizon-host's are UTC), `.micros` the raw microseconds."""

    def __init__(self, raw, unit, tz):
        per_us = _UNIT_US[unit]
        micros = raw if per_us == 1 else [int(v * per_us) for v in raw]
        super().__init__(micros)
        self.micros = micros
        self._epoch = _EPOCH_UTC if tz else _EPOCH

    def _at(self, us):
        return None if us is None else self._epoch + _dt.timedelta(microseconds=us)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._at(v) for v in list.__getitem__(self, index)]
        return self._at(list.__getitem__(self, index))

    def __iter__(self):
        return map(self._at, list.__iter__(self))

    def __eq__(self, other):
        return list(self) == list(other)

    __hash__ = None


def read_stream(data):
    """Reads an Arrow IPC stream: (fields, length, columns), where `columns`
    maps each top-level column name to a function that decodes it (a list).
    Several record batches in one stream are read as one."""
    buf = memoryview(data)
    pos = 0
    fields = None
    batches = []
    while pos + 4 <= len(buf):
        meta_len = _i32(buf, pos)[0]
        pos += 4
        if meta_len == -1:  # continuation marker, then the length
            if pos + 4 > len(buf):
                break
            meta_len = _i32(buf, pos)[0]
            pos += 4
        if meta_len == 0:
            break
        if meta_len < 0 or pos + meta_len > len(buf):
            raise ArrowError(f"truncated Arrow IPC message at byte {pos}")
        meta = buf[pos : pos + meta_len]
        message = _Table(meta, _u32(meta, 0)[0])
        pos += meta_len
        body_len = message.scalar(3, "<q", 0)
        body = buf[pos : pos + body_len]
        pos += body_len
        kind = message.scalar(1, "<B", 0)
        header = message.table(2)
        if kind == _SCHEMA:
            fields = [_field(f) for f in header.tables(1)]
        elif kind == _RECORD_BATCH:
            if fields is None:
                raise ArrowError("record batch before the schema")
            batches.append(_batch(header, body))
        elif kind == _DICTIONARY_BATCH:
            raise ArrowError("dictionary batches are not supported")
    if fields is None:
        raise ArrowError("no schema message: not an Arrow IPC stream")
    length = sum(b[0] for b in batches)
    return fields, length, _columns(fields, batches)


def _batch(header, body):
    if header.table(3) is not None:
        raise ArrowError("compressed record batches are not supported")
    length = header.scalar(0, "<q", 0)
    start, n = header.vector(1)
    nodes = [_node(header.buf, start + 16 * i) for i in range(n)]
    start, n = header.vector(2)
    buffers = [_node(header.buf, start + 16 * i) for i in range(n)]
    return length, body, nodes, buffers


def _columns(fields, batches):
    """Column decoders. Each record batch is walked once, on first use, to
    find where each top-level column's nodes and buffers start."""
    starts = []
    for _, body, nodes, buffers in batches:
        at = []
        node_at = buffer_at = 0
        for f in fields:
            at.append((node_at, buffer_at))
            n, b = _count(f)
            node_at += n
            buffer_at += b
        starts.append(at)

    def decoder(index):
        field = fields[index]

        def decode():
            out = None
            for (_, body, nodes, buffers), at in zip(batches, starts):
                reader = _Reader(body, nodes, buffers)
                reader.node_at, reader.buffer_at = at[index]
                values = reader.column(field)
                if out is None:
                    out = values
                elif isinstance(out, _LazyTimes):
                    out.micros.extend(values.micros)
                    list.extend(out, values.micros)
                else:
                    out.extend(values)
            return [] if out is None else out

        return decode

    return {f.name: decoder(i) for i, f in enumerate(fields)}


def _count(field):
    """(nodes, buffers) a column takes in a record batch."""
    own = {"null": 0, "struct": 1, "fixed_size_list": 1, "list": 2, "bool": 2}.get(field.type)
    if own is None:
        own = 3 if field.type in ("utf8", "large_utf8", "binary", "large_binary") else 2
    nodes, buffers = 1, own
    for child in field.children:
        n, b = _count(child)
        nodes += n
        buffers += b
    return nodes, buffers
