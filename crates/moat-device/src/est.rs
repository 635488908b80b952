//! EST client (RFC 7030 with the RFC 8951 clarifications): `cacerts`, `simpleenroll` through
//! a factory station, `simplereenroll` with the certificate being renewed.
//!
//! Requests carry the CSR as base64 DER (`application/pkcs10`); answers are base64 DER
//! certs-only CMS (`application/pkcs7-mime; smime-type=certs-only`), parsed with moat-pki
//! (RustCrypto `cms`). Refusals come back as RFC 9457 problem documents and surface as
//! [`Error::Refused`] with the hub's `detail`.
//!
//! ```text
//!  station cert (mTLS) or Basic name:token ──simpleenroll──▶ hub: allow-list, sign ──▶ leaf
//!  current cert + device key (mTLS)        ──simplereenroll─▶ hub: same subject/SAN ──▶ leaf
//! ```

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use moat_vault::Secret;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;

use crate::identity::{self, Identity};
use crate::keystore::DeviceKey;
use crate::{Error, csr};

/// How a factory station authenticates `simpleenroll`.
#[derive(Clone, Debug)]
pub enum StationAuth {
    /// Mutual TLS with the station's certificate (made by `moat station create`).
    Certificate(Arc<ClientConfig>),
    /// HTTP Basic with the station's name and token (`moat station create --token`).
    Basic {
        /// The station's name.
        name: String,
        /// Its token.
        token: Secret,
    },
}

impl StationAuth {
    /// A station certificate and key from PEM files.
    pub fn from_pem_files(
        roots: RootCertStore,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<StationAuth, Error> {
        identity::pem_client_config(roots, cert, key).map(StationAuth::Certificate)
    }
}

/// An EST server (the hub's HTTPS listener) and the trust anchors for its certificate.
#[derive(Clone, Debug)]
pub struct EstClient {
    /// `https://host:port/.well-known/est`.
    base: String,
    roots: RootCertStore,
    timeout: Duration,
}

/// Largest answer read (a certs-only CMS with a few certificates is a few KiB).
const MAX_ANSWER: usize = 256 * 1024;

impl EstClient {
    /// `url` is the hub's HTTPS base (`https://hub:8443`) or the EST root under it
    /// (`…/.well-known/est`); `roots` verify the hub's server certificate.
    pub fn new(url: &str, roots: RootCertStore) -> Result<EstClient, Error> {
        let trimmed = url.trim_end_matches('/');
        if !trimmed.starts_with("https://") {
            return Err(Error::BadInput {
                what: format!("EST URL {url:?}"),
                problem: "must be https://HOST:PORT (EST runs over TLS only)".into(),
            });
        }
        let base = if trimmed.ends_with("/.well-known/est") {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/.well-known/est")
        };
        Ok(EstClient {
            base,
            roots,
            timeout: Duration::from_secs(30),
        })
    }

    /// Per-request timeout (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The hub's trust anchors for this server.
    pub fn roots(&self) -> &RootCertStore {
        &self.roots
    }

    fn http(&self, tls: Arc<ClientConfig>) -> Result<reqwest::Client, Error> {
        reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(self.timeout)
            .build()
            .map_err(Error::http(&self.base))
    }

    /// `GET /cacerts`: the CA certificates (root and issuing CA). Needs no authentication.
    pub async fn cacerts(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        let url = format!("{}/cacerts", self.base);
        let http = self.http(identity::anonymous_client_config(self.roots.clone())?)?;
        let resp = http.get(&url).send().await.map_err(Error::http(&url))?;
        let certs = certs_only_answer(&url, resp).await?;
        if certs.is_empty() {
            return Err(Error::BadAnswer {
                url,
                problem: "cacerts holds no certificate".into(),
            });
        }
        Ok(certs)
    }

    /// `POST /simpleenroll` of `csr_der` through a factory station; the issued certificate.
    pub async fn simpleenroll(
        &self,
        csr_der: &[u8],
        station: &StationAuth,
    ) -> Result<CertificateDer<'static>, Error> {
        let url = format!("{}/simpleenroll", self.base);
        let (http, basic) = match station {
            StationAuth::Certificate(config) => (self.http(config.clone())?, None),
            StationAuth::Basic { name, token } => (
                self.http(identity::anonymous_client_config(self.roots.clone())?)?,
                Some((name, token)),
            ),
        };
        let mut req = http
            .post(&url)
            .header("content-type", "application/pkcs10")
            .body(base64::engine::general_purpose::STANDARD.encode(csr_der));
        if let Some((name, token)) = basic {
            req = req.basic_auth(name, Some(token.expose()));
        }
        let resp = req.send().await.map_err(Error::http(&url))?;
        one_cert(&url, certs_only_answer(&url, resp).await?)
    }

    /// `POST /simplereenroll` of `csr_der` over mutual TLS with `current` (its key may be in
    /// a token: the handshake is signed there).
    pub async fn simplereenroll(
        &self,
        csr_der: &[u8],
        current: &Identity,
    ) -> Result<CertificateDer<'static>, Error> {
        let url = format!("{}/simplereenroll", self.base);
        let http = self.http(current.client_config(self.roots.clone())?)?;
        let resp = http
            .post(&url)
            .header("content-type", "application/pkcs10")
            .body(base64::engine::general_purpose::STANDARD.encode(csr_der))
            .send()
            .await
            .map_err(Error::http(&url))?;
        one_cert(&url, certs_only_answer(&url, resp).await?)
    }

    /// Factory enrollment: a CSR for `serial` signed by `key`, `simpleenroll` through
    /// `station`, and a check that the certificate certifies `key`.
    pub async fn enroll(
        &self,
        key: &DeviceKey,
        serial: &str,
        station: &StationAuth,
    ) -> Result<CertificateDer<'static>, Error> {
        let csr = csr::enrollment_csr(key, serial)?;
        let cert = self.simpleenroll(&csr, station).await?;
        check_certifies(&format!("{}/simpleenroll", self.base), &cert, key)?;
        Ok(cert)
    }

    /// Renewal: a CSR with `current`'s subject and SAN signed by `new_key` (the same key
    /// renews, another re-keys), `simplereenroll` authenticated by `current`. Returns the new
    /// identity (new leaf, `current`'s other chain certificates, `new_key`).
    pub async fn reenroll(
        &self,
        current: &Identity,
        new_key: &DeviceKey,
    ) -> Result<Identity, Error> {
        let csr = csr::renewal_csr(new_key, current.leaf())?;
        let cert = self.simplereenroll(&csr, current).await?;
        check_certifies(&format!("{}/simplereenroll", self.base), &cert, new_key)?;
        let mut chain = vec![cert];
        chain.extend(current.chain.iter().skip(1).cloned());
        Identity::new(chain, new_key.clone())
    }
}

/// The answer must certify the key the CSR was signed with.
fn check_certifies(url: &str, cert: &CertificateDer<'_>, key: &DeviceKey) -> Result<(), Error> {
    let info = moat_pki::cert_info(cert).map_err(Error::pki(format!("{url}: the certificate")))?;
    if info.spki_der != key.public_key_der() {
        return Err(Error::WrongKeyCertified {
            url: url.to_owned(),
        });
    }
    Ok(())
}

fn one_cert(
    url: &str,
    mut certs: Vec<CertificateDer<'static>>,
) -> Result<CertificateDer<'static>, Error> {
    match certs.len() {
        1 => Ok(certs.remove(0)),
        n => Err(Error::BadAnswer {
            url: url.to_owned(),
            problem: format!("expected one certificate, got {n}"),
        }),
    }
}

/// Reads a body of at most [`MAX_ANSWER`] bytes.
pub(crate) async fn read_capped(url: &str, mut resp: reqwest::Response) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Error::http(url))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(Error::BadAnswer {
                url: url.to_owned(),
                problem: format!("answer larger than {MAX_ANSWER} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A non-2xx answer as [`Error::Refused`] (problem document `title`/`detail`, else text).
pub(crate) async fn refusal(url: &str, resp: reqwest::Response) -> Error {
    let status = resp.status().as_u16();
    let body = match read_capped(url, resp).await {
        Ok(b) => b,
        Err(e) => return e,
    };
    let (title, detail) = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.get("detail").is_some() || v.get("title").is_some() => (
            v.get("title").and_then(|t| t.as_str()).map(str::to_owned),
            v.get("detail")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_owned(),
        ),
        _ => {
            let text = String::from_utf8_lossy(&body);
            (
                None,
                text.chars().take(300).collect::<String>().trim().to_owned(),
            )
        }
    };
    Error::Refused {
        url: url.to_owned(),
        status,
        title,
        detail,
    }
}

/// A 200 certs-only answer (base64 DER, whitespace allowed), or the refusal.
async fn certs_only_answer(
    url: &str,
    resp: reqwest::Response,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    if !resp.status().is_success() {
        return Err(refusal(url, resp).await);
    }
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !ctype.starts_with("application/pkcs7-mime") {
        return Err(Error::BadAnswer {
            url: url.to_owned(),
            problem: format!("content type {ctype:?}, expected application/pkcs7-mime"),
        });
    }
    let body = read_capped(url, resp).await?;
    parse_certs_only_base64(url, &body)
}

/// Base64 (any whitespace) certs-only CMS → certificates.
pub fn parse_certs_only_base64(
    url: &str,
    body: &[u8],
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| Error::BadAnswer {
            url: url.to_owned(),
            problem: format!("body is not base64: {e}"),
        })?;
    moat_pki::parse_certs_only(&der).map_err(Error::pki(format!("{url}: certs-only CMS")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_certs_only_bodies() {
        let roots = RootCertStore::empty();
        assert!(EstClient::new("http://hub:8443", roots.clone()).is_err());
        let c = EstClient::new("https://hub:8443/", roots.clone()).expect("url");
        assert_eq!(c.base, "https://hub:8443/.well-known/est");
        let c = EstClient::new("https://hub:8443/.well-known/est", roots).expect("url");
        assert_eq!(c.base, "https://hub:8443/.well-known/est");

        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .expect("params")
            .self_signed(&rcgen::KeyPair::generate().expect("key"))
            .expect("cert");
        let cms = moat_pki::certs_only(&[cert.der().clone()]).expect("cms");
        let b64 = base64::engine::general_purpose::STANDARD.encode(cms);
        // RFC 8951: line breaks anywhere.
        let wrapped: String = b64
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
            .collect();
        let certs = parse_certs_only_base64("u", wrapped.as_bytes()).expect("parse");
        assert_eq!(certs, vec![cert.der().clone()]);
        assert!(parse_certs_only_base64("u", b"!!").is_err());
        assert!(parse_certs_only_base64("u", b"MAA=").is_err());
    }
}
