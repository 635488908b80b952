//! Accept loops. Each takes a connection-limit permit, accepts, and spawns at once: the TLS
//! handshake and the CONNECT run in the spawned task under their own timeouts, so a slow
//! handshake never holds up the loop. The TLS acceptor is built from the *latest*
//! `ServerConfig` per connection, so certificate, CA and CRL changes apply without restart.

use crate::{Broker, Error, Transport, connection};
use arc_swap::ArcSwap;
use rustls::server::Acceptor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl Broker {
    /// Serves MQTT over TLS on `listener` until `shutdown` is cancelled. A client
    /// certificate, when the handshake verified one, makes the connection
    /// [`Transport::MutualTls`]; otherwise it is [`Transport::ServerTls`].
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<ArcSwap<rustls::ServerConfig>>,
        shutdown: CancellationToken,
    ) {
        self.accept_loop(listener, Some(tls), shutdown).await;
    }

    /// Serves MQTT over plain TCP ([`Transport::Plain`]) until `shutdown` is cancelled.
    pub async fn serve_plain(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        self.accept_loop(listener, None, shutdown).await;
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
        shutdown: CancellationToken,
    ) {
        self.start_housekeeping();
        let tracker = TaskTracker::new();
        let local = listener.local_addr().ok();
        tracing::info!(?local, tls = tls.is_some(), "MQTT listener started");
        loop {
            let permit = tokio::select! {
                p = self.conn_limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(closed) => {
                        tracing::error!(error = %closed, "connection limiter closed");
                        break;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            crate::broker::bump(&self.metrics.connections_accepted, 1);
            let _nodelay = sock.set_nodelay(true);
            // Load the newest TLS configuration for this connection.
            let tls_cfg = tls.as_ref().map(|t| t.load_full());
            let broker = self.clone();
            let shutdown = shutdown.clone();
            // The connection id goes into every line logged for this connection, from the
            // handshake on (a refused connection has one too). ERROR level, so the span and
            // its fields exist whatever level the log is filtered at: a warning about a
            // connection has to say which one.
            let conn_id = self.next_conn_id();
            let span = tracing::error_span!(
                "mqtt",
                conn_id,
                %peer,
                mode = tracing::field::Empty,
                identity = tracing::field::Empty
            );
            // One spawn per kind, not one async block with both: a `match` of two inline
            // futures reserves room for both in every idle connection's task.
            match tls_cfg {
                None => {
                    span.record("mode", "plain");
                    tracker.spawn(
                        async move {
                            let _permit = permit;
                            connection::run(
                                broker,
                                sock,
                                Transport::Plain,
                                peer,
                                conn_id,
                                shutdown,
                            )
                            .await;
                        }
                        .instrument(span),
                    );
                }
                Some(cfg) => {
                    tracker.spawn(
                        async move {
                            let _permit = permit;
                            // Boxed, so the handshake's state is freed when it ends.
                            let handshake =
                                Box::pin(tls_handshake(broker, sock, cfg, peer, conn_id, shutdown));
                            if let Some(connection) = handshake.await {
                                connection.await;
                            }
                        }
                        .instrument(span),
                    );
                }
            }
        }
        tracker.close();
        let grace = self.cfg.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                remaining = tracker.len(),
                "connections still open after grace period"
            );
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "final flush of broker state failed");
        }
        tracing::info!(?local, "MQTT listener stopped");
    }
}

/// The connection behind a boxed future, so that it can outlive the handshake's state.
type Connection = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the TLS handshake under its timeout; then the MQTT connection is ready to run.
async fn tls_handshake(
    broker: Arc<Broker>,
    sock: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    peer: SocketAddr,
    conn_id: u64,
    shutdown: CancellationToken,
) -> Option<Connection> {
    let limit = broker.cfg.tls_handshake_timeout;
    // The ClientHello, without a slot: a peer that trickles it holds nothing but its socket.
    let hello = LazyConfigAcceptor::new(Acceptor::default(), sock);
    let start = within(&broker, "ClientHello", limit, &shutdown, hello).await?;
    // A slot for the rest (the costly part), in arrival order.
    let slot = match broker.handshake_slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => {
            crate::broker::bump(&broker.metrics.tls_handshakes_paced, 1);
            // The semaphore is never closed.
            let wait = broker.handshake_slots.clone().acquire_owned();
            let wait = async { wait.await.map_err(std::io::Error::other) };
            let bound = broker.cfg.handshake_slot_timeout;
            within(&broker, "handshake slot", bound, &shutdown, wait).await?
        }
    };
    let stream = within(
        &broker,
        "handshake",
        limit,
        &shutdown,
        start.into_stream(cfg),
    )
    .await?;
    crate::broker::bump(&broker.metrics.tls_handshakes, 1);
    drop(slot);
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let chain: Vec<_> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let transport = if chain.is_empty() {
        Transport::ServerTls
    } else {
        Transport::MutualTls { chain, resumed }
    };
    tracing::Span::current().record("mode", transport.mode());
    Some(Box::pin(connection::run(
        broker, stream, transport, peer, conn_id, shutdown,
    )))
}

/// One step of a TLS handshake (`what`) within `limit`, unless the hub shuts down: its
/// result, or None once the failure or timeout is counted and logged.
async fn within<T>(
    broker: &Broker,
    what: &'static str,
    limit: Duration,
    shutdown: &CancellationToken,
    step: impl Future<Output = std::io::Result<T>>,
) -> Option<T> {
    tokio::select! {
        r = tokio::time::timeout(limit, step) => match r {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                crate::broker::bump(&broker.metrics.tls_handshake_failures, 1);
                tracing::info!(error = %Error::Tls(e), what, "TLS handshake failed");
                None
            }
            Err(_elapsed) => {
                crate::broker::bump(&broker.metrics.tls_handshake_timeouts, 1);
                tracing::debug!(error = %Error::TlsHandshakeTimeout, what, "TLS handshake failed");
                None
            }
        },
        _ = shutdown.cancelled() => None,
    }
}
