//! rustls glue: the hub's key (in memory or in a PKCS#11 token) as a rustls signing key,
//! and the HTTPS server configuration.

use arc_swap::ArcSwap;
use moat_core::ServerIdentity;
use moat_vault::HubKey;
use rustls::crypto::aws_lc_rs;
use rustls::server::ResolvesServerCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{ServerConfig, SignatureAlgorithm, SignatureScheme};
use std::sync::Arc;

/// A [`HubKey`] (ECDSA P-256) usable by rustls. The key never leaves the vault or token:
/// rustls hands it the handshake transcript to sign.
#[derive(Debug)]
struct HubTlsKey(Arc<HubKey>);

impl SigningKey for HubTlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(HubTlsSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct HubTlsSigner(Arc<HubKey>);

impl Signer for HubTlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // rcgen's P-256 signing is ECDSA-SHA256 with a DER signature: exactly what TLS
        // ECDSA_NISTP256_SHA256 wants.
        rcgen::SigningKey::sign(&*self.0, message)
            .map_err(|e| rustls::Error::General(format!("hub key failed to sign: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// The hub's key as a rustls signing key (for other TLS listeners, e.g. MQTT).
pub fn tls_signing_key(key: Arc<HubKey>) -> Arc<dyn SigningKey> {
    Arc::new(HubTlsKey(key))
}

/// The hub's server certificate and key, for every TLS listener (HTTPS, MQTT, firmware
/// downloads): one resolver, its certificate swapped atomically when it is renewed or rotated.
/// The listeners' `ServerConfig`s are built once; a new handshake gets the certificate of the
/// moment, established connections keep theirs.
#[derive(Debug)]
pub struct ServerCredentials(ArcSwap<CertifiedKey>);

impl ServerCredentials {
    /// Credentials serving `identity`.
    pub fn new(identity: &ServerIdentity) -> Self {
        ServerCredentials(ArcSwap::from_pointee(certified(identity)))
    }

    /// Serves `identity` from the next handshake on.
    pub fn set(&self, identity: &ServerIdentity) {
        self.0.store(Arc::new(certified(identity)));
    }
}

fn certified(identity: &ServerIdentity) -> CertifiedKey {
    CertifiedKey::new(
        identity.chain.clone(),
        tls_signing_key(identity.key.clone()),
    )
}

impl ResolvesServerCert for ServerCredentials {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// TLS 1.2 + 1.3 server configuration of the HTTPS listener (admin API and EST): the hub's
/// server credentials, ALPN h2 and http/1.1, and an *optional* client certificate checked by
/// `client_auth` (the shared [`crate::LiveClientVerifier`]: device CA and registered CAs,
/// revoked serials refused). Admin clients send none and use their bearer token; EST
/// stations and re-enrolling devices present theirs, which handlers read from
/// [`crate::TlsPeer`].
pub fn hub_server_config(
    credentials: Arc<ServerCredentials>,
    client_auth: Arc<dyn ClientCertVerifier>,
) -> Result<ServerConfig, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_auth)
        .with_cert_resolver(credentials);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// TLS configuration of the firmware download listener: the hub's server identity, like
/// [`hub_server_config`], but a client certificate is **required** ([`RequireClientCert`]
/// over the shared verifier, so CA changes and revocations apply at once). A resumed TLS
/// session skips the verifier; the download service re-admits the chain from the registry
/// on every request, so a revocation still holds.
///
/// [`RequireClientCert`]: crate::RequireClientCert
pub fn download_server_config(
    credentials: Arc<ServerCredentials>,
    verifier: Arc<crate::LiveClientVerifier>,
) -> Result<ServerConfig, rustls::Error> {
    let mut cfg = hub_server_config(credentials, Arc::new(crate::RequireClientCert(verifier)))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
