//! Client TLS for the load generator: the device's own certificate, the target's CA as the
//! only trust anchor, and a server certificate pinned after its first full verification so
//! that later handshakes skip the chain walk (they still verify the server's handshake
//! signature). Session resumption is off: every connection is a full handshake.

use super::Error;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Key exchange offered by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyExchange {
    /// X25519 only: what a small device offers, and what OpenSSL 3.0 (Mosquitto) picks.
    X25519,
    /// P-256 ECDHE only.
    P256,
    /// rustls' default list (with aws-lc-rs: the X25519MLKEM768 hybrid first).
    Default,
}

/// The crypto provider for `kx`.
pub fn provider(kx: KeyExchange) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    match kx {
        KeyExchange::X25519 => p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        KeyExchange::P256 => p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::SECP256R1],
        KeyExchange::Default => {}
    }
    Arc::new(p)
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| Error::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Reads a private key (PKCS#8, SEC1 or PKCS#1 PEM).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| Error::Pem {
        path: path.to_owned(),
        source,
    })
}

/// Verifies the server against the given CAs once, then accepts that same certificate
/// (byte for byte) without walking the chain again. One verifier serves one target.
#[derive(Debug)]
pub struct PinningVerifier {
    inner: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    /// The end-entity certificate that passed a full verification.
    pinned: OnceLock<Vec<u8>>,
}

impl PinningVerifier {
    /// Trusts the certificates in `ca_file` (PEM) as roots.
    pub fn from_ca_file(ca_file: &Path, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(read_certs(ca_file)?);
        if added == 0 {
            return Err(Error::NoCertificate(ca_file.to_owned()));
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(Error::Verifier)?;
        Ok(PinningVerifier {
            inner,
            provider,
            pinned: OnceLock::new(),
        })
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .get()
            .is_some_and(|p| p.as_slice() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        // First verified certificate wins; a later, different one is verified every time.
        let _already = self.pinned.set(end_entity.to_vec());
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3 client configuration presenting `chain`/`key`, checking the server with
/// `verifier`, without session resumption.
pub fn client_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<PinningVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, Error> {
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(Error::Tls)?;
    cfg.resumption = Resumption::disabled();
    Ok(Arc::new(cfg))
}
