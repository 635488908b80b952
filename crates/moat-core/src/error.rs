//! The one error type of the core, classified so the API maps it to an HTTP status in one
//! place and the CLI to a message that says what to do.

/// What can go wrong in a hub operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (bad id, bad argument). The text says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// A CSR, certificate or CRL input was refused by the X.509 checks.
    #[error(transparent)]
    Pki(#[from] moat_pki::Error),
    /// A certificate offered for binding does not chain to a registered CA.
    #[error("certificate refused: {0}")]
    Chain(#[source] moat_pki::ChainError),
    /// The certificate's identity (by its CA's rule) is not the device id given.
    #[error(
        "certificate identity is {found:?} (by the {rule} rule of CA {ca:?}), not {expected:?}"
    )]
    IdentityMismatch {
        /// The device id asked for.
        expected: String,
        /// The identity the certificate carries.
        found: String,
        /// The rule applied.
        rule: &'static str,
        /// The CA.
        ca: String,
    },
    /// No such device, certificate, CA or CRL.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What was looked up.
        kind: &'static str,
        /// Its key.
        id: String,
    },
    /// The thing already exists (device id, CA).
    #[error("{kind} {id:?} already exists")]
    Conflict {
        /// What.
        kind: &'static str,
        /// Its key.
        id: String,
    },
    /// Someone else holds it (another owner claimed the device, or changed it meanwhile).
    /// The text names the holder and the way forward.
    #[error("{0}")]
    Held(String),
    /// The operation is not allowed in the current state (e.g. enabling a revoked device,
    /// removing a hub CA).
    #[error("{0}")]
    State(String),
    /// The registration code is unknown, used or expired.
    #[error(
        "registration code is unknown, already used or expired; get a new one with `moat ca registration-code`"
    )]
    RegistrationCode,
    /// An EST request is refused (the text is the public reason).
    #[error(transparent)]
    Est(#[from] crate::EstRefusal),
    /// A provisioning call is refused (the text is the public reason).
    #[error(transparent)]
    Provision(#[from] crate::ProvisionRefusal),
    /// The registry failed.
    #[error("registry error")]
    Store(#[source] moat_store::Error),
    /// The hub's storage is full: nothing of the request was written.
    #[error(
        "the hub's storage is full: nothing was written; free space on the hub's data disk (or the PostgreSQL server's) and try again"
    )]
    StorageFull(#[source] moat_store::Error),
    /// The registry cannot be reached now (PostgreSQL down or unreachable): nothing of the
    /// request was written; the same request can succeed once it is back.
    #[error("the registry is unavailable: nothing was written; try again shortly")]
    Unavailable(#[source] moat_store::Error),
    /// The secret store failed (wrong master key, token error).
    #[error("secret store error")]
    Vault(#[from] moat_vault::Error),
    /// An invariant of the hub's own data is broken (e.g. a hub CA certificate that no
    /// longer parses). Never caused by user input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<moat_store::Error> for Error {
    fn from(e: moat_store::Error) -> Self {
        match e {
            moat_store::Error::Conflict(what) => Error::Conflict {
                kind: "record",
                id: what,
            },
            moat_store::Error::NotFound(what) => Error::NotFound {
                kind: "record",
                id: what,
            },
            full if full.is_storage_full() => Error::StorageFull(full),
            gone if gone.is_unavailable() => Error::Unavailable(gone),
            other => Error::Store(other),
        }
    }
}

impl Error {
    /// A short machine-readable kind (the problem document's `type` suffix and the audit
    /// detail).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid-request",
            Error::Pki(_) => "invalid-x509",
            Error::Chain(_) => "untrusted-certificate",
            Error::IdentityMismatch { .. } => "identity-mismatch",
            Error::NotFound { .. } => "not-found",
            Error::Conflict { .. } | Error::Held(_) => "conflict",
            Error::State(_) => "invalid-state",
            Error::RegistrationCode => "registration-code",
            Error::Est(_) => "est-refused",
            Error::Provision(_) => "provisioning-refused",
            Error::StorageFull(_) => "storage-full",
            Error::Unavailable(_) => "unavailable",
            Error::Store(_) | Error::Vault(_) | Error::Internal(_) => "internal",
        }
    }

    /// Whether the message is safe and useful to show the caller (caused by their input),
    /// or an internal failure whose cause goes to the log only.
    pub fn is_client_error(&self) -> bool {
        self.kind() != "internal"
    }
}
