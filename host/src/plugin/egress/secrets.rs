//! `allow.secrets`: credentials the host adds to a plugin's requests, so the
//! plugin never holds them.
//!
//! ```yaml
//! allow:
//!   hosts: ["https://api.example.com"]
//!   secrets:
//!     api_token:
//!       from: env:API_TOKEN          # or file:/run/secrets/token
//!       host: https://api.example.com
//!       header: Authorization        # the default
//!       format: "Bearer {}"          # the default is "{}"
//! ```

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::rules::HostRule;

/// One entry of `allow.secrets`, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGrant {
    /// `env:VAR` or `file:PATH`.
    pub from: String,
    /// The requests it is added to, in `allow.hosts` grammar.
    pub host: HostRule,
    #[serde(default = "default_header")]
    pub header: String,
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_header() -> String {
    "authorization".into()
}

fn default_format() -> String {
    "{}".into()
}

/// A secret read and ready to add.
pub struct Secret {
    pub name: String,
    pub host: HostRule,
    pub header: HeaderName,
    pub value: HeaderValue,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} -> {} for {})", self.name, self.header, self.host)
    }
}

impl SecretGrant {
    /// Reads the value; the error names the secret and its source, never
    /// the value.
    pub fn load(&self, name: &str) -> Result<Secret, String> {
        let bad = |why: String| format!("allow.secrets.{name}: {why}");
        let raw = match self.from.split_once(':') {
            Some(("env", var)) => std::env::var(var).map_err(|_| bad(format!("the variable {var} is not set")))?,
            Some(("file", path)) => std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read {path}: {e}")))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            _ => return Err(bad(format!("from: {:?} is neither env:VAR nor file:PATH", self.from))),
        };
        if !self.format.contains("{}") {
            return Err(bad(format!("format {:?} has no {{}} for the value", self.format)));
        }
        let header = HeaderName::try_from(self.header.as_str())
            .map_err(|_| bad(format!("header {:?} is not a header name", self.header)))?;
        let mut value = HeaderValue::try_from(self.format.replacen("{}", &raw, 1))
            .map_err(|_| bad("the value has characters a header cannot carry".into()))?;
        value.set_sensitive(true);
        Ok(Secret {
            name: name.to_string(),
            host: self.host.clone(),
            header,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(from: &str) -> SecretGrant {
        serde_json::from_value(serde_json::json!({"from": from, "host": "https://a.test", "format": "Bearer {}"}))
            .unwrap()
    }

    #[test]
    fn reads_env_and_file_and_names_what_is_missing() {
        std::env::set_var("BIZON_EGRESS_TEST_SECRET", "s3cr3t");
        let secret = grant("env:BIZON_EGRESS_TEST_SECRET").load("tok").unwrap();
        assert_eq!(secret.header, "authorization");
        assert_eq!(secret.value, "Bearer s3cr3t");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "from-file\n").unwrap();
        let from = format!("file:{}", dir.path().join("t").display());
        assert_eq!(grant(&from).load("tok").unwrap().value, "Bearer from-file");
        let err = grant("env:BIZON_EGRESS_NOT_SET_ANYWHERE").load("tok").unwrap_err();
        assert!(
            err.contains("allow.secrets.tok") && err.contains("BIZON_EGRESS_NOT_SET_ANYWHERE"),
            "{err}"
        );
        assert!(grant("vault:x")
            .load("tok")
            .unwrap_err()
            .contains("neither env:VAR nor file:PATH"));
    }
}
