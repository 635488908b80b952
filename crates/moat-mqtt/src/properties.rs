//! MQTT 5 properties: one struct with an optional field per property this server reads or
//! writes. Unknown identifiers and repeats of single-valued properties are errors.

use super::{DecodeError, Reader, put_bin, put_str, put_varint, varint_len};
use bytes::{BufMut, Bytes, BytesMut};

/// v5 properties of any packet. Which ones are meaningful depends on the packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Properties {
    /// 0x01 Payload Format Indicator.
    pub payload_format: Option<u8>,
    /// 0x02 Message Expiry Interval (s).
    pub message_expiry: Option<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<String>,
    /// 0x08 Response Topic.
    pub response_topic: Option<String>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifier(s).
    pub subscription_ids: Vec<u32>,
    /// 0x11 Session Expiry Interval (s).
    pub session_expiry: Option<u32>,
    /// 0x12 Assigned Client Identifier.
    pub assigned_client_id: Option<String>,
    /// 0x13 Server Keep Alive (s).
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method.
    pub auth_method: Option<String>,
    /// 0x16 Authentication Data.
    pub auth_data: Option<Bytes>,
    /// 0x17 Request Problem Information.
    pub request_problem_info: Option<u8>,
    /// 0x18 Will Delay Interval (s).
    pub will_delay: Option<u32>,
    /// 0x19 Request Response Information.
    pub request_response_info: Option<u8>,
    /// 0x1F Reason String.
    pub reason_string: Option<String>,
    /// 0x21 Receive Maximum.
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_max: Option<u16>,
    /// 0x23 Topic Alias.
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS.
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available.
    pub retain_available: Option<u8>,
    /// 0x26 User Property pairs, in order.
    pub user: Vec<(String, String)>,
    /// 0x27 Maximum Packet Size.
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available.
    pub wildcard_available: Option<u8>,
    /// 0x29 Subscription Identifier Available.
    pub sub_id_available: Option<u8>,
    /// 0x2A Shared Subscription Available.
    pub shared_available: Option<u8>,
}

fn set<T>(slot: &mut Option<T>, v: T, id: u8) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Property(id));
    }
    *slot = Some(v);
    Ok(())
}

fn byte01(v: u8, id: u8) -> Result<u8, DecodeError> {
    if v > 1 {
        return Err(DecodeError::Property(id));
    }
    Ok(v)
}

/// The properties a CONNECT may carry (MQTT 5.0 §3.1.2.11).
pub(crate) const CONNECT_PROPERTIES: &[u8] =
    &[0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16];
/// The properties a will may carry (§3.1.3.2).
pub(crate) const WILL_PROPERTIES: &[u8] = &[0x18, 0x01, 0x02, 0x03, 0x08, 0x09, 0x26];

impl Properties {
    /// Reads a property length and that many bytes of properties.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_only(r, None)
    }

    /// [`Self::decode`], refusing any property not in `allowed` (a property identifier not
    /// valid for the packet makes it malformed, §2.2.2.2).
    pub(crate) fn decode_for(r: &mut Reader<'_>, allowed: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_only(r, Some(allowed))
    }

    fn decode_only(r: &mut Reader<'_>, allowed: Option<&[u8]>) -> Result<Self, DecodeError> {
        let len = r.varint()? as usize;
        let mut r = Reader::new(r.take(len)?);
        let mut p = Properties::default();
        while !r.is_empty() {
            let id = r.varint()?;
            let Ok(id) = u8::try_from(id) else {
                return Err(DecodeError::Property(0xff));
            };
            if allowed.is_some_and(|a| !a.contains(&id)) {
                return Err(DecodeError::Property(id));
            }
            match id {
                0x01 => set(&mut p.payload_format, byte01(r.u8()?, id)?, id)?,
                0x02 => set(&mut p.message_expiry, r.u32()?, id)?,
                0x03 => set(&mut p.content_type, r.string()?.to_owned(), id)?,
                0x08 => set(&mut p.response_topic, r.string()?.to_owned(), id)?,
                0x09 => set(
                    &mut p.correlation_data,
                    Bytes::copy_from_slice(r.binary()?),
                    id,
                )?,
                0x0B => {
                    let v = r.varint()?;
                    if v == 0 {
                        return Err(DecodeError::Property(id));
                    }
                    p.subscription_ids.push(v);
                }
                0x11 => set(&mut p.session_expiry, r.u32()?, id)?,
                0x12 => set(&mut p.assigned_client_id, r.string()?.to_owned(), id)?,
                0x13 => set(&mut p.server_keep_alive, r.u16()?, id)?,
                0x15 => set(&mut p.auth_method, r.string()?.to_owned(), id)?,
                0x16 => set(&mut p.auth_data, Bytes::copy_from_slice(r.binary()?), id)?,
                0x17 => set(&mut p.request_problem_info, byte01(r.u8()?, id)?, id)?,
                0x18 => set(&mut p.will_delay, r.u32()?, id)?,
                0x19 => set(&mut p.request_response_info, byte01(r.u8()?, id)?, id)?,
                0x1F => set(&mut p.reason_string, r.string()?.to_owned(), id)?,
                0x21 => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(DecodeError::Property(id));
                    }
                    set(&mut p.receive_maximum, v, id)?
                }
                0x22 => set(&mut p.topic_alias_max, r.u16()?, id)?,
                0x23 => set(&mut p.topic_alias, r.u16()?, id)?,
                0x24 => set(&mut p.maximum_qos, byte01(r.u8()?, id)?, id)?,
                0x25 => set(&mut p.retain_available, byte01(r.u8()?, id)?, id)?,
                0x26 => {
                    let k = r.string()?.to_owned();
                    let v = r.string()?.to_owned();
                    p.user.push((k, v));
                }
                0x27 => {
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(DecodeError::Property(id));
                    }
                    set(&mut p.maximum_packet_size, v, id)?
                }
                0x28 => set(&mut p.wildcard_available, byte01(r.u8()?, id)?, id)?,
                0x29 => set(&mut p.sub_id_available, byte01(r.u8()?, id)?, id)?,
                0x2A => set(&mut p.shared_available, byte01(r.u8()?, id)?, id)?,
                other => return Err(DecodeError::Property(other)),
            }
        }
        Ok(p)
    }

    fn encode_body(&self, out: &mut BytesMut) {
        let b = |out: &mut BytesMut, id: u8, v: Option<u8>| {
            if let Some(v) = v {
                out.put_u8(id);
                out.put_u8(v);
            }
        };
        let w = |out: &mut BytesMut, id: u8, v: Option<u16>| {
            if let Some(v) = v {
                out.put_u8(id);
                out.put_u16(v);
            }
        };
        let d = |out: &mut BytesMut, id: u8, v: Option<u32>| {
            if let Some(v) = v {
                out.put_u8(id);
                out.put_u32(v);
            }
        };
        let s = |out: &mut BytesMut, id: u8, v: &Option<String>| {
            if let Some(v) = v {
                out.put_u8(id);
                put_str(out, v);
            }
        };
        let bin = |out: &mut BytesMut, id: u8, v: &Option<Bytes>| {
            if let Some(v) = v {
                out.put_u8(id);
                put_bin(out, v);
            }
        };
        b(out, 0x01, self.payload_format);
        d(out, 0x02, self.message_expiry);
        s(out, 0x03, &self.content_type);
        s(out, 0x08, &self.response_topic);
        bin(out, 0x09, &self.correlation_data);
        for id in &self.subscription_ids {
            out.put_u8(0x0B);
            put_varint(out, *id as usize);
        }
        d(out, 0x11, self.session_expiry);
        s(out, 0x12, &self.assigned_client_id);
        w(out, 0x13, self.server_keep_alive);
        s(out, 0x15, &self.auth_method);
        bin(out, 0x16, &self.auth_data);
        b(out, 0x17, self.request_problem_info);
        d(out, 0x18, self.will_delay);
        b(out, 0x19, self.request_response_info);
        s(out, 0x1F, &self.reason_string);
        w(out, 0x21, self.receive_maximum);
        w(out, 0x22, self.topic_alias_max);
        w(out, 0x23, self.topic_alias);
        b(out, 0x24, self.maximum_qos);
        b(out, 0x25, self.retain_available);
        for (k, v) in &self.user {
            out.put_u8(0x26);
            put_str(out, k);
            put_str(out, v);
        }
        d(out, 0x27, self.maximum_packet_size);
        b(out, 0x28, self.wildcard_available);
        b(out, 0x29, self.sub_id_available);
        b(out, 0x2A, self.shared_available);
    }

    /// Writes the property length and the properties.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let mut body = BytesMut::new();
        self.encode_body(&mut body);
        put_varint(out, body.len());
        out.extend_from_slice(&body);
    }

    /// Encoded size including the length prefix.
    pub(crate) fn encoded_len(&self) -> usize {
        let mut body = BytesMut::new();
        self.encode_body(&mut body);
        varint_len(body.len()) + body.len()
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}
