#![allow(clippy::unwrap_used)]

use sha2::{Digest, Sha256, Sha512};

use super::*;
use crate::sign::{ImageBuilder, KeyFormat, SigningKey, append_unprotected_tlv};
use crate::{DerError, flags, tlv};

fn ed() -> SigningKey {
    SigningKey::ed25519_from_bytes(&[3; 32])
}
fn p() -> SigningKey {
    SigningKey::p256_from_bytes(&[4; 32]).unwrap()
}
fn other() -> SigningKey {
    SigningKey::ed25519_from_bytes(&[5; 32])
}
fn trusted() -> Vec<TrustedKey> {
    vec![p().trusted_key(), ed().trusted_key()]
}

const PAYLOAD: &[u8] = b"firmware payload, not very long";

fn builder() -> ImageBuilder {
    ImageBuilder::new(ImageVersion {
        major: 2,
        minor: 0,
        revision: 1,
        build: 7,
    })
    .with_header_size(0x40)
}

/// Header, payload and protected TLVs of an image `b` builds, without its unprotected TLVs.
fn hashed(b: &ImageBuilder) -> Vec<u8> {
    let img = b.sign(PAYLOAD, &ed()).unwrap();
    let h = ImageHeader::parse(img.first_chunk().unwrap()).unwrap();
    let end = usize::from(h.hdr_size) + h.img_size as usize + usize::from(h.protect_tlv_size);
    img[..end].to_vec()
}

/// `hashed` followed by an unprotected area holding `entries`.
fn finish(hashed: &[u8], entries: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, value) in entries {
        body.extend(kind.to_le_bytes());
        body.extend((value.len() as u16).to_le_bytes());
        body.extend(value);
    }
    let mut img = hashed.to_vec();
    img.extend(tlv::INFO_MAGIC.to_le_bytes());
    img.extend((body.len() as u16 + 4).to_le_bytes());
    img.extend(body);
    img
}

fn sha256(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}
fn keyhash(k: &SigningKey) -> Vec<u8> {
    sha256(k.trusted_key().spki_der().as_bytes())
}
fn ed_sig(k: &SigningKey, msg: &[u8]) -> Vec<u8> {
    let SigningKey::Ed25519(k) = k else {
        unreachable!()
    };
    ed25519_dalek::Signer::sign(k, msg).to_bytes().to_vec()
}
fn p_sig(digest: &[u8]) -> Vec<u8> {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    let SigningKey::P256(k) = p() else {
        unreachable!()
    };
    let s: p256::ecdsa::Signature = k.sign_prehash(digest).unwrap();
    crate::der::encode_ecdsa_signature(&s.to_bytes().into())
}

fn set(img: &mut [u8], at: usize, bytes: &[u8]) {
    img[at..at + bytes.len()].copy_from_slice(bytes);
}

#[test]
fn accepts_what_the_signer_makes() {
    let keys = trusted();
    for (name, b, key, index, digest_len) in [
        ("ed25519", builder(), ed(), 1, 32),
        ("p256", builder(), p(), 0, 32),
        (
            "p256 full key",
            builder().with_key_format(KeyFormat::Full),
            p(),
            0,
            32,
        ),
        ("ed25519 pure", builder().with_pure(), ed(), 1, 64),
        (
            "ed25519 sha512",
            ImageBuilder {
                sha512: true,
                ..builder()
            },
            ed(),
            1,
            64,
        ),
        (
            "ed25519 32-byte header, counter, vendor TLV",
            builder()
                .with_header_size(32)
                .with_security_counter(9)
                .with_protected_tlv(0xa0, b"vendor"),
            ed(),
            1,
            32,
        ),
    ] {
        let img = b.sign(PAYLOAD, &key).unwrap();
        let v = verify(&img, &keys, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.key_index, index, "{name}");
        assert_eq!(v.key_kind, key.trusted_key().kind(), "{name}");
        assert_eq!(v.digest.as_bytes().len(), digest_len, "{name}");
        assert_eq!(&img[v.payload.clone()], PAYLOAD, "{name}");
        assert_eq!(v.end(), img.len(), "{name}");
        assert_eq!(v.security_counter, b.security_counter, "{name}");
        assert_eq!(v.version(), b.version, "{name}");
        assert_eq!(v.pure, b.pure, "{name}");
        let hashed = &img[..v.protected_tlvs.end];
        match v.digest {
            ImageDigest::Sha256(d) => assert_eq!(d.to_vec(), sha256(hashed)),
            ImageDigest::Sha512(d) => assert_eq!(d.to_vec(), Sha512::digest(hashed).to_vec()),
        }
        // Slot bytes after the image are not part of it.
        let mut slot = img.clone();
        slot.extend([0xff; 100]);
        assert_eq!(verify(&slot, &keys, 0), Ok(v), "{name}");
    }
}

#[test]
fn vendor_tlvs_read_back_from_the_protected_area() {
    let img = builder()
        .with_security_counter(1)
        .with_protected_tlv(0xa0, b"first")
        .with_protected_tlv(0xa1, &[7; 100])
        .sign(PAYLOAD, &ed())
        .unwrap();
    let v = verify(&img, &trusted(), 0).unwrap();
    let mut buf = [0u8; 16];
    let mut src = img.as_slice();
    assert_eq!(
        read_protected_tlv(&mut src, &v, 0xa0, &mut buf),
        Ok(Some(5))
    );
    assert_eq!(&buf[..5], b"first");
    assert_eq!(
        read_protected_tlv(&mut src, &v, 0xa1, &mut buf),
        Ok(Some(100))
    );
    assert_eq!(buf, [7; 16]);
    assert_eq!(read_protected_tlv(&mut src, &v, 0xa2, &mut buf), Ok(None));
    let all: Vec<_> = tlv::TlvIter::new(&img, v.protected_tlvs.clone(), TlvArea::Protected)
        .map(|t| t.unwrap().kind)
        .collect();
    assert_eq!(all, [tlv::SEC_CNT, 0xa0, 0xa1]);
}

/// Every refusal, from an image that is otherwise right.
#[test]
fn refusals() {
    let keys = trusted();
    let good = builder()
        .with_security_counter(2)
        .sign(PAYLOAD, &ed())
        .unwrap();
    let v = verify(&good, &keys, 0).unwrap();
    let unprot = v.unprotected_tlvs.start;
    let prot = v.protected_tlvs.start;
    let plain = hashed(&builder());
    let plain_digest = sha256(&plain);
    let signed = |entries: &[(u16, Vec<u8>)]| finish(&plain, entries);
    let ed_entries = || {
        vec![
            (tlv::SHA256, plain_digest.clone()),
            (tlv::KEYHASH, keyhash(&ed())),
            (tlv::ED25519, ed_sig(&ed(), &plain_digest)),
        ]
    };
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut img = good.clone();
        f(&mut img);
        img
    };

    let cases: Vec<(&str, Vec<u8>, u32, ImageError)> = vec![
        (
            "too short",
            good[..31].to_vec(),
            0,
            ImageError::TooShort { len: 31 },
        ),
        (
            "bad magic",
            with(&|i| i[3] = 0),
            0,
            ImageError::BadMagic { found: 0x00f3_b83d },
        ),
        (
            "header size below 32",
            with(&|i| set(i, 8, &16u16.to_le_bytes())),
            0,
            ImageError::HeaderTooSmall { hdr_size: 16 },
        ),
        (
            "encrypted",
            ImageBuilder {
                flags: flags::ENCRYPTED_AES128,
                ..builder()
            }
            .sign(PAYLOAD, &ed())
            .unwrap(),
            0,
            ImageError::Encrypted {
                flags: flags::ENCRYPTED_AES128,
            },
        ),
        (
            "payload size past the end",
            with(&|i| set(i, 12, &u32::MAX.to_le_bytes())),
            0,
            ImageError::PayloadTruncated {
                end: 0x40 + u64::from(u32::MAX),
                len: good.len(),
            },
        ),
        (
            "unprotected info cut",
            good[..unprot + 2].to_vec(),
            0,
            ImageError::TlvInfoTruncated {
                area: TlvArea::Unprotected,
                offset: unprot as u64,
            },
        ),
        (
            "protected info cut",
            good[..prot + 3].to_vec(),
            0,
            ImageError::TlvInfoTruncated {
                area: TlvArea::Protected,
                offset: prot as u64,
            },
        ),
        (
            "bad unprotected magic",
            with(&|i| i[unprot] = 0x08),
            0,
            ImageError::BadTlvMagic {
                area: TlvArea::Unprotected,
                found: 0x6908,
                expected: 0x6907,
            },
        ),
        (
            "bad protected magic",
            with(&|i| i[prot] = 0x07),
            0,
            ImageError::BadTlvMagic {
                area: TlvArea::Protected,
                found: 0x6907,
                expected: 0x6908,
            },
        ),
        (
            "undeclared protected area",
            with(&|i| set(i, 10, &0u16.to_le_bytes())),
            0,
            ImageError::BadTlvMagic {
                area: TlvArea::Unprotected,
                found: 0x6908,
                expected: 0x6907,
            },
        ),
        (
            "protected size mismatch",
            with(&|i| set(i, 10, &16u16.to_le_bytes())),
            0,
            ImageError::ProtectedSizeMismatch {
                header: 16,
                area: 12,
            },
        ),
        (
            "protected area smaller than its info",
            with(&|i| {
                set(i, 10, &2u16.to_le_bytes());
                set(i, prot + 2, &2u16.to_le_bytes());
            }),
            0,
            ImageError::TlvAreaTooSmall {
                area: TlvArea::Protected,
                len: 2,
            },
        ),
        (
            "unprotected area past the end",
            with(&|i| set(i, unprot + 2, &u16::MAX.to_le_bytes())),
            0,
            ImageError::TlvAreaTruncated {
                area: TlvArea::Unprotected,
                end: unprot as u64 + 0xffff,
                len: good.len(),
            },
        ),
        (
            "entry value past its area",
            with(&|i| set(i, unprot + 6, &0x1000u16.to_le_bytes())),
            0,
            ImageError::TlvOverrun {
                area: TlvArea::Unprotected,
                offset: unprot as u64 + 4,
            },
        ),
        (
            "bytes after the last entry",
            with(&|i| {
                i.extend([0, 0]);
                let total = u16::from_le_bytes([i[unprot + 2], i[unprot + 3]]) + 2;
                set(i, unprot + 2, &total.to_le_bytes());
            }),
            0,
            ImageError::TlvOverrun {
                area: TlvArea::Unprotected,
                offset: good.len() as u64,
            },
        ),
        (
            "short counter",
            finish(
                &hashed(&builder().with_protected_tlv(tlv::SEC_CNT, &[1, 0, 0])),
                &[],
            ),
            0,
            ImageError::TlvLength {
                kind: tlv::SEC_CNT,
                len: 3,
            },
        ),
        (
            "two counters",
            finish(
                &hashed(
                    &builder()
                        .with_security_counter(1)
                        .with_protected_tlv(tlv::SEC_CNT, &[9, 0, 0, 0]),
                ),
                &[],
            ),
            0,
            ImageError::DuplicateTlv { kind: tlv::SEC_CNT },
        ),
        (
            "key hash in the protected area",
            finish(
                &hashed(&builder().with_protected_tlv(tlv::KEYHASH, &keyhash(&ed()))),
                &[],
            ),
            0,
            ImageError::MisplacedTlv { kind: tlv::KEYHASH },
        ),
        (
            "counter in the unprotected area",
            with(&|i| append_unprotected_tlv(i, unprot, tlv::SEC_CNT, &[9, 0, 0, 0]).unwrap()),
            0,
            ImageError::UnprotectedCounter,
        ),
        (
            "short hash",
            signed(&[(tlv::SHA256, vec![0; 31])]),
            0,
            ImageError::TlvLength {
                kind: tlv::SHA256,
                len: 31,
            },
        ),
        (
            "two hashes",
            with(&|i| append_unprotected_tlv(i, unprot, tlv::SHA512, &[0; 64]).unwrap()),
            0,
            ImageError::DuplicateTlv { kind: tlv::SHA512 },
        ),
        (
            "odd key hash",
            signed(&[(tlv::KEYHASH, vec![0; 33])]),
            0,
            ImageError::TlvLength {
                kind: tlv::KEYHASH,
                len: 33,
            },
        ),
        (
            "empty public key",
            signed(&[(tlv::PUBKEY, vec![])]),
            0,
            ImageError::TlvLength {
                kind: tlv::PUBKEY,
                len: 0,
            },
        ),
        (
            "short Ed25519 signature",
            signed(&[
                (tlv::SHA256, plain_digest.clone()),
                (tlv::KEYHASH, keyhash(&ed())),
                (tlv::ED25519, vec![0; 63]),
            ]),
            0,
            ImageError::TlvLength {
                kind: tlv::ED25519,
                len: 63,
            },
        ),
        (
            "long ECDSA signature",
            signed(&[
                (tlv::SHA256, plain_digest.clone()),
                (tlv::KEYHASH, keyhash(&p())),
                (tlv::ECDSA_SIG, vec![0; 73]),
            ]),
            0,
            ImageError::TlvLength {
                kind: tlv::ECDSA_SIG,
                len: 73,
            },
        ),
        (
            "SIG_PURE of two bytes",
            signed(&[(tlv::SIG_PURE, vec![1, 1])]),
            0,
            ImageError::TlvLength {
                kind: tlv::SIG_PURE,
                len: 2,
            },
        ),
        (
            "SIG_PURE 0",
            signed(&[(tlv::SIG_PURE, vec![0])]),
            0,
            ImageError::BadPureFlag { value: 0 },
        ),
        (
            "two SIG_PURE",
            signed(&[(tlv::SIG_PURE, vec![1]), (tlv::SIG_PURE, vec![1])]),
            0,
            ImageError::DuplicateTlv {
                kind: tlv::SIG_PURE,
            },
        ),
        (
            "no hash",
            signed(&ed_entries()[1..]),
            0,
            ImageError::MissingHash,
        ),
        (
            "no signature",
            signed(&ed_entries()[..2]),
            0,
            ImageError::NoSignature,
        ),
        (
            "signature naming no key",
            signed(&[ed_entries()[0].clone(), ed_entries()[2].clone()]),
            0,
            ImageError::NoSignature,
        ),
        (
            "untrusted signer",
            builder().sign(PAYLOAD, &other()).unwrap(),
            0,
            ImageError::UntrustedKey,
        ),
        (
            "P-256 key hash with an Ed25519 signature",
            signed(&[
                (tlv::SHA256, plain_digest.clone()),
                (tlv::KEYHASH, keyhash(&p())),
                (tlv::ED25519, ed_sig(&ed(), &plain_digest)),
            ]),
            0,
            ImageError::KeyTypeMismatch { key: 0 },
        ),
        (
            "P-256 with a SHA-512 image hash",
            ImageBuilder {
                sha512: true,
                ..builder()
            }
            .sign(PAYLOAD, &p())
            .unwrap(),
            0,
            ImageError::HashAlgorithmMismatch,
        ),
        (
            "pure P-256",
            signed(&[
                (tlv::SHA256, plain_digest.clone()),
                (tlv::SIG_PURE, vec![1]),
                (tlv::KEYHASH, keyhash(&p())),
                (tlv::ECDSA_SIG, p_sig(&plain_digest)),
            ]),
            0,
            ImageError::PureNotEd25519,
        ),
        (
            "no counter, minimum 1",
            builder().sign(PAYLOAD, &ed()).unwrap(),
            1,
            ImageError::CounterMissing { minimum: 1 },
        ),
        (
            "counter below the minimum",
            good.clone(),
            3,
            ImageError::CounterTooLow {
                counter: 2,
                minimum: 3,
            },
        ),
        (
            "payload changed",
            with(&|i| i[0x40] ^= 1),
            0,
            ImageError::HashMismatch,
        ),
        (
            "counter changed",
            with(&|i| i[prot + 8] ^= 1),
            0,
            ImageError::HashMismatch,
        ),
        (
            "ECDSA signature not DER",
            signed(&[
                (tlv::SHA256, plain_digest.clone()),
                (tlv::KEYHASH, keyhash(&p())),
                (tlv::ECDSA_SIG, vec![0x31; 8]),
            ]),
            0,
            ImageError::MalformedSignature(DerError::UnexpectedTag {
                expected: 0x30,
                found: 0x31,
            }),
        ),
        (
            "ECDSA r = 0",
            signed(&[
                (tlv::SHA256, plain_digest.clone()),
                (tlv::KEYHASH, keyhash(&p())),
                (
                    tlv::ECDSA_SIG,
                    vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01],
                ),
            ]),
            0,
            ImageError::SignatureOutOfRange,
        ),
        (
            "ECDSA signature of something else",
            signed(&[
                (tlv::SHA256, plain_digest.clone()),
                (tlv::KEYHASH, keyhash(&p())),
                (tlv::ECDSA_SIG, p_sig(&sha256(b"other"))),
            ]),
            0,
            ImageError::BadSignature,
        ),
        (
            "Ed25519 signature of something else",
            signed(&[
                (tlv::SHA256, plain_digest.clone()),
                (tlv::KEYHASH, keyhash(&ed())),
                (tlv::ED25519, ed_sig(&ed(), b"other")),
            ]),
            0,
            ImageError::BadSignature,
        ),
        (
            "pure signature over the digest",
            signed(&[
                (tlv::SHA512, Sha512::digest(&plain).to_vec()),
                (tlv::SIG_PURE, vec![1]),
                (tlv::KEYHASH, keyhash(&ed())),
                (tlv::ED25519, ed_sig(&ed(), &plain_digest)),
            ]),
            0,
            ImageError::BadSignature,
        ),
        (
            "signature by another key under a trusted key's hash",
            signed(&[
                (tlv::SHA256, plain_digest.clone()),
                (tlv::KEYHASH, keyhash(&ed())),
                (tlv::ED25519, ed_sig(&other(), &plain_digest)),
            ]),
            0,
            ImageError::BadSignature,
        ),
    ];
    for (name, img, min, want) in cases {
        assert_eq!(verify(&img, &keys, min), Err(want), "{name}");
        // The streaming path refuses it for the same reason.
        assert_eq!(
            verify_source(&mut Chunked(&img), &keys, min).map_err(|e| match e {
                SourceError::Image(e) => e,
                SourceError::Read(e) => panic!("{name}: read {e:?}"),
            }),
            Err(want),
            "{name} (chunked)"
        );
    }
}

#[test]
fn signature_choice() {
    let keys = trusted();
    let plain = hashed(&builder());
    let d = sha256(&plain);
    // An untrusted signature first, then a trusted one: the trusted one counts.
    let img = finish(
        &plain,
        &[
            (tlv::SHA256, d.clone()),
            (tlv::KEYHASH, keyhash(&other())),
            (tlv::ED25519, ed_sig(&other(), &d)),
            (tlv::KEYHASH, keyhash(&ed())),
            (tlv::ED25519, ed_sig(&ed(), &d)),
        ],
    );
    assert_eq!(verify(&img, &keys, 0).map(|v| v.key_index), Ok(1));
    // imgtool --pad-sig: zero bytes after the DER signature.
    let mut padded = p_sig(&d);
    padded.resize(72, 0);
    let img = finish(
        &plain,
        &[
            (tlv::SHA256, d.clone()),
            (tlv::KEYHASH, keyhash(&p())),
            (tlv::ECDSA_SIG, padded),
            (0xa5, vec![1, 2, 3]),
        ],
    );
    assert_eq!(verify(&img, &keys, 0).map(|v| v.key_index), Ok(0));
    // The same key named by its SHA-512 hash.
    let img = finish(
        &plain,
        &[
            (tlv::SHA256, d.clone()),
            (
                tlv::KEYHASH,
                Sha512::digest(ed().trusted_key().spki_der().as_bytes()).to_vec(),
            ),
            (tlv::ED25519, ed_sig(&ed(), &d)),
        ],
    );
    assert_eq!(verify(&img, &keys, 0).map(|v| v.key_index), Ok(1));
}

#[test]
fn every_truncation_and_every_flipped_byte_is_refused() {
    let keys = trusted();
    for key in [ed(), p()] {
        let img = builder()
            .with_security_counter(4)
            .sign(&[0x5a; 200], &key)
            .unwrap();
        let v = verify(&img, &keys, 4).unwrap();
        for n in 0..img.len() {
            assert!(verify(&img[..n], &keys, 0).is_err(), "truncated to {n}");
        }
        for i in 0..v.protected_tlvs.end {
            let mut bad = img.clone();
            bad[i] ^= 0x01;
            assert!(verify(&bad, &keys, 0).is_err(), "flipped byte {i}");
        }
    }
}

/// An [`ImageSource`] that goes through the default, chunked `feed`.
struct Chunked<'a>(&'a [u8]);

impl ImageSource for Chunked<'_> {
    type Error = OutOfRange;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn read_exact_at(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let mut s = self.0;
        s.read_exact_at(offset, buf)
    }
}

#[test]
fn chunked_source_agrees_on_large_images() {
    let keys = trusted();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    for b in [builder(), builder().with_pure()] {
        let img = b.sign(&payload, &ed()).unwrap();
        let whole = verify(&img, &keys, 0).unwrap();
        let chunked = verify_source(&mut Chunked(&img), &keys, 0).unwrap();
        assert_eq!(whole, chunked);
    }
}
