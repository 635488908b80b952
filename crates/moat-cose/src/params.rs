//! The values the protected header carries: algorithm, certificate thumbprint, counter.

use core::fmt;

use sha2::{Digest, Sha256};

/// The largest counter: the Partial IV is at most 5 bytes, as in OSCORE (RFC 8613 §6.1).
pub const MAX_COUNTER: u64 = (1 << 40) - 1;

/// COSE `alg` label.
pub(crate) const LABEL_ALG: i128 = 1;
/// COSE `Partial IV` label.
pub(crate) const LABEL_PARTIAL_IV: i128 = 6;
/// COSE `x5t` label (RFC 9360).
pub(crate) const LABEL_X5T: i128 = 34;
/// COSE algorithm SHA-256 (RFC 9054), the x5t hash.
pub(crate) const SHA_256: i128 = -16;
/// COSE_Sign1's CBOR tag.
pub(crate) const TAG_SIGN1: u64 = 18;

/// The signature algorithm. ES256 only for now; EdDSA (-8) has its place here when devices
/// with Ed25519 keys come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256, signature r || s (RFC 9053 §2.1), COSE value -7.
    Es256,
}

impl Algorithm {
    /// The COSE algorithm value (IANA "COSE Algorithms").
    pub const fn id(self) -> i64 {
        match self {
            Algorithm::Es256 => -7,
        }
    }

    /// The algorithm's name in the IANA registry ("ES256").
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
        }
    }

    /// The algorithm of a COSE value, if supported.
    pub const fn from_id(id: i64) -> Option<Self> {
        match id {
            -7 => Some(Algorithm::Es256),
            _ => None,
        }
    }
}

/// The signer certificate's thumbprint as `x5t` carries it: SHA-256 of the certificate's DER.
/// The hub looks the certificate (and so the device and its key) up by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct X5t(pub [u8; 32]);

impl X5t {
    /// The thumbprint of a certificate, given as DER. This hashes the bytes as they are; that
    /// they are a certificate is the caller's business.
    pub fn of_certificate(der: &[u8]) -> Self {
        X5t(Sha256::digest(der).into())
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for X5t {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X5t({self})")
    }
}

/// Lowercase hex, as `sha256sum` prints it.
impl fmt::Display for X5t {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Whether the object starts with CBOR tag 18 (COSE_Sign1). Both are the same message; the
/// tag costs one byte and says what the bytes are to a generic COSE decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tagging {
    /// With tag 18.
    Tagged,
    /// Without a tag: the receiver knows the type from context.
    Untagged,
}

/// A counter as Partial IV bytes: big-endian, no leading zero bytes, 0 as one zero byte.
/// Returns the buffer and how many of its last bytes are used; `None` above [`MAX_COUNTER`].
pub(crate) fn partial_iv(counter: u64) -> Option<([u8; 5], usize)> {
    if counter > MAX_COUNTER {
        return None;
    }
    let be = counter.to_be_bytes();
    let mut out = [0u8; 5];
    out.copy_from_slice(&be[3..]);
    let zeros = out.iter().take(4).take_while(|&&b| b == 0).count();
    Some((out, 5 - zeros))
}

/// The bytes of the Partial IV for `counter` (see [`partial_iv`]); 5 above [`MAX_COUNTER`].
pub(crate) const fn partial_iv_len(counter: u64) -> usize {
    let bits = 64 - (counter | 1).leading_zeros() as usize;
    let n = bits.div_ceil(8);
    if n > 5 { 5 } else { n }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn partial_iv_encodings() {
        for (counter, want) in [
            (0u64, &[0u8][..]),
            (1, &[1]),
            (255, &[0xff]),
            (256, &[1, 0]),
            (0xffff, &[0xff, 0xff]),
            (0x1_0000, &[1, 0, 0]),
            (MAX_COUNTER, &[0xff; 5]),
        ] {
            let (buf, len) = partial_iv(counter).unwrap();
            assert_eq!(&buf[5 - len..], want, "{counter}");
            assert_eq!(partial_iv_len(counter), len, "{counter}");
        }
        assert_eq!(partial_iv(MAX_COUNTER + 1), None);
        assert_eq!(partial_iv(u64::MAX), None);
    }

    #[test]
    fn x5t_is_sha256_of_der() {
        // SHA-256 of the empty string.
        let t = X5t::of_certificate(b"");
        assert_eq!(
            t.to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Algorithm::from_id(-7), Some(Algorithm::Es256));
        assert_eq!(Algorithm::from_id(-8), None);
        assert_eq!(Algorithm::Es256.id(), -7);
    }
}
