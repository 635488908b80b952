#![allow(clippy::unwrap_used)]

use super::*;
use rand_core::OsRng;

fn keys() -> (SecretKey, PublicKey) {
    let secret = SecretKey::random(&mut OsRng);
    let public = secret.public_key();
    (secret, public)
}

fn sealed(plaintext: &[u8], to: &PublicKey) -> Vec<u8> {
    seal_to_vec(plaintext, to, &mut OsRng).unwrap()
}

#[test]
fn sealed_payloads_open_with_the_recipient_key_only() {
    let (app, app_pub) = keys();
    let (other, _) = keys();
    for plaintext in [&b""[..], b"21.5 C", &[0x5a; 7], &[0xa5; 8], &[0x42; 300]] {
        let object = sealed(plaintext, &app_pub);
        assert_eq!(
            object.len(),
            sealed_len(plaintext.len()),
            "{}",
            plaintext.len()
        );
        assert!(is_sealed(&object));
        assert_eq!(open_to_vec(&object, &app).unwrap(), plaintext);
        assert_eq!(open_to_vec(&object, &other), Err(Error::DecryptionFailed));
        // Untagged, the object is still recognised by its shape.
        assert_eq!(open_to_vec(&object[2..], &app).unwrap(), plaintext);
    }
    assert_eq!(sealed_len(7), 7 + 91);
    assert_eq!(sealed_len(14), 14 + 92);
    // The frame budget the docs promise: 14 bytes sealed and signed in 222.
    let signed = crate::encoded_len(sealed_len(14), 255, crate::Tagging::Untagged);
    assert!(
        signed <= 222 && crate::encoded_len(sealed_len(15), 255, crate::Tagging::Untagged) > 222
    );
}

#[test]
fn every_message_has_its_own_key_and_iv() {
    let (_, app_pub) = keys();
    let a = sealed(b"same", &app_pub);
    let b = sealed(b"same", &app_pub);
    assert_ne!(a, b);
    assert_ne!(a[8..20], b[8..20], "IV");
    assert_ne!(
        a[a.len() - 35..a.len() - 3],
        b[b.len() - 35..b.len() - 3],
        "ephemeral x"
    );
}

#[test]
fn any_altered_byte_is_refused() {
    let (app, app_pub) = keys();
    let object = sealed(b"open the valve", &app_pub);
    let y = object.len() - 2;
    for i in (0..object.len()).filter(|&i| i != y) {
        let mut altered = object.clone();
        altered[i] ^= 0x01;
        assert!(
            open_to_vec(&altered, &app).is_err(),
            "byte {i} altered and accepted"
        );
    }
    // The one exception: the ephemeral point's sign bit. -P agrees on the same x-coordinate
    // (ECDH's shared secret), so the object opens to the same plaintext: nothing an attacker
    // gains, and the device's signature around the object covers this byte too.
    let mut flipped = object.clone();
    flipped[y] ^= 0x01;
    assert_eq!(open_to_vec(&flipped, &app).unwrap(), b"open the valve");
}

#[test]
fn refusals_name_the_problem() {
    let (app, app_pub) = keys();
    let object = sealed(b"x", &app_pub);
    let mut wrong_tag = object.clone();
    wrong_tag[1] = 0x61;
    assert_eq!(
        open_to_vec(&wrong_tag, &app),
        Err(Error::WrongEncryptTag { tag: 97 })
    );
    let mut trailing = object.clone();
    trailing.push(0);
    assert_eq!(
        open_to_vec(&trailing, &app),
        Err(Error::TrailingBytes {
            offset: object.len()
        })
    );
    // A256GCM (3) instead of A128GCM.
    let mut a256 = object.clone();
    assert_eq!(&a256[3..7], &[0x43, 0xa1, 0x01, 0x01]);
    a256[6] = 0x03;
    assert_eq!(
        open_to_vec(&a256, &app),
        Err(Error::UnsupportedEncryption { alg: Some(3) })
    );
    let mut small = [0u8; 0];
    assert_eq!(
        open(&object, &app, &mut small),
        Err(Error::OutputTooSmall {
            needed: 1,
            available: 0
        })
    );
    assert_eq!(open_to_vec(&[], &app), Err(Error::Truncated));
    let mut buf = [0u8; 10];
    assert_eq!(
        seal(&mut buf, b"x", &app_pub, &mut OsRng),
        Err(EncodeError::BufferTooSmall {
            needed: sealed_len(1),
            available: 10
        })
    );
}

/// coset (the COSE library the hub uses elsewhere) reads the object as RFC 9052 says.
#[test]
fn coset_reads_the_structure() {
    use coset::{TaggedCborSerializable, iana};
    let (_, app_pub) = keys();
    let object = sealed(b"21.5 C", &app_pub);
    let enc = coset::CoseEncrypt::from_tagged_slice(&object).unwrap();
    assert_eq!(
        enc.protected.header.alg,
        Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::A128GCM
        ))
    );
    assert_eq!(enc.unprotected.iv.len(), 12);
    assert_eq!(enc.ciphertext.as_ref().unwrap().len(), 6 + 16);
    let r = &enc.recipients[0];
    assert_eq!(
        r.protected.header.alg,
        Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::ECDH_ES_HKDF_256
        ))
    );
    assert_eq!(r.ciphertext.as_deref(), Some(&[][..]));
    let (label, key) = &r.unprotected.rest[0];
    assert_eq!(label, &coset::Label::Int(-1));
    use coset::cbor::value::Value;
    let key = key.as_map().unwrap();
    let get = |l: i64| {
        key.iter()
            .find(|(k, _)| k == &Value::from(l))
            .map(|(_, v)| v)
    };
    assert_eq!(get(1), Some(&Value::from(2)), "kty EC2");
    assert_eq!(get(-1), Some(&Value::from(1)), "crv P-256");
    assert_eq!(get(-2).and_then(Value::as_bytes).map(Vec::len), Some(32));
    assert!(get(-3).is_some_and(Value::is_bool), "y as the sign bit");
}
