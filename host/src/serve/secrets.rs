//! Tenants' secrets: values a tenant stores (`PUT /v1/secrets/{name}`) for
//! its pipelines to name (`secret:NAME`, `secret://NAME`) and nobody to
//! read back. The registry keeps each value sealed (AES-256-GCM, a random
//! nonce per value, the tenant's and the secret's names as associated data
//! so a sealed value moved to another row does not open) under a key kept
//! outside it: `<data-dir>/secrets.key` (made at the first start, mode
//! 0600) or `--secrets-key-file`. A copy of the database alone reveals
//! nothing. The registry also keeps a value sealed with the key, so a host
//! started with another key (or with none, once secrets exist) refuses to
//! start and says so, instead of failing at each pipeline.
//!
//! Values are opened only to build a run (`pipelines::environment`) and
//! held there as [`Secrets`]; the API lists names and times, never values.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;
use zeroize::Zeroizing;

use super::registry::{Registry, RegistryError};
use crate::config::secret::Secrets;

/// The key file's name in the data dir.
pub const KEY_FILE: &str = "secrets.key";
/// Bytes of an AES-256 key.
const KEY_LEN: usize = 32;
/// The first byte of a sealed value: how it was sealed.
const FORMAT: u8 = 1;
/// What the registry's check value seals.
const CHECK: &[u8] = b"bizon-host secrets key check";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secrets key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error(
        "secrets key file {path} is missing, and the registry holds secrets sealed with a key: restore that file \
         (every host sharing the registry needs the same one); a new key cannot open them"
    )]
    MissingKey { path: String },
    #[error(
        "secrets key file {path} is not the key the registry's secrets were sealed with: give the right file \
         (--secrets-key-file); a different key cannot open them"
    )]
    WrongKey { path: String },
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("secret `{name}` of tenant `{tenant}` does not open with this host's key")]
    Corrupt { tenant: String, name: String },
}

/// The host's secrets key.
pub struct Vault {
    key: RandomizedNonceKey,
}

impl Vault {
    /// Reads the key at `path` and checks it against the registry's check
    /// value. A missing file is made (a new random key, mode 0600) only when
    /// the registry has no check value yet: otherwise the secrets in it
    /// would be lost.
    pub fn open(path: &Path, registry: &Registry) -> Result<Self, SecretsError> {
        let shown = path.display().to_string();
        let key_error = |message: String| SecretsError::KeyFile {
            path: shown.clone(),
            message,
        };
        let check = registry.key_check()?;
        let bytes = match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(key_error(format!("others may read it (mode {mode:o}): chmod 600 it")));
                }
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?);
                let bytes = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .map_err(|_| key_error("not a key (a line of base64)".into()))?,
                );
                if bytes.len() != KEY_LEN {
                    return Err(key_error(format!("a key is {KEY_LEN} bytes, this one {}", bytes.len())));
                }
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if check.is_some() {
                    return Err(SecretsError::MissingKey { path: shown });
                }
                make_key(path).map_err(|e| key_error(format!("cannot create it: {e}")))?
            }
            Err(e) => return Err(key_error(e.to_string())),
        };
        let vault = Self {
            key: RandomizedNonceKey::new(&AES_256_GCM, &bytes).map_err(|_| key_error("unusable key".into()))?,
        };
        match check {
            Some(sealed) => {
                if vault.open_sealed(b"check", &sealed).as_deref().map(|v| v.as_slice()) != Some(CHECK) {
                    return Err(SecretsError::WrongKey { path: shown });
                }
            }
            None => {
                // Two hosts starting on an empty shared registry: the first
                // check stored wins, and the other is held to it.
                registry.set_key_check(&vault.seal_bytes(b"check", CHECK))?;
                let stored = registry.key_check()?.unwrap_or_default();
                if vault.open_sealed(b"check", &stored).is_none() {
                    return Err(SecretsError::WrongKey { path: shown });
                }
            }
        }
        Ok(vault)
    }

    /// `value` sealed for `tenant`'s secret `name`.
    pub fn seal(&self, tenant: &str, name: &str, value: &[u8]) -> Vec<u8> {
        self.seal_bytes(&aad(tenant, name), value)
    }

    /// The value of `tenant`'s secret `name`, from its sealed bytes.
    pub fn unseal(&self, tenant: &str, name: &str, sealed: &[u8]) -> Result<Zeroizing<String>, SecretsError> {
        let corrupt = || SecretsError::Corrupt {
            tenant: tenant.to_string(),
            name: name.to_string(),
        };
        let bytes = self.open_sealed(&aad(tenant, name), sealed).ok_or_else(corrupt)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| corrupt())
    }

    /// The values of `names`, `tenant`'s, for a run; a name it does not
    /// have is an error naming it.
    pub fn secrets(&self, registry: &Registry, tenant: &str, names: &[String]) -> Result<Secrets, ReadError> {
        let mut values = Vec::with_capacity(names.len());
        for name in names {
            let sealed = registry
                .secret(tenant, name)
                .map_err(|e| ReadError::Failed(e.into()))?
                .ok_or_else(|| ReadError::Missing(name.clone()))?;
            values.push((
                name.clone(),
                self.unseal(tenant, name, &sealed).map_err(ReadError::Failed)?,
            ));
        }
        Ok(Secrets::new(values))
    }

    fn seal_bytes(&self, aad: &[u8], value: &[u8]) -> Vec<u8> {
        let mut in_out = value.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(aad), &mut in_out)
            .expect("AES-GCM seals any value under 64 GiB");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(FORMAT);
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&in_out);
        sealed
    }

    fn open_sealed(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (&format, rest) = sealed.split_first()?;
        if format != FORMAT || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = Zeroizing::new(ciphertext.to_vec());
        let plain = self.key.open_in_place(nonce, Aad::from(aad), &mut in_out).ok()?.len();
        in_out.truncate(plain);
        Some(in_out)
    }
}

/// Why a run's secrets could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The tenant has no secret of that name.
    Missing(String),
    Failed(SecretsError),
}

/// Sealed values belong to one tenant's secret of one name.
fn aad(tenant: &str, name: &str) -> Vec<u8> {
    format!("bizon-host secret\0{tenant}\0{name}").into_bytes()
}

/// A new random key at `path`, readable by its owner only.
fn make_key(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(vec![0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| std::io::Error::other("no randomness"))?;
    let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*bytes));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    tracing::info!(
        "made a new secrets key at {}: keep a copy (without it, tenants' secrets cannot be read)",
        path.display()
    );
    Ok(bytes)
}

/// Where the key is: the flag, the serve config, else the data dir's.
pub fn key_path(configured: Option<&Path>, data_dir: &Path) -> PathBuf {
    configured.map_or_else(|| data_dir.join(KEY_FILE), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::registry::Location;

    #[test]
    fn values_are_sealed_per_tenant_and_name_and_a_wrong_or_missing_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&Location::Sqlite, dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let vault = Vault::open(&path, &registry).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = vault.seal("acme", "token", b"s3cr3t");
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(vault.unseal("acme", "token", &sealed).unwrap().as_str(), "s3cr3t");
        // Moved to another tenant's row, or another name, it does not open.
        assert!(vault.unseal("bravo", "token", &sealed).is_err());
        assert!(vault.unseal("acme", "other", &sealed).is_err());
        // Opened again with the same key: fine.
        Vault::open(&path, &registry).unwrap();
        // Another key.
        let other = dir.path().join("other.key");
        std::fs::write(&other, base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Vault::open(&other, &registry).err().unwrap().to_string();
        assert!(err.contains("is not the key"), "{err}");
        // None: the registry has a check value, so no new key is made.
        let err = Vault::open(&dir.path().join("gone.key"), &registry)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is missing") && err.contains("restore"), "{err}");
        assert!(!dir.path().join("gone.key").exists());
        // Readable by others.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Vault::open(&path, &registry).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
