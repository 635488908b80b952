//! moat-cose fuzz target: what a gateway relays from a device without IP must be parsed or
//! refused, never panic. The first byte picks what the rest is:
//! - 0: a COSE_Sign1 object. What decodes is verified with a fixed key (the signature check
//!   must not panic either), and an object in moat-cose's own header order has exactly the
//!   length moat-cose would give it (one encoding per message).
//! - 1: counter (5 bytes), tag flag (1 byte), then a payload: moat-cose signs it with the fixed
//!   key, and the object must decode to the same fields and verify.
//! - 2: a stored replay window (18 bytes), then counters (5 bytes each): loading refuses or
//!   gives a window, every accepted counter is then a replay.
//! - 3: a sealed payload (COSE_Encrypt, ECDH-ES + HKDF-256, A128GCM), opened with a fixed
//!   application key: refused, or a plaintext 16 bytes shorter than the ciphertext.
//!
//! Run: `cargo +nightly fuzz run cose_sign1 fuzz/corpus/cose_sign1 fuzz/seeds/cose_sign1` from
//! the repository root (new inputs go to the first, ignored directory; the seeds stay as they
//! are).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use moat_cose::{
    Error, ReplayWindow, Tagging, WINDOW_STATE_LEN, X5t, decode_sign1, encode_sign1, encoded_len,
    open,
};
use p256::ecdsa::SigningKey;

/// The device key (fixed, so that seeds signed with it verify).
static KEY: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::from_slice(&[3; 32]).expect("valid scalar"));

/// The application's key for sealed payloads.
static APP: LazyLock<p256::SecretKey> =
    LazyLock::new(|| p256::SecretKey::from_slice(&[5; 32]).expect("valid scalar"));

fn counter(b: &[u8]) -> u64 {
    b.iter().fold(0, |n, &b| (n << 8) | u64::from(b))
}

fn tagging(b: u8) -> Tagging {
    if b & 1 == 1 {
        Tagging::Tagged
    } else {
        Tagging::Untagged
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let Ok(msg) = decode_sign1(rest) else {
                return;
            };
            let _ = msg.verify(KEY.verifying_key());
            if msg.protected().starts_with(&[0xa3, 0x01, 0x26, 0x06]) {
                assert_eq!(
                    rest.len(),
                    encoded_len(msg.payload().len(), msg.counter(), msg.tagging())
                );
            }
        }
        1 => {
            let Some((head, payload)) = rest.split_at_checked(6) else {
                return;
            };
            // Five bytes: 0 to 2^40 - 1, every counter there is.
            let counter = counter(&head[..5]);
            let tagging = tagging(head[5]);
            let x5t = X5t::of_certificate(payload);
            let mut out = vec![0u8; encoded_len(payload.len(), counter, tagging)];
            let len = encode_sign1(&mut out, payload, counter, &x5t, tagging, &*KEY)
                .expect("encodes into encoded_len bytes");
            assert_eq!(len, out.len());
            let msg = decode_sign1(&out).expect("own object decodes");
            assert_eq!(
                (msg.counter(), msg.tagging(), msg.payload(), msg.x5t()),
                (counter, tagging, payload, &x5t)
            );
            msg.verify(KEY.verifying_key())
                .expect("own signature verifies");
        }
        3 => {
            let mut out = vec![0u8; rest.len()];
            if let Ok(plaintext) = open(rest, &APP, &mut out) {
                assert!(plaintext.len() + 16 + 91 <= rest.len());
            }
        }
        _ => {
            let Some((state, counters)) = rest.split_at_checked(WINDOW_STATE_LEN) else {
                return;
            };
            let Ok(mut window) = ReplayWindow::from_bytes(state) else {
                return;
            };
            for c in counters.chunks_exact(5) {
                let c = counter(c);
                if window.accept(c).is_ok() {
                    assert_eq!(window.check(c), Err(Error::Replayed { counter: c }));
                    assert_eq!(ReplayWindow::from_bytes(&window.to_bytes()), Ok(window));
                }
            }
        }
    }
});
