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
mod store;

pub use error::Error;
pub use master::{MasterKeySource, Pkcs11Config, Secret};
pub use pkcs11::Token;
pub use signer::HubKey;

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::pkcs11::WrapKey;
use crate::sealed::{KeyWrapper, MasterKey};
use crate::store::{Argon2Record, FORMAT_VERSION, VaultFile, invalid};

/// The vault's metadata file in the data dir.
pub const VAULT_FILE: &str = "vault.json";

/// Prefix of sealed key references.
const SEALED_PREFIX: &str = "sealed:v1:";
/// The known plaintext of the check value, and its context.
const CHECK_PLAINTEXT: &[u8] = b"moat-vault check value v1";
const CHECK_CONTEXT: &str = "moat-vault:check:v1";
/// The context sealed hub keys are bound to (a `KeyRef` cannot be unsealed as another secret).
const KEY_CONTEXT: &str = "moat-vault:hub-key:v1";

/// A stored reference to a hub key: a sealed PKCS#8 key or a PKCS#11 object reference.
/// Safe to store and log (it never contains a plaintext key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef(pub String);

/// The hub's secret store.
#[derive(Debug)]
pub struct Vault {
    backend: Backend,
}

/// What wraps data keys, and where hub keys live.
#[derive(Debug)]
enum Backend {
    /// A master key in memory (from the key file or the passphrase); hub keys are sealed.
    Software {
        /// `"file"` or `"passphrase"`.
        kind: &'static str,
        master: MasterKey,
    },
    /// A token: hub keys are token objects, data keys are wrapped by the token's AES key.
    Pkcs11 { token: Token, wrap: WrapKey },
}

impl Vault {
    /// Opens the vault of `data_dir` with `source`, creating `vault.json` (and, for
    /// [`MasterKeySource::File`], the key file with mode 0600) on first use. Refuses with
    /// [`Error::WrongMasterKey`] when the key/passphrase/token does not match the check value,
    /// and with [`Error::SourceMismatch`] when the data dir was set up with another kind of
    /// source. Never modifies existing files when it refuses.
    pub fn open(data_dir: &Path, source: MasterKeySource) -> Result<Vault, Error> {
        store::ensure_dir(data_dir)?;
        let json_path = data_dir.join(VAULT_FILE);
        let existing = store::read_vault_file(&json_path)?;
        if let Some(file) = &existing
            && file.source != source.kind()
        {
            return Err(Error::SourceMismatch {
                expected: file.source.clone(),
                given: source.kind(),
            });
        }
        let mut new_file = VaultFile {
            version: FORMAT_VERSION,
            source: source.kind().to_owned(),
            argon2: None,
            pkcs11: None,
            check: String::new(),
        };

        let backend = match &source {
            MasterKeySource::File(path) => {
                let key = match store::read_key_file(path)? {
                    Some(key) => key,
                    None if existing.is_none() => store::create_key_file(path)?,
                    None => {
                        return Err(Error::BadKeyFile {
                            path: path.display().to_string(),
                            problem:
                                "does not exist, but this data dir's vault was created with a key \
                                      file: restore that file (a new key cannot open the vault)"
                                    .into(),
                        });
                    }
                };
                Backend::Software {
                    kind: "file",
                    master: MasterKey::new(key),
                }
            }
            MasterKeySource::Passphrase(passphrase) => {
                let record = match &existing {
                    Some(file) => file.argon2.clone().ok_or_else(|| {
                        invalid(&json_path, "source is passphrase but \"argon2\" is missing")
                    })?,
                    None => new_argon2_record()?,
                };
                let salt = B64
                    .decode(&record.salt)
                    .map_err(|e| invalid(&json_path, e))?;
                let key = master::derive_passphrase_key(
                    passphrase,
                    &salt,
                    record.m_cost,
                    record.t_cost,
                    record.p_cost,
                )?;
                new_file.argon2 = Some(record);
                Backend::Software {
                    kind: "passphrase",
                    master: MasterKey::new(key),
                }
            }
            MasterKeySource::Pkcs11(cfg) => {
                let token = Token::open(cfg)?;
                let wrap = match &existing {
                    Some(file) => {
                        let record = file.pkcs11.as_ref().ok_or_else(|| {
                            invalid(&json_path, "source is pkcs11 but \"pkcs11\" is missing")
                        })?;
                        let id =
                            hex::decode(&record.wrap_key_id).map_err(|e| invalid(&json_path, e))?;
                        token.find_wrap_key(id)?
                    }
                    None => {
                        let (wrap, record) = token.create_wrap_key()?;
                        new_file.pkcs11 = Some(record);
                        wrap
                    }
                };
                Backend::Pkcs11 { token, wrap }
            }
        };

        let vault = Vault { backend };
        match existing {
            Some(file) => {
                let check = B64
                    .decode(&file.check)
                    .map_err(|e| invalid(&json_path, e))?;
                match vault.unseal(&check, CHECK_CONTEXT) {
                    Ok(plain) if plain.as_slice() == CHECK_PLAINTEXT => {}
                    Ok(_) | Err(Error::Unseal) => return Err(Error::WrongMasterKey),
                    Err(e) => return Err(e),
                }
            }
            None => {
                new_file.check = B64.encode(vault.seal(CHECK_PLAINTEXT, CHECK_CONTEXT)?);
                store::write_vault_file(&json_path, &new_file)?;
            }
        }
        Ok(vault)
    }

    /// `"file"`, `"passphrase"` or `"pkcs11"`.
    pub fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::Software { kind, .. } => kind,
            Backend::Pkcs11 { .. } => "pkcs11",
        }
    }

    /// Generates a new ECDSA P-256 signing key for the hub (CA, manifest signing). Software
    /// backends generate it in memory and return it sealed; PKCS#11 generates it inside the
    /// token (CKA_SENSITIVE, non-extractable, CKA_LABEL = `label` + a random suffix).
    pub fn generate_key(&self, label: &str) -> Result<(KeyRef, HubKey), Error> {
        match &self.backend {
            Backend::Software { .. } => {
                let pair = rcgen::KeyPair::generate()
                    .map_err(|e| Error::Crypto(format!("P-256 key generation: {e}")))?;
                let pkcs8 = Zeroizing::new(pair.serialize_der());
                let sealed = self.seal(&pkcs8, KEY_CONTEXT)?;
                tracing::debug!(label, "generated a sealed P-256 hub key");
                Ok((
                    KeyRef(format!("{SEALED_PREFIX}{}", B64.encode(sealed))),
                    HubKey::software(pair),
                ))
            }
            Backend::Pkcs11 { token, .. } => token.generate_key(label),
        }
    }

    /// Loads a key from its reference (unseals it, or finds it in the token).
    pub fn load_key(&self, key: &KeyRef) -> Result<HubKey, Error> {
        if let Some(encoded) = key.0.strip_prefix(SEALED_PREFIX) {
            let sealed = B64.decode(encoded).map_err(corrupt_key_ref)?;
            let pkcs8 = self.unseal(&sealed, KEY_CONTEXT)?;
            let pair = rcgen::KeyPair::try_from(pkcs8.as_slice())
                .map_err(|e| Error::Crypto(format!("unsealed hub key does not parse: {e}")))?;
            if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
                return Err(Error::Crypto("unsealed hub key is not ECDSA P-256".into()));
            }
            return Ok(HubKey::software(pair));
        }
        match &self.backend {
            Backend::Pkcs11 { token, .. } if key.0.starts_with(pkcs11::KEYREF_PREFIX) => {
                token.load_key(key)
            }
            _ => Err(Error::BadKeyRef),
        }
    }

    /// Seals an arbitrary secret (envelope encryption). `context` is bound as associated data:
    /// opening with another context fails.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, Error> {
        sealed::seal(self.wrapper(), plaintext, context)
    }

    /// Opens what [`Vault::seal`] sealed.
    pub fn unseal(
        &self,
        sealed: &[u8],
        context: &str,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
        sealed::unseal(self.wrapper(), sealed, context)
    }

    fn wrapper(&self) -> &dyn KeyWrapper {
        match &self.backend {
            Backend::Software { master, .. } => master,
            Backend::Pkcs11 { wrap, .. } => wrap,
        }
    }
}

/// Fresh argon2id parameters and salt for a new passphrase vault.
fn new_argon2_record() -> Result<Argon2Record, Error> {
    let mut salt = [0u8; master::SALT_LEN];
    aws_lc_rs::rand::fill(&mut salt).map_err(|e| Error::Crypto(format!("random: {e}")))?;
    Ok(Argon2Record {
        salt: B64.encode(salt),
        m_cost: master::ARGON2_M_COST,
        t_cost: master::ARGON2_T_COST,
        p_cost: master::ARGON2_P_COST,
    })
}

/// A `sealed:v1:` reference whose body is not base64 is corrupt sealed data; the decoder's
/// detail goes to the debug log.
fn corrupt_key_ref(cause: base64::DecodeError) -> Error {
    tracing::debug!(%cause, "sealed key reference is not base64");
    Error::Unseal
}
