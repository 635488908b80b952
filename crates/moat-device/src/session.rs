//! The device's MQTT session: mutual TLS with its [`Identity`] (the key may sign inside a
//! PKCS#11 token), reconnection with backoff, and automatic renewal.
//!
//! ```text
//!  Session ──publish/subscribe──▶ rumqttc AsyncClient ──▶ driver task: EventLoop::poll
//!                                                          │  ▲ new TLS config + clean()
//!  renewal task: every check_every, if the leaf is due ────┘  │ (reconnects with the new cert)
//!     (RenewPolicy) → EST simplereenroll over mTLS with the current cert → write cert file
//! ```
//!
//! Renewal keeps the key (a renewal in RFC 7030 terms) and is authenticated by the
//! certificate being renewed. The switch waits (up to 10 s) for QoS 1 publications in flight
//! to be acknowledged; requests not yet acknowledged or sent are carried over to the new
//! connection, and subscriptions are restored after every reconnect (the session is clean). The new chain is written (temporary file, fsync, rename) before
//! the session switches to it, so a crash never leaves the device with a certificate it has
//! not stored. TLS resumption is off, so the hub sees the new certificate on the reconnect.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, TlsConfiguration, Transport};

/// MQTT quality of service, re-exported so callers need not name rumqttc.
pub use rumqttc::QoS;
use rustls::RootCertStore;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::est::EstClient;
use crate::identity::{Identity, RenewPolicy};
use crate::{Error, files};

/// When and how the session renews its certificate.
#[derive(Clone, Debug)]
pub struct Renewal {
    /// The hub's EST service.
    pub est: EstClient,
    /// When a certificate is due.
    pub policy: RenewPolicy,
    /// How often the certificate is checked (first check at start).
    pub check_every: Duration,
    /// Wait after a failed renewal before trying again.
    pub retry_after: Duration,
    /// Where the renewed chain is written (PEM), if anywhere.
    pub cert_path: Option<PathBuf>,
}

/// Where and as whom the session connects.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Broker host (also the name its certificate must carry).
    pub host: String,
    /// Broker TLS port.
    pub port: u16,
    /// MQTT client id (the hub expects the device id).
    pub client_id: String,
    /// CAs that sign the broker's certificate.
    pub roots: RootCertStore,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Automatic renewal, if wanted.
    pub renewal: Option<Renewal>,
}

impl SessionConfig {
    /// A config for `mqtts://host:port` (default port 8883), 30 s keep-alive, no renewal.
    pub fn from_url(url: &str, client_id: &str, roots: RootCertStore) -> Result<Self, Error> {
        let bad = |problem: &str| Error::BadMqttUrl {
            url: url.to_owned(),
            problem: problem.to_owned(),
        };
        let rest = url
            .strip_prefix("mqtts://")
            .ok_or_else(|| bad("must start with mqtts:// (mutual TLS only)"))?;
        let hostport = rest.trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !hostport.ends_with(']') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("port must be a number 1-65535"))?,
            ),
            _ => (hostport, 8883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 || host.contains('/') {
            return Err(bad("expected mqtts://HOST:PORT"));
        }
        Ok(SessionConfig {
            host: host.to_owned(),
            port,
            client_id: client_id.to_owned(),
            roots,
            keep_alive: Duration::from_secs(30),
            renewal: None,
        })
    }
}

/// What happened in the session, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// CONNACK received; `serial` is the certificate the connection was made with.
    Connected {
        /// Serial (hex) of the certificate presented.
        serial: String,
    },
    /// The connection failed or dropped; the session retries with backoff.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A QoS 1 publication was acknowledged (PUBACK).
    Acked {
        /// Its packet id.
        pkid: u16,
    },
    /// A message on a subscribed topic.
    Message {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Bytes,
    },
    /// The certificate was renewed and stored; the session reconnects with it.
    Renewed {
        /// Serial (hex) of the new certificate.
        serial: String,
        /// Its end of validity, RFC 3339.
        not_after: String,
    },
    /// A renewal attempt failed; it is retried after `retry_after`.
    RenewalFailed {
        /// Why.
        reason: String,
    },
}

/// A running MQTT session. Dropping it stops its tasks; [`Session::close`] disconnects first.
#[derive(Debug)]
pub struct Session {
    client: AsyncClient,
    /// Filters to restore after a reconnect.
    subscriptions: Subscriptions,
    events: mpsc::Receiver<SessionEvent>,
    identity: watch::Receiver<Identity>,
    cancel: CancellationToken,
    driver: JoinHandle<()>,
    renewer: Option<JoinHandle<()>>,
}

/// Events buffered for the application before status events are dropped.
const EVENT_QUEUE: usize = 1024;

fn serial_of(identity: &Identity) -> String {
    identity.info().map(|i| i.serial).unwrap_or_default()
}

fn tls_transport(identity: &Identity, roots: &RootCertStore) -> Result<Transport, Error> {
    let config = identity.client_config(roots.clone())?;
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(config)))
}

impl Session {
    /// Starts connecting (in the background) as `identity`; events tell when it is up.
    /// Must be called inside a tokio runtime.
    pub fn start(config: SessionConfig, identity: Identity) -> Result<Session, Error> {
        let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
        options
            .set_keep_alive(config.keep_alive.max(Duration::from_secs(5)))
            .set_clean_session(true)
            .set_transport(tls_transport(&identity, &config.roots)?);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        eventloop.network_options.set_connection_timeout(10);

        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (identity_tx, identity_rx) = watch::channel(identity);
        let (renewed_tx, renewed_rx) = mpsc::channel::<Identity>(1);
        let cancel = CancellationToken::new();
        let renewer = config.renewal.clone().map(|r| {
            tokio::spawn(renew_loop(
                r,
                identity_tx,
                renewed_tx,
                events_tx.clone(),
                cancel.clone(),
            ))
        });
        let subscriptions = Subscriptions::default();
        let driver = tokio::spawn(drive(
            eventloop,
            DriverContext {
                client: client.clone(),
                roots: config.roots,
                identity: identity_rx.clone(),
                subscriptions: subscriptions.clone(),
                events: events_tx,
                cancel: cancel.clone(),
            },
            renewed_rx,
        ));
        Ok(Session {
            client,
            subscriptions,
            events,
            identity: identity_rx,
            cancel,
            driver,
            renewer,
        })
    }

    /// Queues a publication (QoS 1 is acknowledged with [`SessionEvent::Acked`]).
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        qos: QoS,
    ) -> Result<(), Error> {
        self.client
            .publish(topic, qos, false, payload.into())
            .await
            .map_err(Error::MqttClient)
    }

    /// Subscribes to `filter` (restored after every reconnect).
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), Error> {
        if let Ok(mut subs) = self.subscriptions.lock() {
            subs.push((filter.to_owned(), qos));
        }
        self.client
            .subscribe(filter, qos)
            .await
            .map_err(Error::MqttClient)
    }

    /// The next event, or `None` once the session has stopped.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// The identity in use now (the renewed one after a renewal).
    pub fn identity(&self) -> Identity {
        self.identity.borrow().clone()
    }

    /// Sends DISCONNECT (waiting up to `grace` for it to go out), then stops the tasks.
    pub async fn close(mut self, grace: Duration) {
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(grace, async {
            while let Some(ev) = self.events.recv().await {
                if matches!(ev, SessionEvent::Disconnected { .. }) {
                    break;
                }
            }
        })
        .await;
        self.cancel.cancel();
        let _ = (&mut self.driver).await;
        if let Some(r) = self.renewer.take() {
            let _ = r.await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Subscriptions to restore after a reconnect (the session is clean on the hub).
type Subscriptions = std::sync::Arc<std::sync::Mutex<Vec<(String, QoS)>>>;

/// How long a renewed identity waits for QoS 1 publications in flight to be acknowledged
/// before the session switches to it anyway (they are then re-sent after the reconnect).
const SWITCH_GRACE: Duration = Duration::from_secs(10);

/// Polls the event loop, reports events, switches to renewed identities.
async fn drive(
    mut eventloop: EventLoop,
    ctx: DriverContext,
    mut renewed: mpsc::Receiver<Identity>,
) {
    let DriverContext {
        client,
        roots,
        identity,
        subscriptions,
        events,
        cancel,
    } = ctx;
    let mut backoff = Duration::from_millis(250);
    let mut renewals_open = true;
    // A renewed identity waiting for in-flight publications to be acknowledged.
    let mut switch: Option<(Identity, tokio::time::Instant)> = None;
    // Requests queued but not sent when the connection was switched; sent after CONNACK.
    let mut carry: Vec<rumqttc::Request> = Vec::new();
    let mut connected_once = false;
    loop {
        let ready = switch.as_ref().is_some_and(|(_, since)| {
            eventloop.state.inflight() == 0 || since.elapsed() >= SWITCH_GRACE
        });
        if ready && let Some((new, _)) = switch.take() {
            match tls_transport(&new, &roots) {
                Ok(t) => {
                    eventloop.mqtt_options.set_transport(t);
                    // Drop the connection; the next poll reconnects with the new
                    // certificate. `clean` moves unacknowledged and unsent requests to
                    // `pending`, which a clean-session CONNACK discards: carry them over.
                    eventloop.clean();
                    carry_over(&mut carry, &mut eventloop.pending);
                }
                Err(e) => tracing::error!(error = %e, "renewed identity unusable for TLS"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            new = renewed.recv(), if renewals_open => {
                match new {
                    Some(new) => switch = Some((new, tokio::time::Instant::now())),
                    None => renewals_open = false,
                }
            }
            // Wake up to re-check a pending switch even when the connection is quiet.
            () = tokio::time::sleep(Duration::from_millis(200)), if switch.is_some() => {}
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(250);
                    eventloop.pending.extend(carry.drain(..));
                    if connected_once {
                        let subs = subscriptions
                            .lock()
                            .map(|s| s.clone())
                            .unwrap_or_default();
                        for (filter, qos) in subs {
                            if let Err(e) = client.try_subscribe(filter.clone(), qos) {
                                tracing::warn!(%filter, error = %e, "cannot restore subscription");
                            }
                        }
                    }
                    connected_once = true;
                    let serial = serial_of(&identity.borrow());
                    tracing::info!(%serial, "MQTT session connected");
                    let _ = events.try_send(SessionEvent::Connected { serial });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let msg = SessionEvent::Message { topic: p.topic, payload: p.payload };
                    // Messages wait for the application (backpressure), status events don't.
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        r = events.send(msg) => if r.is_err() { return },
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    let _ = events.try_send(SessionEvent::Acked { pkid: a.pkid });
                }
                Ok(_) => {}
                Err(e) => {
                    let reason = crate::error_chain(&e);
                    tracing::warn!(%reason, retry_in = ?backoff, "MQTT connection lost");
                    let _ = events.try_send(SessionEvent::Disconnected { reason });
                    // Unacknowledged publications go out again on the next connection.
                    carry_over(&mut carry, &mut eventloop.pending);
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
        }
    }
}

/// Most requests carried from one connection to the next; the oldest go first.
const MAX_CARRY: usize = 1000;

/// Moves what the next connection must send (publications, (un)subscriptions, a requested
/// DISCONNECT) from `pending` to `carry`. Acknowledgements and pings belong to the old
/// connection: on a clean session they would refer to nothing, or to the wrong packet.
fn carry_over(
    carry: &mut Vec<rumqttc::Request>,
    pending: &mut std::collections::VecDeque<rumqttc::Request>,
) {
    use rumqttc::Request as R;
    carry.extend(pending.drain(..).filter(|r| {
        matches!(
            r,
            R::Publish(_) | R::Subscribe(_) | R::Unsubscribe(_) | R::Disconnect(_)
        )
    }));
    if carry.len() > MAX_CARRY {
        let dropped = carry.len() - MAX_CARRY;
        tracing::warn!(
            dropped,
            "MQTT requests dropped while disconnected (queue full)"
        );
        carry.drain(..dropped);
    }
}

/// What the driver task needs besides the event loop.
struct DriverContext {
    client: AsyncClient,
    roots: RootCertStore,
    identity: watch::Receiver<Identity>,
    subscriptions: Subscriptions,
    events: mpsc::Sender<SessionEvent>,
    cancel: CancellationToken,
}

/// Checks the certificate at start and every `check_every`; renews when due.
async fn renew_loop(
    r: Renewal,
    identity_tx: watch::Sender<Identity>,
    renewed_tx: mpsc::Sender<Identity>,
    events: mpsc::Sender<SessionEvent>,
    cancel: CancellationToken,
) {
    loop {
        let wait = match renew_once(&r, &identity_tx).await {
            Ok(Some(new)) => {
                let info = new.info().ok();
                let (serial, not_after) = info
                    .map(|i| {
                        (
                            i.serial,
                            i.not_after
                                .format(&time::format_description::well_known::Rfc3339)
                                .unwrap_or_default(),
                        )
                    })
                    .unwrap_or_default();
                tracing::info!(%serial, %not_after, "certificate renewed");
                if renewed_tx.send(new).await.is_err() {
                    return;
                }
                let _ = events.try_send(SessionEvent::Renewed { serial, not_after });
                r.check_every
            }
            Ok(None) => r.check_every,
            Err(e) => {
                let reason = crate::error_chain(&e);
                tracing::warn!(%reason, retry_in = ?r.retry_after, "certificate renewal failed");
                let _ = events.try_send(SessionEvent::RenewalFailed { reason });
                r.retry_after
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Renews if due: re-enroll, store, publish the new identity.
async fn renew_once(
    r: &Renewal,
    identity_tx: &watch::Sender<Identity>,
) -> Result<Option<Identity>, Error> {
    let current = identity_tx.borrow().clone();
    if !r
        .policy
        .due_for(&current, time::OffsetDateTime::now_utc())?
    {
        return Ok(None);
    }
    let new = r.est.reenroll(&current, &current.key).await?;
    if let Some(path) = &r.cert_path {
        files::write_certs(path, &new.chain)?;
    }
    identity_tx.send_replace(new.clone());
    Ok(Some(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls() {
        let roots = RootCertStore::empty();
        let c =
            SessionConfig::from_url("mqtts://hub.example:8884", "d", roots.clone()).expect("url");
        assert_eq!((c.host.as_str(), c.port), ("hub.example", 8884));
        let c = SessionConfig::from_url("mqtts://hub", "d", roots.clone()).expect("url");
        assert_eq!(c.port, 8883);
        let c = SessionConfig::from_url("mqtts://[::1]:9000", "d", roots.clone()).expect("url");
        assert_eq!((c.host.as_str(), c.port), ("::1", 9000));
        for bad in [
            "mqtt://hub:1883",
            "mqtts://",
            "mqtts://hub:x",
            "mqtts://hub:0",
            "hub",
        ] {
            let e = SessionConfig::from_url(bad, "d", roots.clone()).expect_err(bad);
            assert!(e.to_string().contains("mqtts://"), "{bad}: {e}");
        }
    }
}
