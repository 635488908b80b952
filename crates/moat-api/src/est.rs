//! EST (RFC 7030, with the RFC 8951 clarifications) under `/.well-known/est/` on the hub's
//! HTTPS listener: the protocol only — paths, media types, base64, CMS, multipart. Who may
//! enroll what is decided (and audited) by `moat-core` ([`moat_core::Hub::est_enroll`],
//! [`moat_core::Hub::est_reenroll`]).
//!
//! | path | method | auth | answer |
//! |---|---|---|---|
//! | `cacerts` | GET | none | `application/pkcs7-mime; smime-type=certs-only`: root + device CA |
//! | `csrattrs` | GET | none | `application/csrattrs`: P-256 key, ECDSA-SHA256 |
//! | `simpleenroll` | POST `application/pkcs10` | station: mTLS or HTTP Basic | certs-only: the new certificate |
//! | `simplereenroll` | POST `application/pkcs10` | mTLS with the certificate being renewed | certs-only |
//! | `serverkeygen` | POST `application/pkcs10` | station | `multipart/mixed`: `application/pkcs8` key + certs-only |
//!
//! Bodies are base64 (line breaks and other whitespace ignored, RFC 8951 §3.2); a PEM CSR is
//! accepted too. `Content-Transfer-Encoding` is ignored on input and sent on output; answers
//! are base64 in 64-column lines ending in LF.
//! Refusals are `application/problem+json` with the reason in `detail`, and 401 carries
//! `WWW-Authenticate: Basic`.

use crate::problem::{ApiError, Problem};
use crate::{AppState, TlsPeer};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use moat_core::{EstIssued, FailureLimiter, StationCredential};
use rand::RngCore;
use rustls_pki_types::CertificateDer;
use std::net::IpAddr;
use std::time::Duration;

/// Largest EST request body: base64 of the largest CSR we accept, with line breaks.
pub const MAX_EST_BODY_BYTES: usize = moat_pki::MAX_CSR_BYTES * 2;

/// `application/pkcs7-mime; smime-type=certs-only`.
const CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";

/// Failed station authentications allowed per address per minute before 429.
const MAX_FAILURES: u32 = 20;

/// The EST protocol's own state: failed station authentications per client address and
/// per claimed station name (HTTP Basic), and refused provisioning calls per client
/// certificate.
#[derive(Debug)]
pub struct EstAuth {
    pub(crate) by_addr: FailureLimiter<IpAddr>,
    by_station: FailureLimiter<String>,
    /// Refused provisioning calls per client certificate (SHA-256 of the leaf): a device is
    /// only ever slowed by its own failures, never by those of the devices sharing its
    /// address.
    pub(crate) by_certificate: FailureLimiter<[u8; 32]>,
}

impl Default for EstAuth {
    fn default() -> Self {
        let window = Duration::from_secs(60);
        EstAuth {
            by_addr: FailureLimiter::new(MAX_FAILURES, window, 10_000),
            by_station: FailureLimiter::new(MAX_FAILURES, window, 10_000),
            by_certificate: FailureLimiter::new(MAX_FAILURES, window, 10_000),
        }
    }
}

/// The `/.well-known/est/` routes (merged into the HTTPS router; no bearer token).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/.well-known/est/csrattrs", get(csrattrs))
        .route("/.well-known/est/simpleenroll", post(simpleenroll))
        .route("/.well-known/est/simplereenroll", post(simplereenroll))
        .route("/.well-known/est/serverkeygen", post(serverkeygen))
        .layer(DefaultBodyLimit::max(MAX_EST_BODY_BYTES))
}

/// The CA certificates: the hub's root and device CA.
#[utoipa::path(get, path = "/.well-known/est/cacerts", tag = "est", security(()),
    responses((status = 200, description = "base64 certs-only CMS", content_type = "application/pkcs7-mime", body = String)))]
pub(crate) async fn cacerts(State(s): State<AppState>) -> Response {
    let certs = [s.hub.root_cert().clone(), s.hub.device_ca_cert().clone()];
    match moat_pki::certs_only(&certs) {
        Ok(der) => base64_response(CERTS_ONLY, &der),
        Err(e) => ApiError::Core(e.into()).into_response(),
    }
}

/// The attributes the hub wants in a CSR.
#[utoipa::path(get, path = "/.well-known/est/csrattrs", tag = "est", security(()),
    responses((status = 200, description = "base64 DER CsrAttrs", content_type = "application/csrattrs", body = String)))]
pub(crate) async fn csrattrs() -> Response {
    match moat_pki::csr_attributes() {
        Ok(der) => base64_response("application/csrattrs", &der),
        Err(e) => ApiError::Core(e.into()).into_response(),
    }
}

/// Enroll an allow-listed serial (subject serialNumber or CN of the CSR), authenticated as
/// a factory station.
#[utoipa::path(post, path = "/.well-known/est/simpleenroll", tag = "est",
    security(("basic" = []), ()),
    request_body(content = String, description = "base64 PKCS#10", content_type = "application/pkcs10"),
    responses(
        (status = 200, description = "base64 certs-only CMS with the new certificate", content_type = "application/pkcs7-mime", body = String),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn simpleenroll(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<TlsPeer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match enroll(&s, &peer, &headers, &body, false).await {
        Ok(issued) => certs_only_response(&issued.cert),
        Err(r) => r,
    }
}

/// Renew (same key) or re-key the certificate presented over mutual TLS; the CSR keeps its
/// subject and SAN.
#[utoipa::path(post, path = "/.well-known/est/simplereenroll", tag = "est", security(()),
    request_body(content = String, description = "base64 PKCS#10", content_type = "application/pkcs10"),
    responses(
        (status = 200, description = "base64 certs-only CMS with the new certificate", content_type = "application/pkcs7-mime", body = String),
        (status = 400, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn simplereenroll(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<TlsPeer>,
    body: Bytes,
) -> Response {
    let csr = match decode_body(&body) {
        Ok(csr) => csr,
        Err(p) => return p.into_response(),
    };
    let ip = peer.addr.ip().to_string();
    match s
        .hub
        .est_reenroll(peer.certificate_check(), &csr, &ip)
        .await
    {
        Ok(issued) => certs_only_response(&issued.cert),
        Err(e) => est_error(e),
    }
}

/// Enroll with a key the hub generates (returned once, never stored).
#[utoipa::path(post, path = "/.well-known/est/serverkeygen", tag = "est",
    security(("basic" = []), ()),
    request_body(content = String, description = "base64 PKCS#10 naming the serial", content_type = "application/pkcs10"),
    responses(
        (status = 200, description = "multipart/mixed: application/pkcs8 key, then certs-only CMS", content_type = "multipart/mixed", body = String),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn serverkeygen(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<TlsPeer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let issued = match enroll(&s, &peer, &headers, &body, true).await {
        Ok(issued) => issued,
        Err(r) => return r,
    };
    let (Some(key), Ok(p7)) = (
        issued.private_key_der.as_ref(),
        moat_pki::certs_only(std::slice::from_ref(&issued.cert)),
    ) else {
        tracing::error!("server key generation returned no key or an unencodable certificate");
        return ApiError::Core(moat_core::Error::Internal("serverkeygen response".into()))
            .into_response();
    };
    let mut boundary = [0u8; 12];
    rand::rng().fill_bytes(&mut boundary);
    let boundary = format!("moat-est-{}", hex::encode(boundary));
    // RFC 7030 §4.4.2: the private key part first, then the certificate.
    let mut body = String::new();
    for (content_type, der) in [("application/pkcs8", key.as_slice()), (CERTS_ONLY, &p7)] {
        // Each part's base64 ends with the CRLF that belongs to the next delimiter.
        body.push_str(&format!(
            "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64_lines(der).trim_end()
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        h.insert(header::CONTENT_TYPE, v);
    }
    // It carries a private key.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Station authentication (rate limited per address), then the body, then the core.
async fn enroll(
    s: &AppState,
    peer: &TlsPeer,
    headers: &HeaderMap,
    body: &[u8],
    generate_key: bool,
) -> Result<EstIssued, Response> {
    let ip = peer.addr.ip();
    let basic = basic_credentials(headers);
    let claimed = basic
        .as_ref()
        .and_then(|b| b.as_ref().map(|(n, _)| n.clone()));
    if s.est.by_addr.is_limited(&ip)
        || claimed
            .as_ref()
            .is_some_and(|n| s.est.by_station.is_limited(n))
    {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too Many Requests",
            "too many failed station authentications from this address or for this station; wait a minute",
        )
        .into_response());
    }
    let credential = match (
        basic
            .as_ref()
            .map(|b| b.as_ref().map(|(n, t)| (n.as_str(), t.as_str()))),
        peer.chain.first(),
    ) {
        (Some(Some((name, token))), _) => StationCredential::Token { name, token },
        // A malformed Authorization header is a failed login, not an anonymous request.
        (Some(None), _) => StationCredential::Token {
            name: "",
            token: "",
        },
        (None, Some(leaf)) => StationCredential::Certificate(leaf),
        (None, None) => StationCredential::None,
    };
    let station = match s
        .hub
        .authenticate_station(credential, &ip.to_string())
        .await
    {
        Ok(st) => {
            s.est.by_addr.clear(&ip);
            st
        }
        Err(e) => {
            if e.is_client_error() {
                s.est.by_addr.record_failure(&ip);
                if let Some(n) = &claimed {
                    s.est.by_station.record_failure(n);
                }
            }
            return Err(est_error(e));
        }
    };
    let csr = decode_body(body).map_err(IntoResponse::into_response)?;
    s.hub
        .est_enroll(&station, &csr, generate_key)
        .await
        .map_err(est_error)
}

/// `Authorization: Basic` as (name, token): None without the header, Some(None) when it is
/// there but not valid Basic credentials.
fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let parsed = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest)
        })
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| {
            let (name, token) = s.split_once(':')?;
            Some((name.to_string(), token.to_string()))
        });
    Some(parsed)
}

/// The DER (or PEM) CSR of a request body (`moat_pki::decode_est_body`: base64 with any
/// whitespace, RFC 8951, or PEM), or the problem document that refuses it.
fn decode_body(body: &[u8]) -> Result<Vec<u8>, Problem> {
    moat_pki::decode_est_body(body).map_err(|e| {
        let detail = match e {
            moat_pki::Error::EstBodyEmpty => {
                "empty body: send the PKCS#10 CSR, base64-encoded (application/pkcs10)"
            }
            // EstBodyNotBase64, the only other refusal.
            _ => {
                "the body is not base64: send the PKCS#10 CSR, base64-encoded (application/pkcs10)"
            }
        };
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-body",
            "Bad Request Body",
            detail.to_string(),
        )
    })
}

/// An EST refusal or failure: a problem document; 401 asks for HTTP Basic.
fn est_error(e: moat_core::Error) -> Response {
    let mut resp = ApiError::Core(e).into_response();
    if resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"moat EST\""),
        );
    }
    resp
}

fn certs_only_response(cert: &CertificateDer<'_>) -> Response {
    match moat_pki::certs_only(std::slice::from_ref(cert)) {
        Ok(der) => base64_response(CERTS_ONLY, &der),
        Err(e) => ApiError::Core(e.into()).into_response(),
    }
}

/// A 200 with `der` in base64 lines and `content_type`.
fn base64_response(content_type: &'static str, der: &[u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::HeaderName::from_static("content-transfer-encoding"),
                "base64",
            ),
        ],
        base64_lines(der),
    )
        .into_response()
}

/// Base64 in lines of 64 characters, each ended by LF (what `base64 -d` and every EST client
/// read; CR would trip coreutils' decoder).
fn base64_lines(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 32 + 2);
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_with_and_without_line_breaks_decode_alike() {
        let der: Vec<u8> = (0..=255u8).collect();
        let one_line = base64::engine::general_purpose::STANDARD.encode(&der);
        let wrapped = base64_lines(&der);
        assert!(wrapped.lines().all(|l| l.len() <= 64));
        for body in [
            one_line.clone(),
            wrapped.clone(),
            wrapped.replace('\n', "\r\n"),
            format!("  {}\n", one_line.trim_end_matches('=')),
        ] {
            assert_eq!(decode_body(body.as_bytes()).expect("decodes"), der);
        }
        assert!(decode_body(b"").is_err());
        assert!(decode_body(b"not base64 at all!").is_err());
        let pem = b"-----BEGIN CERTIFICATE REQUEST-----\nMII=\n-----END CERTIFICATE REQUEST-----\n";
        assert_eq!(
            decode_body(pem).expect("pem passes through"),
            pem.trim_ascii()
        );
    }

    #[test]
    fn basic_credentials_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_credentials(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic bGluZS0xOnNlY3JldDpwYXJ0"),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(Some(("line-1".into(), "secret:part".into())))
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(basic_credentials(&h), Some(None));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&h), Some(None));
    }
}
