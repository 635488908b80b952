//! Secrets at rest for Moat.
//!
//! Every private key the hub holds is either
//! - **sealed** (envelope encryption): a fresh 256-bit data key encrypts the secret with
//!   AES-256-GCM, and the data key is itself encrypted (wrapped) under the master key; or
//! - **in a PKCS#11 token**, generated there as non-extractable and used to sign there.
//!
//! The master key comes from a key file (`master.key`, 32 random bytes, mode 0600), from a
//! passphrase (argon2id; salt and parameters kept in `vault.json`), or — in PKCS#11 mode —
//! the token itself holds the signing keys and an AES wrapping key for sealed secrets.
//! `vault.json` in the data dir holds no secret: the source kind, the argon2 salt and
//! parameters, and a check value (a known plaintext sealed under the master key) so a wrong
//! key or passphrase is reported as such before anything is touched.
//!
//! What the registry stores is a [`KeyRef`]: an opaque string that is either a sealed key
//! (`sealed:v1:…`) or a token reference (`pkcs11:v1:…`). Neither contains a plaintext key.
//!
//! Not here: where `KeyRef`s are stored (that is `moat-store`), or what the keys sign
//! (`moat-pki`).

mod error;
mod master;
mod pkcs11;
mod sealed;
mod signer;

pub use error::Error;
pub use master::{MasterKeySource, Pkcs11Config, Secret};
pub use signer::HubKey;

use std::path::Path;

/// A stored reference to a hub key: a sealed PKCS#8 key or a PKCS#11 object reference.
/// Safe to store and log (it never contains a plaintext key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef(pub String);

/// The hub's secret store.
#[derive(Debug)]
pub struct Vault {
    // implementation-defined
}

impl Vault {
    /// Opens the vault of `data_dir` with `source`, creating `vault.json` (and, for
    /// [`MasterKeySource::File`], the key file with mode 0600) on first use. Refuses with
    /// [`Error::WrongMasterKey`] when the key/passphrase/token does not match the check value,
    /// and with [`Error::SourceMismatch`] when the data dir was set up with another kind of
    /// source. Never modifies existing files when it refuses.
    pub fn open(data_dir: &Path, source: MasterKeySource) -> Result<Vault, Error> {
        todo!()
    }

    /// `"file"`, `"passphrase"` or `"pkcs11"`.
    pub fn backend(&self) -> &'static str {
        todo!()
    }

    /// Generates a new ECDSA P-256 signing key for the hub (CA, manifest signing). Software
    /// backends generate it in memory and return it sealed; PKCS#11 generates it inside the
    /// token (CKA_SENSITIVE, non-extractable, CKA_LABEL = `label` + a random suffix).
    pub fn generate_key(&self, label: &str) -> Result<(KeyRef, HubKey), Error> {
        todo!()
    }

    /// Loads a key from its reference (unseals it, or finds it in the token).
    pub fn load_key(&self, key: &KeyRef) -> Result<HubKey, Error> {
        todo!()
    }

    /// Seals an arbitrary secret (envelope encryption). `context` is bound as associated data:
    /// opening with another context fails.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, Error> {
        todo!()
    }

    /// Opens what [`Vault::seal`] sealed.
    pub fn unseal(&self, sealed: &[u8], context: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
        todo!()
    }
}
