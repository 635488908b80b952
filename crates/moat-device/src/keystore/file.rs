//! The encrypted file key store: a directory with `vault.json` (argon2id salt and cost, a
//! check value that tells a wrong passphrase apart from a corrupt file) and one
//! `LABEL.key` per key, holding the key sealed by moat-vault (PKCS#8 under a fresh AES-256-GCM
//! data key, itself wrapped under the passphrase-derived master key). No plaintext key is
//! ever written.

use std::path::{Path, PathBuf};

use moat_vault::{KeyRef, MasterKeySource, Secret, Vault};

use super::{DeviceKey, KeyStore, check_label};
use crate::{Error, files};

/// Keys sealed under a passphrase in a directory (`file:DIR`).
#[derive(Debug)]
pub struct FileKeyStore {
    dir: PathBuf,
    vault: Vault,
}

impl FileKeyStore {
    /// Opens (creating on first use, mode 0700) the key store in `dir`. A passphrase that
    /// does not match the one the store was created with is [`Error::WrongPassphrase`].
    pub fn open(dir: &Path, passphrase: Secret) -> Result<FileKeyStore, Error> {
        let vault = match Vault::open(dir, MasterKeySource::Passphrase(passphrase)) {
            Ok(v) => v,
            Err(moat_vault::Error::WrongMasterKey) => {
                return Err(Error::WrongPassphrase(dir.to_path_buf()));
            }
            Err(e) => {
                return Err(Error::vault(format!(
                    "opening the key store in {}",
                    dir.display()
                ))(e));
            }
        };
        Ok(FileKeyStore {
            dir: dir.to_path_buf(),
            vault,
        })
    }

    fn key_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.key"))
    }
}

impl KeyStore for FileKeyStore {
    fn generate(&self, label: &str) -> Result<DeviceKey, Error> {
        check_label(label)?;
        let path = self.key_path(label);
        if path.exists() {
            return Err(Error::KeyExists {
                label: label.to_owned(),
                store: self.describe(),
            });
        }
        let (key_ref, key) = self
            .vault
            .generate_key(label)
            .map_err(Error::vault("generating a P-256 key"))?;
        let mut text = key_ref.0.into_bytes();
        text.push(b'\n');
        match files::write_new(&path, &text) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::KeyExists {
                    label: label.to_owned(),
                    store: self.describe(),
                })
            }
            Err(e) => Err(e),
            Ok(()) => Ok(DeviceKey::new(key, label)),
        }
    }

    fn load(&self, label: &str) -> Result<DeviceKey, Error> {
        check_label(label)?;
        let path = self.key_path(label);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::KeyNotFound {
                    label: label.to_owned(),
                    store: self.describe(),
                });
            }
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let key = self
            .vault
            .load_key(&KeyRef(text.trim().to_owned()))
            .map_err(Error::vault(format!("unsealing {}", path.display())))?;
        Ok(DeviceKey::new(key, label))
    }

    fn describe(&self) -> String {
        format!("file key store {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::SigningKey;

    #[test]
    fn generate_load_refuse_overwrite_and_wrong_passphrase() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ks");
        let store = FileKeyStore::open(&dir, Secret::new("correct horse")).expect("open");
        let key = store.generate("device").expect("generate");
        assert_eq!(key.backend(), "software");
        let spki = key.public_key_der();
        key.sign(b"hello").expect("sign");

        // 0600, and no plaintext PKCS#8 in it.
        let path = dir.join("device.key");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("sealed:v1:"), "{text}");

        assert!(matches!(
            store.generate("device"),
            Err(Error::KeyExists { .. })
        ));
        assert!(matches!(
            store.load("other"),
            Err(Error::KeyNotFound { .. })
        ));
        drop(store);

        let again = FileKeyStore::open(&dir, Secret::new("correct horse")).expect("reopen");
        assert_eq!(again.load("device").expect("load").public_key_der(), spki);
        assert!(matches!(
            FileKeyStore::open(&dir, Secret::new("wrong")),
            Err(Error::WrongPassphrase(_))
        ));
    }
}
