//! Packet decoder fuzz target: framing and decoding of arbitrary bytes, before CONNECT and
//! under both protocol versions, must return a packet or an error, never panic; whatever
//! decodes re-encodes without panicking.
//!
//! Run: `cargo +nightly fuzz run decode` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_mqtt::{self as codec, Framed, Packet, Version};

fuzz_target!(|data: &[u8]| {
    let Ok(Framed::Header(f)) = codec::frame(data, 1 << 20) else {
        return;
    };
    let Some(pkt) = data.get(..f.total()) else {
        return;
    };
    for v in [None, Some(Version::V311), Some(Version::V5)] {
        if let Ok(p) = codec::decode(pkt, v) {
            let mut out = bytes::BytesMut::new();
            let version = v.unwrap_or(Version::V5);
            if let Packet::Publish(_) | Packet::Disconnect(_) | Packet::PubAck(_) = &p {
                codec::encode(&p, version, &mut out);
            }
        }
    }
});
