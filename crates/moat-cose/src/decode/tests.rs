#![allow(clippy::unwrap_used)]

use p256::ecdsa::SigningKey;

use super::*;
use crate::cbor::{BSTR, Head};
use crate::encode::sig_structure_digest;
use crate::error::EncodeError;
use crate::params::MAX_COUNTER;
use crate::{Sign1Signer, encode_sign1, encoded_len, max_payload_len};

fn key() -> SigningKey {
    SigningKey::from_slice(&[7; 32]).unwrap()
}

fn thumb() -> X5t {
    X5t::of_certificate(b"device certificate")
}

fn encode(payload: &[u8], counter: u64, tagging: Tagging) -> Vec<u8> {
    let mut out = vec![0u8; encoded_len(payload.len(), counter, tagging)];
    let n = encode_sign1(&mut out, payload, counter, &thumb(), tagging, &key()).unwrap();
    assert_eq!(n, out.len());
    out
}

// Hand-built CBOR for the refusal cases.

fn bstr(b: &[u8]) -> Vec<u8> {
    let mut v = Head::new(BSTR, b.len() as u64).as_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn map(entries: &[&[u8]]) -> Vec<u8> {
    let mut v = Head::new(MAP, entries.len() as u64).as_bytes().to_vec();
    for e in entries {
        v.extend_from_slice(e);
    }
    v
}

const ALG: &[u8] = &[0x01, 0x26];

fn piv(bytes: &[u8]) -> Vec<u8> {
    [&[0x06][..], &bstr(bytes)].concat()
}

fn x5t_entry(alg: &[u8], hash: &[u8]) -> Vec<u8> {
    [&[0x18, 0x22, 0x82][..], alg, &bstr(hash)].concat()
}

fn good_x5t() -> Vec<u8> {
    x5t_entry(&[0x2f], thumb().as_bytes())
}

fn good_protected() -> Vec<u8> {
    map(&[ALG, &piv(&[5]), &good_x5t()])
}

/// tag? | array(4) | bstr(protected) | unprotected | payload | signature (each pre-encoded
/// except the protected map, wrapped here).
fn object(
    tag: bool,
    protected: &[u8],
    unprotected: &[u8],
    payload: &[u8],
    signature: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    if tag {
        v.push(0xd2);
    }
    v.push(0x84);
    v.extend_from_slice(&bstr(protected));
    v.extend_from_slice(unprotected);
    v.extend_from_slice(payload);
    v.extend_from_slice(signature);
    v
}

/// An object with `protected` as given, signed with [`key`].
fn signed(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let digest = sig_structure_digest(protected, payload);
    let sig = key().sign_prehash(&digest).unwrap();
    object(false, protected, &[0xa0], &bstr(payload), &bstr(&sig))
}

fn with_protected(protected: &[u8]) -> Vec<u8> {
    object(false, protected, &[0xa0], &bstr(b"p"), &bstr(&[1; 64]))
}

#[test]
fn counters_encode_as_partial_iv() {
    for (counter, piv) in [
        (0u64, &[0u8][..]),
        (1, &[1]),
        (255, &[0xff]),
        (256, &[1, 0]),
        (MAX_COUNTER, &[0xff; 5]),
    ] {
        let bytes = encode(b"hello", counter, Tagging::Untagged);
        // 84 58 len A3 01 26 06 4n <piv>
        assert_eq!(&bytes[3..6], &[0xa3, 0x01, 0x26]);
        assert_eq!(bytes[6..8], [0x06, 0x40 | piv.len() as u8], "{counter}");
        assert_eq!(&bytes[8..8 + piv.len()], piv, "{counter}");
        let msg = decode_sign1(&bytes).unwrap();
        assert_eq!(msg.counter(), counter);
        msg.verify(key().verifying_key()).unwrap();
    }
    let mut out = [0u8; 300];
    for counter in [MAX_COUNTER + 1, u64::MAX] {
        let r = encode_sign1(&mut out, b"", counter, &thumb(), Tagging::Untagged, &key());
        assert!(
            matches!(r, Err(EncodeError::CounterTooLarge { counter: c }) if c == counter),
            "{r:?}"
        );
    }
}

#[test]
fn exact_bytes() {
    let bytes = encode(b"hi", 0, Tagging::Tagged);
    let mut want = vec![0xd2, 0x84, 0x58, 44, 0xa3, 0x01, 0x26, 0x06, 0x41, 0x00];
    want.extend_from_slice(&[0x18, 0x22, 0x82, 0x2f, 0x58, 0x20]);
    want.extend_from_slice(thumb().as_bytes());
    want.extend_from_slice(&[0xa0, 0x42, b'h', b'i', 0x58, 0x40]);
    assert_eq!(&bytes[..want.len()], &want[..]);
    assert_eq!(bytes.len(), want.len() + 64);
    // RFC 6979: the same message signs to the same bytes.
    assert_eq!(bytes, encode(b"hi", 0, Tagging::Tagged));
}

#[test]
fn tagged_and_untagged_round_trip() {
    for tagging in [Tagging::Tagged, Tagging::Untagged] {
        let bytes = encode(b"payload", 42, tagging);
        assert_eq!(
            bytes[0],
            if tagging == Tagging::Tagged {
                0xd2
            } else {
                0x84
            }
        );
        let msg = decode_sign1(&bytes).unwrap();
        assert_eq!(msg.tagging(), tagging);
        assert_eq!(msg.algorithm(), Algorithm::Es256);
        assert_eq!(msg.x5t(), &thumb());
        assert_eq!(msg.counter(), 42);
        assert_eq!(msg.payload(), b"payload");
        msg.verify(key().verifying_key()).unwrap();
        msg.verify_with_certificate(b"device certificate", key().verifying_key())
            .unwrap();
        assert_eq!(
            msg.verify_with_certificate(b"another certificate", key().verifying_key()),
            Err(Error::X5tMismatch)
        );
        // The protected bytes are a slice of the input, as are payload and signature.
        let at = bytes.len() - 64;
        assert_eq!(msg.signature(), &bytes[at..]);
    }
}

#[test]
fn lengths_match_encoded_len() {
    for len in [0usize, 23, 24, 255, 256, 65535, 65536] {
        let payload = vec![0x5a; len];
        for counter in [0, 0xffff, MAX_COUNTER] {
            for tagging in [Tagging::Tagged, Tagging::Untagged] {
                let bytes = encode(&payload, counter, tagging);
                let msg = decode_sign1(&bytes).unwrap();
                assert_eq!(msg.payload().len(), len);
                msg.verify(key().verifying_key()).unwrap();
            }
        }
    }
    // The overhead the crate docs state.
    assert_eq!(encoded_len(100, 255, Tagging::Untagged), 100 + 116);
    assert_eq!(encoded_len(100, MAX_COUNTER, Tagging::Tagged), 100 + 121);
    assert_eq!(encoded_len(10, 0, Tagging::Untagged), 10 + 115);
    assert_eq!(encoded_len(0, 0, Tagging::Untagged), 115);
}

#[test]
fn lora_frame_room() {
    assert_eq!(max_payload_len(222, 255, Tagging::Untagged), Some(106));
    assert_eq!(
        max_payload_len(222, (1 << 24) - 1, Tagging::Untagged),
        Some(104)
    );
    assert_eq!(
        max_payload_len(222, MAX_COUNTER, Tagging::Tagged),
        Some(101)
    );
    assert_eq!(max_payload_len(114, 0, Tagging::Untagged), None);
    assert_eq!(max_payload_len(115, 0, Tagging::Untagged), Some(0));
    // Around every payload head size change, the answer fits and one more does not.
    for frame in (116..500).chain(65_600..65_700) {
        for tagging in [Tagging::Tagged, Tagging::Untagged] {
            let p = max_payload_len(frame, 7, tagging).unwrap();
            assert!(encoded_len(p, 7, tagging) <= frame, "{frame}");
            assert!(encoded_len(p + 1, 7, tagging) > frame, "{frame}");
        }
    }
}

#[test]
fn small_buffers_and_failing_signers() {
    let needed = encoded_len(3, 9, Tagging::Tagged);
    let mut out = vec![0u8; needed];
    for size in 0..needed {
        let r = encode_sign1(
            &mut out[..size],
            b"abc",
            9,
            &thumb(),
            Tagging::Tagged,
            &key(),
        );
        assert!(
            matches!(r, Err(EncodeError::BufferTooSmall { needed: n, available }) if n == needed && available == size),
            "{r:?}"
        );
    }
    let r = encode_sign1(&mut out, b"abc", 9, &thumb(), Tagging::Tagged, &key());
    assert_eq!(r.unwrap(), needed);

    #[derive(Debug)]
    struct Broken;
    impl Sign1Signer for Broken {
        type Error = &'static str;
        fn sign_prehash(&self, _: &[u8; 32]) -> Result<[u8; 64], Self::Error> {
            Err("token removed")
        }
    }
    assert_eq!(
        encode_sign1(&mut out, b"abc", 9, &thumb(), Tagging::Tagged, &Broken),
        Err(EncodeError::Sign("token removed"))
    );
}

#[test]
fn tampering_fails_verification() {
    let bytes = encode(b"open the valve", 77, Tagging::Untagged);
    let vk = *key().verifying_key();
    // Every byte of protected header, payload and signature matters (where the change still
    // parses).
    let mut checked = 0;
    for i in 3..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        if let Ok(msg) = decode_sign1(&b) {
            assert_eq!(msg.verify(&vk), Err(Error::BadSignature), "byte {i}");
            checked += 1;
        }
    }
    assert!(checked > 60 + 14, "{checked}");
    let other = SigningKey::from_slice(&[8; 32]).unwrap();
    assert_eq!(
        decode_sign1(&bytes).unwrap().verify(other.verifying_key()),
        Err(Error::BadSignature)
    );
    // r = 0 or s = 0, and r, s = all ones (above the group order): refused, not panicking.
    for sig in [[0u8; 64], [0xff; 64]] {
        let b = object(false, &good_protected(), &[0xa0], &bstr(b"p"), &bstr(&sig));
        assert_eq!(
            decode_sign1(&b).unwrap().verify(&vk),
            Err(Error::BadSignature)
        );
    }
}

#[test]
fn header_order_is_free_and_signed_as_sent() {
    // coset and pycose may write the parameters in another order; the signature covers the
    // bytes as sent.
    for protected in [
        map(&[&good_x5t(), &piv(&[1, 0]), ALG]),
        map(&[&piv(&[1, 0]), ALG, &good_x5t()]),
    ] {
        let bytes = signed(&protected, b"x");
        let msg = decode_sign1(&bytes).unwrap();
        assert_eq!(msg.counter(), 256);
        assert_eq!(msg.protected(), &protected[..]);
        msg.verify(key().verifying_key()).unwrap();
    }
}

#[test]
fn every_prefix_is_truncated() {
    let bytes = encode(b"twelve bytes", 1000, Tagging::Tagged);
    for n in 0..bytes.len() {
        assert_eq!(decode_sign1(&bytes[..n]), Err(Error::Truncated), "{n}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        decode_sign1(&longer),
        Err(Error::TrailingBytes {
            offset: bytes.len()
        })
    );
}

#[test]
fn refusals() {
    let sig = bstr(&[1; 64]);
    let payload = bstr(b"p");
    let p = good_protected();
    // Offsets: untagged object 84 | 58 2C | map at 3.
    let cases: Vec<(&str, Vec<u8>, Error)> = vec![
        ("empty", vec![], Error::Truncated),
        (
            "other tag",
            [&[0xd1][..], &with_protected(&p)].concat(),
            Error::WrongTag { tag: 17 },
        ),
        (
            "tag 18 in two bytes",
            [&[0xd8, 0x12][..], &with_protected(&p)].concat(),
            Error::NonPreferredEncoding { offset: 0 },
        ),
        (
            "two tags",
            [&[0xd2, 0xd2][..], &with_protected(&p)].concat(),
            Error::Unexpected {
                field: Field::Sign1,
                offset: 1,
            },
        ),
        (
            "array of 3",
            [&[0x83][..], &bstr(&p), &[0xa0], &payload].concat(),
            Error::Unexpected {
                field: Field::Sign1,
                offset: 0,
            },
        ),
        (
            "array of 5",
            [&[0x85][..], &bstr(&p), &[0xa0], &payload, &sig, &[0x00]].concat(),
            Error::Unexpected {
                field: Field::Sign1,
                offset: 0,
            },
        ),
        (
            "indefinite array",
            [&[0x9f][..], &bstr(&p), &[0xa0], &payload, &sig, &[0xff]].concat(),
            Error::IndefiniteLength { offset: 0 },
        ),
        (
            "a map",
            vec![0xa0],
            Error::Unexpected {
                field: Field::Sign1,
                offset: 0,
            },
        ),
        (
            "protected as text",
            [&[0x84, 0x61, b'a', 0xa0][..], &payload, &sig].concat(),
            Error::Unexpected {
                field: Field::Protected,
                offset: 1,
            },
        ),
        (
            "protected in indefinite chunks",
            [&[0x84, 0x5f][..], &bstr(&p), &[0xff, 0xa0], &payload, &sig].concat(),
            Error::IndefiniteLength { offset: 1 },
        ),
        (
            "protected length in 2 bytes",
            [
                &[0x84, 0x59, 0x00, p.len() as u8][..],
                &p,
                &[0xa0],
                &payload,
                &sig,
            ]
            .concat(),
            Error::NonPreferredEncoding { offset: 1 },
        ),
        (
            "protected empty",
            with_protected(&[]),
            Error::MissingHeader(Header::Algorithm),
        ),
        (
            "protected empty map",
            with_protected(&[0xa0]),
            Error::MissingHeader(Header::Algorithm),
        ),
        (
            "protected is an array",
            with_protected(&[0x80]),
            Error::Unexpected {
                field: Field::ProtectedMap,
                offset: 2,
            },
        ),
        (
            "protected map then a byte",
            with_protected(&[&p[..], &[0x00]].concat()),
            Error::TrailingBytes {
                offset: 3 + p.len(),
            },
        ),
        (
            "protected map indefinite",
            with_protected(&[&[0xbf][..], ALG, &[0xff]].concat()),
            Error::IndefiniteLength { offset: 2 },
        ),
        (
            "map claims 4 entries, has 3",
            with_protected(&[&[0xa4][..], &p[1..]].concat()),
            Error::Truncated,
        ),
        (
            "no alg",
            with_protected(&map(&[&piv(&[1]), &good_x5t()])),
            Error::MissingHeader(Header::Algorithm),
        ),
        (
            "no x5t",
            with_protected(&map(&[ALG, &piv(&[1])])),
            Error::MissingHeader(Header::X5t),
        ),
        (
            "no Partial IV",
            with_protected(&map(&[ALG, &good_x5t()])),
            Error::MissingHeader(Header::PartialIv),
        ),
        (
            "alg twice",
            with_protected(&map(&[ALG, &piv(&[1]), ALG, &good_x5t()])),
            Error::DuplicateHeader(Header::Algorithm),
        ),
        (
            "x5t twice",
            with_protected(&map(&[&good_x5t(), ALG, &good_x5t()])),
            Error::DuplicateHeader(Header::X5t),
        ),
        (
            "Partial IV twice",
            with_protected(&map(&[&piv(&[1]), ALG, &piv(&[2]), &good_x5t()])),
            Error::DuplicateHeader(Header::PartialIv),
        ),
        (
            "crit",
            with_protected(&map(&[ALG, &[0x02, 0x81, 0x04], &piv(&[1]), &good_x5t()])),
            Error::UnknownHeader { label: Some(2) },
        ),
        (
            "kid",
            with_protected(&map(&[ALG, &[0x04, 0x41, 0x01], &piv(&[1]), &good_x5t()])),
            Error::UnknownHeader { label: Some(4) },
        ),
        (
            "a fourth, negative label",
            with_protected(&map(&[ALG, &piv(&[1]), &good_x5t(), &[0x20, 0x00]])),
            Error::UnknownHeader { label: Some(-1) },
        ),
        (
            "text label",
            with_protected(&map(&[ALG, &[0x61, b'a', 0x00], &piv(&[1]), &good_x5t()])),
            Error::UnknownHeader { label: None },
        ),
        (
            "label beyond i64",
            with_protected(&map(&[&[
                0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
            ][..]])),
            Error::UnknownHeader { label: None },
        ),
        (
            "EdDSA",
            with_protected(&map(&[&[0x01, 0x27], &piv(&[1]), &good_x5t()])),
            Error::UnsupportedAlgorithm { alg: Some(-8) },
        ),
        (
            "ES384",
            with_protected(&map(&[&[0x01, 0x38, 0x22], &piv(&[1]), &good_x5t()])),
            Error::UnsupportedAlgorithm { alg: Some(-35) },
        ),
        (
            "alg as text",
            with_protected(&map(&[
                &[0x01, 0x65, b'E', b'S', b'2', b'5', b'6'],
                &piv(&[1]),
                &good_x5t(),
            ])),
            Error::Unexpected {
                field: Field::Algorithm,
                offset: 5,
            },
        ),
        (
            "alg -7 in two bytes",
            with_protected(&map(&[&[0x01, 0x38, 0x06], &piv(&[1]), &good_x5t()])),
            Error::NonPreferredEncoding { offset: 5 },
        ),
        (
            "x5t not an array",
            with_protected(&map(&[
                ALG,
                &piv(&[1]),
                &[&[0x18, 0x22][..], &bstr(&[0; 32])].concat(),
            ])),
            Error::Unexpected {
                field: Field::X5t,
                offset: 11,
            },
        ),
        (
            "x5t of three",
            with_protected(&map(&[
                ALG,
                &piv(&[1]),
                &[&[0x18, 0x22, 0x83, 0x2f][..], &bstr(&[0; 32]), &[0]].concat(),
            ])),
            Error::Unexpected {
                field: Field::X5t,
                offset: 11,
            },
        ),
        (
            "x5t SHA-512",
            with_protected(&map(&[
                ALG,
                &piv(&[1]),
                &x5t_entry(&[0x38, 0x2b], &[0; 64]),
            ])),
            Error::UnsupportedX5tHash { alg: Some(-44) },
        ),
        (
            "x5t SHA-256/64",
            with_protected(&map(&[ALG, &piv(&[1]), &x5t_entry(&[0x2e], &[0; 8])])),
            Error::UnsupportedX5tHash { alg: Some(-15) },
        ),
        (
            "x5t hash named by text",
            with_protected(&map(&[
                ALG,
                &piv(&[1]),
                &x5t_entry(&[0x67, b'S', b'H', b'A', b'-', b'2', b'5', b'6'], &[0; 32]),
            ])),
            Error::UnsupportedX5tHash { alg: None },
        ),
        (
            "x5t hash 31 bytes",
            with_protected(&map(&[ALG, &piv(&[1]), &x5t_entry(&[0x2f], &[0; 31])])),
            Error::X5tLength { len: 31 },
        ),
        (
            "x5t hash 33 bytes",
            with_protected(&map(&[ALG, &piv(&[1]), &x5t_entry(&[0x2f], &[0; 33])])),
            Error::X5tLength { len: 33 },
        ),
        (
            "x5t hash as text",
            with_protected(&map(&[
                ALG,
                &piv(&[1]),
                &[&[0x18, 0x22, 0x82, 0x2f, 0x78, 0x20][..], &[b'a'; 32]].concat(),
            ])),
            Error::Unexpected {
                field: Field::X5tHash,
                offset: 13,
            },
        ),
        (
            "Partial IV empty",
            with_protected(&map(&[ALG, &piv(&[]), &good_x5t()])),
            Error::PartialIvLength { len: 0 },
        ),
        (
            "Partial IV 6 bytes",
            with_protected(&map(&[ALG, &piv(&[1, 0, 0, 0, 0, 0]), &good_x5t()])),
            Error::PartialIvLength { len: 6 },
        ),
        (
            "Partial IV 00 01",
            with_protected(&map(&[ALG, &piv(&[0, 1]), &good_x5t()])),
            Error::PartialIvLeadingZero,
        ),
        (
            "Partial IV 00 00",
            with_protected(&map(&[ALG, &piv(&[0, 0]), &good_x5t()])),
            Error::PartialIvLeadingZero,
        ),
        (
            "Partial IV as an integer",
            with_protected(&map(&[ALG, &[0x06, 0x01], &good_x5t()])),
            Error::Unexpected {
                field: Field::PartialIv,
                offset: 7,
            },
        ),
        (
            "Partial IV unprotected",
            object(false, &p, &map(&[&piv(&[9])]), &payload, &sig),
            Error::UnprotectedNotEmpty { label: Some(6) },
        ),
        (
            "alg unprotected",
            object(false, &p, &map(&[ALG]), &payload, &sig),
            Error::UnprotectedNotEmpty { label: Some(1) },
        ),
        (
            "kid unprotected",
            object(false, &p, &map(&[&[0x04, 0x41, 0x01]]), &payload, &sig),
            Error::UnprotectedNotEmpty { label: Some(4) },
        ),
        (
            "text label unprotected",
            object(false, &p, &map(&[&[0x61, b'a', 0x00]]), &payload, &sig),
            Error::UnprotectedNotEmpty { label: None },
        ),
        (
            "unprotected indefinite",
            object(false, &p, &[0xbf, 0xff], &payload, &sig),
            Error::IndefiniteLength {
                offset: 3 + p.len(),
            },
        ),
        (
            "unprotected as bytes",
            object(false, &p, &[0x40], &payload, &sig),
            Error::Unexpected {
                field: Field::Unprotected,
                offset: 3 + p.len(),
            },
        ),
        (
            "detached payload",
            object(false, &p, &[0xa0], &[0xf6], &sig),
            Error::DetachedPayload,
        ),
        (
            "payload as text",
            object(false, &p, &[0xa0], &[0x61, b'p'], &sig),
            Error::Unexpected {
                field: Field::Payload,
                offset: 4 + p.len(),
            },
        ),
        (
            "payload in chunks",
            object(false, &p, &[0xa0], &[0x5f, 0x41, b'p', 0xff], &sig),
            Error::IndefiniteLength {
                offset: 4 + p.len(),
            },
        ),
        (
            "payload length in 2 bytes",
            object(false, &p, &[0xa0], &[0x58, 0x01, b'p'], &sig),
            Error::NonPreferredEncoding {
                offset: 4 + p.len(),
            },
        ),
        (
            "signature 63 bytes",
            object(false, &p, &[0xa0], &payload, &bstr(&[1; 63])),
            Error::SignatureLength { len: 63 },
        ),
        (
            "signature 65 bytes",
            object(false, &p, &[0xa0], &payload, &bstr(&[1; 65])),
            Error::SignatureLength { len: 65 },
        ),
        (
            "signature nil",
            object(false, &p, &[0xa0], &payload, &[0xf6]),
            Error::Unexpected {
                field: Field::Signature,
                offset: 6 + p.len(),
            },
        ),
        (
            "signature in chunks",
            object(
                false,
                &p,
                &[0xa0],
                &payload,
                &[&[0x5f][..], &bstr(&[1; 64]), &[0xff]].concat(),
            ),
            Error::IndefiniteLength {
                offset: 6 + p.len(),
            },
        ),
        (
            "break after the object",
            [with_protected(&p), vec![0xff]].concat(),
            Error::TrailingBytes {
                offset: with_protected(&p).len(),
            },
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(decode_sign1(&bytes), Err(want), "{name}: {bytes:02x?}");
    }
    // And the baseline those cases break decodes.
    let baseline = with_protected(&p);
    assert_eq!(decode_sign1(&baseline).unwrap().counter(), 5);
}

#[test]
fn errors_display() {
    let e = Error::UnprotectedNotEmpty { label: Some(6) };
    assert_eq!(
        e.to_string(),
        "unprotected header is not empty (first label 6)"
    );
    let e = Error::UnknownHeader { label: None };
    assert!(e.to_string().contains("text or out of range"), "{e}");
    assert_eq!(
        Error::MissingHeader(Header::PartialIv).to_string(),
        "protected header parameter Partial IV (6) is missing"
    );
}
