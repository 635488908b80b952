//! Third-party CAs (e.g. a secure-element vendor's), registered with proof of possession
//! of the CA key through a one-time registration code.

use crate::{Actor, Error, Event, Hub, Secret, hash_token};
use moat_pki::IdentityRule;
use moat_store::{CaKind, CaRecord};
use rand::RngCore;
use time::OffsetDateTime;

/// A CA to register.
#[derive(Clone, Debug)]
pub struct RegisterCa {
    /// Registry name; default `ca-` + the first 12 hex digits of the certificate's SHA-256.
    pub name: Option<String>,
    /// The CA certificate (PEM or DER).
    pub cert: Vec<u8>,
    /// A certificate with CN = a registration code, signed by the CA's key.
    pub verification_cert: Vec<u8>,
    /// Where device identities are read from in certificates this CA issues.
    pub identity: IdentityRule,
    /// Create devices on first sight of a valid certificate from this CA.
    pub auto_register: bool,
}

impl Hub {
    /// A new one-time registration code (shown once; only its hash is stored).
    pub async fn registration_code(&self, actor: &Actor) -> Result<Secret, Error> {
        let result = async {
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            let code = Secret::new(hex::encode(bytes));
            let now = OffsetDateTime::now_utc();
            self.store()
                .insert_registration_code(
                    &hash_token(code.expose()),
                    now,
                    now + self.cfg.registration_code_ttl,
                )
                .await?;
            Ok(code)
        }
        .await;
        self.audited(actor, "ca.registration_code", None, result)
            .await
    }

    /// Registers a CA if the verification certificate proves possession of its key with an
    /// unused, unexpired code. The code is burned by a successful check.
    pub async fn register_ca(&self, req: RegisterCa, actor: &Actor) -> Result<CaRecord, Error> {
        let target = req.name.clone();
        let result = self.register_ca_inner(req).await;
        if let Ok(ca) = &result {
            self.emit(Event::CaRegistered {
                name: ca.name.clone(),
            });
        }
        let target = result.as_ref().map(|c| c.name.clone()).ok().or(target);
        self.audited(actor, "ca.register", target.as_deref(), result)
            .await
    }

    async fn register_ca_inner(&self, req: RegisterCa) -> Result<CaRecord, Error> {
        let ca_der = moat_pki::pem_to_der(&req.cert, "CERTIFICATE")?;
        let verify_der = moat_pki::pem_to_der(&req.verification_cert, "CERTIFICATE")?;
        let ca_info = moat_pki::cert_info(&ca_der)?;
        let code = moat_pki::cert_info(&verify_der)?
            .common_name
            .ok_or(moat_pki::Error::VerificationCodeMismatch)?;
        let now = OffsetDateTime::now_utc();
        let code_hash = hash_token(&code);
        if !self
            .store()
            .registration_code_usable(&code_hash, now)
            .await?
        {
            return Err(Error::RegistrationCode);
        }
        moat_pki::check_proof_of_possession(&ca_der, &verify_der, &code)?;
        if ca_info.not_after < now {
            return Err(Error::Invalid("the CA certificate has expired".into()));
        }
        let name = match req.name {
            Some(n) => {
                crate::validate_device_id(&n).map_err(|_| {
                    Error::Invalid(format!(
                        "CA name {n:?} may only contain letters, digits, '.', '_', ':' and '-'"
                    ))
                })?;
                n
            }
            None => format!("ca-{}", &ca_info.fingerprint_sha256[..12]),
        };
        if self.store().ca(&name).await?.is_some() {
            return Err(Error::Conflict {
                kind: "CA",
                id: name,
            });
        }
        if self
            .store()
            .list_cas()
            .await?
            .iter()
            .any(|c| c.fingerprint == ca_info.fingerprint_sha256)
        {
            return Err(Error::Conflict {
                kind: "CA certificate",
                id: ca_info.fingerprint_sha256,
            });
        }
        if !self
            .store()
            .consume_registration_code(&code_hash, now)
            .await?
        {
            return Err(Error::RegistrationCode);
        }
        let rec = CaRecord {
            name,
            kind: CaKind::Registered,
            cert_der: ca_der,
            key_ref: None,
            identity_rule: req.identity.as_str().to_string(),
            auto_register: req.auto_register,
            fingerprint: ca_info.fingerprint_sha256,
            created_at: now,
        };
        self.store().insert_ca(&rec).await?;
        self.client_ca_cache.invalidate();
        Ok(rec)
    }

    /// Every CA: the hub's own and the registered ones.
    pub async fn list_cas(&self) -> Result<Vec<CaRecord>, Error> {
        Ok(self.store().list_cas().await?)
    }

    /// Removes a registered CA. Its devices can no longer authenticate. The hub's own CAs
    /// cannot be removed.
    pub async fn remove_ca(&self, name: &str, actor: &Actor) -> Result<(), Error> {
        let result = async {
            let ca = self
                .store()
                .ca(name)
                .await?
                .ok_or_else(|| Error::NotFound {
                    kind: "CA",
                    id: name.to_string(),
                })?;
            if ca.kind != CaKind::Registered {
                return Err(Error::State(format!(
                    "{name:?} is one of the hub's own CAs and cannot be removed"
                )));
            }
            self.store().delete_ca(name).await?;
            self.client_ca_cache.invalidate();
            self.emit(Event::CaRemoved {
                name: name.to_string(),
            });
            Ok(())
        }
        .await;
        self.audited(actor, "ca.remove", Some(name), result).await
    }
}
