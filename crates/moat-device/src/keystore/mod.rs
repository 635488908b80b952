//! The device's private key: where it lives and how it signs.
//!
//! Two back ends behind one trait, [`KeyStore`]:
//! - [`FileKeyStore`] (`file:DIR`): keys sealed under a passphrase (argon2id → master key →
//!   AES-256-GCM envelope, the same code the hub's vault uses: `moat-vault`), one file per
//!   key label, written 0600 through a synced temporary file and never overwritten;
//! - [`Pkcs11KeyStore`] (`pkcs11:token=…;object=…?module-path=…`, RFC 7512): a P-256 key
//!   pair generated *inside* the token (CKA_TOKEN, CKA_SENSITIVE, not CKA_EXTRACTABLE). Every
//!   signature — the CSR's, the TLS CertificateVerify — is made in the token: SHA-256 here,
//!   `CKM_ECDSA` there, its raw `r‖s` turned into DER. The key never leaves the token.
//!
//! Both hand out a [`DeviceKey`], which signs for rcgen (CSRs) and for rustls (client
//! authentication, [`DeviceKey::rustls_signing_key`]).

mod file;
mod pkcs11;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use moat_vault::{HubKey, Secret};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use rustls::{SignatureAlgorithm as TlsAlgorithm, SignatureScheme};
use rustls_pki_types::SubjectPublicKeyInfoDer;

use crate::Error;

pub use file::FileKeyStore;
pub use pkcs11::{Pkcs11KeyStore, Pkcs11Spec};

/// Where device keys live: generate a named key once, load it on every start.
pub trait KeyStore: fmt::Debug + Send + Sync {
    /// Generates a new P-256 key labelled `label`; refuses ([`Error::KeyExists`]) if one
    /// exists.
    fn generate(&self, label: &str) -> Result<DeviceKey, Error>;
    /// Loads the key labelled `label` ([`Error::KeyNotFound`] if there is none).
    fn load(&self, label: &str) -> Result<DeviceKey, Error>;
    /// A short description for messages (`file key store /var/lib/…`, `PKCS#11 token "…"`).
    fn describe(&self) -> String;
}

/// A key store named on the command line or in configuration.
#[derive(Clone, Debug)]
pub enum StoreSpec {
    /// `file:DIR`: an encrypted key store directory.
    File(PathBuf),
    /// `pkcs11:…`: a key in a PKCS#11 token.
    Pkcs11(Pkcs11Spec),
}

impl StoreSpec {
    /// Parses `file:DIR` or an RFC 7512 PKCS#11 URI
    /// (`pkcs11:token=LABEL;object=KEY?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=FILE`).
    pub fn parse(spec: &str) -> Result<StoreSpec, Error> {
        if let Some(dir) = spec.strip_prefix("file:") {
            if dir.is_empty() {
                return Err(Error::BadStoreSpec {
                    spec: spec.to_owned(),
                    problem: "no directory: write file:/path/to/keystore".into(),
                });
            }
            return Ok(StoreSpec::File(PathBuf::from(dir)));
        }
        if spec.starts_with("pkcs11:") {
            return Pkcs11Spec::parse(spec).map(StoreSpec::Pkcs11);
        }
        Err(Error::BadStoreSpec {
            spec: spec.to_owned(),
            problem: "expected file:DIR or pkcs11:token=LABEL;object=KEY?module-path=MODULE".into(),
        })
    }

    /// The key label the specification names (`object=` of a PKCS#11 URI), if any.
    pub fn key_label(&self) -> Option<&str> {
        match self {
            StoreSpec::File(_) => None,
            StoreSpec::Pkcs11(p) => p.object.as_deref(),
        }
    }

    /// Opens the store. `secret` is the passphrase of a file store, or the PIN of a token
    /// when the URI carries none (`pin-value`/`pin-source`).
    pub fn open(&self, secret: Option<Secret>) -> Result<Box<dyn KeyStore>, Error> {
        match self {
            StoreSpec::File(dir) => {
                let passphrase = secret.ok_or_else(|| Error::BadStoreSpec {
                    spec: format!("file:{}", dir.display()),
                    problem: "a passphrase is needed (MOAT_DEVICE_PASSPHRASE or --passphrase-file)"
                        .into(),
                })?;
                Ok(Box::new(FileKeyStore::open(dir, passphrase)?))
            }
            StoreSpec::Pkcs11(p) => Ok(Box::new(Pkcs11KeyStore::open(p, secret)?)),
        }
    }
}

/// Key labels are file names in a file store and CKA_LABELs in a token: keep them plain.
pub(crate) fn check_label(label: &str) -> Result<(), Error> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && !label.starts_with('.')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadStoreSpec {
            spec: label.to_owned(),
            problem: "a key label is 1-64 characters of A-Z a-z 0-9 - _ . (not starting with .)"
                .into(),
        })
    }
}

/// A device's ECDSA P-256 private key, in memory (unsealed from a file store) or in a token.
/// Cheap to clone; `Debug` never prints key material.
#[derive(Clone)]
pub struct DeviceKey {
    inner: Arc<HubKey>,
    label: String,
}

impl DeviceKey {
    pub(crate) fn new(key: HubKey, label: &str) -> DeviceKey {
        DeviceKey {
            inner: Arc::new(key),
            label: label.to_owned(),
        }
    }

    /// `"software"` (unsealed from a file store) or `"pkcs11"` (inside a token).
    pub fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    /// The key's label in its store.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// DER SubjectPublicKeyInfo of the public key.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.inner.subject_public_key_info()
    }

    /// PEM `PUBLIC KEY` of the public key.
    pub fn public_key_pem(&self) -> String {
        crate::files::pem_encode("PUBLIC KEY", &self.public_key_der())
    }

    /// This key as a rustls signing key, for TLS client authentication: the TLS
    /// CertificateVerify is signed where the key lives (in the token, for a PKCS#11 key).
    pub fn rustls_signing_key(&self) -> Arc<dyn rustls::sign::SigningKey> {
        Arc::new(TlsKey(self.clone()))
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("label", &self.label)
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl PublicKeyData for DeviceKey {
    fn der_bytes(&self) -> &[u8] {
        self.inner.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.inner.algorithm()
    }
}

impl SigningKey for DeviceKey {
    /// ECDSA-SHA256, DER-encoded (X.509's and TLS's form).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.inner.sign(msg)
    }
}

/// rustls' view of a [`DeviceKey`]: ECDSA P-256 with SHA-256 only.
#[derive(Debug)]
struct TlsKey(DeviceKey);

impl rustls::sign::SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TlsSigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.0.public_key_der()))
    }

    fn algorithm(&self) -> TlsAlgorithm {
        TlsAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TlsSigner(DeviceKey);

impl rustls::sign::Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // The cause (a token error) is logged by moat-vault; rustls carries a string.
        self.0.sign(message).map_err(|e| {
            rustls::Error::General(format!(
                "device key {:?} ({}) could not sign: {e}",
                self.0.label,
                self.0.backend()
            ))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_what_is_wrong() {
        assert!(matches!(
            StoreSpec::parse("file:/tmp/ks"),
            Ok(StoreSpec::File(p)) if p == std::path::Path::new("/tmp/ks")
        ));
        for bad in ["file:", "/tmp/ks", "softhsm:x", ""] {
            let e = StoreSpec::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("file:"), "{bad}: {e}");
        }
    }

    #[test]
    fn labels_are_plain() {
        for ok in ["device", "factory-1", "op_key.v2"] {
            assert!(check_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "sp ace", &"x".repeat(65)] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }
}
