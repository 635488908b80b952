//! One MQTT connection, as two phases that are types:
//!
//! ```text
//! AwaitConnect ──CONNECT read, authority asked, session attached, CONNACK sent──▶ Connected
//!      │ (≤ connect_timeout)                                                        │
//!      └─ refusal CONNACK / close                          select! loop until DISCONNECT,
//!                                                          error, kick or shutdown; then will
//! ```

mod await_connect;
mod connected;

use crate::{Broker, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

pub(crate) use await_connect::AwaitConnect;

/// Runs a connection from its first byte to close. Never panics on peer input; logs why it
/// ended. `conn_id` is the broker-wide id the listener gave the connection at accept (from
/// [`Broker::next_conn_id`]; it is in the connection's tracing span).
///
/// Memory per idle connection is what a hub with many devices pays for, so the phases are
/// boxed one inside the other and a task holds only the phase it is in: the first phase's
/// state (CONNECT decoding, the authority's decision) is freed once CONNACK is sent and an
/// idle connection costs `Connected::run` plus a few pointers. (Inline, the task reserved
/// room for every phase at once: ≈ 8 KiB per idle connection in release builds.) Not an
/// `async fn` either: an async fn keeps its arguments, here the whole TLS stream, for its
/// whole life.
pub(crate) fn run<S>(
    broker: Arc<Broker>,
    stream: S,
    transport: Transport,
    peer: SocketAddr,
    conn_id: u64,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limit = broker.cfg.connect_timeout;
    let stop = shutdown.clone();
    let first = Box::pin(async move {
        let phase = AwaitConnect::new(broker, stream, transport, peer, conn_id).run();
        match tokio::time::timeout(limit, phase).await {
            Ok(Ok(c)) => Some(Box::pin(c.run(stop))),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "connection closed before CONNACK");
                None
            }
            Err(_elapsed) => {
                tracing::debug!(error = %crate::Error::ConnectTimeout, "connection closed before CONNACK");
                None
            }
        }
    });
    async move {
        let connected = tokio::select! {
            c = first => c,
            _ = shutdown.cancelled() => None,
        };
        if let Some(connected) = connected {
            connected.await;
        }
    }
}
