//! The PKCS#11 backend: a logged-in session on the configured token, P-256 signing keys
//! generated inside it, and an AES-256 key inside it that wraps the data keys of sealed
//! secrets. No private or secret key ever leaves the token.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use aws_lc_rs::aead::NONCE_LEN;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::sealed::{FORMAT_TOKEN, KeyWrapper, to_key, wrap_aad};
use crate::signer::HubKey;
use crate::store::{KEY_LEN, Pkcs11Record};
use crate::{Error, KeyRef, Pkcs11Config};

/// DER of the OID prime256v1 (1.2.840.10045.3.1.7), the CKA_EC_PARAMS of a P-256 key.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Prefix of token key references.
pub(crate) const KEYREF_PREFIX: &str = "pkcs11:v1:";

/// A session shared by the vault and every key loaded from it (one login per token).
pub(crate) type SharedSession = Arc<Mutex<Session>>;

/// Locks a session; a poisoned lock still holds a usable session (the token keeps no
/// half-done state we rely on), so take it back.
pub(crate) fn lock(session: &SharedSession) -> MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A module is initialised once per process; the login state is per process and token.
struct Module {
    ctx: Pkcs11,
    /// SHA-256 of the PIN that logged in to each token (by label) in this process, so a
    /// second `Vault::open` with a wrong PIN is refused even though the token reports
    /// "already logged in".
    logins: HashMap<String, Zeroizing<[u8; 32]>>,
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Module>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn ck(context: impl Into<String>) -> impl FnOnce(CkError) -> Error {
    let context = context.into();
    move |source| Error::Pkcs11 { context, source }
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|e| Error::Crypto(format!("random: {e}")))?;
    Ok(b)
}

/// A logged-in session on a PKCS#11 token. The vault's PKCS#11 backend uses it; so can any
/// program that keeps its own P-256 keys in a token (the device SDK), through
/// [`Token::open`], [`Token::generate_named_key`] and [`Token::find_named_key`].
pub struct Token {
    session: SharedSession,
    label: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Loads the module, finds the token by label and logs in as the user.
    /// A wrong PIN is [`Error::WrongMasterKey`].
    pub fn open(cfg: &Pkcs11Config) -> Result<Token, Error> {
        let mut modules = modules().lock().unwrap_or_else(PoisonError::into_inner);
        let module = match modules.get_mut(&cfg.module) {
            Some(m) => m,
            None => {
                let shown = cfg.module.display();
                let ctx =
                    Pkcs11::new(&cfg.module).map_err(ck(format!("loading module {shown}")))?;
                match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                    Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                    Err(e) => return Err(ck(format!("initialising module {shown}"))(e)),
                }
                modules.entry(cfg.module.clone()).or_insert(Module {
                    ctx,
                    logins: HashMap::new(),
                })
            }
        };

        let slots = module
            .ctx
            .get_slots_with_token()
            .map_err(ck("listing slots"))?;
        let mut found = None;
        for slot in slots {
            let info = module
                .ctx
                .get_token_info(slot)
                .map_err(ck("reading token info"))?;
            if info.label().trim_end() == cfg.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| Error::TokenNotFound(cfg.token_label.clone()))?;
        let session = module.ctx.open_rw_session(slot).map_err(ck(format!(
            "opening a session on token {:?}",
            cfg.token_label
        )))?;

        let pin_hash = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(
            cfg.pin.expose().as_bytes(),
        )));
        let pin = AuthPin::from(cfg.pin.expose().to_owned());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) => {
                module.logins.insert(cfg.token_label.clone(), pin_hash);
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => return Err(Error::WrongMasterKey),
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                if let Some(known) = module.logins.get(&cfg.token_label)
                    && aws_lc_rs::constant_time::verify_slices_are_equal(
                        known.as_ref(),
                        pin_hash.as_ref(),
                    )
                    .is_err()
                {
                    return Err(Error::WrongMasterKey);
                }
            }
            Err(e) => return Err(ck(format!("logging in to token {:?}", cfg.token_label))(e)),
        }
        Ok(Token {
            session: Arc::new(Mutex::new(session)),
            label: cfg.token_label.clone(),
        })
    }

    /// Creates the AES-256 wrapping key (sensitive, non-extractable) for a new vault.
    pub(crate) fn create_wrap_key(&self) -> Result<(WrapKey, Pkcs11Record), Error> {
        let id = random::<16>()?;
        let label = format!("moat-vault-wrap-{}", hex::encode(&id[..4]));
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let handle = lock(&self.session)
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(ck("generating the AES wrapping key"))?;
        let record = Pkcs11Record {
            token_label: self.label.clone(),
            wrap_key_label: label,
            wrap_key_id: hex::encode(id),
        };
        Ok((
            WrapKey {
                session: self.session.clone(),
                handle,
            },
            record,
        ))
    }

    /// Finds the wrapping key recorded in `vault.json`; absent means another token.
    pub(crate) fn find_wrap_key(&self, id: Vec<u8>) -> Result<WrapKey, Error> {
        let handles = lock(&self.session)
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(id)])
            .map_err(ck("finding the AES wrapping key"))?;
        match handles.as_slice() {
            [handle] => Ok(WrapKey {
                session: self.session.clone(),
                handle: *handle,
            }),
            _ => Err(Error::WrongMasterKey),
        }
    }

    /// Generates a P-256 key pair inside the token (private half sensitive, non-extractable).
    pub(crate) fn generate_key(&self, label: &str) -> Result<(KeyRef, HubKey), Error> {
        let id = random::<16>()?;
        let label = format!("{label}-{}", hex::encode(&id[..4]));
        let (priv_handle, point) = self.generate_pair(&label, &id)?;
        let key_ref = KeyRef(format!("{KEYREF_PREFIX}{label}:{}", hex::encode(id)));
        let key = HubKey::pkcs11(self.session.clone(), priv_handle, point, key_ref.0.clone());
        Ok((key_ref, key))
    }

    /// Generates a P-256 key pair inside the token under exactly `label` (CKA_LABEL of both
    /// halves; CKA_ID random), for callers that name their keys themselves (a device's key
    /// store). The private half is CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE and not
    /// CKA_EXTRACTABLE: it never leaves the token. Refuses with [`Error::KeyExists`] when the
    /// token already holds a key with that label.
    pub fn generate_named_key(&self, label: &str) -> Result<HubKey, Error> {
        if !self
            .find_by_label(ObjectClass::PRIVATE_KEY, label)?
            .is_empty()
            || !self
                .find_by_label(ObjectClass::PUBLIC_KEY, label)?
                .is_empty()
        {
            return Err(Error::KeyExists(label.to_owned()));
        }
        let id = random::<16>()?;
        let (priv_handle, point) = self.generate_pair(label, &id)?;
        Ok(HubKey::pkcs11(
            self.session.clone(),
            priv_handle,
            point,
            format!("pkcs11 label {label:?}"),
        ))
    }

    /// Finds the P-256 key pair labelled `label` ([`Error::KeyNotFound`] when there is none,
    /// or more than one).
    pub fn find_named_key(&self, label: &str) -> Result<HubKey, Error> {
        let private = self.find_by_label(ObjectClass::PRIVATE_KEY, label)?;
        let public = self.find_by_label(ObjectClass::PUBLIC_KEY, label)?;
        let (&[priv_handle], &[pub_handle]) = (private.as_slice(), public.as_slice()) else {
            return Err(Error::KeyNotFound(label.to_owned()));
        };
        let point = self.ec_point(pub_handle, label)?;
        Ok(HubKey::pkcs11(
            self.session.clone(),
            priv_handle,
            point,
            format!("pkcs11 label {label:?}"),
        ))
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn find_by_label(&self, class: ObjectClass, label: &str) -> Result<Vec<ObjectHandle>, Error> {
        lock(&self.session)
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(ck(format!("finding key {label:?}")))
    }

    /// Generates the pair; returns the private handle and the public point.
    fn generate_pair(&self, label: &str, id: &[u8]) -> Result<(ObjectHandle, Vec<u8>), Error> {
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Verify(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::KeyType(KeyType::EC),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let (pub_handle, priv_handle) = lock(&self.session)
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(ck(format!("generating P-256 key {label:?}")))?;
        let point = self.ec_point(pub_handle, label)?;
        Ok((priv_handle, point))
    }

    /// Finds a key by its `pkcs11:v1:<label>:<hex id>` reference.
    pub(crate) fn load_key(&self, key_ref: &KeyRef) -> Result<HubKey, Error> {
        let (label, id) = parse_key_ref(&key_ref.0)?;
        let find = |class| {
            lock(&self.session)
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(id.clone()),
                ])
                .map_err(ck(format!("finding key {label:?}")))
        };
        let (private, public) = (
            find(ObjectClass::PRIVATE_KEY)?,
            find(ObjectClass::PUBLIC_KEY)?,
        );
        let (&[priv_handle], &[pub_handle]) = (private.as_slice(), public.as_slice()) else {
            return Err(Error::KeyNotFound(key_ref.0.clone()));
        };
        let point = self.ec_point(pub_handle, label)?;
        Ok(HubKey::pkcs11(
            self.session.clone(),
            priv_handle,
            point,
            key_ref.0.clone(),
        ))
    }

    /// The uncompressed SEC1 point of a public key object, checked to be on P-256.
    fn ec_point(&self, handle: ObjectHandle, label: &str) -> Result<Vec<u8>, Error> {
        let attrs = lock(&self.session)
            .get_attributes(handle, &[AttributeType::EcPoint])
            .map_err(ck(format!("reading the public key of {label:?}")))?;
        let raw = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| {
                Error::Crypto(format!("token returned no CKA_EC_POINT for {label:?}"))
            })?;
        let point = unwrap_octet_string(&raw).to_vec();
        p256::PublicKey::from_sec1_bytes(&point).map_err(|e| {
            Error::Crypto(format!(
                "CKA_EC_POINT of {label:?} is not a P-256 point: {e}"
            ))
        })?;
        Ok(point)
    }
}

/// Splits `pkcs11:v1:<label>:<hex id>` (the label may itself contain `:`).
pub(crate) fn parse_key_ref(s: &str) -> Result<(&str, Vec<u8>), Error> {
    let rest = s.strip_prefix(KEYREF_PREFIX).ok_or(Error::BadKeyRef)?;
    let (label, id) = rest.rsplit_once(':').ok_or(Error::BadKeyRef)?;
    let id = hex::decode(id).map_err(bad_key_ref_id)?;
    if label.is_empty() || id.is_empty() {
        return Err(Error::BadKeyRef);
    }
    Ok((label, id))
}

/// The id part of a key reference is not hex; `Error::BadKeyRef` says the reference is
/// malformed, the detail goes to the debug log.
fn bad_key_ref_id(cause: hex::FromHexError) -> Error {
    tracing::debug!(%cause, "PKCS#11 key reference id is not hex");
    Error::BadKeyRef
}

/// CKA_EC_POINT is a DER OCTET STRING around the SEC1 point (PKCS#11 2.40); some tokens
/// return the bare point. Strip the wrapper when it is there.
fn unwrap_octet_string(raw: &[u8]) -> &[u8] {
    match raw {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => raw,
    }
}

/// Signs a message inside the token: SHA-256 here, `CKM_ECDSA` over the digest there.
/// Returns the raw `r‖s` the token produces.
pub(crate) fn sign_raw(
    session: &SharedSession,
    handle: ObjectHandle,
    msg: &[u8],
) -> Result<Vec<u8>, Error> {
    let digest = Sha256::digest(msg);
    lock(session)
        .sign(&Mechanism::Ecdsa, handle, &digest)
        .map_err(ck("signing with CKM_ECDSA"))
}

/// The token's AES-256 key that wraps data keys (AES-GCM, done inside the token).
pub(crate) struct WrapKey {
    session: SharedSession,
    handle: ObjectHandle,
}

impl fmt::Debug for WrapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapKey")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl KeyWrapper for WrapKey {
    fn format(&self) -> u8 {
        FORMAT_TOKEN
    }

    fn wrap(&self, data_key: &[u8; KEY_LEN]) -> Result<([u8; NONCE_LEN], Vec<u8>), Error> {
        let nonce = random::<NONCE_LEN>()?;
        let mut iv = nonce;
        let aad = wrap_aad(FORMAT_TOKEN);
        let params = GcmParams::new(&mut iv, &aad, 128.into()).map_err(ck("AES-GCM parameters"))?;
        let wrapped = lock(&self.session)
            .encrypt(&Mechanism::AesGcm(params), self.handle, data_key)
            .map_err(ck("wrapping a data key (CKM_AES_GCM)"))?;
        Ok((nonce, wrapped))
    }

    fn unwrap(
        &self,
        nonce: &[u8; NONCE_LEN],
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
        let mut iv = *nonce;
        let aad = wrap_aad(FORMAT_TOKEN);
        let params = GcmParams::new(&mut iv, &aad, 128.into()).map_err(ck("AES-GCM parameters"))?;
        let plain = lock(&self.session).decrypt(&Mechanism::AesGcm(params), self.handle, wrapped);
        match plain {
            Ok(p) => to_key(&Zeroizing::new(p)),
            // The standard answer to a failed GCM tag is CKR_ENCRYPTED_DATA_INVALID; SoftHSM
            // 2.6 answers CKR_GENERAL_ERROR. Both mean "does not open" here.
            Err(
                cause @ CkError::Pkcs11(
                    RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::GeneralError,
                    _,
                ),
            ) => {
                tracing::debug!(%cause, "token refused to unwrap a data key");
                Err(Error::Unseal)
            }
            Err(e) => Err(ck("unwrapping a data key (CKM_AES_GCM)")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ref_parsing() {
        let (l, id) = parse_key_ref("pkcs11:v1:ca:root-1a2b:00ff").expect("parse");
        assert_eq!((l, id), ("ca:root-1a2b", vec![0, 0xff]));
        for bad in [
            "pkcs11:v1:",
            "pkcs11:v1:x",
            "pkcs11:v1::00",
            "pkcs11:v1:x:zz",
            "sealed:v1:x:00",
        ] {
            assert!(matches!(parse_key_ref(bad), Err(Error::BadKeyRef)), "{bad}");
        }
    }

    #[test]
    fn octet_string_unwrapping() {
        let mut point = vec![0x04; 65];
        point[1] = 9;
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&point);
        assert_eq!(unwrap_octet_string(&wrapped), point.as_slice());
        assert_eq!(unwrap_octet_string(&point), point.as_slice());
    }
}
