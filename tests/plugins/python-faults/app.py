"""The end-to-end tests' Python destination: writes each record's source_data
to {dir}/out.jsonl and fails on purpose as `fail` says:
- "retry_once": the first attempt at each batch raises Retryable;
- "reject": rejects the records whose "id" ends in 7;
- "crash": a helper raises KeyError on a record without "amount"."""

import logging
import os

from bizon_plugin import Destination, Rejected, Retryable

log = logging.getLogger("faults")


def parse_amount(record):
    return record["amount"]


class Faults(Destination):
    name = "python-faults"

    def open(self, config):
        self.path = os.path.join(config["dir"], "out.jsonl")
        self.fail = config.get("fail")
        self.attempted = set()

    def write_records(self, batch):
        key = (batch.destination_id, batch.sequence)
        if self.fail == "retry_once" and key not in self.attempted:
            self.attempted.add(key)
            raise Retryable(f"busy on batch {batch.sequence}, try again")
        if self.fail == "retry_once":
            log.warning("second attempt at batch %d succeeds", batch.sequence)
        rejected = {}
        lines = []
        for row in batch.rows():
            if self.fail == "reject" and row.data["id"] % 10 == 7:
                rejected[row.index] = f"id {row.data['id']} ends in 7"
                continue
            if self.fail == "crash":
                parse_amount(row.data)
            lines.append(row.source_data + "\n")
        with open(self.path, "a", encoding="utf-8") as out:
            out.writelines(lines)
        if rejected:
            raise Rejected(rejected)
