//! The one error type of this crate.

use thiserror::Error;

/// Everything that can go wrong building or checking X.509 objects.
#[derive(Debug, Error)]
pub enum Error {
    /// The input is not PEM or DER of the expected kind (names what was expected).
    #[error("not a valid {what}: {detail}")]
    Malformed {
        /// What we tried to parse ("certificate", "CSR", "CRL", "public key").
        what: &'static str,
        /// The parser's reason.
        detail: String,
    },
    /// The CSR is larger than [`crate::MAX_CSR_BYTES`].
    #[error("CSR is {size} bytes; the limit is {limit}")]
    CsrTooLarge {
        /// Size received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The CSR's self-signature does not verify: whoever made it does not hold the key.
    #[error("CSR signature does not verify")]
    CsrBadSignature,
    /// The CSR's key type or size is not one we issue for.
    #[error(
        "unsupported key in CSR: {0} (accepted: EC P-256, EC P-384, Ed25519, RSA 2048 bits or more)"
    )]
    UnsupportedKey(String),
    /// The CSR asks for something a device must never get (CA:TRUE).
    #[error(
        "CSR requests a CA certificate (basicConstraints CA:TRUE); device certificates are never CAs"
    )]
    CsrRequestsCa,
    /// The certificate has no identity under the CA's identity rule.
    #[error("certificate has no {0} to take the identity from")]
    NoIdentity(&'static str),
    /// A certificate offered as a CA is not one (no basicConstraints CA:TRUE).
    #[error("certificate is not a CA (basicConstraints CA:TRUE missing)")]
    NotACa,
    /// The verification certificate's CN is not the registration code.
    #[error("verification certificate CN does not match the registration code")]
    VerificationCodeMismatch,
    /// The verification certificate is not signed by the CA's key: no proof of possession.
    #[error("verification certificate is not signed by the CA's key")]
    VerificationNotSigned,
    /// An EST re-enrollment CSR does not name the same subject (or SAN) as the certificate
    /// being renewed (RFC 7030 §4.2.2).
    #[error(
        "re-enrollment must keep the certificate's {field}: the CSR asks for {requested:?}, the certificate has {current:?}"
    )]
    RenewalMismatch {
        /// `subject` or `subjectAltName`.
        field: &'static str,
        /// What the CSR asks for.
        requested: String,
        /// What the current certificate carries.
        current: String,
    },
    /// An EST request body is empty (or whitespace only).
    #[error("the EST request body is empty")]
    EstBodyEmpty,
    /// An EST request body is neither PEM nor base64.
    #[error("the EST request body is not base64")]
    EstBodyNotBase64(#[source] base64::DecodeError),
    /// A CMS or DER object (EST certs-only response, CSR attributes) could not be built or
    /// read.
    #[error("CMS/DER encoding failed")]
    Cms(#[source] der::Error),
    /// rcgen refused to build or sign (the cause is kept).
    #[error("certificate generation failed")]
    Generate(#[source] rcgen::Error),
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Generate(e)
    }
}
