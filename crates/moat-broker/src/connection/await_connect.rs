//! First phase: read the CONNECT, ask the [`Authority`](crate::Authority), enforce the
//! client-id rule, attach the session (taking over a connected one) and answer CONNACK.

use super::connected::{Connected, ConnectedParts};
use crate::codec::{self, ConnAck, Connect, DecodeError, Framed, Packet, Properties, Version};
use crate::error::reason;
use crate::session::{KickSignal, Link};
use crate::{Broker, ConnectRequest, Error, Refusal, SecurityEvent, Transport, topic};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A connection that has not yet been admitted.
#[derive(Debug)]
pub(crate) struct AwaitConnect<S> {
    broker: Arc<Broker>,
    stream: S,
    transport: Transport,
    peer: SocketAddr,
    /// Broker-wide id given at accept; the session's link and generation once admitted.
    conn_id: u64,
    buf: BytesMut,
}

impl<S> AwaitConnect<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(crate) fn new(
        broker: Arc<Broker>,
        stream: S,
        transport: Transport,
        peer: SocketAddr,
        conn_id: u64,
    ) -> Self {
        AwaitConnect {
            broker,
            stream,
            transport,
            peer,
            conn_id,
            buf: BytesMut::with_capacity(512),
        }
    }

    async fn read_connect(&mut self) -> Result<Connect, Error> {
        let max = self.broker.cfg.max_packet_size;
        loop {
            match codec::frame(&self.buf, max)? {
                Framed::TooLarge(size) => return Err(Error::PacketTooLarge { size, max }),
                Framed::Header(f) if self.buf.len() >= f.total() => {
                    let pkt = self.buf.split_to(f.total());
                    return match codec::decode(&pkt, None) {
                        Ok(Packet::Connect(c)) => Ok(*c),
                        Ok(_) => Err(Error::Protocol("first packet is not CONNECT")),
                        Err(DecodeError::UnsupportedVersion(level)) => {
                            // v3.1.1-format CONNACK 0x01 for older levels, v5 0x84 above.
                            let (v, code) = if level < 5 {
                                (Version::V311, 0x01)
                            } else {
                                (Version::V5, reason::UNSUPPORTED_PROTOCOL_VERSION)
                            };
                            self.send_connack(
                                v,
                                ConnAck {
                                    code,
                                    ..ConnAck::default()
                                },
                            )
                            .await;
                            Err(DecodeError::UnsupportedVersion(level).into())
                        }
                        Err(e) => Err(e.into()),
                    };
                }
                Framed::Header(f) => self.buf.reserve(f.total() - self.buf.len()),
                Framed::Incomplete => {}
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(Error::Io)?;
            if n == 0 {
                return Err(Error::PeerClosed);
            }
        }
    }

    async fn send_connack(&mut self, v: Version, ack: ConnAck) {
        let mut out = BytesMut::new();
        codec::encode(&Packet::ConnAck(ack), v, &mut out);
        let flush = async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        };
        if let Err(e) = flush.await {
            tracing::debug!(error = %e, "could not send CONNACK");
        }
    }

    async fn refuse(&mut self, v: Version, refusal: Refusal, claimed: Option<String>) -> Error {
        bump_refused(&self.broker);
        let properties = Properties {
            reason_string: Some(refusal.to_string()),
            ..Properties::default()
        };
        self.send_connack(
            v,
            ConnAck {
                session_present: false,
                code: refusal.connack_code(v),
                properties,
            },
        )
        .await;
        let _shutdown = self.stream.shutdown().await;
        tracing::info!(%refusal, ?claimed, "CONNECT refused");
        self.broker
            .authority
            .security_event(SecurityEvent::Refused {
                claimed,
                mode: self.transport.mode(),
                peer: self.peer,
                refusal,
            });
        Error::Refused(refusal)
    }

    /// Reads and decides the CONNECT; on success the CONNACK is sent.
    pub(crate) async fn run(mut self) -> Result<Connected<S>, Error> {
        let kick_epoch = self.broker.kick_epoch();
        let connect = self.read_connect().await?;
        let v = connect.version;
        if v == Version::V5 && connect.properties.auth_method.is_some() {
            self.send_connack(
                v,
                ConnAck {
                    code: reason::BAD_AUTH_METHOD,
                    ..ConnAck::default()
                },
            )
            .await;
            return Err(Error::Protocol("enhanced authentication is not supported"));
        }
        if v == Version::V311 && connect.client_id.is_empty() && !connect.clean_start {
            // MQTT-3.1.3-8: a zero-length client id needs CleanSession=1 in 3.1.1 (v5 lets
            // the server assign one). Identifier rejected, then close; nothing was claimed.
            bump_refused(&self.broker);
            self.send_connack(
                v,
                ConnAck {
                    code: Refusal::ClientIdNotValid.connack_code(v),
                    ..ConnAck::default()
                },
            )
            .await;
            let _shutdown = self.stream.shutdown().await;
            return Err(Error::Protocol(
                "MQTT 3.1.1 zero-length client id with CleanSession=0",
            ));
        }
        let claimed = if connect.client_id.is_empty() {
            connect.username.clone()
        } else {
            Some(connect.client_id.clone())
        };
        let decision = self
            .broker
            .authority
            .authenticate(ConnectRequest {
                transport: &self.transport,
                client_id: &connect.client_id,
                username: connect.username.as_deref(),
                password: connect.password.as_deref(),
                peer: self.peer,
            })
            .await;
        let principal = match decision {
            Ok(p) => p,
            Err(refusal) => return Err(self.refuse(v, refusal, claimed).await),
        };
        let assigned = connect.client_id.is_empty();
        let client_id = if assigned {
            principal.identity.clone()
        } else {
            connect.client_id.clone()
        };
        if client_id != principal.identity {
            return Err(self.refuse(v, Refusal::ClientIdNotValid, claimed).await);
        }
        if let Some(w) = &connect.will {
            if topic::validate_name(&w.topic).is_err() {
                return Err(Error::Protocol("invalid will topic"));
            }
            if !principal
                .acl
                .publish
                .iter()
                .any(|f| topic::matches(f, &w.topic))
            {
                return Err(self.refuse(v, Refusal::NotAuthorized, claimed).await);
            }
        }
        let span = tracing::Span::current();
        span.record("identity", principal.identity.as_str());

        let cfg = &self.broker.cfg;
        let mut props = Properties::default();
        let keep_alive = match v {
            Version::V5 if connect.keep_alive == 0 || connect.keep_alive > cfg.max_keep_alive => {
                props.server_keep_alive = Some(cfg.max_keep_alive);
                cfg.max_keep_alive
            }
            _ => connect.keep_alive,
        };
        let asked = connect.properties.session_expiry;
        let expiry = self.broker.grant_expiry(v, connect.clean_start, asked);
        if v == Version::V5 && asked.unwrap_or(0) != expiry {
            props.session_expiry = Some(expiry);
        }
        if assigned && v == Version::V5 {
            props.assigned_client_id = Some(client_id.clone());
        }
        props.receive_maximum = Some(cfg.receive_maximum.max(1));
        props.maximum_packet_size = u32::try_from(cfg.max_packet_size).ok();
        if cfg.topic_alias_maximum > 0 {
            props.topic_alias_max = Some(cfg.topic_alias_maximum);
        }

        // On a cluster node: the client id is this node's from here (the node it was on
        // closes it and hands its session over).
        let claim_epoch = match self.broker.claim(&client_id, self.peer).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "CONNECT refused: the cluster cannot place the client id now");
                return Err(self.refuse(v, Refusal::ServerUnavailable, claimed).await);
            }
        };
        let conn_id = self.conn_id;
        let kick = Arc::new(KickSignal::default());
        let link = Link {
            conn_id,
            identity: principal.identity.clone(),
            peer: self.peer,
            mode: self.transport.mode(),
            version: v,
            connected_at: SystemTime::now(),
            kick: kick.clone(),
        };
        let attached = match self.broker.attach(
            &client_id,
            connect.clean_start,
            expiry,
            link,
            kick_epoch,
            claim_epoch,
        ) {
            Ok(a) => a,
            Err(refusal) => return Err(self.refuse(v, refusal, claimed).await),
        };
        if let Some(old_peer) = attached.taken_over {
            tracing::info!(%old_peer, "session taken over");
            if old_peer.ip() != self.peer.ip() {
                self.broker
                    .authority
                    .security_event(SecurityEvent::PossibleClone {
                        client_id: client_id.clone(),
                        old_peer,
                        new_peer: self.peer,
                    });
            }
        }
        crate::broker::bump(&self.broker.metrics.connects_accepted, 1);
        let connack = ConnAck {
            session_present: attached.session_present,
            code: reason::SUCCESS,
            properties: if v == Version::V5 {
                props
            } else {
                Properties::default()
            },
        };
        let mut out = BytesMut::with_capacity(256);
        codec::encode(&Packet::ConnAck(connack), v, &mut out);
        tracing::debug!(%client_id, session_present = attached.session_present, "connected");

        let will_delay = connect
            .will
            .as_ref()
            .and_then(|w| w.properties.will_delay)
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(Duration::ZERO);
        let (reader, writer) = tokio::io::split(self.stream);
        Ok(Connected::new(ConnectedParts {
            broker: self.broker,
            session: attached.session,
            generation: attached.generation,
            conn_id,
            kick,
            version: v,
            client_id,
            principal,
            peer: self.peer,
            reader,
            writer,
            inbuf: self.buf,
            outbuf: out,
            keep_alive,
            client_receive_max: connect.properties.receive_maximum.unwrap_or(u16::MAX),
            client_max_packet: connect
                .properties
                .maximum_packet_size
                .map_or(usize::MAX, |m| m as usize),
            problem_info: connect.properties.request_problem_info != Some(0),
            will: connect.will,
            will_delay,
            connect_expiry_zero: expiry == 0,
        }))
    }
}

fn bump_refused(b: &Broker) {
    crate::broker::bump(&b.metrics.connects_refused, 1);
}
