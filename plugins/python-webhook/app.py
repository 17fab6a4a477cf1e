"""A Python destination that POSTs each batch to a webhook with `requests`,
as JSON arrays of up to 1,000 records.

plugin_config: {"url": "https://hooks.example.com/in"} and optionally
{"timeout": 10} (seconds); the pipeline grants the host (allow.hosts). A
timeout, a failed connection, 408, 429 and 5xx are retried by the host (after
the wait a 429's or 503's Retry-After asks); a host the pipeline does not
grant, or another 4xx, stops the run. The idempotency key (destination_id,
sequence and part: the same on a retry) lets the receiver drop a duplicate.
"""

import requests

from bizon_plugin import Destination

ROWS_PER_REQUEST = 1000


class Webhook(Destination):
    name = "python-webhook"

    def open(self, config):
        self.url = config["url"]
        self.timeout = config.get("timeout", 10)
        self.session = requests.Session()

    def write_records(self, batch):
        records = batch.column("source_data")  # each record's JSON text, as it came
        for part, start in enumerate(range(0, len(records), ROWS_PER_REQUEST)):
            response = self.session.post(
                self.url,
                data="[" + ",".join(records[start : start + ROWS_PER_REQUEST]) + "]",
                headers={
                    "content-type": "application/json",
                    "idempotency-key": f"{batch.destination_id}-{batch.sequence}-{part}",
                },
                timeout=self.timeout,
            )
            response.raise_for_status()
