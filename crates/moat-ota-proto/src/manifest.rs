//! Update manifests: a CBOR payload in a COSE_Sign1 (RFC 9052) signed with ES256 by the
//! hub's update key. The key id in the protected header is the SHA-256 of the key's
//! SubjectPublicKeyInfo, so devices can tell which update key signed when keys rotate.

use coset::{CborSerializable, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest manifest a device parses (a real one is a few hundred bytes).
pub const MAX_MANIFEST_LEN: usize = 16 * 1024;

/// What the hub tells a device about an update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The campaign the device reports against.
    pub campaign: String,
    /// The catalogue id of the image.
    pub firmware: String,
    /// The device models this image is for.
    pub models: Vec<String>,
    /// The image version (`major.minor.revision+build`).
    pub version: String,
    /// The image's security counter: a device running a higher one refuses it.
    pub security_counter: u32,
    /// Size of the image file in bytes.
    pub size: u64,
    /// SHA-256 of the image file, lowercase hex.
    pub digest: String,
    /// Where to download it (HTTPS with the device's certificate).
    pub url: String,
    /// Signed at (Unix seconds).
    pub issued_at: i64,
    /// Not valid after (Unix seconds): a replayed old manifest is refused.
    pub expires_at: i64,
}

/// Why a manifest was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Longer than any manifest the hub makes.
    #[error("manifest of {0} bytes is over the {MAX_MANIFEST_LEN}-byte limit")]
    TooLarge(usize),
    /// Not a tagged COSE_Sign1, or its payload is missing or not a manifest.
    #[error("not a COSE_Sign1 update manifest")]
    Malformed,
    /// The protected header does not say ES256.
    #[error("manifest is not signed with ES256")]
    Algorithm,
    /// The signature does not verify with the update key.
    #[error("manifest signature does not verify with the hub's update key")]
    BadSignature,
    /// The signer failed.
    #[error("signing the manifest failed: {0}")]
    Signing(String),
    /// The update key is not a P-256 public key.
    #[error("update key is not a P-256 public key")]
    BadKey,
}

/// Signs manifests: ECDSA P-256 with SHA-256 over `message`, returning `r ‖ s`.
pub trait ManifestSigner {
    /// The public key, SubjectPublicKeyInfo DER.
    fn public_key_der(&self) -> Vec<u8>;
    /// Signs.
    fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64], ManifestError>;
}

/// The hub's update key as a device holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateKey {
    key: p256::ecdsa::VerifyingKey,
    kid: [u8; 32],
}

impl UpdateKey {
    /// From SubjectPublicKeyInfo DER.
    pub fn from_der(der: &[u8]) -> Result<Self, ManifestError> {
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(der)
            .map_err(|_| ManifestError::BadKey)?;
        Ok(UpdateKey {
            key,
            kid: Sha256::digest(der).into(),
        })
    }

    /// From a PEM `PUBLIC KEY`.
    pub fn from_pem(pem: &str) -> Result<Self, ManifestError> {
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| ManifestError::BadKey)?;
        let der = key.to_public_key_der().map_err(|_| ManifestError::BadKey)?;
        Self::from_der(der.as_bytes())
    }

    /// The key id manifests carry: SHA-256 of the SubjectPublicKeyInfo.
    pub fn key_id(&self) -> &[u8; 32] {
        &self.kid
    }
}

/// Signs `manifest` into a tagged COSE_Sign1.
pub fn sign_manifest(
    manifest: &Manifest,
    signer: &dyn ManifestSigner,
) -> Result<Vec<u8>, ManifestError> {
    let mut payload = Vec::new();
    ciborium::into_writer(manifest, &mut payload)
        .map_err(|e| ManifestError::Signing(format!("CBOR encoding: {e}")))?;
    let kid = Sha256::digest(signer.public_key_der()).to_vec();
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .key_id(kid)
        .content_type("application/vnd.moat.manifest+cbor".to_owned())
        .build();
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .try_create_signature(&[], |tbs| signer.sign_es256(tbs).map(|s| s.to_vec()))?
        .build();
    sign1
        .to_tagged_vec()
        .map_err(|e| ManifestError::Signing(format!("COSE encoding: {e}")))
}

/// Verifies a manifest's signature with `key` and returns it. Expiry, model and counter are
/// the device's to check (each refusal has its own reason).
pub fn open_manifest(bytes: &[u8], key: &UpdateKey) -> Result<Manifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_LEN {
        return Err(ManifestError::TooLarge(bytes.len()));
    }
    let sign1 = coset::CoseSign1::from_tagged_slice(bytes)
        .or_else(|_| coset::CoseSign1::from_slice(bytes))
        .map_err(|_| ManifestError::Malformed)?;
    if sign1.protected.header.alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::ES256,
        ))
    {
        return Err(ManifestError::Algorithm);
    }
    sign1.verify_signature(&[], |sig, data| {
        let sig =
            p256::ecdsa::Signature::from_slice(sig).map_err(|_| ManifestError::BadSignature)?;
        key.key
            .verify(data, &sig)
            .map_err(|_| ManifestError::BadSignature)
    })?;
    let payload = sign1.payload.as_deref().ok_or(ManifestError::Malformed)?;
    ciborium::from_reader(payload).map_err(|_| ManifestError::Malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use p256::ecdsa::signature::Signer;

    struct Soft(p256::ecdsa::SigningKey);

    impl ManifestSigner for Soft {
        fn public_key_der(&self) -> Vec<u8> {
            self.0
                .verifying_key()
                .to_public_key_der()
                .unwrap()
                .into_vec()
        }
        fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64], ManifestError> {
            let sig: p256::ecdsa::Signature = self.0.sign(message);
            Ok(sig.to_bytes().into())
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            campaign: "cmp-1".into(),
            firmware: "fw-1".into(),
            models: vec!["sensor".into()],
            version: "1.2.3+0".into(),
            security_counter: 7,
            size: 1 << 20,
            digest: "ab".repeat(32),
            url: "https://hub:8444/fw/abab".into(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_086_400,
        }
    }

    #[test]
    fn sign_open_and_refusals() {
        let signer = Soft(p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap());
        let key = UpdateKey::from_der(&signer.public_key_der()).unwrap();
        let bytes = sign_manifest(&manifest(), &signer).unwrap();
        assert_eq!(open_manifest(&bytes, &key).unwrap(), manifest());

        // Another key.
        let other = Soft(p256::ecdsa::SigningKey::from_slice(&[8; 32]).unwrap());
        let other_key = UpdateKey::from_der(&other.public_key_der()).unwrap();
        assert!(matches!(
            open_manifest(&bytes, &other_key),
            Err(ManifestError::BadSignature)
        ));
        // Any flipped byte is refused, never accepted as another manifest.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(open_manifest(&b, &key).is_err(), "byte {i}");
        }
        assert!(matches!(
            open_manifest(b"junk", &key),
            Err(ManifestError::Malformed)
        ));
        assert!(matches!(
            open_manifest(&vec![0; MAX_MANIFEST_LEN + 1], &key),
            Err(ManifestError::TooLarge(_))
        ));
        // PEM and DER give the same key.
        let pem = p256::ecdsa::VerifyingKey::from_public_key_der(&signer.public_key_der())
            .unwrap()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        assert_eq!(UpdateKey::from_pem(&pem).unwrap(), key);
        assert!(UpdateKey::from_pem("nope").is_err());
    }
}
