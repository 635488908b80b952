//! A fault for the firmware download tests: a TCP proxy in front of the hub's download
//! listener that closes every connection once `budget` bytes have gone from the hub to the
//! device. TLS runs end to end through it (devices talk to the real listener in `moat
//! serve`), so a download longer than the budget stops partway and the device must resume
//! with `Range` on a new connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy; stops on drop.
pub struct CutProxy {
    pub addr: SocketAddr,
    cuts: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl CutProxy {
    /// Proxies `listener` (bound before the hub started, so its config can name the URL) to
    /// `upstream`, cutting each connection after `budget` bytes towards the client.
    pub fn start(listener: TcpListener, upstream: String, budget: u64) -> CutProxy {
        let addr = listener.local_addr().expect("addr");
        let cuts: Arc<AtomicU64> = Arc::default();
        let shutdown = CancellationToken::new();
        let (stop, counted) = (shutdown.clone(), cuts.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                let (upstream, counted, stop) = (upstream.clone(), counted.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::io::copy(&mut cr, &mut sw);
                    let down = async {
                        let mut left = budget;
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return false,
                                Ok(n) => n,
                            };
                            let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                            if cw.write_all(&buf[..n]).await.is_err() {
                                return false;
                            }
                            left -= n as u64;
                            if left == 0 {
                                return true;
                            }
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = up => {}
                        cut = down => if cut {
                            counted.fetch_add(1, Ordering::Relaxed);
                        },
                    }
                    // Dropping both halves of both sockets closes the connection.
                });
            }
        });
        CutProxy {
            addr,
            cuts,
            shutdown,
        }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }
}
