"""What `write_records` receives: one batch of records, by column or by row.

In Bizon's layout the columns are `bizon_id`, `bizon_extracted_at`,
`bizon_loaded_at`, `source_record_id`, `source_timestamp`, `source_data` (the
record as JSON text) and `destination_id`. With `unnest: true` they are the
typed columns of the destination's `record_schema` instead.
"""

import json

from .arrow import read_stream

__all__ = ["Batch", "BatchSource", "OffsetRange", "Row"]


class OffsetRange:
    """The messages of one topic partition a batch holds: the first and last
    offset its pages took (records, skips and dead letters alike)."""

    __slots__ = ("topic", "partition", "first", "last")

    def __init__(self, topic, partition, first, last):
        self.topic = topic
        self.partition = partition
        self.first = first
        self.last = last

    def __eq__(self, other):
        return isinstance(other, OffsetRange) and (self.topic, self.partition, self.first, self.last) == (
            other.topic,
            other.partition,
            other.first,
            other.last,
        )

    def __repr__(self):
        return f"OffsetRange({self.topic!r}, {self.partition}, {self.first}, {self.last})"


class BatchSource:
    """Where a batch's rows were read (a Kafka source): `ranges`, one
    OffsetRange per topic partition, and `batch_id`, 32 hex digits derived
    from the destination_id and the ranges only. The id is the same for a
    retry and for a replay after a crash cut at the same offsets: an
    idempotency key. A replay cut elsewhere gets another id, so to be
    exactly-once across crashes key rows on `source_record_id` as well."""

    __slots__ = ("batch_id", "ranges")

    def __init__(self, batch_id, ranges):
        self.batch_id = batch_id
        self.ranges = list(ranges)

    def __repr__(self):
        return f"BatchSource({self.batch_id!r}, {self.ranges!r})"


class Batch:
    """A batch of records. Columns are decoded on first use and kept."""

    def __init__(self, fields, length, decoders, destination_id="", sequence=0):
        self.fields = fields
        self.num_rows = length
        self.destination_id = destination_id
        self.sequence = sequence
        # A BatchSource for a source with positions (Kafka), else None.
        self.source = None
        self._decoders = decoders
        self._columns = {}
        self._index = {f.name: i for i, f in enumerate(fields)}

    @classmethod
    def from_arrow(cls, data, destination_id="", sequence=0):
        """A batch over Arrow IPC stream bytes."""
        fields, length, decoders = read_stream(data)
        return cls(fields, length, decoders, destination_id, sequence)

    @classmethod
    def from_columns(cls, columns, destination_id="", sequence=0):
        """A batch over plain lists, e.g. in a unit test: {"source_data": [...], ...}."""
        from .arrow import Field

        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        fields = [Field(name, "python", True, [], {}) for name in columns]
        decoders = {name: (lambda v=values: list(v)) for name, values in columns.items()}
        return cls(fields, lengths.pop() if lengths else 0, decoders, destination_id, sequence)

    @property
    def columns(self):
        """The column names, in order."""
        return [f.name for f in self.fields]

    @property
    def height(self):
        """The number of rows (polars' name, so a ported Bizon body keeps working)."""
        return self.num_rows

    def __len__(self):
        return self.num_rows

    def column(self, name):
        """All values of a column, as a list (None for nulls)."""
        values = self._columns.get(name)
        if values is None:
            decode = self._decoders.get(name)
            if decode is None:
                raise KeyError(f"the batch has no column {name!r}; it has {self.columns}")
            values = self._columns[name] = decode()
        return values

    __getitem__ = column

    def rows(self):
        """The rows, each a `Row`: `r.source_data`, `r.data` (parsed JSON), `r["col"]`."""
        return (Row(self, i) for i in range(self.num_rows))

    def __iter__(self):
        return self.rows()

    def iter_rows(self, named=False):
        """Rows as dicts (`named=True`) or tuples, as polars' `iter_rows` gives them."""
        columns = [self.column(name) for name in self.columns]
        if named:
            names = self.columns
            return (dict(zip(names, values)) for values in zip(*columns))
        return zip(*columns)

    def to_pylist(self):
        """Every row as a dict."""
        return list(self.iter_rows(named=True))

    def __repr__(self):
        return f"Batch(destination_id={self.destination_id!r}, sequence={self.sequence}, rows={self.num_rows}, columns={self.columns})"


class Row:
    """One row of a batch. Attributes and `[]` read its columns; `data` is
    `source_data` parsed as JSON, only when asked for."""

    __slots__ = ("_batch", "index", "_data")

    def __init__(self, batch, index):
        self._batch = batch
        self.index = index
        self._data = None

    def __getitem__(self, name):
        return self._batch.column(name)[self.index]

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._batch.column(name)[self.index]
        except KeyError as e:
            raise AttributeError(str(e)) from None

    @property
    def data(self):
        """The record (`source_data`) as Python objects."""
        if self._data is None:
            self._data = json.loads(self._batch.column("source_data")[self.index])
        return self._data

    def get(self, name, default=None):
        return self._batch.column(name)[self.index] if name in self._batch._index else default

    def to_dict(self):
        return {name: self[name] for name in self._batch.columns}

    def __repr__(self):
        return f"Row({self.to_dict()!r})"
