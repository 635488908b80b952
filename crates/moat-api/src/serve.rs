//! Accept loops. The HTTPS loop takes a connection permit, accepts, and spawns at once; the
//! TLS handshake runs inside the task under a timeout, so a slow client never stalls the
//! others (the mistake rumqttd makes).

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::RngCore;
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::Instrument;

/// What a handler knows about the TLS client: its address and the certificate chain it
/// presented, if any (verified by the listener's client verifier during the handshake, or
/// restored by session resumption). Read it with `ConnectInfo<TlsPeer>`.
#[derive(Clone, Debug)]
pub struct TlsPeer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Leaf first; empty when the client sent no certificate.
    pub chain: Arc<[CertificateDer<'static>]>,
    /// The handshake resumed an earlier TLS session: the client-certificate verifier did not
    /// run on this connection, the chain is the one restored from the session.
    pub resumed: bool,
}

impl TlsPeer {
    /// The chain for [`moat_core::CertificateCheck`], saying how it arrived.
    pub fn certificate_check(&self) -> moat_core::CertificateCheck<'_> {
        moat_core::CertificateCheck::tls(&self.chain, self.resumed)
    }
}

/// Bounds of an HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Open connections at most; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` is cancelled. `tls` is read per
/// connection, so a new server certificate takes effect without a restart. Requests carry
/// `ConnectInfo<SocketAddr>` and `ConnectInfo<TlsPeer>` (the client's certificate chain).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    app: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small responses go out at once: without this, a response written in two pieces
        // (headers, then body; or a TLS record after a handshake flight) waits for the
        // client's delayed ACK, ~40 ms, behind Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let config = tls.load_full();
        let app = app.clone();
        let shutdown = shutdown.clone();
        // ERROR level so the span (and its peer) survives `level = "warn"`.
        let span = tracing::error_span!("https", %peer);
        tracker.spawn(
            async move {
                let _permit = permit;
                let acceptor = TlsAcceptor::from(config);
                let accept = acceptor.accept(tcp).into_fallible();
                let stream = match tokio::time::timeout(limits.handshake_timeout, accept).await {
                    Ok(Ok(s)) => s,
                    Ok(Err((e, tcp))) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        linger(tcp).await;
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
                let tls_peer = TlsPeer {
                    addr: peer,
                    chain: stream.get_ref().1.peer_certificates().unwrap_or_default().into(),
                    resumed: stream.get_ref().1.handshake_kind()
                        == Some(rustls::HandshakeKind::Resumed),
                };
                // HTTP/2 streams run in tasks hyper spawns outside this span: carry it.
                let conn_span = tracing::Span::current();
                let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.extensions_mut().insert(ConnectInfo(tls_peer.clone()));
                    app.clone().oneshot(req).instrument(conn_span.clone())
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r { tracing::debug!(error = %e, "connection ended with error") },
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            .instrument(span),
        );
    }
    tracker.close();
    if tokio::time::timeout(limits.grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; dropping open HTTPS connections");
    }
}

/// How long a refused connection is drained before it is closed.
const LINGER: Duration = Duration::from_secs(1);

/// After a refused handshake (rustls has written its alert, e.g. "certificate revoked" or
/// "certificate expired"): half-close, then read and drop what the client already sent until
/// it closes or [`LINGER`] passes. With TLS 1.3 the client's first request is often already
/// on its way when its certificate is refused; closing with it unread makes the kernel send a
/// reset, which can destroy the alert before the client reads it — the client would then see
/// a bare "connection reset" instead of the reason.
async fn linger(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tcp.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let drain = async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Serves `app` over plain HTTP until `shutdown` is cancelled.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // TCP_NODELAY for the same reason as [`serve_tls`].
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// Middleware: a request id per request, in the tracing span and the `x-request-id` header,
/// so an error a client reports can be found in the log.
pub(crate) async fn request_id(req: Request, next: Next) -> Response {
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    let id = hex::encode(id);
    let span = tracing::error_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "request done"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
