//! Trusted public keys: P-256 or Ed25519, from SubjectPublicKeyInfo DER or PEM, with the key
//! hashes MCUboot images name them by.
//!
//! The curve crates' point errors are unit values that say only "invalid" (and implement no
//! `Error` without `std`): the variant they map to is the whole reason.

use core::fmt;

use sha2::{Digest, Sha256, Sha512};

use crate::der::{self, Reader};
use crate::{KeyError, pem};

/// DER OID contents of id-ecPublicKey (1.2.840.10045.2.1).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER OID contents of prime256v1 / secp256r1 (1.2.840.10045.3.1.7).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER OID contents of id-Ed25519 (1.3.101.112).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// SubjectPublicKeyInfo up to the 65-byte uncompressed point, as imgtool (Python
/// `cryptography`) encodes it.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// SubjectPublicKeyInfo up to the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Largest SubjectPublicKeyInfo of a supported key (P-256, uncompressed point).
pub const MAX_SPKI_LEN: usize = P256_SPKI_PREFIX.len() + 65;

/// The signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ECDSA over NIST P-256 with SHA-256 (TLV 0x22).
    P256,
    /// Ed25519 (TLV 0x24).
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::P256 => "ECDSA P-256",
            KeyKind::Ed25519 => "Ed25519",
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A canonical SubjectPublicKeyInfo DER encoding, without an allocator.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SpkiDer {
    buf: [u8; MAX_SPKI_LEN],
    len: usize,
}

impl SpkiDer {
    fn new(prefix: &[u8], key: &[u8]) -> Self {
        let mut buf = [0u8; MAX_SPKI_LEN];
        let mut len = 0;
        for (slot, b) in buf.iter_mut().zip(prefix.iter().chain(key)) {
            *slot = *b;
            len += 1;
        }
        SpkiDer { buf, len }
    }

    /// The DER bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

impl AsRef<[u8]> for SpkiDer {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for SpkiDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpkiDer({:02x?})", self.as_bytes())
    }
}

/// A public key an image may be signed with, and the hashes that name it in images.
///
/// The key hash is computed over the key's canonical SubjectPublicKeyInfo DER (uncompressed
/// point for P-256), which is what imgtool hashes for the KEYHASH TLV, whatever encoding the
/// key was given in. A PUBKEY TLV is matched by the same hash, so it must hold that canonical
/// encoding too (imgtool's `--public-key-format full` does).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: PublicKey,
    /// KEYHASH of images hashed with SHA-256 (the default).
    sha256: [u8; 32],
    /// KEYHASH of images hashed with SHA-512 (imgtool `--sha 512`, and Ed25519 `--pure`).
    sha512: [u8; 64],
}

impl TrustedKey {
    fn new(key: PublicKey) -> Self {
        let spki = spki_of(&key);
        TrustedKey {
            key,
            sha256: Sha256::digest(spki.as_bytes()).into(),
            sha512: Sha512::digest(spki.as_bytes()).into(),
        }
    }

    /// Parses a DER SubjectPublicKeyInfo holding a P-256 or an Ed25519 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let mut outer = Reader::new(der);
        let spki = outer.read(der::SEQUENCE).map_err(KeyError::Der)?;
        outer.finish().map_err(KeyError::Der)?;
        let mut spki = Reader::new(spki);
        let algorithm = spki.read(der::SEQUENCE).map_err(KeyError::Der)?;
        let bits = spki.read(der::BIT_STRING).map_err(KeyError::Der)?;
        spki.finish().map_err(KeyError::Der)?;
        let key = match bits {
            [0, key @ ..] => key,
            _ => return Err(KeyError::Der(crate::DerError::BadBitString)),
        };
        let mut algorithm = Reader::new(algorithm);
        let oid = algorithm.read(der::OID).map_err(KeyError::Der)?;
        if oid == OID_EC_PUBLIC_KEY {
            let curve = algorithm.read(der::OID).map_err(KeyError::Der)?;
            algorithm.finish().map_err(KeyError::Der)?;
            if curve != OID_P256 {
                return Err(KeyError::UnsupportedCurve);
            }
            Self::from_p256_sec1(key)
        } else if oid == OID_ED25519 {
            // RFC 8410: the parameters are absent.
            algorithm.finish().map_err(KeyError::Der)?;
            let key: &[u8; 32] = key.try_into().map_err(|_| KeyError::InvalidEd25519Key)?;
            Self::from_ed25519(key)
        } else {
            Err(KeyError::UnsupportedAlgorithm)
        }
    }

    /// Parses a PEM `PUBLIC KEY` block (as `imgtool getpub -e pem` prints it).
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let mut der = [0u8; MAX_SPKI_LEN + 3];
        let der = pem::decode_public_key(pem, &mut der)?;
        Self::from_spki_der(der)
    }

    /// A P-256 key from its SEC1 encoding (compressed or uncompressed point).
    pub fn from_p256_sec1(point: &[u8]) -> Result<Self, KeyError> {
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map_err(|_| KeyError::InvalidP256Point)?;
        Ok(Self::new(PublicKey::P256(key)))
    }

    /// An Ed25519 key from its 32 bytes. Small-order (weak) keys are refused.
    pub fn from_ed25519(key: &[u8; 32]) -> Result<Self, KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(key)
            .map_err(|_| KeyError::InvalidEd25519Key)?;
        if key.is_weak() {
            return Err(KeyError::WeakEd25519Key);
        }
        Ok(Self::new(PublicKey::Ed25519(key)))
    }

    /// Its algorithm.
    pub fn kind(&self) -> KeyKind {
        match self.key {
            PublicKey::P256(_) => KeyKind::P256,
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// SHA-256 of the SubjectPublicKeyInfo: the KEYHASH TLV of images hashed with SHA-256.
    pub fn key_hash(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// SHA-512 of the SubjectPublicKeyInfo: the KEYHASH TLV of images hashed with SHA-512.
    pub fn key_hash_sha512(&self) -> &[u8; 64] {
        &self.sha512
    }

    /// The canonical SubjectPublicKeyInfo DER (what a PUBKEY TLV holds).
    pub fn spki_der(&self) -> SpkiDer {
        spki_of(&self.key)
    }

    /// Whether `hash` (a KEYHASH value, or the hash of a PUBKEY value) names this key.
    pub(crate) fn is_named_by(&self, hash: &[u8]) -> bool {
        hash == self.sha256.as_slice() || hash == self.sha512.as_slice()
    }

    pub(crate) fn public_key(&self) -> &PublicKey {
        &self.key
    }
}

fn spki_of(key: &PublicKey) -> SpkiDer {
    match key {
        PublicKey::P256(k) => SpkiDer::new(&P256_SPKI_PREFIX, k.to_encoded_point(false).as_bytes()),
        PublicKey::Ed25519(k) => SpkiDer::new(&ED25519_SPKI_PREFIX, k.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DerError;

    // Public keys printed by `imgtool getpub -e pem` for two keys made with imgtool keygen.
    const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHgQHUUtDeW7rbw7yC2wJHRFrjcZO
ypwVfsgcdSYUXqgoraTlO2ReaxRGYF2dX6J4vksxpqiu+tEKr7Fg2Sg/WQ==
-----END PUBLIC KEY-----
";
    const ED25519_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAN2gbK344BdNLTi7m/XDI72g1y7JmBh/cNiC7z6BZK7w=
-----END PUBLIC KEY-----
";

    #[test]
    fn parses_imgtool_pem_and_round_trips_der() {
        for (pem, kind, len) in [
            (P256_PEM, KeyKind::P256, 91),
            (ED25519_PEM, KeyKind::Ed25519, 44),
        ] {
            let key = TrustedKey::from_pem(pem.as_bytes()).expect("parses");
            assert_eq!(key.kind(), kind);
            let der = key.spki_der();
            assert_eq!(der.as_bytes().len(), len);
            let again = TrustedKey::from_spki_der(der.as_bytes()).expect("round trip");
            assert_eq!(again.key_hash(), key.key_hash());
            assert_eq!(
                key.key_hash(),
                &<[u8; 32]>::from(Sha256::digest(der.as_bytes()))
            );
        }
    }

    #[test]
    fn compressed_point_names_the_same_key() {
        let key = TrustedKey::from_pem(P256_PEM.as_bytes()).expect("parses");
        let PublicKey::P256(vk) = key.public_key() else {
            panic!("not P-256")
        };
        let compressed = vk.to_encoded_point(true);
        let again = TrustedKey::from_p256_sec1(compressed.as_bytes()).expect("compressed");
        assert_eq!(again.key_hash(), key.key_hash());
    }

    #[test]
    fn refusals() {
        let der = TrustedKey::from_pem(ED25519_PEM.as_bytes())
            .expect("parses")
            .spki_der();
        let der = der.as_bytes();
        // Every truncation fails, none panics.
        for n in 0..der.len() {
            assert!(TrustedKey::from_spki_der(&der[..n]).is_err(), "prefix {n}");
        }
        let mut trailing = der.to_vec();
        trailing.push(0);
        assert_eq!(
            TrustedKey::from_spki_der(&trailing).map(|_| ()),
            Err(KeyError::Der(DerError::TrailingData))
        );
        let mut x25519 = der.to_vec();
        x25519[8] = 0x6e; // 1.3.101.110
        assert_eq!(
            TrustedKey::from_spki_der(&x25519).map(|_| ()),
            Err(KeyError::UnsupportedAlgorithm)
        );
        let mut unused_bits = der.to_vec();
        unused_bits[11] = 1;
        assert_eq!(
            TrustedKey::from_spki_der(&unused_bits).map(|_| ()),
            Err(KeyError::Der(DerError::BadBitString))
        );
        // The identity point has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            TrustedKey::from_ed25519(&identity).map(|_| ()),
            Err(KeyError::WeakEd25519Key)
        );
        let p256 = TrustedKey::from_pem(P256_PEM.as_bytes())
            .expect("parses")
            .spki_der();
        let mut off_curve = p256.as_bytes().to_vec();
        off_curve[90] ^= 1;
        assert_eq!(
            TrustedKey::from_spki_der(&off_curve).map(|_| ()),
            Err(KeyError::InvalidP256Point)
        );
        let mut p384 = p256.as_bytes().to_vec();
        p384[22] = 0x08;
        assert_eq!(
            TrustedKey::from_spki_der(&p384).map(|_| ()),
            Err(KeyError::UnsupportedCurve)
        );
    }
}
