//! MQTT 3.1.1 and 5.0 packet codec, sans-I/O.
//!
//! Written for the server role: it decodes what clients send (CONNECT, PUBLISH, the
//! acknowledgements, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH) and encodes what the
//! server sends. Two steps keep memory bounded:
//!
//! 1. [`frame`] reads only the fixed header and refuses a packet whose announced size is over
//!    the limit *before* any of its body is buffered;
//! 2. [`decode`] parses one complete packet from a borrowed slice. It never panics: every
//!    malformed input is a [`DecodeError`] (fuzzed by `fuzz/fuzz_targets/decode.rs`).

mod connect;
mod properties;
mod publish;
mod subscribe;

pub use connect::{ConnAck, Connect, Disconnect, LastWill, encode_connect};
pub use properties::Properties;
pub use publish::{Ack, Publish};
pub use subscribe::{SubAck, Subscribe, SubscriptionOptions, Unsubscribe};

use bytes::{BufMut, Bytes, BytesMut};

/// Protocol level negotiated at CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    /// The protocol level byte.
    pub fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Why bytes are not a valid packet. Every variant maps to v5 0x81 Malformed packet or 0x82
/// Protocol error (see [`DecodeError::is_protocol_error`]); v3.1.1 just closes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet ends before a field it announces.
    #[error("packet truncated")]
    Truncated,
    /// The remaining-length varint is longer than four bytes.
    #[error("bad remaining length")]
    BadLength,
    /// The packet type nibble is 0 or not one a client may send.
    #[error("unexpected packet type {0}")]
    PacketType(u8),
    /// Reserved fixed-header flags are wrong.
    #[error("bad fixed header flags")]
    Flags,
    /// A string is not UTF-8.
    #[error("invalid UTF-8 string")]
    Utf8(#[source] std::str::Utf8Error),
    /// A string holds U+0000, which MQTT forbids.
    #[error("string holds U+0000")]
    NulChar,
    /// A field has a value the specification forbids (named).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes remain after the last field.
    #[error("trailing bytes")]
    Trailing,
    /// A v5 property is unknown, repeated, or not allowed here.
    #[error("bad property 0x{0:02x}")]
    Property(u8),
    /// The packet is well formed but breaks a protocol rule (v5 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The CONNECT names a protocol this server does not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedVersion(u8),
}

impl DecodeError {
    /// True for errors v5 reports as 0x82 Protocol error rather than 0x81 Malformed packet.
    pub fn is_protocol_error(&self) -> bool {
        matches!(self, DecodeError::Protocol(_) | DecodeError::PacketType(_))
    }
}

/// A packet this codec knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK (server → client).
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(Ack),
    /// PUBREC.
    PubRec(Ack),
    /// PUBREL.
    PubRel(Ack),
    /// PUBCOMP.
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK (server → client).
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server → client).
    UnsubAck(SubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (v5). Decoded only so it can be refused with a protocol error.
    Auth,
}

/// The fixed header of a packet whose body may not be buffered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// First byte: type and flags.
    pub first: u8,
    /// Length of the fixed header (1 + varint length).
    pub header_len: usize,
    /// Remaining length.
    pub body_len: usize,
}

impl Frame {
    /// Whole packet size in bytes.
    pub fn total(&self) -> usize {
        self.header_len + self.body_len
    }
}

/// Outcome of [`frame`] when the header is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framed {
    /// Need more bytes to know.
    Incomplete,
    /// A header; the whole packet is `total()` bytes (maybe not all buffered yet).
    Header(Frame),
    /// The packet announces more than `max` bytes.
    TooLarge(usize),
}

/// Reads a fixed header from the start of `buf` and checks the packet size against `max`
/// (whole packet, as MQTT 5 Maximum Packet Size counts it).
pub fn frame(buf: &[u8], max: usize) -> Result<Framed, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(Framed::Incomplete);
    };
    let mut len: usize = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(Framed::Incomplete);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let f = Frame {
                first,
                header_len: 2 + i,
                body_len: len,
            };
            if f.total() > max {
                return Ok(Framed::TooLarge(f.total()));
            }
            return Ok(Framed::Header(f));
        }
    }
    Err(DecodeError::BadLength)
}

/// Decodes one whole packet (`buf` holds exactly it). `version` is `None` before CONNECT;
/// then only CONNECT is accepted.
pub fn decode(buf: &[u8], version: Option<Version>) -> Result<Packet, DecodeError> {
    let f = match frame(buf, usize::MAX)? {
        Framed::Header(f) => f,
        Framed::Incomplete | Framed::TooLarge(_) => return Err(DecodeError::Truncated),
    };
    if buf.len() != f.total() {
        return Err(if buf.len() < f.total() {
            DecodeError::Truncated
        } else {
            DecodeError::Trailing
        });
    }
    let body = &buf[f.header_len..];
    let kind = f.first >> 4;
    let flags = f.first & 0x0f;
    let Some(v) = version else {
        if kind != 1 {
            return Err(DecodeError::Protocol("first packet is not CONNECT"));
        }
        if flags != 0 {
            return Err(DecodeError::Flags);
        }
        return Ok(Packet::Connect(Box::new(Connect::decode(body)?)));
    };
    let need_flags = |want: u8| {
        if flags == want {
            Ok(())
        } else {
            Err(DecodeError::Flags)
        }
    };
    match kind {
        1 => Err(DecodeError::Protocol("second CONNECT")),
        3 => Ok(Packet::Publish(Publish::decode(flags, body, v)?)),
        4 => {
            need_flags(0)?;
            Ok(Packet::PubAck(Ack::decode(body, v)?))
        }
        5 => {
            need_flags(0)?;
            Ok(Packet::PubRec(Ack::decode(body, v)?))
        }
        6 => {
            need_flags(2)?;
            Ok(Packet::PubRel(Ack::decode(body, v)?))
        }
        7 => {
            need_flags(0)?;
            Ok(Packet::PubComp(Ack::decode(body, v)?))
        }
        8 => {
            need_flags(2)?;
            Ok(Packet::Subscribe(Subscribe::decode(body, v)?))
        }
        10 => {
            need_flags(2)?;
            Ok(Packet::Unsubscribe(Unsubscribe::decode(body, v)?))
        }
        12 => {
            need_flags(0)?;
            if !body.is_empty() {
                return Err(DecodeError::Trailing);
            }
            Ok(Packet::PingReq)
        }
        14 => {
            need_flags(0)?;
            Ok(Packet::Disconnect(Disconnect::decode(body, v)?))
        }
        15 if v == Version::V5 => {
            need_flags(0)?;
            Ok(Packet::Auth)
        }
        k => Err(DecodeError::PacketType(k)),
    }
}

/// Encodes a server → client packet for `version`, appending it to `out`. Returns the
/// encoded size.
pub fn encode(packet: &Packet, version: Version, out: &mut BytesMut) -> usize {
    let mut body = BytesMut::new();
    let first = match packet {
        Packet::ConnAck(p) => {
            p.encode(version, &mut body);
            0x20
        }
        Packet::Publish(p) => p.encode(version, &mut body),
        Packet::PubAck(a) => {
            a.encode(version, &mut body);
            0x40
        }
        Packet::PubRec(a) => {
            a.encode(version, &mut body);
            0x50
        }
        Packet::PubRel(a) => {
            a.encode(version, &mut body);
            0x62
        }
        Packet::PubComp(a) => {
            a.encode(version, &mut body);
            0x70
        }
        Packet::SubAck(a) => {
            a.encode(version, &mut body);
            0x90
        }
        Packet::UnsubAck(a) => {
            a.encode(version, &mut body);
            0xb0
        }
        Packet::PingResp => 0xd0,
        Packet::PingReq => 0xc0,
        Packet::Disconnect(d) => {
            d.encode(version, &mut body);
            0xe0
        }
        Packet::Connect(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) | Packet::Auth => {
            // Client → server packets are never sent by the broker.
            return 0;
        }
    };
    let start = out.len();
    out.put_u8(first);
    put_varint(out, body.len());
    out.extend_from_slice(&body);
    out.len() - start
}

/// Size `encode` would produce.
pub fn encoded_len(packet: &Packet, version: Version) -> usize {
    let mut b = BytesMut::new();
    encode(packet, version, &mut b)
}

/// A bounds-checked reader over a packet body.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut v: u32 = 0;
        for i in 0..4 {
            let b = self.u8()?;
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadLength)
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    pub(crate) fn string(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.binary()?;
        let s = std::str::from_utf8(b).map_err(DecodeError::Utf8)?;
        if s.contains('\0') {
            return Err(DecodeError::NulChar);
        }
        Ok(s)
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

pub(crate) fn put_varint(out: &mut BytesMut, mut n: usize) {
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

pub(crate) fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_str(out: &mut BytesMut, s: &str) {
    put_bin(out, s.as_bytes());
}

pub(crate) fn put_bin(out: &mut BytesMut, b: &[u8]) {
    let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.put_u16(n);
    out.extend_from_slice(&b[..usize::from(n)]);
}

/// Payload bytes shared between subscribers without copying.
pub type Payload = Bytes;

#[cfg(test)]
mod tests;
