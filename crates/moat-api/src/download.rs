//! Firmware downloads for devices: `GET /fw/{digest}` with HTTP range requests, so a device
//! resumes a cut-off download where it stopped.
//!
//! The contract:
//! - The device is identified by its TLS client certificate. The listener that terminates
//!   mutual TLS puts the verified identity into the request as a [`PeerIdentity`]
//!   extension; a request without one is refused (401). This router never looks at
//!   headers for identity.
//! - The device must pass `moat_core::CertificateCheck` at every request (state, certificate
//!   validity and revocation now) and be a notified target of a running or paused campaign for
//!   the image with that SHA-256 (403 otherwise).
//! - `Range: bytes=a-b`, `bytes=a-` and `bytes=-n` (one range) get 206 with
//!   `Content-Range`; a range that starts past the end gets 416 with `Content-Range: bytes
//!   */size`. Several ranges, or a malformed header, are ignored (200 with the whole image,
//!   as RFC 9110 allows). `If-Range` with another entity tag than the image's gets the whole
//!   image. The entity tag is the digest, so it never changes for a path.
//! - Images are immutable files (content-addressed), streamed from disk.

use crate::TlsPeer;
use crate::problem::{ApiError, Problem};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use moat_core::{Denial, Hub};
use moat_ota::Downloads;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The device identity the mutual-TLS listener verified (from its certificate, by its CA's
/// identity rule), inserted as a request extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(pub String);

/// What part of the image to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// All of it (no range, or one this server ignores).
    Full,
    /// Bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// The range starts past the end.
    Unsatisfiable,
}

/// Interprets a `Range` header for an entity of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let num = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            None => ByteRange::Full,
        },
        // bytes=a-
        (false, true) => match num(a) {
            Some(start) if start >= size => ByteRange::Unsatisfiable,
            Some(start) => ByteRange::Partial {
                start,
                end: size - 1,
            },
            None => ByteRange::Full,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Partial {
                        start,
                        end: end.min(size - 1),
                    }
                }
            }
            _ => ByteRange::Full,
        },
        (true, true) => ByteRange::Full,
    }
}

/// The download router: `GET /fw/{digest}` (HEAD too). Mount it on a listener that
/// requires client certificates and fills [`PeerIdentity`].
pub fn download_router(downloads: Arc<Downloads>) -> Router {
    Router::new()
        .route("/fw/{digest}", get(download))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not Found",
                "images are at /fw/{sha256}",
            )
        })
        .with_state(downloads)
}

/// The device download service as `moat serve` runs it on its mutual-TLS listener:
/// [`download_router`] behind the device's identity. Each request's client certificate
/// chain (from [`crate::TlsPeer`], verified at the handshake) goes through the MQTT hub's
/// admission, [`Hub::admit_certificate`] ([`moat_core::CertificateCheck`]: validity now,
/// chain, revocation and retire time from the registry, identity, registration, device
/// state), and the admitted device id becomes the [`PeerIdentity`]. Re-checked per request, so a resumed TLS session or a kept-alive
/// connection of a device revoked or disabled since gets nothing more.
pub fn device_download_router(hub: Arc<Hub>, downloads: Arc<Downloads>) -> Router {
    download_router(downloads)
        .layer(axum::middleware::from_fn_with_state(hub, identify))
        // Outermost: the refusal lines of `identify` carry the request id too.
        .layer(axum::middleware::from_fn(crate::serve::request_id))
}

async fn identify(State(hub): State<Arc<Hub>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<TlsPeer>>()
        .map(|ConnectInfo(peer)| peer.clone());
    if let Some(peer) = peer.filter(|p| !p.chain.is_empty()) {
        match hub.admit_certificate(peer.certificate_check()).await {
            Ok(admission) => {
                req.extensions_mut()
                    .insert(PeerIdentity(admission.device.id));
            }
            Err(denial) => {
                if let Denial::Unavailable(e) = &denial {
                    tracing::error!(error = ?e, "registry unavailable while identifying a download client");
                } else {
                    tracing::info!(addr = %peer.addr, %denial, step = denial.step(), "firmware download refused");
                }
                return crate::problem::denial_problem(&denial).into_response();
            }
        }
    }
    next.run(req).await
}

async fn download(
    State(downloads): State<Arc<Downloads>>,
    identity: Option<Extension<PeerIdentity>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(Extension(PeerIdentity(device))) = identity else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "client-certificate-required",
            "Unauthorized",
            "firmware downloads need the device's certificate (mutual TLS)",
        )
        .into());
    };
    let blob = downloads.open(&device, &digest).await?;
    let etag = format!("\"{}\"", blob.digest);
    let mut range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        blob.size,
    );
    if let Some(if_range) = headers.get(header::IF_RANGE)
        && if_range.as_bytes() != etag.as_bytes()
    {
        range = ByteRange::Full;
    }
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp_headers.insert(header::ETAG, v);
    }
    let (status, start, len) = match range {
        ByteRange::Full => (StatusCode::OK, 0, blob.size),
        ByteRange::Partial { start, end } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", blob.size)) {
                resp_headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        ByteRange::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", blob.size)) {
                resp_headers.insert(header::CONTENT_RANGE, v);
            }
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, resp_headers).into_response());
        }
    };
    let mut file = tokio::fs::File::open(&blob.path)
        .await
        .map_err(|e| internal(&blob.digest, e))?;
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| internal(&blob.digest, e))?;
    }
    resp_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    tracing::debug!(device = %device, digest = %blob.digest, start, len, "firmware download");
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file.take(len),
        64 * 1024,
    ));
    Ok((status, resp_headers, body).into_response())
}

fn internal(digest: &str, e: std::io::Error) -> ApiError {
    ApiError::Ota(moat_ota::Error::Io {
        context: format!("reading image {digest}"),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 1000);
        let p = |start, end| ByteRange::Partial { start, end };
        assert_eq!(parse_range(None, 1000), ByteRange::Full);
        assert_eq!(r("bytes=0-99"), p(0, 99));
        assert_eq!(r("bytes=500-"), p(500, 999));
        assert_eq!(r("bytes=-100"), p(900, 999));
        assert_eq!(r("bytes=-5000"), p(0, 999));
        assert_eq!(r("bytes=900-5000"), p(900, 999), "end clipped to the size");
        assert_eq!(r("bytes=999-999"), p(999, 999));
        assert_eq!(r("bytes=1000-"), ByteRange::Unsatisfiable);
        assert_eq!(r("bytes=1000-2000"), ByteRange::Unsatisfiable);
        assert_eq!(r("bytes=-0"), ByteRange::Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-9",
            "bytes=9-5",
            "bytes=x-",
            "bytes=-",
            "items=0-5",
            "bytes=+1-2",
            "bytes=1-2-3",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(r(ignored), ByteRange::Full, "{ignored}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-1"), 0), ByteRange::Unsatisfiable);
    }
}
