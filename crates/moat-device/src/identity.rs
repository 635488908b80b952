//! A device's TLS identity (certificate chain + [`DeviceKey`]) and the rustls client
//! configurations the SDK builds from it. Client authentication goes through a
//! [`ResolvesClientCert`] holding a [`CertifiedKey`] whose signing key is the device key, so
//! a PKCS#11 key signs the handshake inside its token.

use std::path::Path;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::keystore::DeviceKey;
use crate::{Error, files};

/// The crypto provider of every config the SDK builds (set explicitly: a process that links
/// another rustls provider too must not depend on a process-wide default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Trust anchors from a PEM bundle file (the hub's `ca-bundle.pem`, an MQTT CA bundle).
pub fn roots_from_file(path: &Path) -> Result<RootCertStore, Error> {
    roots_from_certs(&path.display().to_string(), files::read_certs(path)?)
}

/// Trust anchors from certificates; `what` names them in errors.
pub fn roots_from_certs(
    what: &str,
    certs: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| Error::BadInput {
            what: what.to_owned(),
            problem: format!("not a usable trust anchor: {e}"),
        })?;
    }
    if roots.is_empty() {
        return Err(Error::BadInput {
            what: what.to_owned(),
            problem: "holds no CA certificate".into(),
        });
    }
    Ok(roots)
}

/// A certificate chain (leaf first) and the key it certifies.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Leaf first, then any intermediates to send.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: DeviceKey,
}

impl Identity {
    /// Pairs a chain with its key, checking that the leaf certifies this key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: DeviceKey) -> Result<Identity, Error> {
        let leaf = chain.first().ok_or_else(|| Error::BadInput {
            what: "certificate chain".into(),
            problem: "is empty".into(),
        })?;
        let info = moat_pki::cert_info(leaf).map_err(Error::pki("reading the certificate"))?;
        if info.spki_der != key.public_key_der() {
            return Err(Error::BadInput {
                what: format!("certificate {}", info.subject),
                problem: format!(
                    "does not certify key {:?} (wrong key label or certificate file?)",
                    key.label()
                ),
            });
        }
        Ok(Identity { chain, key })
    }

    /// Reads the chain from a PEM file and pairs it with `key`.
    pub fn from_pem_file(path: &Path, key: DeviceKey) -> Result<Identity, Error> {
        Identity::new(files::read_certs(path)?, key)
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // `new` refuses an empty chain and nothing shortens it.
        &self.chain[0]
    }

    /// The leaf's summary (subject, serial, validity).
    pub fn info(&self) -> Result<moat_pki::CertInfo, Error> {
        moat_pki::cert_info(self.leaf()).map_err(Error::pki("reading the certificate"))
    }

    /// A client config that trusts `roots` and authenticates with this identity.
    pub fn client_config(&self, roots: RootCertStore) -> Result<Arc<ClientConfig>, Error> {
        let key = Arc::new(CertifiedKey::new(
            self.chain.clone(),
            self.key.rustls_signing_key(),
        ));
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(Resolver(key)));
        // A resumed TLS 1.3 session carries the certificate of the first handshake: after a
        // renewal the hub must see the new one, so every connection is a full handshake.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// Always offers the one identity (if the server accepts ECDSA P-256 signatures).
#[derive(Debug)]
struct Resolver(Arc<CertifiedKey>);

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        sigschemes
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client config that trusts `roots` and presents a software key from PEM files (a
/// factory station's certificate and key).
pub fn pem_client_config(
    roots: RootCertStore,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, Error> {
    let chain = files::read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::BadInput {
        what: key.display().to_string(),
        problem: format!("not a PEM private key: {e}"),
    })?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(Error::Tls)?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A client config without client authentication.
pub fn anonymous_client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, Error> {
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// When a certificate should be renewed: when less than `fraction_left` of its lifetime, or
/// less than `min_left`, remains — whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RenewPolicy {
    /// Fraction of the whole validity period (0.0–1.0) below which to renew.
    pub fraction_left: f64,
    /// Absolute remaining time below which to renew.
    pub min_left: std::time::Duration,
}

impl Default for RenewPolicy {
    /// A third of the lifetime left, or a day — the hub renews its own server certificate
    /// at a third too.
    fn default() -> Self {
        RenewPolicy {
            fraction_left: 1.0 / 3.0,
            min_left: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

impl RenewPolicy {
    /// Whether a certificate valid `not_before..not_after` is due for renewal at `now`.
    pub fn due(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> bool {
        let lifetime = (not_after - not_before).as_seconds_f64().max(0.0);
        let left = (not_after - now).as_seconds_f64();
        left <= lifetime * self.fraction_left.clamp(0.0, 1.0) || left <= self.min_left.as_secs_f64()
    }

    /// Whether `identity`'s leaf is due at `now`.
    pub fn due_for(&self, identity: &Identity, now: OffsetDateTime) -> Result<bool, Error> {
        let info = identity.info()?;
        Ok(self.due(info.not_before, info.not_after, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use time::macros::datetime;

    #[test]
    fn renewal_is_due_at_the_fraction_or_the_floor() {
        let nb = datetime!(2030-01-01 0:00 UTC);
        let na = datetime!(2030-01-31 0:00 UTC); // 30 days
        let p = RenewPolicy {
            fraction_left: 0.25,
            min_left: Duration::from_secs(3600),
        };
        assert!(!p.due(nb, na, datetime!(2030-01-20 0:00 UTC))); // 11 days left
        assert!(p.due(nb, na, datetime!(2030-01-24 0:00 UTC))); // 7 days < 7.5
        assert!(p.due(nb, na, datetime!(2030-02-05 0:00 UTC))); // expired
        let floor = RenewPolicy {
            fraction_left: 0.0,
            min_left: Duration::from_secs(2 * 24 * 3600),
        };
        assert!(!floor.due(nb, na, datetime!(2030-01-28 0:00 UTC)));
        assert!(floor.due(nb, na, datetime!(2030-01-29 12:00 UTC)));
        // A fraction over 1 means "always": clamped, not an overflow.
        let always = RenewPolicy {
            fraction_left: 7.0,
            min_left: Duration::ZERO,
        };
        assert!(always.due(nb, na, nb));
    }
}
