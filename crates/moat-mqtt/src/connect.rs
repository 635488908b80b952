//! CONNECT, CONNACK and DISCONNECT.

use super::{DecodeError, Properties, Reader, Version, put_str};
use bytes::{BufMut, Bytes, BytesMut};

/// The will message carried by a CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastWill {
    /// Will topic.
    pub topic: String,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: u8,
    /// Will retain flag.
    pub retain: bool,
    /// v5 will properties (will delay, expiry, content type…).
    pub properties: Properties,
}

/// A decoded CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// 3.1.1 or 5.0.
    pub version: Version,
    /// Clean session (v3.1.1) / clean start (v5).
    pub clean_start: bool,
    /// Keep alive in seconds (0 = none).
    pub keep_alive: u16,
    /// v5 CONNECT properties.
    pub properties: Properties,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Will, if any.
    pub will: Option<LastWill>,
    /// User name.
    pub username: Option<String>,
    /// Password (binary).
    pub password: Option<Bytes>,
}

impl Connect {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let name = r.binary()?;
        let level = r.u8()?;
        if name != b"MQTT" {
            if name == b"MQIsdp" {
                return Err(DecodeError::UnsupportedVersion(level));
            }
            return Err(DecodeError::Invalid("protocol name"));
        }
        let version = match level {
            4 => Version::V311,
            5 => Version::V5,
            other => return Err(DecodeError::UnsupportedVersion(other)),
        };
        let flags = r.u8()?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::Flags);
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        let password_flag = flags & 0x40 != 0;
        let username_flag = flags & 0x80 != 0;
        if will_qos == 3 || (!will_flag && (will_qos != 0 || will_retain)) {
            return Err(DecodeError::Flags);
        }
        if version == Version::V311 && password_flag && !username_flag {
            return Err(DecodeError::Flags);
        }
        let keep_alive = r.u16()?;
        let properties = if version == Version::V5 {
            Properties::decode_for(&mut r, super::properties::CONNECT_PROPERTIES)?
        } else {
            Properties::default()
        };
        if properties.auth_data.is_some() && properties.auth_method.is_none() {
            // §3.1.2.11.10: authentication data without a method is a protocol error.
            return Err(DecodeError::Property(0x16));
        }
        let client_id = r.string()?.to_owned();
        let will = if will_flag {
            let properties = if version == Version::V5 {
                Properties::decode_for(&mut r, super::properties::WILL_PROPERTIES)?
            } else {
                Properties::default()
            };
            let topic = r.string()?.to_owned();
            let payload = Bytes::copy_from_slice(r.binary()?);
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if username_flag {
            Some(r.string()?.to_owned())
        } else {
            None
        };
        let password = if password_flag {
            Some(Bytes::copy_from_slice(r.binary()?))
        } else {
            None
        };
        if !r.is_empty() {
            return Err(DecodeError::Trailing);
        }
        Ok(Connect {
            version,
            clean_start,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }
}

/// A CONNACK to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// Session present flag.
    pub session_present: bool,
    /// Reason code (v5) or return code (v3.1.1): the caller picks the right one.
    pub code: u8,
    /// v5 properties.
    pub properties: Properties,
}

impl ConnAck {
    pub(crate) fn encode(&self, v: Version, out: &mut BytesMut) {
        out.put_u8(u8::from(self.session_present));
        out.put_u8(self.code);
        if v == Version::V5 {
            self.properties.encode(out);
        }
    }
}

/// A DISCONNECT (either direction; v3.1.1 has no body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// v5 reason code (0 = normal).
    pub reason: u8,
    /// v5 properties (session expiry, reason string).
    pub properties: Properties,
}

impl Disconnect {
    pub(crate) fn decode(body: &[u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        if v == Version::V311 {
            if !r.is_empty() {
                return Err(DecodeError::Trailing);
            }
            return Ok(Disconnect::default());
        }
        let reason = if r.is_empty() { 0 } else { r.u8()? };
        let properties = if r.is_empty() {
            Properties::default()
        } else {
            Properties::decode(&mut r)?
        };
        if !r.is_empty() {
            return Err(DecodeError::Trailing);
        }
        Ok(Disconnect { reason, properties })
    }

    pub(crate) fn encode(&self, v: Version, out: &mut BytesMut) {
        if v == Version::V311 {
            return;
        }
        out.put_u8(self.reason);
        self.properties.encode(out);
    }
}

/// Writes a CONNECT (used by tests and the fuzz corpus; the server never sends one).
pub fn encode_connect(c: &Connect) -> BytesMut {
    let mut body = BytesMut::new();
    put_str(&mut body, "MQTT");
    body.put_u8(c.version.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    body.put_u8(flags);
    body.put_u16(c.keep_alive);
    if c.version == Version::V5 {
        c.properties.encode(&mut body);
    }
    put_str(&mut body, &c.client_id);
    if let Some(w) = &c.will {
        if c.version == Version::V5 {
            w.properties.encode(&mut body);
        }
        put_str(&mut body, &w.topic);
        super::put_bin(&mut body, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(&mut body, u);
    }
    if let Some(p) = &c.password {
        super::put_bin(&mut body, p);
    }
    let mut out = BytesMut::new();
    out.put_u8(0x10);
    super::put_varint(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}
