"""A Python destination that POSTs each batch, as NDJSON, to a webhook.

plugin_config: {"url": "https://hooks.example.com/in"}; the pipeline grants
the host (allow.hosts). Connection errors, timeouts, 408, 429 and 5xx raise
Retryable, so the host retries the batch with backoff; the idempotency key
(destination_id and sequence, the same on a retry) lets the receiver drop a
duplicate. A refused host or another 4xx stops the run.
"""

from bizon_plugin import Destination, http


class Webhook(Destination):
    name = "python-webhook"

    def open(self, config):
        self.url = config["url"]

    def write_records(self, batch):
        if len(batch) == 0:
            return
        body = "".join(data + "\n" for data in batch.column("source_data"))
        headers = {
            "content-type": "application/x-ndjson",
            "idempotency-key": f"{batch.destination_id}-{batch.sequence}",
        }
        http.post(self.url, body, headers=headers).raise_for_status()
