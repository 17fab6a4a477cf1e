//! A `serve` tenant's secrets as a run holds them: the values its pipeline
//! names, read from the registry when the run is built, and how a pipeline
//! names one. A pipeline file never holds a value, only a reference:
//!
//! - `secret://NAME` as the whole value of a native destination's
//!   credential field (BigQuery's `authentication.service_account_key`);
//! - `from: secret:NAME` in `allow.secrets`, whose value the host adds to
//!   a plugin's requests.
//!
//! Values are zeroed when dropped and never shown: [`Secrets`]'s `Debug`
//! lists names only, so an error or a log line that prints a run's
//! environment cannot carry one.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

/// `secret://NAME` as a whole value: the name.
pub fn reference(value: &str) -> Option<&str> {
    value.trim().strip_prefix("secret://")
}

/// `secret:NAME` (an `allow.secrets` grant's `from`): the name.
pub fn grant_source(from: &str) -> Option<&str> {
    from.strip_prefix("secret:")
}

/// Values by name; cloned cheaply (one copy of each value per run).
#[derive(Clone, Default)]
pub struct Secrets {
    values: Arc<BTreeMap<String, Zeroizing<String>>>,
}

impl Secrets {
    pub fn new(values: impl IntoIterator<Item = (String, Zeroizing<String>)>) -> Self {
        Self {
            values: Arc::new(values.into_iter().collect()),
        }
    }

    /// The value of `name`; the error says which name is missing, never a value.
    pub fn get(&self, name: &str) -> Result<&str, MissingSecret> {
        self.values
            .get(name)
            .map(|v| v.as_str())
            .ok_or_else(|| MissingSecret(name.to_string()))
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

/// A reference to a secret this run was not given: none of that name, or
/// (under `bizon-host run`) no tenant secrets at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret `{0}` is not among this run's secrets (tenant secrets exist only under `bizon-host serve`: PUT /v1/secrets/{0})")]
pub struct MissingSecret(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_debug_without_values() {
        assert_eq!(reference("secret://sa-key"), Some("sa-key"));
        assert_eq!(reference("{\"type\": ...}"), None);
        assert_eq!(grant_source("secret:hook-token"), Some("hook-token"));
        assert_eq!(grant_source("env:X"), None);
        let secrets = Secrets::new([("k".to_string(), Zeroizing::new("v4lue".to_string()))]);
        assert_eq!(secrets.get("k").unwrap(), "v4lue");
        assert_eq!(format!("{secrets:?}"), "{\"k\"}");
        let missing = secrets.get("other").unwrap_err().to_string();
        assert!(missing.contains("`other`") && !missing.contains("v4lue"), "{missing}");
    }
}
