//! Interop with `coset` (the COSE library the hub's OTA manifests use): objects moat-cose signs
//! parse and verify with coset + p256, and objects coset builds with this format's headers
//! decode and verify here.
#![allow(clippy::unwrap_used)]

use coset::cbor::value::Value;
use coset::{
    CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, Label, TaggedCborSerializable,
    iana,
};
use moat_cose::{Error, MAX_COUNTER, Tagging, X5t, decode_sign1, encode_sign1_to_vec};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

fn key() -> SigningKey {
    SigningKey::from_slice(&[0x21; 32]).unwrap()
}

fn thumb() -> X5t {
    X5t::of_certificate(b"a device certificate, DER")
}

fn partial_iv(counter: u64) -> Vec<u8> {
    let b = counter.to_be_bytes();
    let skip = b.iter().take(7).take_while(|&&x| x == 0).count();
    b[skip..].to_vec()
}

fn coset_verify(msg: &CoseSign1, key: &VerifyingKey) -> Result<(), p256::ecdsa::Error> {
    msg.verify_signature(&[], |sig, data| {
        let sig = Signature::from_slice(sig)?;
        key.verify(data, &sig)
    })
}

/// What coset makes of the headers: alg, Partial IV, x5t, nothing else, nothing unprotected.
fn check_headers(msg: &CoseSign1, counter: u64) {
    let h = &msg.protected.header;
    assert_eq!(
        h.alg,
        Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::ES256
        ))
    );
    assert_eq!(h.partial_iv, partial_iv(counter));
    assert_eq!(
        h.rest,
        vec![(
            Label::Int(34),
            Value::Array(vec![
                Value::Integer((-16).into()),
                Value::Bytes(thumb().as_bytes().to_vec())
            ])
        )]
    );
    assert!(h.key_id.is_empty() && h.crit.is_empty() && h.iv.is_empty());
    assert!(msg.unprotected.is_empty());
}

#[test]
fn moat_objects_verify_with_coset() {
    let vk = *key().verifying_key();
    for counter in [0, 1, 255, 256, 65_536, MAX_COUNTER] {
        for payload in [&b""[..], b"x", &[0xa5; 200], &[0x5a; 70_000]] {
            for tagging in [Tagging::Tagged, Tagging::Untagged] {
                let bytes =
                    encode_sign1_to_vec(payload, counter, &thumb(), tagging, &key()).unwrap();
                let msg = match tagging {
                    Tagging::Tagged => CoseSign1::from_tagged_slice(&bytes).unwrap(),
                    Tagging::Untagged => CoseSign1::from_slice(&bytes).unwrap(),
                };
                check_headers(&msg, counter);
                assert_eq!(msg.payload.as_deref(), Some(payload));
                coset_verify(&msg, &vk).unwrap();
                // coset writes the same bytes back: our encoding is the canonical one.
                let again = match tagging {
                    Tagging::Tagged => msg.clone().to_tagged_vec().unwrap(),
                    Tagging::Untagged => msg.clone().to_vec().unwrap(),
                };
                assert_eq!(again, bytes, "counter {counter}");
                // And a wrong key fails there too.
                let other = SigningKey::from_slice(&[0x22; 32]).unwrap();
                assert!(coset_verify(&msg, other.verifying_key()).is_err());
            }
        }
    }
}

fn coset_object(counter: u64, payload: &[u8], unprotected: coset::Header) -> CoseSign1 {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .partial_iv(partial_iv(counter))
        .value(
            34,
            Value::Array(vec![
                Value::Integer((-16).into()),
                Value::Bytes(thumb().as_bytes().to_vec()),
            ]),
        )
        .build();
    CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .payload(payload.to_vec())
        .create_signature(&[], |tbs| {
            let sig: Signature = key().sign(tbs);
            sig.to_bytes().to_vec()
        })
        .build()
}

#[test]
fn coset_objects_verify_with_moat() {
    let vk = *key().verifying_key();
    for counter in [0, 1, 255, 256, MAX_COUNTER] {
        let msg = coset_object(counter, b"from coset", coset::Header::default());
        for (tagging, bytes) in [
            (Tagging::Tagged, msg.clone().to_tagged_vec().unwrap()),
            (Tagging::Untagged, msg.clone().to_vec().unwrap()),
        ] {
            let decoded = decode_sign1(&bytes).unwrap();
            assert_eq!(decoded.tagging(), tagging);
            assert_eq!(decoded.counter(), counter);
            assert_eq!(decoded.x5t(), &thumb());
            assert_eq!(decoded.payload(), b"from coset");
            decoded.verify(&vk).unwrap();
            decoded
                .verify_with_certificate(b"a device certificate, DER", &vk)
                .unwrap();
        }
    }
}

#[test]
fn coset_objects_outside_the_format_are_refused() {
    // A kid or a Partial IV in the unprotected header would not be signed.
    let kid = HeaderBuilder::new().key_id(b"dev-1".to_vec()).build();
    let bytes = coset_object(5, b"p", kid).to_vec().unwrap();
    assert_eq!(
        decode_sign1(&bytes),
        Err(Error::UnprotectedNotEmpty { label: Some(4) })
    );
    let piv = HeaderBuilder::new().partial_iv(vec![6]).build();
    let bytes = coset_object(5, b"p", piv).to_vec().unwrap();
    assert_eq!(
        decode_sign1(&bytes),
        Err(Error::UnprotectedNotEmpty { label: Some(6) })
    );
    // Detached payload.
    let mut msg = coset_object(5, b"p", coset::Header::default());
    msg.payload = None;
    assert_eq!(
        decode_sign1(&msg.to_vec().unwrap()),
        Err(Error::DetachedPayload)
    );
    // A leading zero in the Partial IV (coset does not care; OSCORE and we do).
    let mut msg = coset_object(5, b"p", coset::Header::default());
    msg.protected = coset::ProtectedHeader {
        original_data: None,
        header: HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES256)
            .partial_iv(vec![0, 5])
            .value(
                34,
                Value::Array(vec![
                    Value::Integer((-16).into()),
                    Value::Bytes(thumb().as_bytes().to_vec()),
                ]),
            )
            .build(),
    };
    assert_eq!(
        decode_sign1(&msg.to_vec().unwrap()),
        Err(Error::PartialIvLeadingZero)
    );
}
