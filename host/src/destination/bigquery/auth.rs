//! Credentials: a service account key from the config, anonymous ones for an
//! emulator endpoint, else application default credentials.

use google_cloud_auth::credentials::{anonymous, service_account, Builder, Credentials};

use super::config::Authentication;
use crate::destination::DestinationError;

const SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/bigquery",
    "https://www.googleapis.com/auth/devstorage.read_write",
];

pub fn credentials(auth: Option<&Authentication>, endpoint_set: bool) -> Result<Credentials, DestinationError> {
    if let Some(key) = auth.map(|a| a.service_account_key.trim()).filter(|k| !k.is_empty()) {
        let key: serde_json::Value = serde_json::from_str(key)
            .map_err(|e| DestinationError::Fatal(format!("authentication.service_account_key is not JSON: {e}")))?;
        return service_account::Builder::new(key)
            .with_access_specifier(service_account::AccessSpecifier::from_scopes(SCOPES))
            .build()
            .map_err(|e| DestinationError::Fatal(format!("authentication.service_account_key: {e}")));
    }
    if endpoint_set {
        // Emulators accept any caller; asking for real credentials would fail
        // on machines without ADC.
        return Ok(anonymous::Builder::new().build());
    }
    Builder::default()
        .with_scopes(SCOPES)
        .build()
        .map_err(|e| DestinationError::Fatal(format!("application default credentials: {e}")))
}
