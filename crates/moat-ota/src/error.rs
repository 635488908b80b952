//! The one error type of this crate, classified so the API maps it to an HTTP status in one
//! place (`moat-api`) and the CLI prints a line that says what to do.

/// What can go wrong in an OTA operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (bad name, bad target, bad threshold). The text says what
    /// to fix.
    #[error("{0}")]
    Invalid(String),
    /// The image was refused by the verifier devices run (bad signature, unknown key, bad
    /// layout): the verifier's reason.
    #[error("image refused: {0}")]
    ImageRefused(#[source] moat_image::ImageError),
    /// The image's security counter is below one already published for its model: devices
    /// that installed that one would refuse it (and a rollback must not be publishable).
    #[error(
        "image refused: security counter {counter} is below {published}, already published for model {model:?}; sign it with --security-counter {published} or higher"
    )]
    CounterBelowPublished {
        /// The image's counter.
        counter: u32,
        /// The highest published for the model.
        published: u32,
        /// The model.
        model: String,
    },
    /// The image is larger than the configured limit.
    #[error("image of {size} bytes is over the {limit}-byte limit (ota.max_image_size)")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// No such key, image or campaign.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What was looked up.
        kind: &'static str,
        /// Its key.
        id: String,
    },
    /// It exists already (key name, the same image for the same model).
    #[error("{kind} {id:?} already exists")]
    Conflict {
        /// What.
        kind: &'static str,
        /// Its key.
        id: String,
    },
    /// Not allowed in the current state (resume a cancelled campaign, sign with an offline key).
    #[error("{0}")]
    State(String),
    /// The device may not download this image (not a notified target of an active
    /// campaign for it, or not active).
    #[error("device {device:?} is not a notified target of an active campaign for image {digest}")]
    DownloadRefused {
        /// The device.
        device: String,
        /// The image digest asked for.
        digest: String,
    },
    /// Signing (an image or a manifest) failed in the vault or token.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The registry failed.
    #[error("registry error")]
    Store(#[source] moat_store::Error),
    /// The secret store failed.
    #[error("secret store error")]
    Vault(#[from] moat_vault::Error),
    /// The hub's core failed (device lookups).
    #[error(transparent)]
    Core(#[from] moat_core::Error),
    /// Reading or writing a firmware blob failed.
    #[error("firmware storage error: {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
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
            // Classified once, by moat-core: storage full (507), registry unavailable (503).
            e if e.is_storage_full() || e.is_unavailable() => Error::Core(e.into()),
            other => Error::Store(other),
        }
    }
}

impl Error {
    /// A short machine-readable kind (problem `type` suffix, audit detail).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid(_) | Error::TooLarge { .. } => "invalid-request",
            Error::ImageRefused(_) | Error::CounterBelowPublished { .. } => "image-refused",
            Error::NotFound { .. } => "not-found",
            Error::Conflict { .. } => "conflict",
            Error::State(_) => "invalid-state",
            Error::DownloadRefused { .. } => "forbidden",
            Error::Core(e) => e.kind(),
            Error::Io { .. } if self.is_storage_full() => "storage-full",
            Error::Signing(_) | Error::Store(_) | Error::Vault(_) | Error::Io { .. } => "internal",
        }
    }

    /// A blob could not be written because the disk is full (registry errors of that kind
    /// are already [`moat_core::Error::StorageFull`]).
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
    }

    /// Whether the message is safe and useful to show the caller.
    pub fn is_client_error(&self) -> bool {
        self.kind() != "internal"
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
