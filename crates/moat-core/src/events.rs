//! Domain events and the bus that carries them. Subscribers (the MQTT broker's follower, OTA,
//! metrics, the server-certificate follower) act on them; the registry stays the source of
//! truth, so a subscriber that missed events ([`BusError::Lagged`]) resynchronises from it.
//!
//! [`EventBus`] is the seam: [`LocalBus`] carries events inside one process (a tokio
//! broadcast channel and a bounded history, so a subscriber can start after a position it
//! has seen); a cluster adds an implementation over an existing messaging system. Events are
//! serialisable both ways and carry what consumers need to act without reading the registry
//! again (a revoked certificate names its CA).
//!
//! ```text
//!   Hub::emit ──▶ EventBus::publish ──▶ position n ──▶ every Subscription::recv
//!                                  └──▶ history (the last HISTORY events, for subscribe(After))
//! ```

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use tokio::sync::{broadcast, mpsc};

/// A revoked certificate, as the client verifier's revoked set keys it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RevokedCertificate {
    /// The issuing CA (registry name).
    pub ca_name: String,
    /// Serial, lowercase hex.
    pub serial: String,
}

/// Something that changed in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A device was created.
    DeviceCreated {
        /// Its id.
        device_id: String,
    },
    /// A certificate was issued to (or, for a registered CA's certificate, bound to) a
    /// device and recorded.
    CertificateIssued {
        /// Serial, lowercase hex.
        serial: String,
        /// The issuing CA.
        ca_name: String,
        /// The device it identifies.
        device_id: String,
    },
    /// A device was disabled: drop its sessions, refuse it until enabled.
    DeviceDisabled {
        /// Its id.
        device_id: String,
    },
    /// A device was enabled again.
    DeviceEnabled {
        /// Its id.
        device_id: String,
    },
    /// A device was revoked with all its certificates: drop its sessions for good.
    DeviceRevoked {
        /// Its id.
        device_id: String,
        /// The certificates revoked with it, each with its issuing CA.
        certificates: Vec<RevokedCertificate>,
    },
    /// A device was deleted (its certificates were revoked first).
    DeviceDeleted {
        /// Its id.
        device_id: String,
    },
    /// One certificate was revoked.
    CertificateRevoked {
        /// Serial, lowercase hex.
        serial: String,
        /// The issuing CA.
        ca_name: String,
        /// The device it identified, if any.
        device_id: Option<String>,
    },
    /// A superseded certificate's overlap ended and it was revoked (reason superseded): the
    /// verifier refuses it from now on. Its device is not kicked: it is expected to be
    /// connected with its newer certificate already.
    CertificateRetired {
        /// Serial, lowercase hex.
        serial: String,
        /// The issuing CA.
        ca_name: String,
        /// The device it identified, if any.
        device_id: Option<String>,
    },
    /// A device's lifecycle changed without changing its access (claimed, transferred,
    /// provisioned, first connected).
    DeviceUpdated {
        /// Its id.
        device_id: String,
    },
    /// A third-party CA was registered: refresh the client-certificate verifier.
    CaRegistered {
        /// Its registry name.
        name: String,
    },
    /// A third-party CA was removed: refresh the verifier, drop sessions it authenticated.
    CaRemoved {
        /// Its registry name.
        name: String,
    },
    /// An identity's group or policy changed: close its sessions so it reconnects under the
    /// new topic access.
    AccessChanged {
        /// Its id.
        device_id: String,
    },
    /// A topic access policy was created, changed or deleted, or a group's policy was set:
    /// the next CONNECTs read them afresh (live sessions keep the access they connected
    /// with, as on one node).
    AccessPoliciesChanged {
        /// The policy, or the group.
        name: String,
    },
    /// A new CRL was published.
    CrlPublished {
        /// The CA.
        ca_name: String,
        /// Its CRL number.
        number: u64,
    },
    /// The hub's TLS server certificate was replaced: listeners load it for new connections.
    ServerCertRotated {
        /// Serial of the new certificate.
        serial: String,
    },
}

/// Where an event stands in its bus's order (increasing, gap-free per bus).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position(pub u64);

/// An event and its position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Its position on the bus.
    pub position: Position,
    /// The event.
    pub event: Event,
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// With the next event published.
    Now,
    /// With the first event after this position (one the subscriber has seen).
    After(Position),
}

/// Why a subscription yields no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The subscriber fell behind (or asked for a position older than the bus keeps) and
    /// missed this many events: resynchronise from the registry, then go on.
    #[error("missed {0} events; resynchronise from the registry")]
    Lagged(u64),
    /// The bus is gone (the hub is shutting down).
    #[error("the event bus is closed")]
    Closed,
}

/// Carries domain events to every subscriber. Publishing never waits for subscribers.
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes `event`; returns its position.
    fn publish(&self, event: Event) -> Position;
    /// Subscribes from `start`. Must be called within a tokio runtime.
    fn subscribe(&self, start: Start) -> Subscription;
    /// Tells every subscriber that changes were missed ([`BusError::Lagged`] with `missed`,
    /// 0 when unknown): another node's events did not arrive, so they resynchronise from
    /// the registry.
    fn announce_gap(&self, missed: u64);
}

/// Carries the events this node emits to the other nodes of a cluster. A single node has
/// none. The cluster's implementation is in `moat-node` (a durable log in the registry,
/// announced on NATS); events from other nodes come back in through
/// [`Hub::apply_remote`](crate::Hub::apply_remote).
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// Takes `event` (already applied on this node) to the others. Must not block.
    fn relay(&self, event: &Event);
}

/// One subscriber's events, in bus order.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Result<Envelope, BusError>>,
}

impl Subscription {
    /// A subscription fed by an [`EventBus`] implementation through `rx`.
    pub fn new(rx: mpsc::Receiver<Result<Envelope, BusError>>) -> Self {
        Subscription { rx }
    }

    /// The next event, [`BusError::Lagged`] after a gap, or [`BusError::Closed`].
    pub async fn recv(&mut self) -> Result<Envelope, BusError> {
        self.rx.recv().await.unwrap_or(Err(BusError::Closed))
    }
}

/// Events kept for subscribers that start after a position.
pub const HISTORY: usize = 1024;

/// Per-subscriber buffer between the bus and the subscriber.
const SUBSCRIBER_BUFFER: usize = 256;

/// The in-process bus: a broadcast channel and the last [`HISTORY`] events.
#[derive(Debug)]
pub struct LocalBus {
    state: Mutex<LocalState>,
    live: broadcast::Sender<Item>,
}

/// What the live channel carries: an event, or word that some were missed.
#[derive(Clone, Debug)]
enum Item {
    Event(Envelope),
    Gap(u64),
}

#[derive(Debug, Default)]
struct LocalState {
    /// Position of the next event.
    next: u64,
    history: VecDeque<Envelope>,
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus {
            state: Mutex::default(),
            live: broadcast::channel(HISTORY).0,
        }
    }
}

impl EventBus for LocalBus {
    fn publish(&self, event: Event) -> Position {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let position = Position(state.next);
        state.next += 1;
        let env = Envelope { position, event };
        if state.history.len() == HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(env.clone());
        // Under the lock, so subscribers see the live stream in position order. No
        // subscriber is not an error: the registry is the source of truth.
        let _ = self.live.send(Item::Event(env));
        position
    }

    fn announce_gap(&self, missed: u64) {
        // Under the lock, like an event, so it keeps its place in the stream.
        let _state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.live.send(Item::Gap(missed));
    }

    fn subscribe(&self, start: Start) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        // Backlog and live stream are taken under the publish lock: nothing falls between.
        let (backlog, mut live, mut seen) = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let live = self.live.subscribe();
            match start {
                Start::Now => (Vec::new(), live, state.next.checked_sub(1)),
                Start::After(Position(p)) => {
                    let oldest = state.history.front().map_or(state.next, |e| e.position.0);
                    let mut backlog: Vec<Result<Envelope, BusError>> = Vec::new();
                    if p.saturating_add(1) < oldest {
                        backlog.push(Err(BusError::Lagged(oldest - p - 1)));
                    }
                    backlog.extend(
                        state
                            .history
                            .iter()
                            .filter(|e| e.position.0 > p)
                            .cloned()
                            .map(Ok),
                    );
                    (backlog, live, state.next.checked_sub(1))
                }
            }
        };
        tokio::spawn(async move {
            for item in backlog {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            loop {
                let item = match live.recv().await {
                    Ok(Item::Event(env)) if seen.is_some_and(|s| env.position.0 <= s) => continue,
                    Ok(Item::Event(env)) => {
                        seen = Some(env.position.0);
                        Ok(env)
                    }
                    Ok(Item::Gap(missed)) => Err(BusError::Lagged(missed)),
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(BusError::Lagged(n)),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Subscription::new(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(id: &str) -> Event {
        Event::DeviceCreated {
            device_id: id.into(),
        }
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order_and_can_start_after_a_position() {
        let bus = LocalBus::default();
        let p0 = bus.publish(created("a"));
        let mut now = bus.subscribe(Start::Now);
        let p1 = bus.publish(created("b"));
        let p2 = bus.publish(created("c"));
        assert_eq!((p0, p1, p2), (Position(0), Position(1), Position(2)));
        assert_eq!(now.recv().await.map(|e| e.position), Ok(p1));
        assert_eq!(now.recv().await.map(|e| e.position), Ok(p2));
        // From after p0: the history's p1 and p2, then live events, no duplicate.
        let mut after = bus.subscribe(Start::After(p0));
        let p3 = bus.publish(created("d"));
        for want in [p1, p2, p3] {
            assert_eq!(after.recv().await.map(|e| e.position), Ok(want));
        }
        assert_eq!(now.recv().await.map(|e| e.event), Ok(created("d")));
    }

    #[tokio::test]
    async fn a_position_older_than_the_history_reports_the_gap() {
        let bus = LocalBus::default();
        for i in 0..HISTORY + 10 {
            bus.publish(created(&i.to_string()));
        }
        let mut sub = bus.subscribe(Start::After(Position(4)));
        // Kept: positions 10..; missed: 5..=9.
        assert_eq!(sub.recv().await, Err(BusError::Lagged(5)));
        assert_eq!(sub.recv().await.map(|e| e.position), Ok(Position(10)));
    }

    #[tokio::test]
    async fn an_announced_gap_reaches_every_subscriber_in_stream_order() {
        let bus = LocalBus::default();
        let mut sub = bus.subscribe(Start::Now);
        bus.publish(created("a"));
        bus.announce_gap(3);
        bus.publish(created("b"));
        assert_eq!(sub.recv().await.map(|e| e.event), Ok(created("a")));
        assert_eq!(sub.recv().await, Err(BusError::Lagged(3)));
        assert_eq!(sub.recv().await.map(|e| e.event), Ok(created("b")));
    }

    #[test]
    fn events_round_trip_through_json() {
        let e = Event::DeviceRevoked {
            device_id: "d".into(),
            certificates: vec![RevokedCertificate {
                ca_name: "devices".into(),
                serial: "0a".into(),
            }],
        };
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(serde_json::from_str::<Event>(&json).expect("back"), e);
    }
}
