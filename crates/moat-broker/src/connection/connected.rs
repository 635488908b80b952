//! Second phase: an admitted client. One `select!` over socket reads, socket writes, the
//! session's outbound queue, kicks, shutdown, the keep-alive deadline and an interceptor's
//! verdict. Inbound PUBLISH handling is in `publish`.

mod publish;

use crate::codec::{
    self, Ack, Framed, LastWill, Packet, Properties, SubAck, Subscribe, Unsubscribe, Version,
};
use crate::error::{reason, suback_failure};
use crate::persistence::{Delivery, Inflight, Message, StoredSubscription};
use crate::router::SubEntry;
use crate::session::{DrainMark, Journaled, KickSignal, OutLimits, QueueLimits, Session};
use crate::topic::{filter_covers, parse_subscription};
use crate::{Broker, Error, Principal};
use bytes::{Buf, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;
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
    pub peer: std::net::SocketAddr,
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
    drained_marks: Vec<DrainMark>,
    /// `inbuf` may hold whole packets left unprocessed by a pause.
    input_pending: bool,
    /// Output that waits for durable state (sync durability), in order: each chunk goes out
    /// once the writer's batch it names is written; everything sent after a held packet is
    /// held behind it, so packets keep their order.
    held: VecDeque<(u64, BytesMut)>,
    /// The last batch the writer made durable.
    durable: watch::Receiver<u64>,
    /// A message waiting for its interceptor's verdict: reads pause until it comes.
    intercepting: Option<Box<publish::Pending>>,
    /// A SUBACK waiting until the new subscription is in effect on the other nodes of the
    /// cluster (and whether it also waits for durable state): reads pause until then.
    settling: Option<Settling>,
    /// Security events reported once per connection.
    reported: publish::Reported,
}

/// A SUBACK held for the cluster (see [`crate::Fabric::settled`]).
struct Settling {
    wait: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    suback: Packet,
    durable: bool,
}

impl std::fmt::Debug for Settling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settling").finish_non_exhaustive()
    }
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
        let durable = p.broker.durable();
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
            held: VecDeque::new(),
            durable,
            intercepting: None,
            settling: None,
            reported: publish::Reported::default(),
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

    fn publish_will(&self, mut w: LastWill) {
        if !self
            .p
            .broker
            .cfg
            .strip_reserved(&mut w.properties.user)
            .is_empty()
        {
            crate::broker::bump(&self.p.broker.metrics.reserved_properties_stripped, 1);
        }
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
            properties: publish::forwarded(&w.properties),
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
        if self.p.outbuf.len() + self.held_len() >= HIGH_WATER {
            return;
        }
        let limits = self.p.broker.cfg.queue_limits();
        // While output is held, new packets queue behind it.
        let behind = !self.held.is_empty();
        let start = self.p.outbuf.len();
        let mut fresh = BytesMut::new();
        let (sent, dropped, drained, qos2) = {
            let mut st = self.p.session.lock();
            if st.link.as_ref().map(|l| l.conn_id) != Some(self.p.conn_id) {
                return;
            }
            let out = if behind {
                &mut fresh
            } else {
                &mut self.p.outbuf
            };
            let (sent, dropped, qos2) = st.fill(out, &self.limits);
            self.p.broker.note(&self.p.session, &mut st);
            (sent, dropped, st.note_drained(limits), qos2)
        };
        // A QoS 2 PUBLISH leaves only once its packet id is durable: a crash must not resend
        // the message under another id (the client would deliver it twice).
        match (qos2.then(|| self.p.broker.ticket()).flatten(), behind) {
            (Some(ticket), false) => {
                let filled = self.p.outbuf.split_off(start);
                self.hold(ticket, filled);
            }
            (Some(ticket), true) => self.hold(ticket, fresh),
            (None, true) => self.hold_behind(fresh),
            (None, false) => {}
        }
        if drained {
            self.p.session.room.notify_waiters();
        }
        let m = &self.p.broker.metrics;
        crate::broker::bump(&m.messages_sent, sent);
        crate::broker::bump(&m.messages_dropped, dropped);
    }

    async fn event_loop(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        loop {
            if self.input_pending
                && self.congested.is_empty()
                && self.intercepting.is_none()
                && self.settling.is_none()
            {
                self.input_pending = false;
                if self.process_input()? == Flow::Stop {
                    return Ok(());
                }
            }
            self.fill();
            if !self.held.is_empty() {
                self.release_held();
            }
            let holding = !self.held.is_empty();
            let deadline = self.keep_alive.map(|k| self.last_recv + k);
            let can_read = self.p.outbuf.len() + self.held_len() < READ_PAUSE
                && self.congested.is_empty()
                && self.intercepting.is_none()
                && self.settling.is_none();
            let unflushed = self.unflushed;
            let paused_until = (!self.congested.is_empty())
                .then(|| Instant::now() + self.p.broker.cfg.publisher_backpressure);
            let congested = &mut self.congested;
            let marks = &mut self.drained_marks;
            let limits = self.p.broker.cfg.queue_limits();
            let p = &mut self.p;
            let durable = &mut self.durable;
            let intercepting = &mut self.intercepting;
            let deciding = intercepting.is_some();
            let settling = &mut self.settling;
            let settles = settling.is_some();
            tokio::select! {
                biased;
                _ = p.kick.kicked() => return Err(Error::Kicked(p.kick.reason())),
                _ = shutdown.cancelled() => return Err(Error::ShuttingDown),
                // A batch was written: held acknowledgements may go (at the loop's top).
                r = durable.changed(), if holding => {
                    if r.is_err() {
                        return Err(Error::ShuttingDown);
                    }
                }
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
                verdict = async {
                    match intercepting.as_mut() {
                        Some(i) => i.verdict().await,
                        None => std::future::pending().await,
                    }
                }, if deciding => {
                    if let Some(pending) = self.intercepting.take() {
                        self.conclude(*pending, verdict)?;
                    }
                }
                () = async {
                    match settling.as_mut() {
                        Some(s) => s.wait.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if settles => {
                    if let Some(s) = self.settling.take() {
                        self.send_durable(s.suback, s.durable);
                    }
                }
                _ = p.session.notify.notified() => {}
                caught_up = tokio::time::timeout_at(
                    paused_until.unwrap_or_else(Instant::now),
                    wait_for_room(congested, limits),
                ), if paused_until.is_some() => {
                    if caught_up.is_ok() {
                        congested.clear();
                        marks.clear();
                    } else {
                        let stalled = review_congested(congested, marks, limits);
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
                    // A subscriber fell behind, or the hub decides about a message: leave the
                    // rest for after the pause.
                    if !self.congested.is_empty()
                        || self.intercepting.is_some()
                        || self.settling.is_some()
                    {
                        self.input_pending = !self.p.inbuf.is_empty();
                        return Ok(Flow::Continue);
                    }
                }
            }
        }
    }

    /// Sends a packet (behind any held output).
    fn send(&mut self, packet: Packet) {
        let out = match self.held.back_mut() {
            Some((_, buf)) => buf,
            None => &mut self.p.outbuf,
        };
        codec::encode(&packet, self.p.version, out);
    }

    /// Sends a packet that acknowledges a change of durable state: with sync durability, once
    /// the change is written (`durable`: the change touched durable state at all).
    fn send_durable(&mut self, packet: Packet, durable: bool) {
        match durable.then(|| self.p.broker.ticket()).flatten() {
            Some(ticket) => {
                let mut buf = BytesMut::new();
                codec::encode(&packet, self.p.version, &mut buf);
                self.hold(ticket, buf);
            }
            None => self.send(packet),
        }
    }

    /// Holds `bytes` until batch `ticket` is durable.
    fn hold(&mut self, ticket: u64, bytes: BytesMut) {
        match self.held.back_mut() {
            Some((t, buf)) if *t >= ticket => buf.extend_from_slice(&bytes),
            _ => self.held.push_back((ticket, bytes)),
        }
    }

    /// Appends `bytes` to the held output (they must not overtake it).
    fn hold_behind(&mut self, bytes: BytesMut) {
        match self.held.back_mut() {
            Some((_, buf)) => buf.extend_from_slice(&bytes),
            None => self.p.outbuf.extend_from_slice(&bytes),
        }
    }

    fn held_len(&self) -> usize {
        self.held.iter().map(|(_, b)| b.len()).sum()
    }

    /// Moves held output whose batch is durable to the socket buffer.
    fn release_held(&mut self) {
        let durable = *self.durable.borrow_and_update();
        while let Some((t, _)) = self.held.front()
            && *t <= durable
        {
            if let Some((_, buf)) = self.held.pop_front() {
                self.p.outbuf.extend_from_slice(&buf);
            }
        }
    }

    fn handle(&mut self, packet: Packet) -> Result<Flow, Error> {
        match packet {
            Packet::Publish(p) => self.on_publish(p)?,
            Packet::PubAck(a) => {
                let mut st = self.p.session.lock();
                if let Some(i) = st.inflight.iter().position(|(pid, f)| {
                    *pid == a.pid && matches!(f, Inflight::Publish(d) if d.qos == 1)
                }) && let Some((_, Inflight::Publish(d))) = st.inflight.remove(i)
                {
                    st.record(Journaled::Finished(d.seq));
                    self.p.broker.note(&self.p.session, &mut st);
                }
            }
            Packet::PubRec(a) => {
                let (found, durable) = {
                    let mut st = self.p.session.lock();
                    let i = st.inflight.iter().position(|(pid, f)| {
                        *pid == a.pid && matches!(f, Inflight::Publish(d) if d.qos == 2)
                    });
                    if let Some(i) = i {
                        if a.reason >= 0x80 {
                            st.inflight.remove(i);
                            st.record(Journaled::Acknowledged(a.pid));
                        } else {
                            st.inflight[i].1 = Inflight::Released;
                            st.record(Journaled::Released(a.pid));
                        }
                        self.p.broker.note(&self.p.session, &mut st);
                    }
                    (i.is_some(), i.is_some() && st.persistent())
                };
                if a.reason < 0x80 {
                    let mut rel = Ack::new(a.pid);
                    if !found && self.p.version == Version::V5 {
                        rel.reason = reason::PACKET_ID_NOT_FOUND;
                    }
                    // Once PUBREL is out the message must never be sent again: the release
                    // is written first.
                    self.send_durable(Packet::PubRel(rel), durable);
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
                    st.record(Journaled::Acknowledged(a.pid));
                    self.p.broker.note(&self.p.session, &mut st);
                }
            }
            Packet::PubRel(a) => {
                let (known, durable) = {
                    let mut st = self.p.session.lock();
                    let known = st.incoming_qos2.remove(&a.pid);
                    if known && st.persistent() {
                        st.meta_dirty = true;
                        self.p.broker.note(&self.p.session, &mut st);
                    }
                    (known, known && st.persistent())
                };
                let mut comp = Ack::new(a.pid);
                if !known && self.p.version == Version::V5 {
                    comp.reason = reason::PACKET_ID_NOT_FOUND;
                }
                // After PUBCOMP the client may reuse the id for a new message: the id is
                // forgotten on disk first, or that message would be taken for a duplicate.
                self.send_durable(Packet::PubComp(comp), durable);
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
                    let mut st = self.p.session.lock();
                    st.expiry = granted;
                    st.meta_dirty = true;
                    self.p.broker.note(&self.p.session, &mut st);
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

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Error> {
        let v = self.p.version;
        let sub_id = s.properties.subscription_ids.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained: Vec<Delivery> = Vec::new();
        let persistent = self.p.session.lock().persistent();
        let refusing = persistent && self.p.broker.refusing_durable_work();
        for (filter, opts) in s.filters {
            if refusing {
                // Granted would mean stored, and storing fails now (a full disk…).
                codes.push(suback_failure(v, reason::QUOTA_EXCEEDED));
                continue;
            }
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
                st.meta_dirty = true;
                self.p.broker.note(&self.p.session, &mut st);
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
                    seq: 0,
                }));
            }
        }
        // Granted means stored, and on a cluster node in effect on every node.
        let suback = Packet::SubAck(SubAck {
            pid: s.pid,
            properties: Properties::default(),
            codes,
            unsuback: false,
        });
        let durable = persistent && !refusing;
        match self.p.broker.fabric_settled() {
            Some(wait) => {
                self.settling = Some(Settling {
                    wait,
                    suback,
                    durable,
                })
            }
            None => self.send_durable(suback, durable),
        }
        if !retained.is_empty() {
            let limits = self.p.broker.cfg.queue_limits();
            let mut st = self.p.session.lock();
            for d in retained {
                st.enqueue(d, limits);
            }
            self.p.broker.note(&self.p.session, &mut st);
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        let mut persistent = false;
        for filter in u.filters {
            let existed = {
                let mut st = self.p.session.lock();
                let existed = st.subscriptions.remove(&filter).is_some();
                persistent = st.persistent();
                if existed {
                    st.meta_dirty = true;
                    self.p.broker.note(&self.p.session, &mut st);
                }
                existed
            };
            if let Ok(split) = parse_subscription(&filter) {
                self.p
                    .broker
                    .router_write()
                    .remove(&self.p.client_id, split);
            }
            codes.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.send_durable(
            Packet::UnsubAck(SubAck {
                pid: u.pid,
                properties: Properties::default(),
                codes,
                unsuback: true,
            }),
            persistent,
        );
    }
}

/// Returns once every session in `sessions` has caught up (a quarter of its queue limits),
/// or is offline or stalled.
async fn wait_for_room(sessions: &[Arc<Session>], limits: QueueLimits) {
    for s in sessions {
        loop {
            let notified = s.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drain in between is not missed.
            notified.as_mut().enable();
            {
                let st = s.lock();
                if st.caught_up(limits) || !st.online() || st.stalled {
                    break;
                }
            }
            notified.await;
        }
    }
}

/// After a pause bound passed: keeps waiting for subscribers that are draining (a quarter of
/// their queue since the last look: busy, not stuck), marks the others that are still behind
/// as stalled and stops waiting for them. Returns how many were marked stalled.
fn review_congested(
    sessions: &mut Vec<Arc<Session>>,
    marks: &mut Vec<DrainMark>,
    limits: QueueLimits,
) -> u64 {
    let mut stalled = 0;
    let mut i = 0;
    while i < sessions.len() {
        let s = &sessions[i];
        let mut st = s.lock();
        let keep = st.online() && !st.stalled && !st.caught_up(limits);
        if keep && st.made_progress(marks[i], limits) {
            marks[i] = st.drain_mark();
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
