//! PKCS#10 checks: signature, key type, no CA request, size.

use crate::info::{cert_subject_alt_names, common_name, general_name, parse_cert};
use crate::{Error, dn, pem};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::error::X509Error;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_SUBJECT_ALT_NAME,
    OID_X509_SERIALNUMBER,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// CSRs larger than this are refused before parsing (a P-384 or RSA-4096 CSR is < 2 KiB).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// The largest RSA modulus we accept: what the signature verifier supports.
pub const MAX_RSA_BITS: u32 = 8192;

/// The smallest RSA modulus we accept.
pub const MIN_RSA_BITS: u32 = 2048;

/// The key algorithms we issue for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrKeyAlgorithm {
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// Ed25519.
    Ed25519,
    /// RSA with this many modulus bits (>= 2048).
    Rsa(u32),
}

/// A CSR whose signature verified and whose key we accept.
#[derive(Debug)]
pub struct CheckedCsr {
    /// The subject public key, ready to issue on.
    pub public_key: rcgen::SubjectPublicKeyInfo,
    /// DER SubjectPublicKeyInfo (for fingerprints and duplicate-key checks).
    pub spki_der: Vec<u8>,
    /// Its algorithm.
    pub algorithm: CsrKeyAlgorithm,
    /// Subject CN, if the CSR has one (informational; the hub sets the subject itself).
    pub common_name: Option<String>,
    /// Subject serialNumber attribute (2.5.4.5), if present (EST factory enrollment uses it).
    pub serial_number: Option<String>,
    /// The whole subject, RFC 4514 (EST re-enrollment compares it with the current
    /// certificate's).
    pub subject: String,
    /// Requested subject alternative names (extensionRequest), as `DNS:…`, `URI:…`, `IP:…`.
    pub subject_alt_names: Vec<String>,
}

/// What an EST re-enrollment request asks for (RFC 7030 §4.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The CSR carries the current certificate's key: a renewal.
    SameKey,
    /// The CSR carries a new key: a re-key.
    NewKey,
}

impl Renewal {
    /// `renew` or `rekey`.
    pub fn as_str(self) -> &'static str {
        match self {
            Renewal::SameKey => "renew",
            Renewal::NewKey => "rekey",
        }
    }
}

/// RFC 7030 §4.2.2: a re-enrollment CSR's subject and subjectAltName must be identical to the
/// certificate being renewed (compared as RFC 4514 strings and as the set of names, so a
/// PrintableString/UTF8String difference in encoding does not count). Says whether it is a
/// renewal (same key) or a re-key.
pub fn check_renewal(csr: &CheckedCsr, current_cert: &[u8]) -> Result<Renewal, Error> {
    let cert = parse_cert(current_cert)?;
    let subject = dn::rfc4514(cert.subject());
    if csr.subject != subject {
        return Err(Error::RenewalMismatch {
            field: "subject",
            requested: csr.subject.clone(),
            current: subject,
        });
    }
    let mut current = cert_subject_alt_names(&cert)?;
    let mut requested = csr.subject_alt_names.clone();
    current.sort();
    requested.sort();
    if requested != current {
        return Err(Error::RenewalMismatch {
            field: "subjectAltName",
            requested: requested.join(", "),
            current: current.join(", "),
        });
    }
    Ok(if cert.public_key().raw == csr.spki_der.as_slice() {
        Renewal::SameKey
    } else {
        Renewal::NewKey
    })
}

/// Parses a CSR given as PEM or DER, refuses it if larger than [`MAX_CSR_BYTES`], if its
/// signature does not verify, if its key is not P-256/P-384/Ed25519/RSA>=2048, or if it
/// requests basicConstraints CA:TRUE. Other requested extensions are ignored (the hub sets
/// every extension itself).
pub fn check_csr(input: &[u8]) -> Result<CheckedCsr, Error> {
    if input.len() > MAX_CSR_BYTES {
        return Err(Error::CsrTooLarge {
            size: input.len(),
            limit: MAX_CSR_BYTES,
        });
    }
    let der = if pem::looks_like_pem(input) {
        pem::first_block(
            input,
            &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
            "CSR",
        )?
    } else {
        input.to_vec()
    };
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} trailing bytes after the CSR",
            rest.len()
        )));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;

    // Key first: a small RSA key must read as "unsupported", not as a bad signature.
    let algorithm = key_algorithm(spki)?;
    match csr.verify_signature() {
        Ok(()) => {}
        Err(X509Error::SignatureUnsupportedAlgorithm) => {
            return Err(Error::UnsupportedKey(format!(
                "signature algorithm {}",
                csr.signature_algorithm.algorithm
            )));
        }
        Err(_verification_failed) => return Err(Error::CsrBadSignature),
    }
    refuse_ca_request(&csr)?;
    let subject_alt_names = requested_sans(&csr)?;

    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| Error::UnsupportedKey(format!("{algorithm:?}: {e}")))?;
    let serial_number = info
        .subject
        .iter_by_oid(&OID_X509_SERIALNUMBER)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    Ok(CheckedCsr {
        public_key,
        spki_der: spki.raw.to_vec(),
        algorithm,
        common_name: common_name(&info.subject),
        serial_number,
        subject: dn::rfc4514(&info.subject),
        subject_alt_names,
    })
}

fn malformed(detail: String) -> Error {
    Error::Malformed {
        what: "CSR",
        detail,
    }
}

fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Result<CsrKeyAlgorithm, Error> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(CsrKeyAlgorithm::EcP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(CsrKeyAlgorithm::EcP384),
            Some(c) => Err(Error::UnsupportedKey(format!("EC curve {c}"))),
            None => Err(Error::UnsupportedKey("EC key without a named curve".into())),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return Ok(CsrKeyAlgorithm::Ed25519);
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let (_, rsa) = RSAPublicKey::from_der(&spki.subject_public_key.data)
            .map_err(|e| malformed(format!("RSA public key: {e}")))?;
        let bits = modulus_bits(rsa.modulus);
        if bits < MIN_RSA_BITS {
            return Err(Error::UnsupportedKey(format!("RSA {bits} bits")));
        }
        if bits > MAX_RSA_BITS {
            return Err(Error::UnsupportedKey(format!(
                "RSA {bits} bits (at most {MAX_RSA_BITS})"
            )));
        }
        return Ok(CsrKeyAlgorithm::Rsa(bits));
    }
    Err(Error::UnsupportedKey(format!("key algorithm {alg}")))
}

/// Why a certificate's key or signature is weaker than what the hub accepts (the CSR key
/// policy: EC P-256/P-384, Ed25519, RSA ≥ 2048 bits; no MD5 or SHA-1 signature below a
/// self-signed root), if it is. For the posture audit of CA certificates.
pub fn weak_key(cert_der: &[u8]) -> Result<Option<String>, Error> {
    let cert = crate::info::parse_cert(cert_der)?;
    if let Err(e) = key_algorithm(cert.public_key()) {
        return match e {
            Error::UnsupportedKey(why) => Ok(Some(why)),
            e => Err(e),
        };
    }
    const WEAK_SIGNATURES: [(&str, &str); 4] = [
        ("1.2.840.113549.1.1.4", "MD5 with RSA"),
        ("1.2.840.113549.1.1.5", "SHA-1 with RSA"),
        ("1.2.840.10045.4.1", "ECDSA with SHA-1"),
        ("1.2.840.10040.4.3", "DSA with SHA-1"),
    ];
    let self_signed = cert.subject() == cert.issuer();
    let sig = cert.signature_algorithm.algorithm.to_id_string();
    Ok(WEAK_SIGNATURES
        .iter()
        .find(|(oid, _)| *oid == sig && !self_signed)
        .map(|(_, name)| format!("signed with {name}")))
}

/// Bit length of a big-endian unsigned integer (leading zero bytes and bits ignored).
fn modulus_bits(modulus: &[u8]) -> u32 {
    let Some(start) = modulus.iter().position(|b| *b != 0) else {
        return 0;
    };
    let significant = &modulus[start..];
    let len = u32::try_from(significant.len()).unwrap_or(u32::MAX / 8);
    len * 8 - significant[0].leading_zeros()
}

/// The subject alternative names the CSR's extensionRequest asks for (empty if none).
fn requested_sans(csr: &X509CertificationRequest<'_>) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for attr in csr.certification_request_info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            continue;
        };
        for ext in req
            .extensions
            .iter()
            .filter(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME)
        {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    names.extend(san.general_names.iter().map(general_name));
                }
                other => {
                    return Err(malformed(format!(
                        "unreadable subjectAltName request: {other:?}"
                    )));
                }
            }
        }
    }
    Ok(names)
}

/// Refuses a CSR whose extensionRequest asks for basicConstraints CA:TRUE (or carries a
/// basicConstraints request we cannot read, which we treat as malformed).
fn refuse_ca_request(csr: &X509CertificationRequest<'_>) -> Result<(), Error> {
    for attr in csr.certification_request_info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &req.extensions {
            if ext.oid != OID_X509_EXT_BASIC_CONSTRAINTS {
                continue;
            }
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(Error::CsrRequestsCa),
                ParsedExtension::BasicConstraints(_) => {}
                other => {
                    return Err(malformed(format!(
                        "unreadable basicConstraints request: {other:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}
