//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.

use super::{DecodeError, Properties, Reader, Version};
use bytes::{BufMut, BytesMut};

/// v5 subscription options (v3.1.1 uses only `qos`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SubscriptionOptions {
    /// Maximum QoS granted.
    pub qos: u8,
    /// Do not deliver the subscriber's own publications.
    pub no_local: bool,
    /// Keep the RETAIN flag of routed messages.
    pub retain_as_published: bool,
    /// 0: send retained at subscribe; 1: only if the subscription is new; 2: never.
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    fn decode(b: u8, v: Version) -> Result<Self, DecodeError> {
        let qos = b & 0x03;
        if qos == 3 {
            return Err(DecodeError::Invalid("subscription QoS"));
        }
        if v == Version::V311 {
            if b & 0xfc != 0 {
                return Err(DecodeError::Invalid("subscription options"));
            }
            return Ok(SubscriptionOptions {
                qos,
                ..Default::default()
            });
        }
        let retain_handling = (b >> 4) & 0x03;
        if retain_handling == 3 || b & 0xc0 != 0 {
            return Err(DecodeError::Invalid("subscription options"));
        }
        Ok(SubscriptionOptions {
            qos,
            no_local: b & 0x04 != 0,
            retain_as_published: b & 0x08 != 0,
            retain_handling,
        })
    }

    /// The options byte.
    pub fn to_byte(self) -> u8 {
        self.qos
            | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | (self.retain_handling << 4)
    }
}

/// A decoded SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub pid: u16,
    /// v5 properties (subscription identifier, user properties).
    pub properties: Properties,
    /// Filters and their options, in order.
    pub filters: Vec<(String, SubscriptionOptions)>,
}

impl Subscribe {
    pub(crate) fn decode(body: &[u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pid = r.u16()?;
        if pid == 0 {
            return Err(DecodeError::Protocol("packet identifier 0"));
        }
        let properties = if v == Version::V5 {
            Properties::decode(&mut r)?
        } else {
            Properties::default()
        };
        if properties.subscription_ids.len() > 1 {
            return Err(DecodeError::Protocol("several subscription identifiers"));
        }
        let mut filters = Vec::new();
        while !r.is_empty() {
            let f = r.string()?.to_owned();
            let o = SubscriptionOptions::decode(r.u8()?, v)?;
            filters.push((f, o));
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("SUBSCRIBE without filters"));
        }
        Ok(Subscribe {
            pid,
            properties,
            filters,
        })
    }
}

/// A decoded UNSUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub pid: u16,
    /// v5 properties.
    pub properties: Properties,
    /// Filters, in order.
    pub filters: Vec<String>,
}

impl Unsubscribe {
    pub(crate) fn decode(body: &[u8], v: Version) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pid = r.u16()?;
        if pid == 0 {
            return Err(DecodeError::Protocol("packet identifier 0"));
        }
        let properties = if v == Version::V5 {
            Properties::decode(&mut r)?
        } else {
            Properties::default()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            filters.push(r.string()?.to_owned());
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("UNSUBSCRIBE without filters"));
        }
        Ok(Unsubscribe {
            pid,
            properties,
            filters,
        })
    }
}

/// SUBACK or UNSUBACK (v3.1.1 UNSUBACK has no codes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier.
    pub pid: u16,
    /// v5 properties.
    pub properties: Properties,
    /// One code per filter.
    pub codes: Vec<u8>,
    /// True for an UNSUBACK (v3.1.1 sends no codes then).
    pub unsuback: bool,
}

impl SubAck {
    pub(crate) fn encode(&self, v: Version, out: &mut BytesMut) {
        out.put_u16(self.pid);
        if v == Version::V5 {
            self.properties.encode(out);
        } else if self.unsuback {
            return;
        }
        out.extend_from_slice(&self.codes);
    }
}
