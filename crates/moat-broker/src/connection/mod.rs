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
/// ended.
pub(crate) async fn run<S>(
    broker: Arc<Broker>,
    stream: S,
    transport: Transport,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = AwaitConnect::new(broker.clone(), stream, transport, peer);
    let timeout = broker.cfg.connect_timeout;
    let connected = tokio::select! {
        r = tokio::time::timeout(timeout, phase.run()) => match r {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "connection closed before CONNACK");
                return;
            }
            Err(_elapsed) => {
                tracing::debug!(error = %crate::Error::ConnectTimeout, "connection closed before CONNACK");
                return;
            }
        },
        _ = shutdown.cancelled() => return,
    };
    connected.run(shutdown).await;
}
