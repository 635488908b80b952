//! Building and signing images (feature `sign`), laid out as `imgtool sign` 2.x lays them
//! out: for tests, benchmarks, and tools that sign without imgtool.
//!
//! Differences from imgtool: no encryption, compression, dependencies or trailer padding
//! (`--pad`); the padding after the header is `0xff`, like imgtool's default erased value.
//! Integer conversion and signing errors carry nothing beyond their variant here.

use std::vec::Vec;

use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use sha2::{Digest, Sha256, Sha512};

use crate::header::{HEADER_SIZE, ImageHeader, ImageVersion};
use crate::key::{KeyKind, TrustedKey};
use crate::tlv;

/// A private key that signs images.
#[derive(Clone)]
pub enum SigningKey {
    /// ECDSA P-256 (signature TLV 0x22, DER).
    P256(p256::ecdsa::SigningKey),
    /// Ed25519 (signature TLV 0x24).
    Ed25519(ed25519_dalek::SigningKey),
}

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SigningKey::P256(_) => "SigningKey::P256([redacted])",
            SigningKey::Ed25519(_) => "SigningKey::Ed25519([redacted])",
        })
    }
}

impl SigningKey {
    /// A P-256 key with scalar `secret` (big-endian); `None` if it is 0 or not below the order.
    pub fn p256_from_bytes(secret: &[u8; 32]) -> Option<Self> {
        p256::ecdsa::SigningKey::from_bytes(secret.into())
            .ok()
            .map(SigningKey::P256)
    }

    /// An Ed25519 key from its 32-byte secret.
    pub fn ed25519_from_bytes(secret: &[u8; 32]) -> Self {
        SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(secret))
    }

    /// The public half, as a verifier trusts it.
    pub fn trusted_key(&self) -> TrustedKey {
        let made = match self {
            SigningKey::P256(k) => {
                TrustedKey::from_p256_sec1(k.verifying_key().to_encoded_point(false).as_bytes())
            }
            SigningKey::Ed25519(k) => TrustedKey::from_ed25519(k.verifying_key().as_bytes()),
        };
        // A key derived from a valid private key is a valid, non-weak public key.
        made.unwrap_or_else(|e| unreachable!("public half of a signing key refused: {e}"))
    }
}

/// How the image names its signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyFormat {
    /// KEYHASH: the hash of the SubjectPublicKeyInfo (imgtool's default).
    #[default]
    Hash,
    /// PUBKEY: the SubjectPublicKeyInfo itself (imgtool `--public-key-format full`).
    Full,
}

/// Why an image could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The header size is below 32.
    #[error("header size {0} is below 32")]
    HeaderTooSmall(u16),
    /// The payload does not fit the header's u32 size field.
    #[error("payload of {0} bytes does not fit a u32")]
    PayloadTooLarge(usize),
    /// A TLV area or value does not fit its u16 length field.
    #[error("TLV area over 65535 bytes")]
    TlvTooLarge,
    /// Pure signatures exist only for Ed25519 keys.
    #[error("pure signatures need an Ed25519 key")]
    PureNeedsEd25519,
    /// The signature library refused to sign.
    #[error("signing failed")]
    Signing,
}

/// What goes into an image besides the payload. Defaults match `imgtool sign -v 0.0.0 -H 32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuilder {
    /// Image version.
    pub version: ImageVersion,
    /// Header size: the payload starts there (imgtool `-H`; `--pad-header` fills it).
    pub header_size: u16,
    /// Load address (imgtool `-L`/`-F`); flags must say which.
    pub load_addr: u32,
    /// Header flags.
    pub flags: u32,
    /// Security counter, written to the protected area.
    pub security_counter: Option<u32>,
    /// More protected TLVs (type, value), after the security counter.
    pub protected_tlvs: Vec<(u16, Vec<u8>)>,
    /// Sign the hashed range itself (Ed25519 only; imgtool `--pure`, which also hashes with
    /// SHA-512).
    pub pure: bool,
    /// Hash with SHA-512 (imgtool `--sha 512`).
    pub sha512: bool,
    /// How the signing key is named.
    pub key_format: KeyFormat,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder {
            version: ImageVersion::default(),
            header_size: HEADER_SIZE as u16,
            load_addr: 0,
            flags: 0,
            security_counter: None,
            protected_tlvs: Vec::new(),
            pure: false,
            sha512: false,
            key_format: KeyFormat::Hash,
        }
    }
}

fn push_tlv(area: &mut Vec<u8>, kind: u16, value: &[u8]) -> Result<(), SignError> {
    let len = u16::try_from(value.len()).map_err(|_| SignError::TlvTooLarge)?;
    area.extend_from_slice(&kind.to_le_bytes());
    area.extend_from_slice(&len.to_le_bytes());
    area.extend_from_slice(value);
    Ok(())
}

/// Prefixes `entries` with an info header.
fn area(magic: u16, entries: &[u8]) -> Result<Vec<u8>, SignError> {
    let total =
        u16::try_from(entries.len() + tlv::HEADER_LEN).map_err(|_| SignError::TlvTooLarge)?;
    let mut out = Vec::with_capacity(usize::from(total));
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(entries);
    Ok(out)
}

impl ImageBuilder {
    /// A builder for version `version`, other fields at their defaults.
    pub fn new(version: ImageVersion) -> Self {
        ImageBuilder {
            version,
            ..Self::default()
        }
    }

    /// Sets the header size (the payload starts there).
    pub fn with_header_size(mut self, size: u16) -> Self {
        self.header_size = size;
        self
    }

    /// Sets the security counter.
    pub fn with_security_counter(mut self, counter: u32) -> Self {
        self.security_counter = Some(counter);
        self
    }

    /// Adds a protected TLV.
    pub fn with_protected_tlv(mut self, kind: u16, value: &[u8]) -> Self {
        self.protected_tlvs.push((kind, value.to_vec()));
        self
    }

    /// Signs the hashed range itself (Ed25519).
    pub fn with_pure(mut self) -> Self {
        self.pure = true;
        self
    }

    /// Names the key by its full SubjectPublicKeyInfo.
    pub fn with_key_format(mut self, format: KeyFormat) -> Self {
        self.key_format = format;
        self
    }

    /// Builds the image around `payload` and signs it with `key`.
    pub fn sign(&self, payload: &[u8], key: &SigningKey) -> Result<Vec<u8>, SignError> {
        self.sign_with(payload, key)
    }

    /// Builds the image around `payload` and signs it with `signer`, which may hold its
    /// private key elsewhere (a hub's vault, a PKCS#11 token).
    pub fn sign_with(
        &self,
        payload: &[u8],
        signer: &dyn ImageSigner,
    ) -> Result<Vec<u8>, SignError> {
        if usize::from(self.header_size) < HEADER_SIZE {
            return Err(SignError::HeaderTooSmall(self.header_size));
        }
        let public = signer.trusted_key();
        if self.pure && public.kind() != KeyKind::Ed25519 {
            return Err(SignError::PureNeedsEd25519);
        }
        let mut entries = Vec::new();
        if let Some(c) = self.security_counter {
            push_tlv(&mut entries, tlv::SEC_CNT, &c.to_le_bytes())?;
        }
        for (kind, value) in &self.protected_tlvs {
            push_tlv(&mut entries, *kind, value)?;
        }
        let protected = if entries.is_empty() {
            Vec::new()
        } else {
            area(tlv::PROT_INFO_MAGIC, &entries)?
        };
        let header = ImageHeader {
            load_addr: self.load_addr,
            hdr_size: self.header_size,
            protect_tlv_size: u16::try_from(protected.len()).map_err(|_| SignError::TlvTooLarge)?,
            img_size: u32::try_from(payload.len())
                .map_err(|_| SignError::PayloadTooLarge(payload.len()))?,
            flags: self.flags,
            version: self.version,
        };
        let mut image = Vec::with_capacity(usize::from(self.header_size) + payload.len() + 256);
        image.extend_from_slice(&header.to_bytes());
        image.resize(usize::from(self.header_size), 0xff);
        image.extend_from_slice(payload);
        image.extend_from_slice(&protected);

        let sha512 = self.sha512 || self.pure;
        let digest: Vec<u8> = if sha512 {
            Sha512::digest(&image).to_vec()
        } else {
            Sha256::digest(&image).to_vec()
        };
        let spki = public.spki_der();
        let mut entries = Vec::new();
        push_tlv(
            &mut entries,
            if sha512 { tlv::SHA512 } else { tlv::SHA256 },
            &digest,
        )?;
        if self.pure {
            push_tlv(&mut entries, tlv::SIG_PURE, &[1])?;
        }
        match self.key_format {
            KeyFormat::Hash if sha512 => {
                push_tlv(&mut entries, tlv::KEYHASH, &Sha512::digest(spki.as_bytes()))?
            }
            KeyFormat::Hash => {
                push_tlv(&mut entries, tlv::KEYHASH, &Sha256::digest(spki.as_bytes()))?
            }
            KeyFormat::Full => push_tlv(&mut entries, tlv::PUBKEY, spki.as_bytes())?,
        }
        match public.kind() {
            KeyKind::P256 => match signer.sign(&image)? {
                ImageSignature::P256(rs) => push_tlv(
                    &mut entries,
                    tlv::ECDSA_SIG,
                    &crate::der::encode_ecdsa_signature(&rs),
                )?,
                ImageSignature::Ed25519(_) => return Err(SignError::Signing),
            },
            KeyKind::Ed25519 => {
                let message: &[u8] = if self.pure { &image } else { &digest };
                match signer.sign(message)? {
                    ImageSignature::Ed25519(sig) => push_tlv(&mut entries, tlv::ED25519, &sig)?,
                    ImageSignature::P256(_) => return Err(SignError::Signing),
                }
            }
        }
        image.extend_from_slice(&area(tlv::INFO_MAGIC, &entries)?);
        Ok(image)
    }
}

/// A signature as the image stores it, before DER encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSignature {
    /// ECDSA P-256: `r ‖ s`, 32 bytes each, big-endian.
    P256([u8; 64]),
    /// Ed25519.
    Ed25519([u8; 64]),
}

/// Something that signs images: [`SigningKey`] in memory, or a key held elsewhere (the hub's
/// vault, a PKCS#11 token) behind an adapter.
pub trait ImageSigner {
    /// The public half, as a verifier trusts it: it names the key in the image.
    fn trusted_key(&self) -> TrustedKey;

    /// Signs `message`. P-256: ECDSA with SHA-256 over `message` (the hashed range of the
    /// image). Ed25519: over `message` as given (the image digest, or the range when pure).
    fn sign(&self, message: &[u8]) -> Result<ImageSignature, SignError>;
}

impl ImageSigner for SigningKey {
    fn trusted_key(&self) -> TrustedKey {
        SigningKey::trusted_key(self)
    }

    fn sign(&self, message: &[u8]) -> Result<ImageSignature, SignError> {
        match self {
            SigningKey::P256(k) => {
                let prehash = Sha256::digest(message);
                let sig: p256::ecdsa::Signature =
                    k.sign_prehash(&prehash).map_err(|_| SignError::Signing)?;
                Ok(ImageSignature::P256(sig.to_bytes().into()))
            }
            SigningKey::Ed25519(k) => Ok(ImageSignature::Ed25519(k.sign(message).to_bytes())),
        }
    }
}

/// Appends an entry to the unprotected TLV area of `image` (which must end with that area) and
/// fixes the area's length: for tests that put TLVs where a signer never would.
pub fn append_unprotected_tlv(
    image: &mut Vec<u8>,
    unprotected_start: usize,
    kind: u16,
    value: &[u8],
) -> Result<(), SignError> {
    push_tlv(image, kind, value)?;
    let total = image
        .len()
        .checked_sub(unprotected_start)
        .and_then(|t| u16::try_from(t).ok())
        .ok_or(SignError::TlvTooLarge)?;
    let len_field = image
        .get_mut(unprotected_start + 2..unprotected_start + 4)
        .ok_or(SignError::TlvTooLarge)?;
    len_field.copy_from_slice(&total.to_le_bytes());
    Ok(())
}
