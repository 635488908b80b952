//! PUBLISH and its acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP).

use super::{DecodeError, Properties, Reader, Version, put_str};
use bytes::{BufMut, Bytes, BytesMut};

/// A PUBLISH in either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS 0, 1 or 2.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (empty when a v5 topic alias stands for it).
    pub topic: String,
    /// Packet identifier (QoS > 0).
    pub pid: u16,
    /// v5 properties.
    pub properties: Properties,
    /// Application payload.
    pub payload: Bytes,
}

impl Publish {
    pub(crate) fn decode(flags: u8, body: &[u8], v: Version) -> Result<Self, DecodeError> {
        let dup = flags & 0x08 != 0;
        let qos = (flags >> 1) & 0x03;
        let retain = flags & 0x01 != 0;
        if qos == 3 {
            return Err(DecodeError::Flags);
        }
        if qos == 0 && dup {
            return Err(DecodeError::Protocol("DUP set on QoS 0"));
        }
        let mut r = Reader::new(body);
        let topic = r.string()?.to_owned();
        if topic.contains(['+', '#']) {
            return Err(DecodeError::Protocol("wildcard in topic name"));
        }
        let pid = if qos > 0 {
            let pid = r.u16()?;
            if pid == 0 {
                return Err(DecodeError::Protocol("packet identifier 0"));
            }
            pid
        } else {
            0
        };
        let properties = if v == Version::V5 {
            Properties::decode(&mut r)?
        } else {
            Properties::default()
        };
        if !properties.subscription_ids.is_empty() {
            return Err(DecodeError::Protocol(
                "subscription identifier from a client",
            ));
        }
        let payload = Bytes::copy_from_slice(r.rest());
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            pid,
            properties,
            payload,
        })
    }

    /// Writes the body, returns the first byte.
    pub(crate) fn encode(&self, v: Version, out: &mut BytesMut) -> u8 {
        put_str(out, &self.topic);
        if self.qos > 0 {
            out.put_u16(self.pid);
        }
        if v == Version::V5 {
            self.properties.encode(out);
        }
        out.extend_from_slice(&self.payload);
        0x30 | (u8::from(self.dup) << 3) | (self.qos << 1) | u8::from(self.retain)
    }

    /// Encoded size of this PUBLISH for `v`, without encoding the payload.
    pub fn encoded_len(&self, v: Version) -> usize {
        let mut body = 2 + self.topic.len() + self.payload.len();
        if self.qos > 0 {
            body += 2;
        }
        if v == Version::V5 {
            body += self.properties.encoded_len();
        }
        1 + super::varint_len(body) + body
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ack {
    /// Packet identifier.
    pub pid: u16,
    /// v5 reason code (0 = success).
    pub reason: u8,
    /// v5 properties (reason string).
    pub properties: Properties,
}

impl Ack {
    /// An ack with reason 0.
    pub fn new(pid: u16) -> Self {
        Ack {
            pid,
            ..Ack::default()
        }
    }

    pub(crate) fn decode(body: &[u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pid = r.u16()?;
        if pid == 0 {
            return Err(DecodeError::Protocol("packet identifier 0"));
        }
        let mut a = Ack::new(pid);
        if v == Version::V5 {
            if !r.is_empty() {
                a.reason = r.u8()?;
            }
            if !r.is_empty() {
                a.properties = Properties::decode(&mut r)?;
            }
        }
        if !r.is_empty() {
            return Err(DecodeError::Trailing);
        }
        Ok(a)
    }

    pub(crate) fn encode(&self, v: Version, out: &mut BytesMut) {
        out.put_u16(self.pid);
        if v == Version::V5 && (self.reason != 0 || !self.properties.is_empty()) {
            out.put_u8(self.reason);
            if !self.properties.is_empty() {
                self.properties.encode(out);
            }
        }
    }
}
