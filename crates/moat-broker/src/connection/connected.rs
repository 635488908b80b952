//! Second phase: an admitted client. One `select!` over socket reads, socket writes, the
//! session's outbound queue, kicks, shutdown and the keep-alive deadline.

use crate::codec::{
    self, Ack, Framed, LastWill, Packet, Properties, Publish, SubAck, Subscribe, Unsubscribe,
    Version,
};
use crate::error::{reason, suback_failure};
use crate::persistence::{Delivery, Inflight, Message, StoredSubscription};
use crate::router::SubEntry;
use crate::session::{KickSignal, OutLimits, Session};
use crate::topic::{self, filter_covers, parse_subscription};
use crate::{Broker, Error, Principal};
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes of encoded outbound packets buffered before the queue stops being drained.
const HIGH_WATER: usize = 64 * 1024;
/// Stop reading (and so acknowledging) while this much output is unsent.
const READ_PAUSE: usize = 512 * 1024;

/// Everything the first phase hands over.
#[derive(Debug)]
pub(crate) struct ConnectedParts<S> {
    pub broker: Arc<Broker>,
    pub session: Arc<Session>,
    pub generation: u64,
    pub conn_id: u64,
    pub kick: Arc<KickSignal>,
    pub version: Version,
    pub client_id: String,
    pub principal: Principal,
    pub reader: ReadHalf<S>,
    pub writer: WriteHalf<S>,
    pub inbuf: BytesMut,
    pub outbuf: BytesMut,
    pub keep_alive: u16,
    pub client_receive_max: u16,
    pub client_max_packet: usize,
    pub problem_info: bool,
    pub will: Option<LastWill>,
    pub will_delay: Duration,
    pub connect_expiry_zero: bool,
}

/// An admitted client connection.
#[derive(Debug)]
pub(crate) struct Connected<S> {
    p: ConnectedParts<S>,
    aliases: HashMap<u16, String>,
    limits: OutLimits,
    keep_alive: Option<Duration>,
    last_recv: Instant,
    /// Bytes were written since the last flush (TLS may still hold records).
    unflushed: bool,
    /// Subscribers this connection's last publishes left congested; reads pause until they
    /// drain or `BrokerConfig::publisher_backpressure` passes.
    congested: Vec<Arc<Session>>,
    /// For each of `congested`: its `SessionState::drained` when the current wait began.
    drained_marks: Vec<u64>,
    /// `inbuf` may hold whole packets left unprocessed by a pause.
    input_pending: bool,
}

/// What a handled packet asks of the loop.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The client sent DISCONNECT.
    Stop,
}

impl<S> Connected<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(crate) fn new(p: ConnectedParts<S>) -> Self {
        let window = usize::from(
            p.client_receive_max
                .min(p.broker.cfg.receive_maximum.max(1)),
        );
        let limits = OutLimits {
            version: p.version,
            window,
            max_packet: p.client_max_packet,
            high_water: HIGH_WATER,
        };
        let keep_alive =
            (p.keep_alive > 0).then(|| Duration::from_millis(u64::from(p.keep_alive) * 1500));
        Connected {
            p,
            aliases: HashMap::new(),
            limits,
            keep_alive,
            last_recv: Instant::now(),
            unflushed: false,
            congested: Vec::new(),
            drained_marks: Vec::new(),
            input_pending: false,
        }
    }

    /// Runs until the connection ends, then detaches the session and sends the will if due.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        // Redeliver what was in flight when the previous connection ended (DUP / PUBREL).
        self.p
            .session
            .lock()
            .resend_inflight(&mut self.p.outbuf, &self.limits);
        let result = self.event_loop(&shutdown).await;
        match &result {
            Ok(()) => tracing::debug!("client disconnected"),
            Err(e) if e.is_benign() => tracing::debug!(error = %e, "connection ended"),
            Err(e) => tracing::info!(error = %e, "connection closed"),
        }
        if let Err(e) = &result
            && let (Version::V5, Some(code)) = (self.p.version, e.disconnect_reason())
        {
            let d = codec::Disconnect {
                reason: code,
                properties: Properties {
                    reason_string: Some(e.to_string()),
                    ..Properties::default()
                },
            };
            codec::encode(&Packet::Disconnect(d), self.p.version, &mut self.p.outbuf);
        }
        let flush = async {
            while !self.p.outbuf.is_empty() {
                let n = self.p.writer.write(&self.p.outbuf).await?;
                if n == 0 {
                    break;
                }
                self.p.outbuf.advance(n);
            }
            self.p.writer.shutdown().await
        };
        let _flushed = tokio::time::timeout(self.p.broker.cfg.close_flush_timeout, flush).await;
        let broker = self.p.broker.clone();
        broker.detach(&self.p.session, self.p.conn_id);
        if result.is_err()
            && let Some(w) = self.p.will.take()
        {
            self.publish_will(w);
        }
    }

    fn publish_will(&self, w: LastWill) {
        let expiry = self.p.session.lock().expiry;
        let delay = self
            .p
            .will_delay
            .min(Duration::from_secs(u64::from(expiry)));
        let message = Message {
            expires_at: w
                .properties
                .message_expiry
                .map(|s| SystemTime::now() + Duration::from_secs(u64::from(s))),
            properties: forwarded(&w.properties),
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            publisher: Some(self.p.client_id.clone()),
        };
        tracing::debug!(topic = %message.topic, ?delay, "will scheduled");
        self.p
            .broker
            .schedule_will(&self.p.client_id, self.p.generation, delay, message);
    }

    fn fill(&mut self) {
        if self.p.outbuf.len() >= HIGH_WATER {
            return;
        }
        let max = self.p.broker.cfg.max_queued_messages;
        let (sent, dropped, drained) = {
            let mut st = self.p.session.lock();
            if st.link.as_ref().map(|l| l.conn_id) != Some(self.p.conn_id) {
                return;
            }
            let (sent, dropped) = st.fill(&mut self.p.outbuf, &self.limits);
            (sent, dropped, st.note_drained(max))
        };
        if drained {
            self.p.session.room.notify_waiters();
        }
        let m = &self.p.broker.metrics;
        crate::broker::bump(&m.messages_sent, sent);
        crate::broker::bump(&m.messages_dropped, dropped);
    }

    async fn event_loop(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        loop {
            if self.input_pending && self.congested.is_empty() {
                self.input_pending = false;
                if self.process_input()? == Flow::Stop {
                    return Ok(());
                }
            }
            self.fill();
            let deadline = self.keep_alive.map(|k| self.last_recv + k);
            let can_read = self.p.outbuf.len() < READ_PAUSE && self.congested.is_empty();
            let unflushed = self.unflushed;
            let paused_until = (!self.congested.is_empty())
                .then(|| Instant::now() + self.p.broker.cfg.publisher_backpressure);
            let congested = &mut self.congested;
            let marks = &mut self.drained_marks;
            let low =
                crate::session::SessionState::low_water(self.p.broker.cfg.max_queued_messages);
            let p = &mut self.p;
            tokio::select! {
                biased;
                _ = p.kick.kicked() => return Err(Error::Kicked(p.kick.reason())),
                _ = shutdown.cancelled() => return Err(Error::ShuttingDown),
                // A TLS write can accept plaintext while the socket is full and keep the
                // records inside rustls; without a flush they would wait for the next
                // outbound packet (a stalled PUBACK stalls a QoS 1 publisher). So once the
                // buffer is drained, flush until rustls has handed everything to the socket.
                r = async {
                    if p.outbuf.is_empty() {
                        p.writer.flush().await.map(|()| None)
                    } else {
                        p.writer.write(&p.outbuf).await.map(Some)
                    }
                }, if !p.outbuf.is_empty() || unflushed => {
                    match r.map_err(Error::Io)? {
                        Some(0) => return Err(Error::PeerClosed),
                        Some(n) => {
                            p.outbuf.advance(n);
                            self.unflushed = true;
                        }
                        None => self.unflushed = false,
                    }
                }
                r = p.reader.read_buf(&mut p.inbuf), if can_read => {
                    let n = r.map_err(Error::Io)?;
                    if n == 0 {
                        return Err(Error::PeerClosed);
                    }
                    self.last_recv = Instant::now();
                    if self.process_input()? == Flow::Stop {
                        return Ok(());
                    }
                }
                _ = p.session.notify.notified() => {}
                caught_up = tokio::time::timeout_at(
                    paused_until.unwrap_or_else(Instant::now),
                    wait_for_room(congested, low),
                ), if paused_until.is_some() => {
                    if caught_up.is_ok() {
                        congested.clear();
                        marks.clear();
                    } else {
                        let stalled = review_congested(congested, marks, low);
                        crate::broker::bump(&p.broker.metrics.subscribers_stalled, stalled);
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    return Err(Error::KeepAliveTimeout);
                }
            }
        }
    }

    fn process_input(&mut self) -> Result<Flow, Error> {
        let max = self.p.broker.cfg.max_packet_size;
        loop {
            match codec::frame(&self.p.inbuf, max)? {
                Framed::Incomplete => return Ok(Flow::Continue),
                Framed::TooLarge(size) => return Err(Error::PacketTooLarge { size, max }),
                Framed::Header(f) if self.p.inbuf.len() < f.total() => {
                    self.p.inbuf.reserve(f.total() - self.p.inbuf.len());
                    return Ok(Flow::Continue);
                }
                Framed::Header(f) => {
                    let raw = self.p.inbuf.split_to(f.total());
                    let packet = codec::decode(&raw, Some(self.p.version))?;
                    if self.handle(packet)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                    // A subscriber fell behind: leave the rest for after the pause.
                    if !self.congested.is_empty() {
                        self.input_pending = !self.p.inbuf.is_empty();
                        return Ok(Flow::Continue);
                    }
                }
            }
        }
    }

    fn send(&mut self, packet: Packet) {
        codec::encode(&packet, self.p.version, &mut self.p.outbuf);
    }

    fn handle(&mut self, packet: Packet) -> Result<Flow, Error> {
        match packet {
            Packet::Publish(p) => self.on_publish(p)?,
            Packet::PubAck(a) => {
                let mut st = self.p.session.lock();
                if let Some(i) = st.inflight.iter().position(|(pid, f)| {
                    *pid == a.pid && matches!(f, Inflight::Publish(d) if d.qos == 1)
                }) {
                    st.inflight.remove(i);
                    st.dirty = true;
                }
            }
            Packet::PubRec(a) => {
                let found = {
                    let mut st = self.p.session.lock();
                    let i = st.inflight.iter().position(|(pid, f)| {
                        *pid == a.pid && matches!(f, Inflight::Publish(d) if d.qos == 2)
                    });
                    if let Some(i) = i {
                        st.dirty = true;
                        if a.reason >= 0x80 {
                            st.inflight.remove(i);
                        } else {
                            st.inflight[i].1 = Inflight::Released;
                        }
                    }
                    i.is_some()
                };
                if a.reason < 0x80 {
                    let mut rel = Ack::new(a.pid);
                    if !found && self.p.version == Version::V5 {
                        rel.reason = reason::PACKET_ID_NOT_FOUND;
                    }
                    self.send(Packet::PubRel(rel));
                }
            }
            Packet::PubComp(a) => {
                let mut st = self.p.session.lock();
                if let Some(i) = st
                    .inflight
                    .iter()
                    .position(|(pid, f)| *pid == a.pid && matches!(f, Inflight::Released))
                {
                    st.inflight.remove(i);
                    st.dirty = true;
                }
            }
            Packet::PubRel(a) => {
                let known = {
                    let mut st = self.p.session.lock();
                    st.dirty = true;
                    st.incoming_qos2.remove(&a.pid)
                };
                let mut comp = Ack::new(a.pid);
                if !known && self.p.version == Version::V5 {
                    comp.reason = reason::PACKET_ID_NOT_FOUND;
                }
                self.send(Packet::PubComp(comp));
            }
            Packet::Subscribe(s) => self.on_subscribe(s)?,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => self.send(Packet::PingResp),
            Packet::Disconnect(d) => {
                if let Some(e) = d.properties.session_expiry {
                    if self.p.connect_expiry_zero && e != 0 {
                        return Err(Error::Protocol("session expiry set on DISCONNECT after 0"));
                    }
                    let granted = e.min(self.p.broker.cfg.max_session_expiry);
                    self.p.session.lock().expiry = granted;
                }
                if d.reason != reason::DISCONNECT_WITH_WILL {
                    self.p.will = None;
                }
                // A will kept by 0x04 is sent as for an abnormal close.
                return match self.p.will {
                    Some(_) => Err(Error::PeerClosed),
                    None => Ok(Flow::Stop),
                };
            }
            Packet::Auth => return Err(Error::Protocol("AUTH without authentication method")),
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => return Err(Error::Protocol("unexpected packet")),
        }
        Ok(Flow::Continue)
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), Error> {
        crate::broker::bump(&self.p.broker.metrics.messages_received, 1);
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
        let allowed = self
            .p
            .principal
            .acl
            .publish
            .iter()
            .any(|f| topic::matches(f, &p.topic));
        if !allowed {
            crate::broker::bump(&self.p.broker.metrics.publishes_denied, 1);
            tracing::warn!(topic = %p.topic, qos = p.qos, "publish denied by ACL");
        }
        let denied_ack = |this: &Self, pid: u16| {
            let mut a = Ack::new(pid);
            if this.p.version == Version::V5 {
                a.reason = reason::NOT_AUTHORIZED;
                if this.p.problem_info {
                    a.properties.reason_string = Some("publish not allowed".into());
                }
            }
            a
        };
        match p.qos {
            0 => {
                if allowed {
                    self.route(p);
                }
            }
            1 => {
                let pid = p.pid;
                let ack = if allowed {
                    self.route(p);
                    Ack::new(pid)
                } else {
                    denied_ack(self, pid)
                };
                self.send(Packet::PubAck(ack));
            }
            _ => {
                let pid = p.pid;
                if !allowed {
                    let ack = denied_ack(self, pid);
                    self.send(Packet::PubRec(ack));
                    return Ok(());
                }
                let first = {
                    let mut st = self.p.session.lock();
                    if st.incoming_qos2.contains(&pid) {
                        false
                    } else {
                        if st.incoming_qos2.len() >= usize::from(self.p.broker.cfg.receive_maximum)
                        {
                            return Err(Error::ReceiveMaximumExceeded);
                        }
                        st.incoming_qos2.insert(pid);
                        st.dirty = true;
                        true
                    }
                };
                if first {
                    self.route(p);
                }
                self.send(Packet::PubRec(Ack::new(pid)));
            }
        }
        Ok(())
    }

    fn route(&mut self, p: Publish) {
        let message = Message {
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
        };
        let before = self.congested.len();
        self.p
            .broker
            .route_noting(Arc::new(message), &mut self.congested);
        for s in &self.congested[before..] {
            self.drained_marks.push(s.lock().drained);
        }
        if before == 0 && !self.congested.is_empty() {
            crate::broker::bump(&self.p.broker.metrics.publisher_pauses, 1);
        }
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Error> {
        let v = self.p.version;
        let sub_id = s.properties.subscription_ids.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained: Vec<Delivery> = Vec::new();
        for (filter, opts) in s.filters {
            let split = match parse_subscription(&filter) {
                Ok(split) => split,
                Err(e) => {
                    tracing::debug!(%filter, error = %e, "invalid subscription filter");
                    codes.push(suback_failure(v, reason::TOPIC_FILTER_INVALID));
                    continue;
                }
            };
            if split.group.is_some() && opts.no_local {
                return Err(Error::Protocol("no local on a shared subscription"));
            }
            let acl = &self.p.principal.acl.subscribe;
            if !acl.iter().any(|a| filter_covers(a, split.filter)) {
                tracing::warn!(%filter, "subscription denied by ACL");
                codes.push(suback_failure(v, reason::NOT_AUTHORIZED));
                continue;
            }
            let mut options = opts;
            options.qos = options.qos.min(2);
            let entry = SubEntry {
                options,
                id: sub_id,
            };
            let is_new = self
                .p
                .broker
                .router_write()
                .insert(&self.p.client_id, split, entry);
            {
                let mut st = self.p.session.lock();
                st.subscriptions.insert(
                    filter.clone(),
                    StoredSubscription {
                        filter: filter.clone(),
                        options,
                        id: sub_id,
                    },
                );
                st.dirty = true;
            }
            codes.push(options.qos);
            let send_retained = split.group.is_none()
                && (options.retain_handling == 0 || (options.retain_handling == 1 && is_new));
            if send_retained {
                let found = crate::broker::lock(&self.p.broker.retained).matching(split.filter);
                retained.extend(found.into_iter().map(|m| Delivery {
                    qos: m.qos.min(options.qos),
                    message: m,
                    retain: true,
                    subscription_ids: sub_id.into_iter().collect(),
                }));
            }
        }
        self.send(Packet::SubAck(SubAck {
            pid: s.pid,
            properties: Properties::default(),
            codes,
            unsuback: false,
        }));
        if !retained.is_empty() {
            let max = self.p.broker.cfg.max_queued_messages;
            let mut st = self.p.session.lock();
            for d in retained {
                st.enqueue(d, max);
            }
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in u.filters {
            let existed = self
                .p
                .session
                .lock()
                .subscriptions
                .remove(&filter)
                .is_some();
            if let Ok(split) = parse_subscription(&filter) {
                self.p
                    .broker
                    .router_write()
                    .remove(&self.p.client_id, split);
            }
            self.p.session.lock().dirty = true;
            codes.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.send(Packet::UnsubAck(SubAck {
            pid: u.pid,
            properties: Properties::default(),
            codes,
            unsuback: true,
        }));
    }
}

/// The PUBLISH properties a broker forwards unchanged.
fn forwarded(p: &Properties) -> Properties {
    Properties {
        payload_format: p.payload_format,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user: p.user.clone(),
        ..Properties::default()
    }
}

/// Returns once every session in `sessions` has at most `low` queued messages, or is
/// offline or stalled.
async fn wait_for_room(sessions: &[Arc<Session>], low: usize) {
    for s in sessions {
        loop {
            let notified = s.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drain in between is not missed.
            notified.as_mut().enable();
            {
                let st = s.lock();
                if st.queue.len() <= low || !st.online() || st.stalled {
                    break;
                }
            }
            notified.await;
        }
    }
}

/// After a pause bound passed: keeps waiting for subscribers that are draining (at least
/// `low` messages, a quarter of the queue, since the last look: busy, not stuck), marks the
/// others that are still behind as stalled and stops waiting for them. Returns how many were
/// marked stalled.
fn review_congested(sessions: &mut Vec<Arc<Session>>, marks: &mut Vec<u64>, low: usize) -> u64 {
    let mut stalled = 0;
    let mut i = 0;
    while i < sessions.len() {
        let s = &sessions[i];
        let mut st = s.lock();
        let progress = st.drained.saturating_sub(marks[i]);
        let keep = st.online() && !st.stalled && st.queue.len() > low;
        if keep && progress >= low as u64 {
            marks[i] = st.drained;
            i += 1;
            continue;
        }
        if keep {
            st.stalled = true;
            stalled += 1;
            tracing::debug!(client_id = %s.client_id, "subscriber stalled; publishers no longer wait for it");
        }
        drop(st);
        // Other publishers paused on it stop waiting too.
        s.room.notify_waiters();
        sessions.swap_remove(i);
        marks.swap_remove(i);
    }
    stalled
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
