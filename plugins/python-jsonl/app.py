"""A Python destination: each record appended to `{dir}/{destination_id}.jsonl`.

plugin_config: {"dir": "/out"} (a granted, writable directory) and optionally
{"fields": ["id", "name"]} to keep only those keys of each record; a record
that is not a JSON object is then rejected, by row, and the others written.
With `unnest: true` each line is the record's typed columns as one object
(dates and times as ISO text). A retried batch (same destination_id and
sequence) is skipped, not written twice.
"""

import json
import logging
import os
import re

from bizon_plugin import Destination, Rejected

log = logging.getLogger(__name__)


class JsonlFiles(Destination):
    name = "python-jsonl"
    version = "0.1.0"

    def open(self, config):
        self.dir = config.get("dir", "/out")
        self.fields = config.get("fields")
        self.files = {}
        self.written = {}  # destination_id -> last sequence written

    def check_connection(self):
        probe = os.path.join(self.dir, ".bizon-check")
        with open(probe, "w"):
            pass
        os.remove(probe)
        return True

    def write_records(self, batch):
        if self.written.get(batch.destination_id, -1) >= batch.sequence:
            log.info("skipping %s batch %d: already written", batch.destination_id, batch.sequence)
            return None
        rejected = {}
        if "source_data" not in batch.columns:
            lines = [json.dumps(row, default=str) + "\n" for row in batch.iter_rows(named=True)]
        elif self.fields is None:
            # The record's JSON text as it came: no parse, no re-encode.
            lines = [data + "\n" for data in batch.column("source_data")]
        else:
            lines = []
            for row in batch.rows():
                record = row.data
                if isinstance(record, dict):
                    lines.append(json.dumps({k: record.get(k) for k in self.fields}) + "\n")
                else:
                    rejected[row.index] = f"not a JSON object: {row.source_data[:40]}"
        out = self._file(batch.destination_id)
        out.writelines(lines)
        out.flush()
        self.written[batch.destination_id] = batch.sequence
        if rejected:
            raise Rejected(rejected)
        return None

    def finalize(self):
        for out in self.files.values():
            out.close()
        log.info("wrote %s", ", ".join(sorted(self.files)) or "nothing")
        return True

    def _file(self, destination_id):
        out = self.files.get(destination_id)
        if out is None:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", destination_id) or "_"
            out = self.files[destination_id] = open(os.path.join(self.dir, f"{safe}.jsonl"), "a", encoding="utf-8")
        return out
