// A destination that POSTs each batch, as NDJSON, to a webhook.
use bizon_sdk::http::Request;
use bizon_sdk::{export_ndjson_destination, BatchInfo, Config, Error, NdjsonDestination, WriteError};

#[derive(serde::Deserialize)]
struct Settings {
    url: String,
}

struct Webhook {
    url: String,
}

impl NdjsonDestination for Webhook {
    const NAME: &'static str = "webhook";

    fn open(config: Config) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        Ok(Webhook { url: settings.url })
    }

    fn write(&mut self, batch: &str, info: &BatchInfo) -> Result<u64, WriteError> {
        // The same key on a retried batch lets the receiver drop duplicates.
        let key = format!("{}-{}", info.destination_id, info.sequence);
        Request::post(&self.url)
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", &key)
            .body(batch)
            // Refused by the host, 4xx: fatal. Connect error, timeout,
            // 429, 5xx: retryable, and the host retries the batch.
            .send()?
            .error_for_status()?;
        Ok(info.num_rows)
    }
}

export_ndjson_destination!(Webhook);
