//! `allow.secrets` ([`SecretGrant`]) read into what the host adds to a
//! plugin's requests, so the plugin never holds the credential.

use http::{HeaderName, HeaderValue};

use crate::plugin::grants::{HostRule, SecretGrant};

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

impl Secret {
    /// Reads the value of the secret `name` granted by `grant`; the error
    /// names the secret and its source, never the value.
    pub fn load(name: &str, grant: &SecretGrant) -> Result<Secret, String> {
        let bad = |why: String| format!("allow.secrets.{name}: {why}");
        let raw = match grant.from.split_once(':') {
            Some(("env", var)) => std::env::var(var).map_err(|_| bad(format!("the variable {var} is not set")))?,
            Some(("file", path)) => std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read {path}: {e}")))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            _ => return Err(bad(format!("from: {:?} is neither env:VAR nor file:PATH", grant.from))),
        };
        if !grant.format.contains("{}") {
            return Err(bad(format!("format {:?} has no {{}} for the value", grant.format)));
        }
        let header = HeaderName::try_from(grant.header.as_str())
            .map_err(|_| bad(format!("header {:?} is not a header name", grant.header)))?;
        let mut value = HeaderValue::try_from(grant.format.replacen("{}", &raw, 1))
            .map_err(|_| bad("the value has characters a header cannot carry".into()))?;
        value.set_sensitive(true);
        Ok(Secret {
            name: name.to_string(),
            host: grant.host.clone(),
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
        let secret = Secret::load("tok", &grant("env:BIZON_EGRESS_TEST_SECRET")).unwrap();
        assert_eq!(secret.header, "authorization");
        assert_eq!(secret.value, "Bearer s3cr3t");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "from-file\n").unwrap();
        let from = format!("file:{}", dir.path().join("t").display());
        assert_eq!(Secret::load("tok", &grant(&from)).unwrap().value, "Bearer from-file");
        let err = Secret::load("tok", &grant("env:BIZON_EGRESS_NOT_SET_ANYWHERE")).unwrap_err();
        assert!(
            err.contains("allow.secrets.tok") && err.contains("BIZON_EGRESS_NOT_SET_ANYWHERE"),
            "{err}"
        );
        assert!(Secret::load("tok", &grant("vault:x"))
            .unwrap_err()
            .contains("neither env:VAR nor file:PATH"));
    }
}
