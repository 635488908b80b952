//! RFC 9457 problem documents: the one place an error becomes an HTTP status and a public
//! message. Internal causes are logged with the request id, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moat_core::{Denial, Error, EstRefusal, ProvisionRefusal};
use serde::Serialize;

/// A problem document (`application/problem+json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:moat:problem:{kind}`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request, and what to do.
    pub detail: String,
}

impl Problem {
    /// A problem of `kind` with `status`.
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:moat:problem:{kind}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

/// A handler error: a core error or a ready problem.
#[derive(Debug)]
pub enum ApiError {
    /// From the domain.
    Core(Error),
    /// From the OTA service.
    Ota(moat_ota::Error),
    /// Built by the API layer (bad JSON, auth).
    Problem(Problem),
}

impl From<moat_ota::Error> for ApiError {
    fn from(e: moat_ota::Error) -> Self {
        match e {
            moat_ota::Error::Core(e) => ApiError::Core(e),
            other => ApiError::Ota(other),
        }
    }
}

/// The HTTP status of an OTA error.
pub fn status_of_ota(e: &moat_ota::Error) -> StatusCode {
    use moat_ota::Error as E;
    match e {
        E::Invalid(_) => StatusCode::BAD_REQUEST,
        E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::ImageRefused(_) | E::CounterBelowPublished { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        E::NotFound { .. } => StatusCode::NOT_FOUND,
        E::Conflict { .. } | E::State(_) => StatusCode::CONFLICT,
        E::DownloadRefused { .. } => StatusCode::FORBIDDEN,
        E::Core(e) => status_of(e),
        E::Io { .. } if e.is_storage_full() => StatusCode::INSUFFICIENT_STORAGE,
        E::Signing(_) | E::Store(_) | E::Vault(_) | E::Io { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Core(e)
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        ApiError::Problem(p)
    }
}

/// The HTTP status of a core error.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::Pki(_)
        | Error::Chain(_)
        | Error::IdentityMismatch { .. }
        | Error::RegistrationCode => StatusCode::UNPROCESSABLE_ENTITY,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Conflict { .. } | Error::Held(_) | Error::State(_) => StatusCode::CONFLICT,
        Error::Est(r) => match r {
            EstRefusal::NoCredentials | EstRefusal::BadStationToken(_) => StatusCode::UNAUTHORIZED,
            EstRefusal::BadCsr(_) | EstRefusal::NoSerial => StatusCode::BAD_REQUEST,
            EstRefusal::AlreadyEnrolled(_) | EstRefusal::DeviceExists(_) => StatusCode::CONFLICT,
            EstRefusal::Certificate(d) => status_of_denial(d),
            EstRefusal::NotAStation(_)
            | EstRefusal::NotAllowListed(_)
            | EstRefusal::NoClientCertificate
            | EstRefusal::NotADeviceCertificate(_)
            | EstRefusal::DeviceNotActive(..)
            | EstRefusal::SerialRetired(_) => StatusCode::FORBIDDEN,
        },
        Error::Provision(r) => match r {
            ProvisionRefusal::NoClientCertificate => StatusCode::UNAUTHORIZED,
            ProvisionRefusal::BadCsr(_) => StatusCode::BAD_REQUEST,
            ProvisionRefusal::Certificate(d) => status_of_denial(d),
        },
        Error::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Store(_) | Error::Vault(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The HTTP status of a client-certificate refusal ([`moat_core::CertificateCheck`]),
/// whichever HTTP entry point refused it (EST re-enrollment, provisioning, downloads).
pub fn status_of_denial(d: &Denial) -> StatusCode {
    match d {
        Denial::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    }
}

/// The problem document of a refused client certificate on a listener with no refusal enum
/// of its own (firmware downloads): the public reason and the step that refused.
pub fn denial_problem(d: &Denial) -> Problem {
    let status = status_of_denial(d);
    let title = status.canonical_reason().unwrap_or("Error");
    match d {
        Denial::Unavailable(_) => Problem::new(status, "unavailable", title, "try again later"),
        d => Problem::new(
            status,
            "device-not-admitted",
            title,
            format!("{} refuses: {d}", d.step()),
        ),
    }
}

impl ApiError {
    /// The problem document this error is answered with (server faults logged, their detail
    /// kept out of the answer). The console renders the same problem as a page.
    pub fn into_problem(self) -> Problem {
        match self {
            ApiError::Problem(p) => p,
            ApiError::Ota(e) => {
                let status = status_of_ota(&e);
                let detail = if e.is_client_error() {
                    e.to_string()
                } else {
                    tracing::error!(error = ?e, "request failed");
                    SERVER_FAULT.to_string()
                };
                let title = status.canonical_reason().unwrap_or("Error");
                Problem::new(status, e.kind(), title, detail)
            }
            ApiError::Core(e) => {
                let status = status_of(&e);
                let detail = if e.is_client_error() {
                    e.to_string()
                } else {
                    tracing::error!(error = ?e, "request failed");
                    SERVER_FAULT.to_string()
                };
                let title = status.canonical_reason().unwrap_or("Error");
                Problem::new(status, e.kind(), title, detail)
            }
        }
    }
}

const SERVER_FAULT: &str = "the hub failed to complete the request; the cause is in the hub's log";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_problem().into_response()
    }
}
