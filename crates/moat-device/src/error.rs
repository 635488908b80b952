//! The SDK's one error type (the OTA agent and the load generator keep their own).

use std::path::PathBuf;

/// What can go wrong in the key store, the EST and provisioning clients and the MQTT session.
/// Messages name the thing that failed and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key store specification (`file:DIR`, `pkcs11:…`) does not parse.
    #[error("key store {spec:?}: {problem}")]
    BadStoreSpec {
        /// The specification as given.
        spec: String,
        /// What is wrong, and what a valid one looks like.
        problem: String,
    },
    /// The passphrase does not open the encrypted key store.
    #[error("the passphrase does not open the key store in {0} (wrong passphrase?)")]
    WrongPassphrase(PathBuf),
    /// The PIN does not log in to the token.
    #[error("the PIN is not accepted by PKCS#11 token {0:?}")]
    WrongPin(String),
    /// The PKCS#11 token with that label is not present.
    #[error(
        "no PKCS#11 token labelled {0:?} (check the module path and the token label; softhsm2-util --show-slots lists tokens)"
    )]
    TokenNotFound(String),
    /// No key with this label in the store.
    #[error("no key labelled {label:?} in {store} (run `moat-device key generate` first)")]
    KeyNotFound {
        /// The key label.
        label: String,
        /// The store, for the message.
        store: String,
    },
    /// A key with this label already exists; keys are never overwritten.
    #[error(
        "{store} already holds a key labelled {label:?} (keys are never overwritten: pick another label)"
    )]
    KeyExists {
        /// The key label.
        label: String,
        /// The store, for the message.
        store: String,
    },
    /// Any other key store failure (token, crypto library, sealed file).
    #[error("key store: {context}")]
    Vault {
        /// What we were doing.
        context: String,
        /// The vault's error.
        #[source]
        source: moat_vault::Error,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A PEM or DER input (certificate, key, CSR) does not parse.
    #[error("{what}: {problem}")]
    BadInput {
        /// What was being read (a file name, or "the hub's answer").
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Certificate or CMS parsing in moat-pki failed.
    #[error("{what}")]
    Pki {
        /// What was being parsed.
        what: String,
        /// The cause.
        #[source]
        source: moat_pki::Error,
    },
    /// Building or signing the CSR failed (with a token key: the signature in the token).
    #[error("building the CSR")]
    Csr(#[source] rcgen::Error),
    /// A TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// The HTTP request did not complete (connection, TLS handshake, timeout).
    #[error(
        "{url}: request failed (is the hub reachable, and does --ca hold the CA that signed its certificate?)"
    )]
    Http {
        /// The request URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The hub answered with an error status (an RFC 9457 problem document, or text).
    #[error("{url}: refused with {status}{}: {detail}", title.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Refused {
        /// The request URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The problem document's `title`, if it was one.
        title: Option<String>,
        /// The problem document's `detail`, or the body text.
        detail: String,
    },
    /// The hub answered 2xx but with something that is not what the protocol says.
    #[error("{url}: unexpected answer: {problem}")]
    BadAnswer {
        /// The request URL.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The issued certificate does not certify the key the CSR was made with.
    #[error("{url}: the issued certificate is not for this device's key")]
    WrongKeyCertified {
        /// The request URL.
        url: String,
    },
    /// The MQTT URL or options are unusable.
    #[error("MQTT endpoint {url:?}: {problem}")]
    BadMqttUrl {
        /// The URL as given.
        url: String,
        /// What is wrong, and what a valid one looks like.
        problem: String,
    },
    /// The MQTT connection failed or was refused.
    #[error("MQTT connection")]
    Mqtt(#[source] Box<rumqttc::ConnectionError>),
    /// The MQTT session's request queue is gone (the event loop stopped).
    #[error("MQTT request")]
    MqttClient(#[source] rumqttc::ClientError),
    /// A signed message (COSE_Sign1) is refused: not the format, bad signature, replayed…
    #[error("signed message refused: {0}")]
    Cose(#[source] moat_cose::Error),
    /// A downlink names a signer the device does not trust.
    #[error("signed message refused: its x5t names no signer this device trusts")]
    UntrustedSigner,
    /// The signed message would not fit in one frame of the link.
    #[error("a payload of {payload} bytes does not fit one frame: at most {max} bytes here")]
    FrameTooLarge {
        /// The payload's size.
        payload: usize,
        /// The largest that fits.
        max: usize,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn vault(context: impl Into<String>) -> impl FnOnce(moat_vault::Error) -> Error {
        let context = context.into();
        move |source| Error::Vault { context, source }
    }

    pub(crate) fn pki(what: impl Into<String>) -> impl FnOnce(moat_pki::Error) -> Error {
        let what = what.into();
        move |source| Error::Pki { what, source }
    }

    pub(crate) fn http(url: &str) -> impl FnOnce(reqwest::Error) -> Error {
        let url = url.to_owned();
        move |source| Error::Http { url, source }
    }
}

impl From<rumqttc::ConnectionError> for Error {
    fn from(e: rumqttc::ConnectionError) -> Self {
        Error::Mqtt(Box::new(e))
    }
}
