//! Reading certificates: PEM/DER conversion and a summary of the fields the registry keeps.

use crate::{Error, Serial, dn, pem};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// What the registry and the CLI show about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial, lowercase hex (as [`crate::Serial::to_hex`]).
    pub serial: String,
    /// Subject, RFC 4514 string.
    pub subject: String,
    /// Issuer, RFC 4514 string.
    pub issuer: String,
    /// Subject CN, if any.
    pub common_name: Option<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// SHA-256 of the whole DER certificate, lowercase hex.
    pub fingerprint_sha256: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex (same key ⇒ same value).
    pub spki_sha256: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

/// Parses one DER certificate, refusing trailing bytes.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| Error::Malformed {
        what: "certificate",
        detail: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(Error::Malformed {
            what: "certificate",
            detail: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

/// basicConstraints CA:TRUE (a duplicated extension is malformed).
pub(crate) fn is_ca(cert: &X509Certificate<'_>) -> Result<bool, Error> {
    let bc = cert.basic_constraints().map_err(|e| Error::Malformed {
        what: "certificate",
        detail: e.to_string(),
    })?;
    Ok(bc.is_some_and(|bc| bc.value.ca))
}

/// The first subject CN that is a readable string.
pub(crate) fn common_name(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// A general name as the renewal check compares it: `DNS:…`, `URI:…`, `IP:…`, `email:…`,
/// `DirName:…`, or the DER of anything else in hex.
pub(crate) fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(v) => format!("DNS:{v}"),
        GeneralName::URI(v) => format!("URI:{v}"),
        GeneralName::RFC822Name(v) => format!("email:{v}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => format!("IP:{}", std::net::Ipv4Addr::from([b[0], b[1], b[2], b[3]])),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                format!("IP:{}", std::net::Ipv6Addr::from(a))
            }
            _ => format!("IP:#{}", hex::encode(b)),
        },
        GeneralName::DirectoryName(n) => format!("DirName:{}", dn::rfc4514(n)),
        GeneralName::RegisteredID(oid) => format!("RID:{oid}"),
        other => format!("other:{other:?}"),
    }
}

/// The subject alternative names of a DER certificate as [`general_name`] writes them, in
/// certificate order (empty without the extension).
pub(crate) fn cert_subject_alt_names(cert: &X509Certificate<'_>) -> Result<Vec<String>, Error> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Malformed {
            what: "certificate",
            detail: e.to_string(),
        })?;
    Ok(san
        .map(|s| s.value.general_names.iter().map(general_name).collect())
        .unwrap_or_default())
}

/// The serial of a DER certificate, without summarising the rest (a hot path: the MQTT
/// hub checks it against the revoked set on every handshake).
pub fn serial_of(der: &[u8]) -> Result<Serial, Error> {
    Ok(Serial::from_bytes(parse_cert(der)?.raw_serial()))
}

/// A certificate's issuer name (raw DER) and serial: what identifies it for revocation
/// (a serial is unique per issuer, RFC 5280 §4.1.2.2).
pub fn issuer_and_serial(der: &[u8]) -> Result<(Vec<u8>, Serial), Error> {
    let cert = parse_cert(der)?;
    Ok((
        cert.issuer().as_raw().to_vec(),
        Serial::from_bytes(cert.raw_serial()),
    ))
}

/// A certificate's subject name (raw DER), to match a CA with its certificates' issuer.
pub fn subject_name_der(der: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(parse_cert(der)?.subject().as_raw().to_vec())
}

/// Summarises a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, Error> {
    let cert = parse_cert(der)?;
    let spki_der = cert.public_key().raw.to_vec();
    Ok(CertInfo {
        serial: Serial::from_bytes(cert.raw_serial()).to_hex(),
        subject: dn::rfc4514(cert.subject()),
        issuer: dn::rfc4514(cert.issuer()),
        common_name: common_name(cert.subject()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: is_ca(&cert)?,
        fingerprint_sha256: hex::encode(Sha256::digest(der)),
        spki_sha256: hex::encode(Sha256::digest(&spki_der)),
        spki_der,
    })
}

/// All `CERTIFICATE` blocks of a PEM text, in order, as DER. Refuses input with none.
/// Also accepts a single DER certificate.
pub fn parse_cert_chain_pem(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    if !pem::looks_like_pem(input) {
        parse_cert(input)?;
        return Ok(vec![CertificateDer::from(input.to_vec())]);
    }
    let certs: Vec<CertificateDer<'static>> = pem::blocks(input, "certificate")?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| parse_cert(&b.contents).map(|_| CertificateDer::from(b.contents.clone())))
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(Error::Malformed {
            what: "certificate",
            detail: "no CERTIFICATE PEM block found".into(),
        });
    }
    Ok(certs)
}

/// The first PEM block with label `label` as DER; if `input` is not PEM, returns it as is.
pub fn pem_to_der(input: &[u8], label: &str) -> Result<Vec<u8>, Error> {
    if !pem::looks_like_pem(input) {
        return Ok(input.to_vec());
    }
    let what = match label {
        "CERTIFICATE" => "certificate",
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => "CSR",
        "X509 CRL" => "CRL",
        "PUBLIC KEY" => "public key",
        _ => "PEM block",
    };
    pem::first_block(input, &[label], what)
}

/// `-----BEGIN CERTIFICATE-----` PEM of a DER certificate.
pub fn pem_of_cert(der: &[u8]) -> String {
    pem::encode("CERTIFICATE", der)
}

/// `-----BEGIN X509 CRL-----` PEM of a DER CRL.
pub fn pem_of_crl(der: &[u8]) -> String {
    pem::encode("X509 CRL", der)
}
