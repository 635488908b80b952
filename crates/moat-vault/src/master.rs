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
