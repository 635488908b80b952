//! OTA manifest fuzz target: what a device receives on `devices/{id}/ota/notify` must be
//! opened or refused, never panic. The first byte picks what the rest is:
//! - 0: the manifest bytes themselves (COSE_Sign1, tagged or not);
//! - 1: a payload, signed first with the key the device trusts, so that the CBOR manifest
//!   decoding behind the signature check is reached too.
//!
//! Run: `cargo +nightly fuzz run manifest fuzz/corpus/manifest fuzz/seeds/manifest` from the repository
//! root (new inputs go to the first, ignored directory; the seeds stay as they are).
#![no_main]

use std::sync::LazyLock;

use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};
use libfuzzer_sys::fuzz_target;
use moat_ota_proto::{UpdateKey, open_manifest};
use p256::ecdsa::{Signature, SigningKey, signature::Signer};
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

/// The update key (fixed, so that seeds signed with it open).
static SIGNER: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::from_slice(&[3; 32]).expect("valid scalar"));
static SPKI: LazyLock<Vec<u8>> = LazyLock::new(|| {
    SIGNER
        .verifying_key()
        .to_public_key_der()
        .expect("spki")
        .into_vec()
});
static KEY: LazyLock<UpdateKey> = LazyLock::new(|| UpdateKey::from_der(&SPKI).expect("key"));

fn signed(payload: &[u8]) -> Vec<u8> {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .key_id(Sha256::digest(&*SPKI).to_vec())
        .build();
    CoseSign1Builder::new()
        .protected(protected)
        .payload(payload.to_vec())
        .create_signature(&[], |tbs| {
            let s: Signature = SIGNER.sign(tbs);
            s.to_bytes().to_vec()
        })
        .build()
        .to_tagged_vec()
        .expect("COSE encoding")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 2 {
        0 => {
            let _ = open_manifest(rest, &KEY);
        }
        _ => {
            let _ = open_manifest(&signed(rest), &KEY);
        }
    }
});
