//! Building a signed object into the caller's buffer.

use p256::ecdsa::signature::hazmat::PrehashSigner;
use sha2::{Digest, Sha256};

use crate::cbor::{ARRAY, BSTR, Head, MAP, NINT, TAG};
use crate::error::EncodeError;
use crate::params::{
    Algorithm, LABEL_ALG, LABEL_PARTIAL_IV, LABEL_X5T, MAX_COUNTER, SHA_256, TAG_SIGN1, Tagging,
    X5t, partial_iv, partial_iv_len,
};

/// Signs the SHA-256 digest of a Sig_structure for ES256: an ECDSA P-256 signature as 64 bytes
/// r || s (big-endian, 32 bytes each), as COSE carries it (not DER).
///
/// Implement it for a secure element or a PKCS#11 token (`CKM_ECDSA` over the digest returns
/// exactly this); [`p256::ecdsa::SigningKey`] implements it in software.
pub trait Sign1Signer {
    /// Why signing failed.
    type Error;

    /// The signature of `digest`, the SHA-256 of the Sig_structure.
    fn sign_prehash(&self, digest: &[u8; 32]) -> Result<[u8; 64], Self::Error>;
}

/// RFC 6979 deterministic signatures: no random source needed on the device.
impl Sign1Signer for p256::ecdsa::SigningKey {
    type Error = p256::ecdsa::Error;

    fn sign_prehash(&self, digest: &[u8; 32]) -> Result<[u8; 64], Self::Error> {
        let sig: p256::ecdsa::Signature = PrehashSigner::sign_prehash(self, digest)?;
        Ok(sig.to_bytes().into())
    }
}

impl<S: Sign1Signer + ?Sized> Sign1Signer for &S {
    type Error = S::Error;

    fn sign_prehash(&self, digest: &[u8; 32]) -> Result<[u8; 64], Self::Error> {
        (**self).sign_prehash(digest)
    }
}

/// Bytes of the protected header map for a counter: map(3), alg, Partial IV, x5t.
const fn protected_map_len(counter: u64) -> usize {
    // A3 | 01 26 | 06 4n <n> | 18 22 82 2F 58 20 <32>
    1 + 2 + 2 + partial_iv_len(counter) + 6 + 32
}

/// The size of the object [`encode_sign1`] makes for a payload of `payload_len` bytes: the
/// payload plus 115 to 121 bytes for payloads under 256 bytes (see the crate docs). Counters above [`MAX_COUNTER`] (which
/// `encode_sign1` refuses) are sized as 5 bytes; saturates at `usize::MAX`.
pub const fn encoded_len(payload_len: usize, counter: u64, tagging: Tagging) -> usize {
    let prot = protected_map_len(counter);
    let tag = match tagging {
        Tagging::Tagged => 1,
        Tagging::Untagged => 0,
    };
    // tag | 84 | bstr(protected) | A0 | bstr(payload) | 58 40 <64>
    let fixed = tag + 1 + Head::len_of(prot as u64) + prot + 1 + 2 + 64;
    fixed
        .saturating_add(Head::len_of(payload_len as u64))
        .saturating_add(payload_len)
}

/// The largest payload whose object fits in `frame_len` bytes (e.g. 222 for the largest
/// LoRaWAN frame payload), or `None` if not even an empty payload fits.
pub const fn max_payload_len(frame_len: usize, counter: u64, tagging: Tagging) -> Option<usize> {
    let fixed = encoded_len(0, counter, tagging) - 1;
    if frame_len < fixed + 1 {
        return None;
    }
    let room = frame_len - fixed;
    // The payload head grows with the payload: take the best of each head size.
    let sizes: [(usize, u64, u64); 5] = [
        (1, 0, 23),
        (2, 24, 0xff),
        (3, 0x100, 0xffff),
        (5, 0x1_0000, 0xffff_ffff),
        (9, 0x1_0000_0000, u64::MAX),
    ];
    let mut best = 0usize;
    let mut i = 0;
    while i < sizes.len() {
        let (head, min, max) = sizes[i];
        if room >= head {
            let mut p = (room - head) as u64;
            if p > max {
                p = max;
            }
            if p >= min && p as usize > best {
                best = p as usize;
            }
        }
        i += 1;
    }
    Some(best)
}

/// Bounded writes into the caller's buffer.
pub(crate) struct Writer<'b> {
    pub(crate) buf: &'b mut [u8],
    pub(crate) pos: usize,
}

impl Writer<'_> {
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let end = self.pos.checked_add(bytes.len()).ok_or(())?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(())?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn head(&mut self, major: u8, arg: u64) -> Result<(), ()> {
        self.put(Head::new(major, arg).as_bytes())
    }
}

/// Writes the COSE_Sign1 object for `payload` into `out` and returns its length.
///
/// The protected header holds `alg` ES256, `Partial IV` (the `counter`) and `x5t` (`x5t`), in
/// that order (CBOR deterministic order); the unprotected header is empty; the signature is
/// `signer`'s over the SHA-256 of `["Signature1", protected, h'', payload]`, which is hashed as
/// it is written out, never assembled. The caller must never use a counter twice with one key:
/// persist the next counter before sending.
///
/// `out` must hold [`encoded_len`] bytes. Errors: [`EncodeError::CounterTooLarge`] above
/// [`MAX_COUNTER`], [`EncodeError::BufferTooSmall`], [`EncodeError::Sign`]; on any of them the
/// content of `out` is unspecified.
pub fn encode_sign1<S: Sign1Signer + ?Sized>(
    out: &mut [u8],
    payload: &[u8],
    counter: u64,
    x5t: &X5t,
    tagging: Tagging,
    signer: &S,
) -> Result<usize, EncodeError<S::Error>> {
    let Some((piv, piv_len)) = partial_iv(counter) else {
        return Err(EncodeError::CounterTooLarge { counter });
    };
    debug_assert!(counter <= MAX_COUNTER && piv_len == partial_iv_len(counter));
    let needed = encoded_len(payload.len(), counter, tagging);
    let available = out.len();
    let too_small = || EncodeError::BufferTooSmall { needed, available };
    if available < needed {
        return Err(too_small());
    }
    let mut w = Writer { buf: out, pos: 0 };
    let written = (|| {
        if tagging == Tagging::Tagged {
            w.head(TAG, TAG_SIGN1)?;
        }
        w.head(ARRAY, 4)?;
        w.head(BSTR, protected_map_len(counter) as u64)?;
        let protected_start = w.pos;
        w.head(MAP, 3)?;
        w.head(0, LABEL_ALG as u64)?;
        w.head(NINT, (-1 - Algorithm::Es256.id()) as u64)?;
        w.head(0, LABEL_PARTIAL_IV as u64)?;
        w.head(BSTR, piv_len as u64)?;
        w.put(piv.get(5 - piv_len..).ok_or(())?)?;
        w.head(0, LABEL_X5T as u64)?;
        w.head(ARRAY, 2)?;
        w.head(NINT, (-1 - SHA_256) as u64)?;
        w.head(BSTR, 32)?;
        w.put(x5t.as_bytes())?;
        let protected_end = w.pos;
        w.head(MAP, 0)?;
        w.head(BSTR, payload.len() as u64)?;
        w.put(payload)?;
        w.head(BSTR, 64)?;
        Ok::<_, ()>((protected_start, protected_end))
    })();
    let Ok((protected_start, protected_end)) = written else {
        return Err(too_small());
    };
    let protected = w
        .buf
        .get(protected_start..protected_end)
        .ok_or_else(too_small)?;
    let digest = sig_structure_digest(protected, payload);
    let sig = signer.sign_prehash(&digest).map_err(EncodeError::Sign)?;
    w.put(&sig).map_err(|()| too_small())?;
    debug_assert_eq!(w.pos, needed);
    Ok(w.pos)
}

/// SHA-256 of the Sig_structure `["Signature1", protected, h'', payload]` (RFC 9052 §4.4),
/// fed piece by piece.
pub(crate) fn sig_structure_digest(protected: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    // array(4), text(10) "Signature1"
    h.update([0x84, 0x6a]);
    h.update(b"Signature1");
    h.update(Head::new(BSTR, protected.len() as u64).as_bytes());
    h.update(protected);
    // external_aad: empty
    h.update([0x40]);
    h.update(Head::new(BSTR, payload.len() as u64).as_bytes());
    h.update(payload);
    h.finalize().into()
}

/// [`encode_sign1`] into a new `Vec` of the right size.
#[cfg(feature = "std")]
pub fn encode_sign1_to_vec<S: Sign1Signer + ?Sized>(
    payload: &[u8],
    counter: u64,
    x5t: &X5t,
    tagging: Tagging,
    signer: &S,
) -> Result<Vec<u8>, EncodeError<S::Error>> {
    let mut out = vec![0u8; encoded_len(payload.len(), counter, tagging)];
    let len = encode_sign1(&mut out, payload, counter, x5t, tagging, signer)?;
    out.truncate(len);
    Ok(out)
}
