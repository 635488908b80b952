//! Why a node cannot start (or a file of its data directory cannot be written): one enum,
//! each variant naming what failed in words an operator can act on and keeping the cause.

/// A node's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable; the text names the key and the fix.
    #[error("{0}")]
    Config(String),
    /// A file that must be new exists already.
    #[error("{path} already exists; move it away or choose another --out directory")]
    Exists {
        /// The file.
        path: String,
    },
    /// A stored value does not decode (MQTT session or retained message): what and why.
    #[error("{0}")]
    Corrupt(String),
    /// A value cannot be encoded or decoded (postcard for stored MQTT state, JSON for
    /// `hub.json`).
    #[error("{what}")]
    Codec {
        /// Which value.
        what: String,
        /// The encoding error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file or directory cannot be read or written.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The vault cannot be opened.
    #[error("{what}")]
    Vault {
        /// What was being done.
        what: String,
        /// The vault's error.
        #[source]
        source: moat_vault::Error,
    },
    /// The registry cannot be opened.
    #[error("{what}")]
    Registry {
        /// What was being done.
        what: String,
        /// The registry's error.
        #[source]
        source: moat_store::Error,
    },
    /// A hub service failed while the node started.
    #[error("{what}")]
    Hub {
        /// What was being done.
        what: String,
        /// The hub's error.
        #[source]
        source: moat_core::Error,
    },
    /// A TLS listener's configuration cannot be built.
    #[error("{what}")]
    Tls {
        /// Which configuration.
        what: String,
        /// The cause (rustls, or the client-certificate verifier).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The MQTT broker's stored state cannot be restored.
    #[error("{what}")]
    Broker {
        /// What was being done.
        what: String,
        /// The broker's error.
        #[source]
        source: moat_broker::Error,
    },
    /// Firmware updates cannot start.
    #[error("{what}")]
    Ota {
        /// What was being done.
        what: String,
        /// The OTA service's error.
        #[source]
        source: moat_ota::Error,
    },
}

/// An error of a crate below, with what the node was doing when it happened.
pub(crate) trait Cause {
    fn doing(self, what: String) -> Error;
}

macro_rules! cause {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl Cause for $ty {
            fn doing(self, what: String) -> Error {
                Error::$variant { what, source: self }
            }
        }
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                e.doing(concat!("failed: ", stringify!($ty)).into())
            }
        }
    )*};
}

cause! {
    std::io::Error => Io,
    moat_vault::Error => Vault,
    moat_store::Error => Registry,
    moat_core::Error => Hub,
    moat_broker::Error => Broker,
    moat_ota::Error => Ota,
}

macro_rules! boxed_cause {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl Cause for $ty {
            fn doing(self, what: String) -> Error {
                Error::$variant { what, source: Box::new(self) }
            }
        }
    )*};
}

boxed_cause! {
    postcard::Error => Codec,
    serde_json::Error => Codec,
    rustls::Error => Tls,
    moat_api::VerifierError => Tls,
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        e.doing("a stored value does not decode".into())
    }
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        e.doing("cannot build a TLS configuration".into())
    }
}

impl Cause for time::error::ConversionRange {
    fn doing(self, what: String) -> Error {
        Error::Config(format!("{what}: {self}"))
    }
}

/// Says what the node was doing when a lower crate's call failed.
pub(crate) trait Context<T> {
    /// The error, as [`Error`], with `what`.
    fn context(self, what: impl Into<String>) -> Result<T, Error>;
    /// [`Context::context`] with the text made only on failure.
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, Error>;
}

impl<T, E: Cause> Context<T> for Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T, Error> {
        self.map_err(|e| e.doing(what.into()))
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, Error> {
        self.map_err(|e| e.doing(what().into()))
    }
}
