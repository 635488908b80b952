//! Downloading an image: a small trait (so tests can serve from memory) and the HTTPS
//! implementation, which presents the device's certificate and resumes with `Range`.

use async_trait::async_trait;
use std::time::Duration;

/// Why a fetch stopped.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The hub answered with a refusal (401, 403, 404, 416): retrying will not help.
    #[error("HTTP {0}")]
    Refused(u16),
    /// The connection failed or was cut; what arrived is kept for the next attempt.
    #[error("connection: {0}")]
    Connection(String),
    /// The server sent more than the manifest's size, or a range that does not fit.
    #[error("server sent an unexpected body: {0}")]
    Protocol(String),
}

/// Fetches an image into a buffer, resuming from what the buffer already holds.
#[async_trait]
pub trait Fetcher: Send + Sync {
    /// Appends the bytes of `url` from offset `buf.len()` to `buf`, at most up to `size`
    /// bytes in total. On a cut connection what arrived stays in `buf` and an error is
    /// returned, so the next call continues from there.
    async fn fetch(&self, url: &str, buf: &mut Vec<u8>, size: u64) -> Result<(), FetchError>;
}

/// HTTPS with the device's certificate (mutual TLS); resumes with `Range: bytes=N-`.
#[derive(Clone, Debug)]
pub struct HttpsFetcher {
    client: reqwest::Client,
}

impl HttpsFetcher {
    /// A client presenting `identity_pem` (certificate chain then private key, PEM) and
    /// trusting only `roots_pem` (PEM bundle).
    pub fn new(identity_pem: &[u8], roots_pem: &[u8]) -> Result<Self, FetchError> {
        let identity = reqwest::Identity::from_pem(identity_pem)
            .map_err(|e| FetchError::Connection(format!("device identity: {e}")))?;
        let roots = reqwest::Certificate::from_pem_bundle(roots_pem)
            .map_err(|e| FetchError::Connection(format!("trust anchors: {e}")))?;
        let client = reqwest::Client::builder()
            .tls_certs_only(roots)
            .identity(identity)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| FetchError::Connection(format!("HTTPS client: {e}")))?;
        Ok(HttpsFetcher { client })
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

#[async_trait]
impl Fetcher for HttpsFetcher {
    async fn fetch(&self, url: &str, buf: &mut Vec<u8>, size: u64) -> Result<(), FetchError> {
        let have = buf.len() as u64;
        if have >= size {
            return Ok(());
        }
        let mut req = self.client.get(url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| FetchError::Connection(chain(&e)))?;
        match resp.status().as_u16() {
            206 => {
                let range = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !range.starts_with(&format!("bytes {have}-")) {
                    return Err(FetchError::Protocol(format!(
                        "asked for bytes {have}-, got Content-Range {range:?}"
                    )));
                }
            }
            // The server ignored the range: start over.
            200 => buf.clear(),
            s => return Err(FetchError::Refused(s)),
        }
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() as u64 + chunk.len() as u64 > size {
                        return Err(FetchError::Protocol(format!(
                            "more than the {size} bytes the manifest announced"
                        )));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(FetchError::Connection(chain(&e))),
            }
        }
    }
}
