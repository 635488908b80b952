//! `baseline-server`: a bare rustls mutual-TLS server for the handshake benchmark. It does
//! what the hub's MQTT listener does up to admission and nothing after: the same crypto
//! provider (aws-lc-rs), protocol versions, ALPN and client-certificate verification (rustls'
//! webpki verifier over the same CA bundle), a spawned task per connection; then it answers
//! whatever the client sends first with a fixed CONNACK (`20 02 00 00`) and waits for the
//! client to close. No MQTT parsing, no registry, no sessions: the gap between its rate and
//! the hub's is what admission costs on top of the handshake itself.

use anyhow::Context;
use clap::Args;
use moat_device::load::tls::{read_certs, read_key};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Address to listen on (loopback for benchmarks).
    #[arg(long, default_value = "127.0.0.1:18885")]
    pub listen: SocketAddr,
    /// The server's certificate chain (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// The server's private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// CA certificates client certificates must chain to (PEM bundle).
    #[arg(long)]
    pub client_ca: PathBuf,
}

/// Serves until the process is killed.
pub async fn run(a: BaselineArgs) -> anyhow::Result<Value> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for c in read_certs(&a.client_ca)? {
        roots.add(c).context("client CA bundle")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("client verifier")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&a.cert)?, read_key(&a.key)?)
        .context("server certificate")?;
    cfg.alpn_protocols = vec![b"mqtt".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    eprintln!(
        "moat-device: baseline mTLS server on {}",
        listener.local_addr()?
    );
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off, as the hub does.
                eprintln!("moat-device: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(Ok(mut tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let mut buf = [0u8; 512];
            if !matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
            if tls.write_all(&[0x20, 0x02, 0x00, 0x00]).await.is_err() || tls.flush().await.is_err()
            {
                return;
            }
            // Until the client disconnects (DISCONNECT, then close).
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
        });
    }
}
