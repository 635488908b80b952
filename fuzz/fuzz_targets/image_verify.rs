//! Image verifier fuzz target: arbitrary bytes as an image, a key or PEM must give a result
//! or an error, never a panic. The first byte picks what the rest is:
//! - 0: an image, verified from a slice and through the chunked `ImageSource` path, which
//!   must agree;
//! - 1: an image whose hash TLV is first set to the right digest, so that key matching and
//!   signature decoding (DER, scalars) are reached too;
//! - 2: a public key, as SPKI DER and as PEM;
//! - 3: an image for the human-readable report.
//!
//! Run: `cargo +nightly fuzz run image_verify` from the repository root. Seeds: signed
//! images (imgtool or `moat_image::sign`) with a 0x00 or 0x01 byte in front.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use moat_image::sign::SigningKey;
use moat_image::{
    ImageHeader, ImageSource, OutOfRange, SourceError, TlvArea, TrustedKey, report, tlv, verify,
    verify_source,
};
use sha2::{Digest, Sha256, Sha512};

/// The keys the images may be signed with (fixed, so seeds signed with them verify).
static KEYS: LazyLock<Vec<TrustedKey>> = LazyLock::new(|| {
    let p256 = SigningKey::p256_from_bytes(&[2; 32]).expect("valid scalar");
    vec![
        SigningKey::ed25519_from_bytes(&[1; 32]).trusted_key(),
        p256.trusted_key(),
    ]
});

/// Reads through the default, chunked `feed`.
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

/// Sets the image's hash TLV to the digest of its hashed range, where both can be found.
fn fix_hash(image: &mut [u8]) {
    let Some(h) = image.first_chunk().and_then(|h| ImageHeader::parse(h).ok()) else {
        return;
    };
    let hashed =
        usize::from(h.hdr_size) + h.img_size as usize + usize::from(h.protect_tlv_size);
    let Some(info) = image.get(hashed + 2..hashed + 4) else {
        return;
    };
    let end = hashed + usize::from(u16::from_le_bytes([info[0], info[1]]));
    let Some(range) = image.get(..hashed) else {
        return;
    };
    let (sha256, sha512) = (Sha256::digest(range), Sha512::digest(range));
    let mut at = None;
    let mut pos = hashed + tlv::HEADER_LEN;
    for t in tlv::TlvIter::new(image, hashed..end.min(image.len()), TlvArea::Unprotected) {
        let Ok(t) = t else { break };
        if (t.kind == tlv::SHA256 && t.value.len() == 32)
            || (t.kind == tlv::SHA512 && t.value.len() == 64)
        {
            at = Some((pos + tlv::HEADER_LEN, t.kind));
            break;
        }
        pos += tlv::HEADER_LEN + t.value.len();
    }
    match at {
        Some((v, tlv::SHA256)) => image[v..v + 32].copy_from_slice(&sha256),
        Some((v, _)) => image[v..v + 64].copy_from_slice(&sha512),
        None => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let whole = verify(rest, &KEYS, 0);
            let chunked = verify_source(&mut Chunked(rest), &KEYS, 0);
            match (&whole, chunked) {
                (Ok(a), Ok(b)) => assert_eq!(*a, b),
                (Err(a), Err(SourceError::Image(b))) => assert_eq!(*a, b),
                (a, b) => panic!("slice {a:?} but chunked {b:?}"),
            }
        }
        1 => {
            let mut image = rest.to_vec();
            fix_hash(&mut image);
            let _ = verify(&image, &KEYS, 0);
        }
        2 => {
            let _ = TrustedKey::from_spki_der(rest);
            let _ = TrustedKey::from_pem(rest);
        }
        _ => {
            let _ = report(rest, &KEYS, 1).to_string();
        }
    }
});
