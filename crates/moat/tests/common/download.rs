//! A test-only HTTPS listener for firmware downloads: mutual TLS (client certificates from
//! the hub's CA bundle), the device identity (leaf CN) put into `PeerIdentity`, and
//! `moat_api::download_router` over the hub's registry and data dir.
//!
//! The production listener that mounts the download router inside `moat serve` is being
//! wired separately; until then the end-to-end tests serve downloads from here, with the
//! same handler and authorisation. Optionally the first download of each device is cut
//! halfway (the connection drops), to prove resumption with `Range`.

use axum::body::Body;
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use moat_api::{PeerIdentity, download_router};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A running download listener.
pub struct DownloadServer {
    pub addr: SocketAddr,
    /// PEM of the test CA that signed the listener's certificate (devices trust it).
    pub ca_pem: String,
    shutdown: CancellationToken,
}

impl Drop for DownloadServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The CN of a certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

impl DownloadServer {
    /// Serves on `listener` (bound before the hub started, so its config can name the URL)
    /// for the hub whose data dir is `data`. `cut_first`: each device's first download
    /// stops halfway.
    pub async fn start(listener: TcpListener, data: &Path, cut_first: bool) -> DownloadServer {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let addr = listener.local_addr().expect("addr");
        // Server identity from a test CA.
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "download test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        // Clients: certificates of the hub's CAs.
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(data.join("ca-bundle.pem")).expect("bundle") {
            roots.add(c.expect("cert")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("verifier");
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![leaf.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).expect("key"),
            )
            .expect("server config");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let store = moat_store::open(&format!("sqlite://{}", data.join("moat.db").display()))
            .await
            .expect("open the hub's registry");
        let router = download_router(Arc::new(moat_ota::Downloads::new(store, data)));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                let (acceptor, router, seen) = (acceptor.clone(), router.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let identity = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|leaf| common_name(leaf));
                    let svc = hyper::service::service_fn(
                        move |mut req: hyper::Request<hyper::body::Incoming>| {
                            let (router, seen, identity) =
                                (router.clone(), seen.clone(), identity.clone());
                            async move {
                                if let Some(id) = &identity {
                                    req.extensions_mut().insert(PeerIdentity(id.clone()));
                                }
                                let resp = router.oneshot(req.map(Body::new)).await?;
                                let first = identity.as_ref().is_some_and(|id| {
                                    seen.lock().expect("lock").insert(id.clone())
                                });
                                if !(cut_first && first && resp.status().is_success()) {
                                    return Ok::<_, std::convert::Infallible>(resp);
                                }
                                // Half of the body, then the connection breaks.
                                let len: usize = resp
                                    .headers()
                                    .get(axum::http::header::CONTENT_LENGTH)
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| v.parse().ok())
                                    .unwrap_or(0);
                                let mut left = len / 2;
                                let (parts, body) = resp.into_parts();
                                let stream = body.into_data_stream().map(move |chunk| {
                                    let chunk = chunk.map_err(std::io::Error::other)?;
                                    if left == 0 {
                                        return Err(std::io::Error::other("cut by the test"));
                                    }
                                    let n = chunk.len().min(left);
                                    left -= n;
                                    Ok(chunk.slice(..n))
                                });
                                Ok(axum::http::Response::from_parts(
                                    parts,
                                    Body::from_stream(stream),
                                ))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        DownloadServer {
            addr,
            ca_pem: ca_cert.pem(),
            shutdown,
        }
    }
}
