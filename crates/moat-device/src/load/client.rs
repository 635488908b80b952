//! A minimal MQTT client over TLS (or plain TCP) for load generation: CONNECT/CONNACK,
//! SUBSCRIBE/SUBACK, PUBLISH at QoS 0/1 with PUBACK, DISCONNECT. Packet framing and the
//! PUBLISH/PUBACK bodies come from [`moat_mqtt`]; the three server → client
//! packets that codec does not decode (CONNACK, SUBACK, PINGRESP) and the client → server
//! SUBSCRIBE are a few bytes each and handled here.

use super::Error;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use moat_mqtt::{self as codec, Ack, Connect, Framed, Packet, Properties, Publish, Version};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Largest packet accepted from the server.
const MAX_PACKET: usize = 1024 * 1024;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// Broker address.
    pub addr: SocketAddr,
    /// Name the server certificate must carry.
    pub server_name: ServerName<'static>,
    /// MQTT protocol version.
    pub version: Version,
    /// Keep alive sent in CONNECT (seconds, 0 = none).
    pub keep_alive: u16,
    /// Bound on TCP connect + TLS handshake + CONNACK.
    pub timeout: Duration,
    /// Persistent sessions: MQTT 5 session expiry (seconds) with clean start 0, or MQTT
    /// 3.1.1 clean session 0. None: clean sessions.
    pub session_expiry: Option<u32>,
}

/// A packet from the server, as far as the generator cares.
#[derive(Debug)]
pub enum Incoming {
    /// An application message.
    Publish(Box<Publish>),
    /// QoS 1 acknowledgement of one of ours.
    PubAck(u16),
    /// Subscription answer: packet id and the first granted code.
    SubAck(u16, u8),
    /// PINGRESP.
    PingResp,
    /// The server's DISCONNECT (v5 reason code; 0 for v3.1.1).
    Disconnect(u8),
}

/// Opens a TCP connection, optionally from a given source address.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The stream type of a connected client.
pub type Stream = TlsStream<TcpStream>;

/// A connection past CONNACK.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    rbuf: BytesMut,
    version: Version,
}

/// Full TCP + TLS handshake + CONNECT/CONNACK for `client_id` with `tls`.
pub async fn connect(
    target: &Target,
    tls: Arc<ClientConfig>,
    client_id: &str,
    source: Option<IpAddr>,
) -> Result<Connection<Stream>, Error> {
    let fut = async {
        let tcp = tcp_connect(target.addr, source).await?;
        let stream = TlsConnector::from(tls)
            .connect(target.server_name.clone(), tcp)
            .await?;
        mqtt_connect(stream, target, client_id).await
    };
    tokio::time::timeout(target.timeout, fut)
        .await
        .map_err(|_elapsed| Error::Timeout("CONNACK"))?
}

/// CONNECT/CONNACK over an established stream.
pub async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    target: &Target,
    client_id: &str,
) -> Result<Connection<S>, Error> {
    let connect = Connect {
        version: target.version,
        clean_start: target.session_expiry.is_none(),
        keep_alive: target.keep_alive,
        properties: Properties {
            session_expiry: target
                .session_expiry
                .filter(|_| target.version == Version::V5),
            ..Properties::default()
        },
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
    };
    stream.write_all(&codec::encode_connect(&connect)).await?;
    stream.flush().await?;
    let mut conn = Connection {
        stream,
        rbuf: BytesMut::with_capacity(4096),
        version: target.version,
    };
    let (first, body) = conn.read_frame().await?.ok_or(Error::Closed)?;
    if first >> 4 != 2 {
        return Err(Error::Unexpected(first >> 4));
    }
    match body.get(1) {
        Some(0) => Ok(conn),
        Some(&code) => Err(Error::Refused(code)),
        None => Err(Error::Decode(codec::DecodeError::Truncated)),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Reads one whole packet: its first byte and its body. `None` at a clean EOF.
    async fn read_frame(&mut self) -> Result<Option<(u8, Bytes)>, Error> {
        read_frame(&mut self.stream, &mut self.rbuf).await
    }

    /// Subscribes to `filter` at `qos` and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Result<(), Error> {
        let pid = 1;
        let mut out = BytesMut::new();
        encode_subscribe(&mut out, self.version, pid, filter, qos);
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        loop {
            let (first, body) = self.read_frame().await?.ok_or(Error::Closed)?;
            match parse(first, body, self.version)? {
                Incoming::SubAck(p, code) if p == pid => {
                    return if code < 0x80 {
                        Ok(())
                    } else {
                        Err(Error::SubscriptionRefused(code))
                    };
                }
                Incoming::Disconnect(_) => return Err(Error::Closed),
                // A resumed session's messages may come first: acknowledge them (else they
                // would hold the in-flight window shut).
                Incoming::Publish(m) if m.qos == 1 => {
                    let mut ack = BytesMut::new();
                    put_puback(&mut ack, self.version, m.pid);
                    self.stream.write_all(&ack).await?;
                }
                _ => {}
            }
        }
    }

    /// Sends DISCONNECT and closes the TLS session.
    pub async fn disconnect(mut self) -> Result<(), Error> {
        self.stream.write_all(&[0xe0, 0x00]).await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    /// Splits into a reader and a writer usable from different tasks.
    pub fn split(self) -> (Reader<S>, Writer<S>) {
        let (r, w) = tokio::io::split(self.stream);
        (
            Reader {
                half: r,
                rbuf: self.rbuf,
                version: self.version,
            },
            Writer {
                half: w,
                version: self.version,
            },
        )
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<(u8, Bytes)>, Error> {
    loop {
        if let Some(frame) = take_frame(buf)? {
            return Ok(Some(frame));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if r.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(Error::Closed)
            };
        }
    }
}

/// Takes one complete packet off the front of `buf`, if there is one.
fn take_frame(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, Error> {
    match codec::frame(buf, MAX_PACKET).map_err(Error::Decode)? {
        Framed::Incomplete => Ok(None),
        Framed::TooLarge(_) => Err(Error::Decode(codec::DecodeError::Invalid("packet size"))),
        Framed::Header(f) if buf.len() >= f.total() => {
            let mut whole = buf.split_to(f.total()).freeze();
            let first = whole[0];
            whole.advance(f.header_len);
            Ok(Some((first, whole)))
        }
        Framed::Header(_) => Ok(None),
    }
}

/// Interprets one packet (first byte + body) from the server.
fn parse(first: u8, body: Bytes, v: Version) -> Result<Incoming, Error> {
    match first >> 4 {
        3 => {
            // Re-frame for the shared decoder, which takes a whole packet.
            let mut whole = BytesMut::with_capacity(body.len() + 5);
            whole.put_u8(first);
            put_varint(&mut whole, body.len());
            whole.extend_from_slice(&body);
            match codec::decode(&whole, Some(v)).map_err(Error::Decode)? {
                Packet::Publish(p) => Ok(Incoming::Publish(Box::new(p))),
                _ => Err(Error::Unexpected(3)),
            }
        }
        4 => {
            let pid = body
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or(Error::Decode(codec::DecodeError::Truncated))?;
            Ok(Incoming::PubAck(pid))
        }
        9 => {
            let pid = body
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or(Error::Decode(codec::DecodeError::Truncated))?;
            let mut rest = body.slice(2..);
            if v == Version::V5 {
                let (len, used) = varint(&rest)?;
                rest.advance((used + len).min(rest.len()));
            }
            let code = rest
                .first()
                .copied()
                .ok_or(Error::Decode(codec::DecodeError::Truncated))?;
            Ok(Incoming::SubAck(pid, code))
        }
        13 => Ok(Incoming::PingResp),
        14 => Ok(Incoming::Disconnect(body.first().copied().unwrap_or(0))),
        k => Err(Error::Unexpected(k)),
    }
}

fn varint(b: &[u8]) -> Result<(usize, usize), Error> {
    let mut v = 0usize;
    for i in 0..4 {
        let byte = *b
            .get(i)
            .ok_or(Error::Decode(codec::DecodeError::Truncated))?;
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(Error::Decode(codec::DecodeError::BadLength))
}

fn put_varint(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut b = (n & 0x7f) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if n == 0 {
            break;
        }
    }
}

/// Appends a SUBSCRIBE with one filter.
fn encode_subscribe(out: &mut BytesMut, v: Version, pid: u16, filter: &str, qos: u8) {
    let mut body = BytesMut::new();
    body.put_u16(pid);
    if v == Version::V5 {
        body.put_u8(0); // no properties
    }
    let f = filter.as_bytes();
    body.put_u16(u16::try_from(f.len()).unwrap_or(u16::MAX));
    body.extend_from_slice(&f[..f.len().min(usize::from(u16::MAX))]);
    body.put_u8(qos & 0x03);
    out.put_u8(0x82);
    put_varint(out, body.len());
    out.extend_from_slice(&body);
}

/// Receiving half of a connection.
#[derive(Debug)]
pub struct Reader<S> {
    half: ReadHalf<S>,
    rbuf: BytesMut,
    version: Version,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Reader<S> {
    /// The protocol version spoken.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Next packet; `None` when the server closed the connection cleanly.
    pub async fn next(&mut self) -> Result<Option<Incoming>, Error> {
        match read_frame(&mut self.half, &mut self.rbuf).await? {
            None => Ok(None),
            Some((first, body)) => parse(first, body, self.version).map(Some),
        }
    }

    /// The next packet already buffered, without reading the socket.
    pub fn next_buffered(&mut self) -> Result<Option<Incoming>, Error> {
        match take_frame(&mut self.rbuf)? {
            None => Ok(None),
            Some((first, body)) => parse(first, body, self.version).map(Some),
        }
    }
}

/// Sending half of a connection. Packets are appended to a caller's buffer and written in
/// one go, so a batch costs one TLS record and one system call.
#[derive(Debug)]
pub struct Writer<S> {
    half: WriteHalf<S>,
    version: Version,
}

/// Appends a PUBLISH to `out`.
pub fn put_publish(out: &mut BytesMut, v: Version, topic: &str, qos: u8, pid: u16, payload: Bytes) {
    let p = Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_string(),
        pid,
        properties: Properties::default(),
        payload,
    };
    codec::encode(&Packet::Publish(p), v, out);
}

/// Appends a PUBACK to `out`.
pub fn put_puback(out: &mut BytesMut, v: Version, pid: u16) {
    codec::encode(&Packet::PubAck(Ack::new(pid)), v, out);
}

impl<S: AsyncRead + AsyncWrite + Unpin> Writer<S> {
    /// The protocol version spoken.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Appends a DISCONNECT to `out`.
    pub fn put_disconnect(&self, out: &mut BytesMut) {
        out.put_slice(&[0xe0, 0x00]);
    }

    /// Writes and flushes `out`, leaving it empty.
    pub async fn send(&mut self, out: &mut BytesMut) -> Result<(), Error> {
        if !out.is_empty() {
            self.half.write_all(out).await?;
            self.half.flush().await?;
            out.clear();
        }
        Ok(())
    }

    /// Closes the sending side (TLS close_notify, then FIN).
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        self.half.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suback_v5_skips_properties_and_publish_round_trips() -> Result<(), Error> {
        let body = Bytes::from_static(&[0x00, 0x07, 0x02, 0x1f, 0x00, 0x80]);
        assert!(matches!(
            parse(0x90, body, Version::V5)?,
            Incoming::SubAck(7, 0x80)
        ));
        let body = Bytes::from_static(&[0x00, 0x07, 0x01]);
        assert!(matches!(
            parse(0x90, body, Version::V311)?,
            Incoming::SubAck(7, 1)
        ));
        let mut out = BytesMut::new();
        let p = Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: "devices/a/t".into(),
            pid: 9,
            properties: Properties::default(),
            payload: Bytes::from_static(b"hello"),
        };
        codec::encode(&Packet::Publish(p.clone()), Version::V311, &mut out);
        let (first, body) = take_frame(&mut out)?.ok_or(Error::Closed)?;
        match parse(first, body, Version::V311)? {
            Incoming::Publish(got) => assert_eq!(*got, p),
            other => panic!("unexpected {other:?}"),
        }
        assert!(out.is_empty());
        Ok(())
    }

    #[test]
    fn subscribe_encodes_as_the_broker_decodes() {
        let mut out = BytesMut::new();
        encode_subscribe(&mut out, Version::V5, 3, "devices/+/t", 1);
        match codec::decode(&out, Some(Version::V5)) {
            Ok(Packet::Subscribe(s)) => {
                assert_eq!(s.pid, 3);
                assert_eq!(s.filters.len(), 1);
                assert_eq!(s.filters[0].0, "devices/+/t");
                assert_eq!(s.filters[0].1.qos, 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
