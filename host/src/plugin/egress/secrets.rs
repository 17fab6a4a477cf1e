//! `allow.secrets` ([`SecretGrant`]) read into what the host adds to a
//! plugin's requests, so the plugin never holds the credential. `from:` is
//! `env:VAR` or `file:PATH` (the host's, for `bizon-host run`) or
//! `secret:NAME` (a `serve` tenant's own secret, which `serve` gives the
//! run; the others are refused for tenants).

use http::{HeaderName, HeaderValue};
use zeroize::Zeroizing;

use crate::config::secret::Secrets;
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
    /// Reads the value of the secret `name` granted by `grant` (a tenant's
    /// from `tenant`); the error names the secret and its source, never
    /// the value.
    pub fn load(name: &str, grant: &SecretGrant, tenant: &Secrets) -> Result<Secret, String> {
        let bad = |why: String| format!("allow.secrets.{name}: {why}");
        let raw = match grant.from.split_once(':') {
            Some(("secret", wanted)) => Zeroizing::new(tenant.get(wanted).map_err(|e| bad(e.to_string()))?.to_string()),
            Some(("env", var)) => {
                Zeroizing::new(std::env::var(var).map_err(|_| bad(format!("the variable {var} is not set")))?)
            }
            Some(("file", path)) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("cannot read {path}: {e}")))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            _ => {
                return Err(bad(format!(
                    "from: {:?} is none of env:VAR, file:PATH, secret:NAME",
                    grant.from
                )))
            }
        };
        if !grant.format.contains("{}") {
            return Err(bad(format!("format {:?} has no {{}} for the value", grant.format)));
        }
        let header = HeaderName::try_from(grant.header.as_str())
            .map_err(|_| bad(format!("header {:?} is not a header name", grant.header)))?;
        let mut value = HeaderValue::try_from(Zeroizing::new(grant.format.replacen("{}", &raw, 1)).as_str())
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
        let none = Secrets::default();
        let secret = Secret::load("tok", &grant("env:BIZON_EGRESS_TEST_SECRET"), &none).unwrap();
        assert_eq!(secret.header, "authorization");
        assert_eq!(secret.value, "Bearer s3cr3t");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "from-file\n").unwrap();
        let from = format!("file:{}", dir.path().join("t").display());
        assert_eq!(
            Secret::load("tok", &grant(&from), &none).unwrap().value,
            "Bearer from-file"
        );
        let err = Secret::load("tok", &grant("env:BIZON_EGRESS_NOT_SET_ANYWHERE"), &none).unwrap_err();
        assert!(
            err.contains("allow.secrets.tok") && err.contains("BIZON_EGRESS_NOT_SET_ANYWHERE"),
            "{err}"
        );
        assert!(Secret::load("tok", &grant("vault:x"), &none)
            .unwrap_err()
            .contains("none of env:VAR, file:PATH, secret:NAME"));
    }

    #[test]
    fn a_tenant_secret_is_read_from_the_runs_secrets_only() {
        let tenant = Secrets::new([("hook".to_string(), Zeroizing::new("t0ken".to_string()))]);
        let secret = Secret::load("tok", &grant("secret:hook"), &tenant).unwrap();
        assert_eq!(secret.value, "Bearer t0ken");
        assert!(secret.value.is_sensitive());
        let err = Secret::load("tok", &grant("secret:other"), &tenant).unwrap_err();
        assert!(err.contains("allow.secrets.tok") && err.contains("`other`"), "{err}");
        assert!(Secret::load("tok", &grant("secret:hook"), &Secrets::default()).is_err());
    }
}
