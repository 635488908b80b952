//! Firmware signing keys (registered public keys, or P-256 keys the vault holds) and the
//! adapters that let a vault key sign images (moat-image) and manifests (COSE).

use crate::{Error, Ota, valid_name};
use moat_core::Actor;
use moat_image::sign::{ImageSignature, ImageSigner, SignError};
use moat_image::{KeyKind, TrustedKey};
use moat_ota_proto::{ManifestError, ManifestSigner};
use moat_store::{FirmwareKey, FirmwareKeyKind};
use moat_vault::{HubKey, KeyRef};
use rcgen::{PublicKeyData, SigningKey};
use time::OffsetDateTime;

/// A registered key, with its public half as PEM.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    /// The record.
    pub key: FirmwareKey,
    /// `-----BEGIN PUBLIC KEY-----` of its SubjectPublicKeyInfo.
    pub public_pem: String,
}

/// PEM of a SubjectPublicKeyInfo.
pub fn spki_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    use std::fmt::Write as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(chunk));
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

impl KeyInfo {
    fn of(key: FirmwareKey) -> Self {
        let public_pem = spki_pem(&key.spki_der);
        KeyInfo { key, public_pem }
    }
}

/// A vault key (software or PKCS#11) that signs images and manifests.
#[derive(Debug)]
pub(crate) struct VaultSigner {
    key: HubKey,
    spki: Vec<u8>,
}

impl VaultSigner {
    pub(crate) fn new(key: HubKey) -> Self {
        let spki = key.subject_public_key_info();
        VaultSigner { key, spki }
    }

    pub(crate) fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// ECDSA P-256 with SHA-256 over `message`, as `r ‖ s`.
    fn sign_rs(&self, message: &[u8]) -> Result<[u8; 64], String> {
        let der = self
            .key
            .sign(message)
            .map_err(|e| format!("vault key: {e}"))?;
        let sig = p256::ecdsa::Signature::from_der(&der)
            .map_err(|e| format!("vault key returned a malformed signature: {e}"))?;
        Ok(sig.to_bytes().into())
    }
}

impl ImageSigner for VaultSigner {
    fn trusted_key(&self) -> TrustedKey {
        // A P-256 vault key's SubjectPublicKeyInfo always parses; a failure here would be a
        // broken vault, which `generate_key`/`load_key` already refuse.
        TrustedKey::from_spki_der(&self.spki)
            .unwrap_or_else(|e| unreachable!("vault P-256 key refused as a trusted key: {e}"))
    }

    fn sign(&self, message: &[u8]) -> Result<ImageSignature, SignError> {
        self.sign_rs(message)
            .map(ImageSignature::P256)
            .map_err(|e| {
                tracing::error!(error = %e, "signing an image with a vault key failed");
                SignError::Signing
            })
    }
}

impl ManifestSigner for VaultSigner {
    fn public_key_der(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64], ManifestError> {
        self.sign_rs(message).map_err(ManifestError::Signing)
    }
}

/// Builds the record of a public key given as PEM (SubjectPublicKeyInfo, P-256 or Ed25519).
fn key_from_pem(name: &str, pem: &[u8], now: OffsetDateTime) -> Result<FirmwareKey, Error> {
    let key = TrustedKey::from_pem(pem).map_err(|e| {
        Error::Invalid(format!(
            "not a usable public key ({e}); give a PEM public key (P-256 or Ed25519), e.g. from `imgtool getpub -k KEY -e pem`"
        ))
    })?;
    Ok(FirmwareKey {
        name: name.to_owned(),
        kind: match key.kind() {
            KeyKind::P256 => FirmwareKeyKind::P256,
            KeyKind::Ed25519 => FirmwareKeyKind::Ed25519,
        },
        spki_der: key.spki_der().as_bytes().to_vec(),
        key_ref: None,
        created_at: now,
    })
}

impl Ota {
    /// Registers a public key (images are signed offline, e.g. with imgtool).
    pub async fn add_key(&self, name: &str, pem: &[u8], actor: &Actor) -> Result<KeyInfo, Error> {
        let result = async {
            valid_name("key name", name)?;
            let key = key_from_pem(name, pem, OffsetDateTime::now_utc())?;
            self.insert_key(key).await
        }
        .await;
        self.audited(actor, "fw.key.add", Some(name), result).await
    }

    /// Generates a P-256 key in the vault (sealed, or inside the PKCS#11 token); returns
    /// its public half. `moat fw sign` signs with it.
    pub async fn generate_key(&self, name: &str, actor: &Actor) -> Result<KeyInfo, Error> {
        let result = async {
            valid_name("key name", name)?;
            if self.store().firmware_key(name).await?.is_some() {
                return Err(Error::Conflict {
                    kind: "firmware key",
                    id: name.to_owned(),
                });
            }
            let (key_ref, key) = self.hub.generate_signing_key("moat-firmware")?;
            let spki = key.subject_public_key_info();
            self.insert_key(FirmwareKey {
                name: name.to_owned(),
                kind: FirmwareKeyKind::P256,
                spki_der: spki,
                key_ref: Some(key_ref.0),
                created_at: OffsetDateTime::now_utc(),
            })
            .await
        }
        .await;
        self.audited(actor, "fw.key.generate", Some(name), result)
            .await
    }

    async fn insert_key(&self, key: FirmwareKey) -> Result<KeyInfo, Error> {
        match self.store().insert_firmware_key(&key).await {
            Ok(()) => Ok(KeyInfo::of(key)),
            Err(moat_store::Error::Conflict(_)) => Err(Error::Conflict {
                kind: "firmware key",
                id: key.name,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Registered keys, by name.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, Error> {
        Ok(self
            .store()
            .firmware_keys()
            .await?
            .into_iter()
            .map(KeyInfo::of)
            .collect())
    }

    /// The verifier's view of every registered key, with their names (same order).
    pub(crate) async fn trusted_keys(&self) -> Result<(Vec<TrustedKey>, Vec<String>), Error> {
        let mut keys = Vec::new();
        let mut names = Vec::new();
        for k in self.store().firmware_keys().await? {
            match TrustedKey::from_spki_der(&k.spki_der) {
                Ok(t) => {
                    keys.push(t);
                    names.push(k.name);
                }
                Err(e) => {
                    tracing::error!(key = %k.name, error = %e, "stored firmware key does not parse; ignored")
                }
            }
        }
        Ok((keys, names))
    }

    /// The signer of a hub-held key. [`Error::State`] for a key kept offline.
    pub(crate) async fn key_signer(&self, name: &str) -> Result<VaultSigner, Error> {
        let key = self
            .store()
            .firmware_key(name)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "firmware key",
                id: name.to_owned(),
            })?;
        let Some(key_ref) = key.key_ref else {
            return Err(Error::State(format!(
                "firmware key {name:?} is a registered public key; the hub cannot sign with it (sign offline with imgtool, or use a key made by `moat fw key generate`)"
            )));
        };
        Ok(VaultSigner::new(self.hub.signing_key(&KeyRef(key_ref))?))
    }
}
