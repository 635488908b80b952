//! A client's PUBLISH: topic alias, reserved user properties, the ACL, the durable-state
//! refusal, the interceptor of its topic (`crate::intercept`), then routing and the QoS 1/2
//! acknowledgement.

use super::Connected;
use crate::broker::{Routed, bump};
use crate::codec::{Ack, Packet, Properties, Publish, Version};
use crate::error::reason;
use crate::intercept::{Interceptor, Publisher, Refused, Verdict};
use crate::persistence::Message;
use crate::{Error, SecurityEvent, topic};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};

/// A client message waiting for its interceptor's verdict; the connection reads nothing more
/// until it comes.
pub(in crate::connection) struct Pending {
    pid: u16,
    qos: u8,
    verdict: Pin<Box<dyn Future<Output = Verdict> + Send>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("pid", &self.pid)
            .field("qos", &self.qos)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The verdict, once the interceptor (or its timeout) decides.
    pub(in crate::connection) async fn verdict(&mut self) -> Verdict {
        self.verdict.as_mut().await
    }
}

/// What security events a connection has reported (once each per connection: the counts are
/// in the metrics).
#[derive(Debug, Default)]
pub(in crate::connection) struct Reported {
    stripped: bool,
    denied: bool,
}

impl<S> Connected<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(super) fn on_publish(&mut self, mut p: Publish) -> Result<(), Error> {
        bump(&self.p.broker.metrics.messages_received, 1);
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias == 0 || alias > self.p.broker.cfg.topic_alias_maximum {
                return Err(Error::TopicAliasInvalid);
            }
            if p.topic.is_empty() {
                p.topic = self
                    .aliases
                    .get(&alias)
                    .cloned()
                    .ok_or(Error::TopicAliasInvalid)?;
            } else {
                self.aliases.insert(alias, p.topic.clone());
            }
        }
        if topic::validate_name(&p.topic).is_err() {
            return Err(Error::Protocol("invalid topic name"));
        }
        let stripped = self.p.broker.cfg.strip_reserved(&mut p.properties.user);
        if !stripped.is_empty() {
            self.report_stripped(&p.topic, stripped);
        }
        let allowed = self
            .p
            .principal
            .acl
            .publish
            .iter()
            .any(|f| topic::matches(f, &p.topic));
        if !allowed {
            bump(&self.p.broker.metrics.publishes_denied, 1);
            tracing::warn!(topic = %p.topic, qos = p.qos, "publish denied by ACL");
            self.report_denied(&p.topic);
        }
        if p.qos > 0 && allowed && self.p.broker.refusing_durable_work() {
            // Acknowledged would mean stored, and storing fails now (a full disk…).
            bump(&self.p.broker.metrics.messages_refused_storage, 1);
            if self.p.version == Version::V311 {
                return Err(Error::StorageUnavailable);
            }
            let ack = self.refusal_ack(
                p.pid,
                reason::QUOTA_EXCEEDED,
                "the hub cannot store messages now; try again later",
            );
            self.send(if p.qos == 1 {
                Packet::PubAck(ack)
            } else {
                Packet::PubRec(ack)
            });
            return Ok(());
        }
        if allowed
            && (p.qos < 2 || !self.p.session.lock().incoming_qos2.contains(&p.pid))
            && let Some(interceptor) = self.p.broker.interceptor_for(&p.topic)
        {
            self.start_interception(interceptor, p);
            return Ok(());
        }
        let (pid, qos) = (p.pid, p.qos);
        if !allowed {
            let ack = self.refusal_ack(pid, reason::NOT_AUTHORIZED, "publish not allowed");
            match qos {
                0 => {}
                1 => self.send(Packet::PubAck(ack)),
                _ => self.send(Packet::PubRec(ack)),
            }
            return Ok(());
        }
        let message = self.message_of(p);
        self.deliver(pid, qos, message)
    }

    /// Routes an accepted message and acknowledges it by its QoS.
    fn deliver(&mut self, pid: u16, qos: u8, message: Message) -> Result<(), Error> {
        match qos {
            0 => {
                self.route(message);
            }
            1 => {
                let routed = self.route(message);
                let ack = self.publish_ack(pid, &routed);
                self.send_durable(Packet::PubAck(ack), routed.durable);
            }
            _ => {
                let (first, persistent) = {
                    let mut st = self.p.session.lock();
                    let persistent = st.persistent();
                    if st.incoming_qos2.contains(&pid) {
                        (false, persistent)
                    } else {
                        if st.incoming_qos2.len() >= usize::from(self.p.broker.cfg.receive_maximum)
                        {
                            return Err(Error::ReceiveMaximumExceeded);
                        }
                        st.incoming_qos2.insert(pid);
                        if persistent {
                            st.meta_dirty = true;
                            self.p.broker.note(&self.p.session, &mut st);
                        }
                        (true, persistent)
                    }
                };
                // The packet id (so a resend is known for one) and the routed message are
                // durable before PUBREC; a resend waits for the first one's batch too.
                let routed = if first {
                    self.route(message)
                } else {
                    Routed::default()
                };
                let ack = self.publish_ack(pid, &routed);
                if ack.reason >= 0x80 {
                    // A failed PUBREC ends the exchange: no PUBREL will name this id.
                    let mut st = self.p.session.lock();
                    st.incoming_qos2.remove(&pid);
                    if persistent {
                        st.meta_dirty = true;
                        self.p.broker.note(&self.p.session, &mut st);
                    }
                }
                self.send_durable(Packet::PubRec(ack), routed.durable || persistent);
            }
        }
        Ok(())
    }

    /// Hands the message to its interceptor; reads pause until [`Self::conclude`].
    fn start_interception(&mut self, interceptor: Arc<dyn Interceptor>, p: Publish) {
        let (pid, qos) = (p.pid, p.qos);
        let publisher = Publisher {
            client_id: self.p.client_id.clone(),
            identity: self.p.principal.identity.clone(),
            peer: self.p.peer,
        };
        let message = self.message_of(p);
        let timeout = self.p.broker.cfg.intercept_timeout;
        let verdict = Box::pin(async move {
            match tokio::time::timeout(timeout, interceptor.intercept(&publisher, message)).await {
                Ok(v) => v,
                Err(_) => Verdict::Refuse(Refused {
                    code: reason::UNSPECIFIED,
                    reason: "the hub did not decide about this message in time; try again".into(),
                }),
            }
        });
        self.intercepting = Some(Box::new(Pending { pid, qos, verdict }));
    }

    /// Applies an interceptor's verdict about the message `pending` held.
    pub(super) fn conclude(&mut self, pending: Pending, verdict: Verdict) -> Result<(), Error> {
        let Pending { pid, qos, .. } = pending;
        match verdict {
            Verdict::Route(message) => {
                bump(&self.p.broker.metrics.intercepted_routed, 1);
                self.deliver(pid, qos, *message)
            }
            Verdict::Refuse(r) => {
                bump(&self.p.broker.metrics.intercepted_refused, 1);
                tracing::info!(code = r.code, reason = %r.reason, qos, "message refused by the hub");
                let code = if r.code >= 0x80 {
                    r.code
                } else {
                    reason::UNSPECIFIED
                };
                let ack = self.refusal_ack(pid, code, &r.reason);
                match qos {
                    0 => {}
                    1 => self.send(Packet::PubAck(ack)),
                    _ => self.send(Packet::PubRec(ack)),
                }
                Ok(())
            }
        }
    }

    /// The acknowledgement of a refused message: `code` and `why` for v5 (the text only if
    /// the client asked for problem information); v3.1.1 has no codes.
    fn refusal_ack(&self, pid: u16, code: u8, why: &str) -> Ack {
        let mut a = Ack::new(pid);
        if self.p.version == Version::V5 {
            a.reason = code;
            if self.p.problem_info {
                a.properties.reason_string = Some(why.to_string());
            }
        }
        a
    }

    fn report_stripped(&mut self, topic: &str, names: Vec<String>) {
        bump(&self.p.broker.metrics.reserved_properties_stripped, 1);
        tracing::warn!(%topic, ?names, "reserved user properties removed from a client's message");
        if !std::mem::replace(&mut self.reported.stripped, true) {
            self.p
                .broker
                .authority
                .security_event(SecurityEvent::ReservedPropertiesStripped {
                    identity: self.p.principal.identity.clone(),
                    peer: self.p.peer,
                    topic: topic.to_string(),
                    names,
                });
        }
    }

    fn report_denied(&mut self, topic: &str) {
        if !std::mem::replace(&mut self.reported.denied, true) {
            self.p
                .broker
                .authority
                .security_event(SecurityEvent::PublishDenied {
                    identity: self.p.principal.identity.clone(),
                    peer: self.p.peer,
                    topic: topic.to_string(),
                });
        }
    }

    /// PUBACK/PUBREC for a routed message. A v5 publisher learns when a subscriber that
    /// wanted it at QoS 1/2 could not take it (queue at its limits): 0x97 Quota exceeded,
    /// although every other subscriber has it; a v3.1.1 publisher cannot be told (the drop is
    /// counted in `messages_dropped`).
    fn publish_ack(&self, pid: u16, routed: &Routed) -> Ack {
        let mut a = Ack::new(pid);
        if routed.full > 0 && self.p.version == Version::V5 {
            a.reason = reason::QUOTA_EXCEEDED;
            if self.p.problem_info {
                a.properties.reason_string = Some(format!(
                    "not queued for {} subscriber(s) whose queue is full",
                    routed.full
                ));
            }
        }
        a
    }

    /// The message a client's PUBLISH makes.
    fn message_of(&self, p: Publish) -> Message {
        Message {
            expires_at: p
                .properties
                .message_expiry
                .map(|s| SystemTime::now() + Duration::from_secs(u64::from(s))),
            properties: forwarded(&p.properties),
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            publisher: Some(self.p.client_id.clone()),
        }
    }

    /// Routes a client's message.
    fn route(&mut self, message: Message) -> Routed {
        let before = self.congested.len();
        let routed = self
            .p
            .broker
            .route_noting(Arc::new(message), &mut self.congested);
        for s in &self.congested[before..] {
            self.drained_marks.push(s.lock().drain_mark());
        }
        if before == 0 && !self.congested.is_empty() {
            bump(&self.p.broker.metrics.publisher_pauses, 1);
        }
        routed
    }
}

/// The PUBLISH properties a broker forwards unchanged.
pub(super) fn forwarded(p: &Properties) -> Properties {
    Properties {
        payload_format: p.payload_format,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user: p.user.clone(),
        ..Properties::default()
    }
}
