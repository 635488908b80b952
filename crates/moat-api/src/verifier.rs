//! The client-certificate verifier of the hub's TLS listeners (MQTT, and the HTTPS listener
//! for EST): webpki chain verification against the CAs the hub trusts *now* (rebuilt when a
//! CA is registered or removed), plus an O(1) revoked-serial check, without a CRL parse per
//! handshake. Swapped in place, so the `ServerConfig`s that hold it never need rebuilding
//! and healthy connections stay up. One instance serves every listener; whoever follows the
//! hub's events calls [`LiveClientVerifier::apply`].
//!
//! Client certificates are optional here (token devices, admin API clients): the listener's
//! protocol decides what a connection without one may do.

use arc_swap::ArcSwap;
use moat_core::{CaRecord, Event, Hub};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use std::collections::HashSet;
use std::sync::Arc;

/// Why the verifier could not load the hub's trust state.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// The registry could not be read.
    #[error("cannot read the client trust anchors and revoked serials from the registry")]
    Registry(#[source] moat_core::Error),
    /// rustls refused to build a verifier over the anchors.
    #[error("cannot build the client-certificate verifier")]
    Build(#[source] rustls::server::VerifierBuilderError),
}

/// Verifies client certificates against live trust state.
#[derive(Debug)]
pub struct LiveClientVerifier {
    provider: Arc<CryptoProvider>,
    algs: WebPkiSupportedAlgorithms,
    /// webpki over the current client CAs; None while the hub trusts no CA at all.
    inner: ArcSwap<Option<Arc<dyn ClientCertVerifier>>>,
    /// Serials (lowercase hex) of every revoked certificate, of every CA.
    revoked: ArcSwap<HashSet<String>>,
}

impl LiveClientVerifier {
    /// A verifier trusting nothing yet; call [`Self::set_cas`] and [`Self::set_revoked`].
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        let algs = provider.signature_verification_algorithms;
        LiveClientVerifier {
            provider,
            algs,
            inner: ArcSwap::from_pointee(None),
            revoked: ArcSwap::from_pointee(HashSet::new()),
        }
    }

    /// Loads trust anchors and the revoked set from the registry.
    pub async fn sync(&self, hub: &Hub) -> Result<(), VerifierError> {
        self.set_cas(&hub.client_cas().await.map_err(VerifierError::Registry)?)?;
        let revoked = hub
            .store()
            .all_revoked_serials()
            .await
            .map_err(|e| VerifierError::Registry(e.into()))?;
        self.set_revoked(revoked.into_iter().collect());
        Ok(())
    }

    /// Applies a registry event: revoked serials join the revoked set, CA registration and
    /// removal reload the trust anchors. Other events change nothing here.
    pub async fn apply(&self, hub: &Hub, event: &Event) {
        match event {
            Event::DeviceRevoked { serials, .. } => self.add_revoked(serials),
            Event::CertificateRevoked { serial, .. } => {
                self.add_revoked(std::slice::from_ref(serial));
            }
            Event::CaRegistered { .. } | Event::CaRemoved { .. } => self.resync(hub).await,
            _ => {}
        }
    }

    /// [`Self::sync`], logging a failure (the previous state stays in force): for event loops
    /// that must go on, e.g. after missing events.
    pub async fn resync(&self, hub: &Hub) {
        if let Err(e) = self.sync(hub).await {
            tracing::error!(error = ?e, "cannot refresh the client-certificate verifier");
        }
    }

    /// Trusts exactly these CAs for client certificates from now on.
    pub fn set_cas(&self, cas: &[CaRecord]) -> Result<(), VerifierError> {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            if let Err(e) = roots.add(CertificateDer::from(ca.cert_der.clone())) {
                tracing::warn!(ca = %ca.name, error = %e, "CA certificate unusable as a trust anchor");
            }
        }
        let inner: Option<Arc<dyn ClientCertVerifier>> = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(VerifierError::Build)?,
            )
        };
        self.inner.store(Arc::new(inner));
        Ok(())
    }

    /// Replaces the revoked set.
    pub fn set_revoked(&self, serials: HashSet<String>) {
        self.revoked.store(Arc::new(serials));
    }

    /// Adds newly revoked serials (copy-on-write: handshakes never wait for it).
    pub fn add_revoked(&self, serials: &[String]) {
        self.revoked.rcu(|cur| {
            let mut next = HashSet::clone(cur);
            next.extend(serials.iter().cloned());
            next
        });
    }

    /// Whether a serial is in the revoked set.
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        self.revoked.load().contains(serial_hex)
    }
}

impl ClientCertVerifier for LiveClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Token devices (policy allow_insecure) use server TLS and CONNECT decides; admin API
        // clients use a bearer token; EST handlers decide what needs a certificate.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional (RFC 8446 §4.2.4); the set changes at run time.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let serial = moat_pki::serial_of(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.is_revoked(&serial.to_hex()) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        match self.inner.load().as_ref() {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
