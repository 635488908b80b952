//! Payloads encrypted to the receiving application's key, so the gateway and the hub relay
//! ciphertext: a COSE_Encrypt object (RFC 9052 §5.1) with content encryption A128GCM and one
//! recipient using ECDH-ES + HKDF-256 (RFC 9053 §6.3): a fresh ephemeral P-256 key per message,
//! agreed with the application's static P-256 public key. The device then signs the object as
//! the payload of its COSE_Sign1 ([`encode_sign1`](crate::encode_sign1)): the hub checks who
//! sent it and that it is fresh without being able to read it; the application checks the
//! signature, then decrypts ([`open`]).
//!
//! ```text
//!  D8 60                           tag 96 (COSE_Encrypt): tells a sealed payload from a clear one
//!  84                              array(4)
//!   43 A1 01 01                    protected: {1 (alg): 1 (A128GCM)}
//!   A1 05 4C <12 bytes>            unprotected: {5 (IV): random, 12 bytes}
//!   58 nn <ciphertext ‖ 16-byte tag>
//!   81 83                          recipients: one, array(3)
//!    44 A1 01 38 18                 protected: {1 (alg): -25 (ECDH-ES + HKDF-256)}
//!    A1 20 A4 01 02 20 01 21 58 20 <x> 22 F4|F5
//!                                   unprotected: {-1 (ephemeral key): {kty: EC2, crv: P-256,
//!                                     x, y: the sign bit (compressed point, RFC 9053 §7.1.1)}}
//!    40                             ciphertext: empty (direct key agreement)
//! ```
//!
//! The content key is HKDF-SHA-256 (no salt) of the ECDH shared secret with the COSE_KDF_Context
//! `[1, [nil, nil, nil], [nil, nil, nil], [128, h'A1013818']]`; the AAD is the Enc_structure
//! `["Encrypt", h'A10101', h'']` (external AAD empty). Every message has its own ephemeral key,
//! hence its own content key: a device key that leaks later opens nothing, and the IV cannot
//! repeat under a key.
//!
//! Size: the plaintext plus 92 bytes (91 under 8 bytes of plaintext). Signed, that is 208 bytes
//! of overhead: a 222-byte LoRa frame carries 14 bytes of encrypted payload (106 in the clear).
//! The decoder [`open`] is as strict as [`decode_sign1`](crate::decode_sign1) but reads maps in
//! any order and the ephemeral key's `y` as the coordinate (what pycose writes) or the sign bit.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{EncodedPoint, PublicKey, SecretKey};
use rand_core::CryptoRngCore;
use sha2::Sha256;

use crate::cbor::{ARRAY, BSTR, Head, MAP, NINT, Reader, SIMPLE, TAG, UINT, narrow};
use crate::encode::Writer;
use crate::error::{EncodeError, Error, Field};

/// COSE_Encrypt's CBOR tag.
const TAG_ENCRYPT: u64 = 96;
/// `alg` values: A128GCM (content), ECDH-ES + HKDF-256 (recipient).
const A128GCM: i128 = 1;
const ECDH_ES_HKDF_256: i128 = -25;
/// Header labels: alg, IV, ephemeral key.
const LABEL_ALG: i128 = 1;
const LABEL_KID: i128 = 4;
const LABEL_IV: i128 = 5;
const LABEL_EPHEMERAL_KEY: i128 = -1;
/// COSE_Key labels and values: kty (EC2 = 2), crv (P-256 = 1), x, y.
const KEY_KTY: i128 = 1;
const KEY_CRV: i128 = -1;
const KEY_X: i128 = -2;
const KEY_Y: i128 = -3;
const KTY_EC2: i128 = 2;
const CRV_P256: i128 = 1;

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The content layer's protected header: `{1: 1}`.
const PROTECTED: [u8; 3] = [0xa1, 0x01, 0x01];
/// The recipient's protected header: `{1: -25}`.
const RECIPIENT_PROTECTED: [u8; 4] = [0xa1, 0x01, 0x38, 0x18];
/// COSE_KDF_Context `[1, [nil, nil, nil], [nil, nil, nil], [128, h'A1013818']]`.
const KDF_CONTEXT: [u8; 18] = [
    0x84, 0x01, 0x83, 0xf6, 0xf6, 0xf6, 0x83, 0xf6, 0xf6, 0xf6, 0x82, 0x18, 0x80, 0x44, 0xa1, 0x01,
    0x38, 0x18,
];
/// Enc_structure `["Encrypt", h'A10101', h'']`: the AAD.
const ENC_STRUCTURE: [u8; 14] = [
    0x83, 0x67, b'E', b'n', b'c', b'r', b'y', b'p', b't', 0x43, 0xa1, 0x01, 0x01, 0x40,
];

/// Whether `payload` is a sealed (COSE_Encrypt, tag 96) payload rather than a clear one. Only
/// the tag is looked at; [`open`] checks the rest.
pub fn is_sealed(payload: &[u8]) -> bool {
    payload.starts_with(&[0xd8, 0x60])
}

/// The size of the object [`seal`] makes for `plaintext_len` bytes: the plaintext plus 91
/// (under 8 bytes) or 92 bytes (under 240). Saturates at `usize::MAX`.
pub const fn sealed_len(plaintext_len: usize) -> usize {
    let ct = plaintext_len.saturating_add(TAG_LEN);
    // D8 60 | 84 | 43 A1 01 01 | A1 05 4C <12> | bstr(ct) | 81 83 | 44 A1 01 38 18 |
    // A1 20 A4 01 02 20 01 21 58 20 <32> 22 F5 | 40
    let fixed = 2 + 1 + 4 + 15 + 2 + 5 + 44 + 1;
    (fixed + Head::len_of(ct as u64)).saturating_add(ct)
}

/// Encrypts `plaintext` to `recipient` (the application's P-256 public key) into `out` and
/// returns the object's length: a fresh ephemeral key and IV from `rng`, so the same plaintext
/// never gives the same object. `out` must hold [`sealed_len`] bytes.
pub fn seal(
    out: &mut [u8],
    plaintext: &[u8],
    recipient: &PublicKey,
    rng: &mut impl CryptoRngCore,
) -> Result<usize, EncodeError<core::convert::Infallible>> {
    let needed = sealed_len(plaintext.len());
    let available = out.len();
    let too_small = || EncodeError::BufferTooSmall { needed, available };
    if available < needed {
        return Err(too_small());
    }
    let ephemeral = p256::ecdh::EphemeralSecret::random(rng);
    let point = ephemeral.public_key().to_encoded_point(true);
    let (Some(x), Some(&prefix)) = (point.x(), point.as_bytes().first()) else {
        return Err(EncodeError::Encrypt);
    };
    let cipher = content_cipher(ephemeral.diffie_hellman(recipient).raw_secret_bytes())
        .ok_or(EncodeError::Encrypt)?;
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut iv);

    let mut w = Writer { buf: out, pos: 0 };
    let ct_start = (|| {
        w.head(TAG, TAG_ENCRYPT)?;
        w.head(ARRAY, 4)?;
        w.head(BSTR, PROTECTED.len() as u64)?;
        w.put(&PROTECTED)?;
        w.head(MAP, 1)?;
        w.head(UINT, LABEL_IV as u64)?;
        w.head(BSTR, IV_LEN as u64)?;
        w.put(&iv)?;
        w.head(BSTR, (plaintext.len() + TAG_LEN) as u64)?;
        let start = w.pos;
        w.put(plaintext)?;
        Ok::<_, ()>(start)
    })()
    .map_err(|()| too_small())?;
    let body = w
        .buf
        .get_mut(ct_start..ct_start + plaintext.len())
        .ok_or_else(too_small)?;
    let tag = cipher
        .encrypt_in_place_detached(&Nonce::from(iv), &ENC_STRUCTURE, body)
        .map_err(|aes_gcm::Error| EncodeError::Encrypt)?;
    (|| {
        w.put(&tag)?;
        w.head(ARRAY, 1)?;
        w.head(ARRAY, 3)?;
        w.head(BSTR, RECIPIENT_PROTECTED.len() as u64)?;
        w.put(&RECIPIENT_PROTECTED)?;
        w.head(MAP, 1)?;
        w.head(NINT, (-1 - LABEL_EPHEMERAL_KEY) as u64)?;
        w.head(MAP, 4)?;
        w.head(UINT, KEY_KTY as u64)?;
        w.head(UINT, KTY_EC2 as u64)?;
        w.head(NINT, (-1 - KEY_CRV) as u64)?;
        w.head(UINT, CRV_P256 as u64)?;
        w.head(NINT, (-1 - KEY_X) as u64)?;
        w.head(BSTR, 32)?;
        w.put(x)?;
        w.head(NINT, (-1 - KEY_Y) as u64)?;
        // SEC 1 §2.3.3: 0x02 for an even y (false), 0x03 for an odd one (true).
        w.put(&[if prefix == 0x03 { 0xf5 } else { 0xf4 }])?;
        w.head(BSTR, 0)?;
        Ok::<_, ()>(())
    })()
    .map_err(|()| too_small())?;
    debug_assert_eq!(w.pos, needed);
    Ok(w.pos)
}

/// [`seal`] into a new `Vec` of the right size.
#[cfg(feature = "std")]
pub fn seal_to_vec(
    plaintext: &[u8],
    recipient: &PublicKey,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, EncodeError<core::convert::Infallible>> {
    let mut out = vec![0u8; sealed_len(plaintext.len())];
    let len = seal(&mut out, plaintext, recipient, rng)?;
    out.truncate(len);
    Ok(out)
}

/// Decrypts a sealed object with the application's private key `recipient` into `out` and
/// returns the plaintext. Refused: anything not of this format (tagged or untagged), another
/// algorithm, a bad ephemeral key, and [`Error::DecryptionFailed`] for the wrong key or an
/// altered object. `out` must hold the ciphertext's length less 16 bytes.
pub fn open<'o>(
    object: &[u8],
    recipient: &SecretKey,
    out: &'o mut [u8],
) -> Result<&'o [u8], Error> {
    let parsed = parse(object)?;
    let needed = parsed.ciphertext.len() - TAG_LEN;
    let available = out.len();
    let Some(body) = out.get_mut(..needed) else {
        return Err(Error::OutputTooSmall { needed, available });
    };
    let ephemeral = PublicKey::from_sec1_bytes(parsed.ephemeral.as_bytes())
        .map_err(|_| Error::BadEphemeralKey)?;
    let shared = p256::ecdh::diffie_hellman(recipient.to_nonzero_scalar(), ephemeral.as_affine());
    let cipher = content_cipher(shared.raw_secret_bytes()).ok_or(Error::DecryptionFailed)?;
    let (ct, tag) = parsed.ciphertext.split_at(needed);
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Truncated)?;
    body.copy_from_slice(ct);
    cipher
        .decrypt_in_place_detached(
            &Nonce::from(parsed.iv),
            &ENC_STRUCTURE,
            body,
            &Tag::from(tag),
        )
        .map_err(|aes_gcm::Error| Error::DecryptionFailed)?;
    Ok(body)
}

/// [`open`] into a new `Vec`.
#[cfg(feature = "std")]
pub fn open_to_vec(object: &[u8], recipient: &SecretKey) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; object.len()];
    let len = open(object, recipient, &mut out)?.len();
    out.truncate(len);
    Ok(out)
}

/// AES-128-GCM under the content key derived from the ECDH shared secret `z`.
fn content_cipher(z: &[u8]) -> Option<Aes128Gcm> {
    let mut cek = [0u8; 16];
    Hkdf::<Sha256>::new(None, z)
        .expand(&KDF_CONTEXT, &mut cek)
        .ok()?;
    Aes128Gcm::new_from_slice(&cek).ok()
}

/// The parts of a sealed object `open` needs.
struct Sealed<'a> {
    iv: [u8; IV_LEN],
    ciphertext: &'a [u8],
    ephemeral: EncodedPoint,
}

fn parse(object: &[u8]) -> Result<Sealed<'_>, Error> {
    let mut r = Reader::new(object);
    if r.peek().is_some_and(|b| b >> 5 == TAG) {
        let tag = r.expect(TAG, Field::Encrypt)?;
        if tag != TAG_ENCRYPT {
            return Err(Error::WrongEncryptTag { tag });
        }
    }
    if r.expect(ARRAY, Field::Encrypt)? != 4 {
        return Err(Error::Unexpected {
            field: Field::Encrypt,
            offset: 0,
        });
    }
    let (start, protected) = r.bstr_at(Field::Protected)?;
    let mut p = r.within(start, start + protected.len());
    let alg = alg_only(&mut p, Field::Protected)?;
    if alg != Some(A128GCM) {
        return Err(Error::UnsupportedEncryption {
            alg: alg.and_then(narrow),
        });
    }
    let mut iv = None;
    for _ in 0..r.expect(MAP, Field::Unprotected)? {
        let label = r.int(Field::Label)?;
        if label != LABEL_IV {
            return Err(unknown(Field::Unprotected, label));
        }
        let v = r.bstr(Field::Iv)?;
        if iv.replace(v).is_some() {
            return Err(duplicate(Field::Unprotected, label));
        }
    }
    let iv = iv.ok_or(Error::Missing(Field::Iv))?;
    let iv: [u8; IV_LEN] = iv
        .try_into()
        .map_err(|_| Error::IvLength { len: iv.len() })?;
    let ciphertext = r.bstr(Field::Ciphertext)?;
    if ciphertext.len() < TAG_LEN {
        return Err(Error::Truncated);
    }
    let at = r.pos();
    if r.expect(ARRAY, Field::Recipients)? != 1 {
        return Err(Error::Unexpected {
            field: Field::Recipients,
            offset: at,
        });
    }
    let at = r.pos();
    if r.expect(ARRAY, Field::Recipient)? != 3 {
        return Err(Error::Unexpected {
            field: Field::Recipient,
            offset: at,
        });
    }
    let (start, protected) = r.bstr_at(Field::Protected)?;
    let mut p = r.within(start, start + protected.len());
    let alg = alg_only(&mut p, Field::Recipient)?;
    if alg != Some(ECDH_ES_HKDF_256) {
        return Err(Error::UnsupportedKeyAgreement {
            alg: alg.and_then(narrow),
        });
    }
    let mut ephemeral = None;
    let mut kid = false;
    for _ in 0..r.expect(MAP, Field::Unprotected)? {
        match r.int(Field::Label)? {
            LABEL_EPHEMERAL_KEY if ephemeral.is_none() => ephemeral = Some(cose_key(&mut r)?),
            // The application's key id, when the sender names it: not needed here.
            LABEL_KID if !kid => {
                r.bstr(Field::Recipient)?;
                kid = true;
            }
            label @ (LABEL_EPHEMERAL_KEY | LABEL_KID) => {
                return Err(duplicate(Field::Recipient, label));
            }
            label => return Err(unknown(Field::Recipient, label)),
        }
    }
    let ephemeral = ephemeral.ok_or(Error::Missing(Field::EphemeralKey))?;
    let at = r.pos();
    if !r.bstr(Field::Recipient)?.is_empty() {
        return Err(Error::Unexpected {
            field: Field::Recipient,
            offset: at,
        });
    }
    if !r.at_end() {
        return Err(Error::TrailingBytes { offset: r.pos() });
    }
    Ok(Sealed {
        iv,
        ciphertext,
        ephemeral,
    })
}

/// A protected header that is `{1: alg}` and nothing else (or empty): the alg.
fn alg_only(p: &mut Reader<'_>, field: Field) -> Result<Option<i128>, Error> {
    if p.at_end() {
        return Ok(None);
    }
    let mut alg = None;
    for _ in 0..p.expect(MAP, Field::ProtectedMap)? {
        let label = p.int(Field::Label)?;
        if label != LABEL_ALG {
            return Err(unknown(field, label));
        }
        if alg.replace(p.int(Field::Algorithm)?).is_some() {
            return Err(duplicate(field, label));
        }
    }
    if !p.at_end() {
        return Err(Error::TrailingBytes { offset: p.pos() });
    }
    Ok(alg)
}

/// The ephemeral COSE_Key: EC2, P-256, x, and y as 32 bytes or the sign bit.
fn cose_key(r: &mut Reader<'_>) -> Result<EncodedPoint, Error> {
    let (mut kty, mut crv, mut x, mut y) = (None, None, None, None);
    for _ in 0..r.expect(MAP, Field::EphemeralKey)? {
        let label = r.int(Field::Label)?;
        let fresh = match label {
            KEY_KTY => kty.replace(r.int(Field::KeyParameter)?).is_none(),
            KEY_CRV => crv.replace(r.int(Field::KeyParameter)?).is_none(),
            KEY_X => x.replace(r.bstr(Field::KeyParameter)?).is_none(),
            KEY_Y => {
                let at = r.pos();
                let v = match r.peek().map(|b| b >> 5) {
                    Some(BSTR) => Y::Coordinate(r.bstr(Field::KeyParameter)?),
                    _ => match r.head()? {
                        (SIMPLE, 20) => Y::Odd(false),
                        (SIMPLE, 21) => Y::Odd(true),
                        _ => {
                            return Err(Error::Unexpected {
                                field: Field::KeyParameter,
                                offset: at,
                            });
                        }
                    },
                };
                y.replace(v).is_none()
            }
            _ => return Err(unknown(Field::EphemeralKey, label)),
        };
        if !fresh {
            return Err(duplicate(Field::EphemeralKey, label));
        }
    }
    if kty != Some(KTY_EC2) || crv != Some(CRV_P256) {
        return Err(Error::BadEphemeralKey);
    }
    let x = x.ok_or(Error::Missing(Field::KeyParameter))?;
    let x: &[u8; 32] = x.try_into().map_err(|_| Error::BadEphemeralKey)?;
    match y.ok_or(Error::Missing(Field::KeyParameter))? {
        Y::Coordinate(y) => {
            let y: &[u8; 32] = y.try_into().map_err(|_| Error::BadEphemeralKey)?;
            Ok(EncodedPoint::from_affine_coordinates(
                x.into(),
                y.into(),
                false,
            ))
        }
        Y::Odd(odd) => {
            let mut compressed = [0u8; 33];
            compressed[0] = if odd { 0x03 } else { 0x02 };
            compressed[1..].copy_from_slice(x);
            EncodedPoint::from_bytes(compressed).map_err(|_| Error::BadEphemeralKey)
        }
    }
}

/// `y` of an EC2 key: the coordinate, or the sign bit of a compressed point.
enum Y<'a> {
    Coordinate(&'a [u8]),
    Odd(bool),
}

fn unknown(field: Field, label: i128) -> Error {
    Error::UnknownParameter {
        field,
        label: narrow(label),
    }
}

fn duplicate(field: Field, label: i128) -> Error {
    Error::DuplicateParameter {
        field,
        label: narrow(label),
    }
}

#[cfg(test)]
mod tests;
