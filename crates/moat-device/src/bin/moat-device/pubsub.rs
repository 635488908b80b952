//! Publish/subscribe workload. Publishers and subscribers are device identities; topics are
//! templates with `{id}` (the connection's own device id), so the same command expresses
//! self-loop (each device publishes to and subscribes to its own topic), fan-in (N
//! publishers → one wildcard subscriber) and fan-out (one publisher → N subscribers), as far
//! as the broker's ACLs allow. Latency is end to end: the payload carries the send time.

use crate::common::{CpuMark, TargetArgs, latency_json, latency_line};
use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::Args;
use moat_device::load::client::{self, Incoming, Reader, Stream, Writer};
use moat_device::load::hist::Histogram;
use moat_device::load::payload;
use moat_mqtt::Version;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};

#[derive(Debug, Args)]
pub struct PubsubArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Publishing devices.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Index of the first publishing device.
    #[arg(long, default_value_t = 0)]
    pub pub_offset: usize,
    /// Subscribing devices.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Index of the first subscribing device (a device both publishing and subscribing uses
    /// one connection).
    #[arg(long, default_value_t = 0)]
    pub sub_offset: usize,
    /// Topic each publisher publishes to; `{id}` is its device id.
    #[arg(long, default_value = "devices/{id}/load")]
    pub pub_topic: String,
    /// Filter each subscriber subscribes to; `{id}` is its device id.
    #[arg(long, default_value = "devices/{id}/load")]
    pub sub_filter: String,
    /// QoS of publications and subscriptions (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Payload bytes (at least 16: send timestamp + sequence number).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages per second per publisher (0: as fast as the connection and, at QoS 1, the
    /// in-flight window allow).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Unacknowledged QoS 1 publications per publisher.
    #[arg(long, default_value_t = 16)]
    pub inflight: usize,
    /// Most messages written in one go by a publisher.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Where subscribe-only devices connect (another node of a cluster: cross-node
    /// delivery); default: `--addr`, like everyone else.
    #[arg(long)]
    pub sub_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Default)]
struct Roles {
    publish: Option<String>,
    subscribe: Option<String>,
}

#[derive(Debug)]
struct Shared {
    from: Instant,
    to: Instant,
    sent: AtomicU64,
    received: AtomicU64,
    qos: u8,
}

impl Shared {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.from && t < self.to
    }
}

pub async fn run(a: PubsubArgs) -> anyhow::Result<Value> {
    if a.qos > 0 && a.inflight == 0 {
        bail!("--inflight must be at least 1 at QoS 1");
    }
    let lo = a.pub_offset.min(a.sub_offset);
    let hi = (a.pub_offset + a.publishers).max(a.sub_offset + a.subscribers);
    let (setup, devices) = a.target.load(lo, Some(hi - lo), 60)?;
    let mut roles: BTreeMap<usize, Roles> = BTreeMap::new();
    for i in a.pub_offset..a.pub_offset + a.publishers {
        let id = &devices[i - lo].id;
        roles.entry(i).or_default().publish = Some(a.pub_topic.replace("{id}", id));
    }
    for i in a.sub_offset..a.sub_offset + a.subscribers {
        let id = &devices[i - lo].id;
        roles.entry(i).or_default().subscribe = Some(a.sub_filter.replace("{id}", id));
    }

    // Connect and subscribe everyone first.
    let setup = Arc::new(setup);
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let t_conn = Instant::now();
    let sub_target = a.sub_addr.map(|addr| {
        let mut t = setup.target.clone();
        t.addr = addr;
        Arc::new(t)
    });
    for (i, r) in roles {
        let d = devices[i - lo].clone();
        let (setup, sem, qos) = (setup.clone(), sem.clone(), a.qos);
        let target = match (&sub_target, &r.publish) {
            (Some(t), None) => t.clone(),
            _ => Arc::new(setup.target.clone()),
        };
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let src = setup.sources[i % setup.sources.len()];
            let mut c = client::connect(&target, d.tls.clone(), &d.id, Some(src))
                .await
                .with_context(|| format!("connecting {}", d.id))?;
            if let Some(f) = &r.subscribe {
                c.subscribe(f, qos)
                    .await
                    .with_context(|| format!("{} subscribing to {f}", d.id))?;
            }
            Ok::<_, anyhow::Error>((c, r))
        });
    }
    let mut conns = Vec::new();
    while let Some(r) = tasks.join_next().await {
        conns.push(r.context("connect task panicked")??);
    }
    eprintln!(
        "pubsub[{}]: {} connections up and subscribed in {:.1?}",
        a.target.label,
        conns.len(),
        t_conn.elapsed()
    );

    let start = Instant::now() + Duration::from_millis(200);
    let from = start + Duration::from_secs_f64(a.warmup);
    let to = from + Duration::from_secs_f64(a.duration);
    let shared = Arc::new(Shared {
        from,
        to,
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        qos: a.qos,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = tokio::task::JoinSet::new();
    let mut publishers = tokio::task::JoinSet::new();
    let mut writers = tokio::task::JoinSet::new();
    for (conn, roles) in conns {
        let (reader, writer) = conn.split();
        let version = writer.version();
        // Acks never wait (unbounded, and sent first); publications are bounded so a
        // publisher feels the connection's back-pressure. The reader never blocks on the
        // writer, so a full socket one way cannot deadlock the other.
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (pub_tx, pub_rx) = mpsc::channel(2);
        writers.spawn(write_loop(writer, ack_rx, pub_rx));
        let window = Arc::new(Semaphore::new(a.inflight.max(1)));
        let sent_at = Arc::new(SentAt::default());
        readers.spawn(read_loop(
            reader,
            ack_tx,
            window.clone(),
            sent_at.clone(),
            shared.clone(),
            stop_rx.clone(),
        ));
        if let Some(topic) = roles.publish {
            let p = PubParams {
                topic,
                size: a.size,
                rate: a.rate,
                batch: a.batch.max(1),
                version,
            };
            publishers.spawn(publish_loop(
                p,
                pub_tx,
                window,
                sent_at,
                shared.clone(),
                start,
            ));
        }
    }
    tokio::time::sleep_until(from.into()).await;
    let cpu0 = CpuMark::now(a.target.watch_pid);
    tokio::time::sleep_until(to.into()).await;
    let cpu1 = CpuMark::now(a.target.watch_pid);
    let mut pub_errors = 0;
    while let Some(r) = publishers.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            pub_errors += 1;
        }
    }
    // Let messages in flight arrive (they do not count: they arrive after the window).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    let mut h = Histogram::new();
    let mut ack_h = Histogram::new();
    let mut read_errors = 0;
    while let Some(r) = readers.join_next().await {
        match r {
            Ok(Ok((part, acks))) => {
                h.merge(&part);
                ack_h.merge(&acks);
            }
            _ => read_errors += 1,
        }
    }
    while writers.join_next().await.is_some() {}
    let sent = shared.sent.load(Ordering::Relaxed) as f64 / a.duration;
    let received = shared.received.load(Ordering::Relaxed) as f64 / a.duration;
    eprintln!(
        "pubsub[{}]: QoS {} {}B: published {sent:.0}/s, delivered {received:.0}/s ({} pub, {} sub); latency {}; publish→PUBACK {}; errors pub {pub_errors} read {read_errors}",
        a.target.label,
        a.qos,
        a.size,
        a.publishers,
        a.subscribers,
        latency_line(&h),
        latency_line(&ack_h)
    );
    Ok(json!({
        "kind": "pubsub",
        "label": a.target.label,
        "qos": a.qos,
        "size": a.size,
        "publishers": a.publishers,
        "subscribers": a.subscribers,
        "pub_topic": a.pub_topic,
        "sub_filter": a.sub_filter,
        "rate_per_publisher": a.rate,
        "published_per_s": sent,
        "delivered_per_s": received,
        "latency": latency_json(&h),
        "puback_latency": latency_json(&ack_h),
        "session_expiry": a.target.session_expiry,
        "publisher_errors": pub_errors,
        "reader_errors": read_errors,
        "cpu": cpu0.since(&cpu1),
    }))
}

#[derive(Debug)]
struct PubParams {
    topic: String,
    size: usize,
    rate: f64,
    batch: usize,
    version: Version,
}

async fn write_loop(
    mut w: Writer<Stream>,
    mut acks: mpsc::UnboundedReceiver<BytesMut>,
    mut pubs: mpsc::Receiver<BytesMut>,
) -> anyhow::Result<()> {
    loop {
        let mut buf = tokio::select! {
            biased;
            Some(a) = acks.recv() => a,
            Some(p) = pubs.recv() => p,
            else => return Ok(()),
        };
        while let Ok(a) = acks.try_recv() {
            buf.extend_from_slice(&a);
        }
        w.send(&mut buf).await?;
    }
}

/// When each in-flight QoS 1 publication of one connection was handed to its writer (ns),
/// by packet id: publish→PUBACK latency.
#[derive(Debug)]
struct SentAt(std::sync::Mutex<std::collections::HashMap<u16, u64>>);

impl Default for SentAt {
    fn default() -> Self {
        SentAt(std::sync::Mutex::new(std::collections::HashMap::new()))
    }
}

impl SentAt {
    fn put(&self, pid: u16, ns: u64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(pid, ns);
    }
    fn take(&self, pid: u16) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&pid)
    }
}

async fn publish_loop(
    p: PubParams,
    out_tx: mpsc::Sender<BytesMut>,
    window: Arc<Semaphore>,
    sent_at: Arc<SentAt>,
    shared: Arc<Shared>,
    start: Instant,
) -> anyhow::Result<()> {
    tokio::time::sleep_until(start.into()).await;
    let cap = p.batch * (p.size + p.topic.len() + 8);
    let mut seq: u64 = 0;
    let mut pid: u16 = 0;
    loop {
        let now = Instant::now();
        if now >= shared.to {
            return Ok(());
        }
        let mut n = p.batch as u64;
        if p.rate > 0.0 {
            let due = (now.duration_since(start).as_secs_f64() * p.rate) as u64;
            if due <= seq {
                let next = start + Duration::from_secs_f64((seq + 1) as f64 / p.rate);
                tokio::time::sleep_until(next.into()).await;
                continue;
            }
            n = n.min(due - seq);
        }
        let mut out = BytesMut::with_capacity(cap);
        for k in 0..n {
            if shared.qos > 0 {
                if k == 0 {
                    window.acquire().await?.forget();
                } else if let Ok(permit) = window.try_acquire() {
                    permit.forget();
                } else {
                    break;
                }
                pid = pid.checked_add(1).unwrap_or(1);
                sent_at.put(pid, payload::now_ns());
            }
            client::put_publish(
                &mut out,
                p.version,
                &p.topic,
                shared.qos,
                pid,
                payload::stamped(p.size, seq),
            );
            seq += 1;
            if shared.in_window(Instant::now()) {
                shared.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        out_tx.send(out).await?;
    }
}

/// Reads until stopped: the delivery latency of messages received in the window, and the
/// publish→PUBACK latency of this connection's own publications acknowledged in it.
async fn read_loop(
    mut reader: Reader<Stream>,
    acks_tx: mpsc::UnboundedSender<BytesMut>,
    window: Arc<Semaphore>,
    sent_at: Arc<SentAt>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(Histogram, Histogram)> {
    let version = reader.version();
    let mut h = Histogram::new();
    let mut ack_h = Histogram::new();
    loop {
        let first = tokio::select! {
            r = reader.next() => r?,
            _ = stop.changed() => return Ok((h, ack_h)),
        };
        let Some(mut pkt) = first else {
            bail!("server closed the connection");
        };
        let mut received = 0u64;
        let mut acks = BytesMut::new();
        loop {
            match pkt {
                Incoming::Publish(m) => {
                    if shared.in_window(Instant::now())
                        && let Some(sent) = payload::sent_at(&m.payload)
                    {
                        h.record(payload::now_ns().saturating_sub(sent));
                        received += 1;
                    }
                    if m.qos == 1 {
                        client::put_puback(&mut acks, version, m.pid);
                    }
                }
                Incoming::PubAck(pid) => {
                    window.add_permits(1);
                    if let Some(at) = sent_at.take(pid)
                        && shared.in_window(Instant::now())
                    {
                        ack_h.record(payload::now_ns().saturating_sub(at));
                    }
                }
                Incoming::Disconnect(code) => bail!("server sent DISCONNECT 0x{code:02x}"),
                Incoming::SubAck(..) | Incoming::PingResp => {}
            }
            match reader.next_buffered()? {
                Some(p) => pkt = p,
                None => break,
            }
        }
        if received > 0 {
            shared.received.fetch_add(received, Ordering::Relaxed);
        }
        if !acks.is_empty() {
            // The writer is gone only at shutdown.
            let _ = acks_tx.send(acks);
        }
    }
}
