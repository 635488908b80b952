//! The one error type of this crate.

/// What can go wrong opening the vault or using its keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The master key, passphrase or token does not open this data dir's vault.
    #[error("the master key does not open this vault (wrong key file, passphrase or token)")]
    WrongMasterKey,
    /// The data dir was set up with another kind of master key source.
    #[error("this data dir's vault uses a {expected} master key, not {given}")]
    SourceMismatch {
        /// The kind recorded in vault.json.
        expected: String,
        /// The kind given.
        given: &'static str,
    },
    /// The key file exists but is not 32 bytes, or has permissions wider than 0600.
    #[error("master key file {path}: {problem}")]
    BadKeyFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A sealed value or key reference is corrupt or was sealed under another key/context.
    #[error("sealed data does not open (corrupt, or sealed under another key or context)")]
    Unseal,
    /// A key reference is not one this vault understands.
    #[error("unknown key reference format")]
    BadKeyRef,
    /// The PKCS#11 module or token failed.
    #[error("PKCS#11: {context}")]
    Pkcs11 {
        /// What we were doing.
        context: String,
        /// The token's error.
        #[source]
        source: cryptoki::error::Error,
    },
    /// The PKCS#11 token with the configured label was not found.
    #[error("PKCS#11 token labelled {0:?} not found")]
    TokenNotFound(String),
    /// The key object referenced is not in the token.
    #[error("PKCS#11 key {0:?} not found in the token")]
    KeyNotFound(String),
    /// A key with this label is already in the token (a named key is never overwritten).
    #[error("PKCS#11 token already holds a key labelled {0:?}")]
    KeyExists(String),
    /// Reading or writing vault files failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Key generation or the AEAD failed in the crypto library.
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
}
