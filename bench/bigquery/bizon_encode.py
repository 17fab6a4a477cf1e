"""Bizon 0.6.4's bigquery_streaming_v2 row encoding, timed on its own.

Runs the code path of BigQueryStreamingV2Destination.load_to_bigquery_via_streaming
for the raw layout (unnest off): strftime the timestamps, rename the columns, then
`to_protobuf_serialization` row by row. No network. Prints ns/row, to set beside
host/benches/bigquery.rs, which times bizon-host's Storage Write encoding of the
same 1M-row batch.

    bash bench/bigquery/bizon_encode.sh [N]
"""

import sys
import time
from datetime import datetime, timezone

import polars as pl
from google.cloud import bigquery

from bizon.connectors.destinations.bigquery_streaming_v2.src.destination import (
    BigQueryStreamingV2Destination,
)
from bizon.connectors.destinations.bigquery_streaming_v2.src.proto_utils import (
    get_proto_schema_and_class,
)

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
now = datetime.now(timezone.utc)
df = pl.DataFrame(
    {
        "bizon_id": [f"{i:032x}" for i in range(n)],
        "bizon_extracted_at": [now] * n,
        "bizon_loaded_at": [now] * n,
        "source_record_id": [str(i) for i in range(n)],
        "source_timestamp": [now] * n,
        "source_data": [
            f'{{"id":{i},"name":"bizon-{i}","age":{i % 97},"active":{str(i % 2 == 0).lower()},'
            f'"score":{i * 0.5},"tags":["a","b"]}}'
            for i in range(n)
        ],
    }
)
# The raw-layout schema of BigQueryStreamingV2Destination.get_bigquery_schema().
schema = [
    bigquery.SchemaField("_source_record_id", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("_source_timestamp", "TIMESTAMP", mode="REQUIRED"),
    bigquery.SchemaField("_source_data", "JSON", mode="NULLABLE"),
    bigquery.SchemaField("_bizon_extracted_at", "TIMESTAMP", mode="REQUIRED"),
    bigquery.SchemaField("_bizon_loaded_at", "TIMESTAMP", mode="REQUIRED"),
    bigquery.SchemaField("_bizon_id", "STRING", mode="REQUIRED"),
]

start = time.perf_counter()
_, table_row = get_proto_schema_and_class(schema)
frame = df.with_columns(
    pl.col("bizon_extracted_at").dt.strftime("%Y-%m-%d %H:%M:%S").alias("bizon_extracted_at"),
    pl.col("bizon_loaded_at").dt.strftime("%Y-%m-%d %H:%M:%S").alias("bizon_loaded_at"),
    pl.col("source_timestamp").dt.strftime("%Y-%m-%d %H:%M:%S").alias("source_timestamp"),
).rename({c: f"_{c}" for c in df.columns})
rows = [
    BigQueryStreamingV2Destination.to_protobuf_serialization(TableRowClass=table_row, row=row)
    for row in frame.iter_rows(named=True)
]
seconds = time.perf_counter() - start
assert len(rows) == n
print(f"bizon streaming_v2 encode rows={n} seconds={seconds:.3f} ns_per_row={seconds / n * 1e9:.0f} bytes={sum(map(len, rows))}")
