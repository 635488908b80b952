//! Where the master key comes from.

use std::fmt;
use std::path::PathBuf;

/// A secret string (passphrase, PIN) whose `Debug` prints `[redacted]`; zeroed on drop.
#[derive(Clone)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(zeroize::Zeroizing::new(s.into()))
    }
    /// The secret itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The PKCS#11 token holding the hub's keys.
#[derive(Clone, Debug)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN.
    pub pin: Secret,
}

/// Which master key opens the vault.
#[derive(Clone, Debug)]
pub enum MasterKeySource {
    /// A 32-byte key file (created with mode 0600 on first use if missing).
    File(PathBuf),
    /// A passphrase stretched with argon2id.
    Passphrase(Secret),
    /// A PKCS#11 token.
    Pkcs11(Pkcs11Config),
}

impl MasterKeySource {
    /// The name recorded in `vault.json`: `"file"`, `"passphrase"` or `"pkcs11"`.
    pub fn kind(&self) -> &'static str {
        match self {
            MasterKeySource::File(_) => "file",
            MasterKeySource::Passphrase(_) => "passphrase",
            MasterKeySource::Pkcs11(_) => "pkcs11",
        }
    }
}

/// Argon2id memory cost for new vaults, KiB (64 MiB).
pub(crate) const ARGON2_M_COST: u32 = 64 * 1024;
/// Argon2id iterations for new vaults.
pub(crate) const ARGON2_T_COST: u32 = 3;
/// Argon2id lanes for new vaults.
pub(crate) const ARGON2_P_COST: u32 = 1;
/// Salt length for new vaults.
pub(crate) const SALT_LEN: usize = 16;

/// Upper bounds on stored parameters, so an edited `vault.json` cannot make opening the
/// vault take gigabytes of memory or hours.
const MAX_M_COST: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;

/// Stretches a passphrase into a 256-bit master key with argon2id.
pub(crate) fn derive_passphrase_key(
    passphrase: &Secret,
    salt: &[u8],
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
) -> Result<zeroize::Zeroizing<[u8; crate::store::KEY_LEN]>, crate::Error> {
    use argon2::{Algorithm, Argon2, Params, Version};
    if m_cost > MAX_M_COST || t_cost > MAX_T_COST || p_cost > MAX_P_COST {
        return Err(crate::Error::Crypto(format!(
            "argon2 parameters m={m_cost} t={t_cost} p={p_cost} exceed the limits \
             (m<={MAX_M_COST}, t<={MAX_T_COST}, p<={MAX_P_COST})"
        )));
    }
    let params = Params::new(m_cost, t_cost, p_cost, Some(crate::store::KEY_LEN))
        .map_err(|e| crate::Error::Crypto(format!("argon2 parameters: {e}")))?;
    let mut key = zeroize::Zeroizing::new([0u8; crate::store::KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.expose().as_bytes(), salt, key.as_mut())
        .map_err(|e| crate::Error::Crypto(format!("argon2id: {e}")))?;
    Ok(key)
}
