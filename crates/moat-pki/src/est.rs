//! The objects EST (RFC 7030) puts on the wire besides PKCS#10: certs-only CMS SignedData
//! (`/cacerts`, `/simpleenroll` responses) and the CSR attributes (`/csrattrs`). Built with
//! RustCrypto's `cms` and `der` crates, not hand-written ASN.1. Also the request bodies'
//! transfer encoding ([`decode_est_body`]): the HTTP layer maps its errors, this crate decodes.
//!
//! ```text
//!   ContentInfo { id-signedData, SignedData {
//!       version 1, digestAlgorithms {}, encapContentInfo { id-data, no content },
//!       certificates { cert, … }, crls {}, signerInfos {} } }     -- "degenerate": unsigned
//! ```

use crate::Error;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::asn1::{Any, ObjectIdentifier, SetOfVec};
use der::{Decode, Encode};
use rustls_pki_types::CertificateDer;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;

/// id-signedData (RFC 5652).
const ID_SIGNED_DATA: ObjectIdentifier = const_oid::db::rfc5911::ID_SIGNED_DATA;
/// id-ecPublicKey.
const ID_EC_PUBLIC_KEY: ObjectIdentifier = const_oid::db::rfc5912::ID_EC_PUBLIC_KEY;
/// secp256r1 (P-256).
const SECP256R1: ObjectIdentifier = const_oid::db::rfc5912::SECP_256_R_1;
/// ecdsa-with-SHA256.
const ECDSA_WITH_SHA256: ObjectIdentifier = const_oid::db::rfc5912::ECDSA_WITH_SHA_256;

/// Base64 that tolerates missing padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The CSR of an EST request body (`simpleenroll`, `simplereenroll`, `serverkeygen`): base64
/// DER with any whitespace, line breaks included, and padding optional (RFC 8951 §3.2); or a
/// PEM CSR, returned as it is (trimmed) since [`crate::check_csr`] reads PEM and DER alike.
pub fn decode_est_body(body: &[u8]) -> Result<Vec<u8>, Error> {
    let text = body.trim_ascii();
    if text.is_empty() {
        return Err(Error::EstBodyEmpty);
    }
    if text.starts_with(b"-----BEGIN") {
        return Ok(text.to_vec());
    }
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    LENIENT.decode(&compact).map_err(Error::EstBodyNotBase64)
}

/// A degenerate certs-only CMS SignedData (DER) carrying `certs` (RFC 7030 §4.1.3, §4.2.3).
/// SET OF is sorted in DER, so the certificates come out in DER order, not `certs` order.
pub fn certs_only(certs: &[CertificateDer<'_>]) -> Result<Vec<u8>, Error> {
    let parsed = certs
        .iter()
        .map(|c| Certificate::from_der(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Cms)?;
    let info = ContentInfo::try_from(parsed).map_err(Error::Cms)?;
    info.to_der().map_err(Error::Cms)
}

/// The certificates of a certs-only CMS SignedData (DER), in the order they are encoded.
pub fn parse_certs_only(der: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let info = ContentInfo::from_der(der).map_err(Error::Cms)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(Error::Malformed {
            what: "certs-only CMS",
            detail: format!("content type {} is not id-signedData", info.content_type),
        });
    }
    let signed: SignedData = info.content.decode_as().map_err(Error::Cms)?;
    let Some(set) = signed.certificates else {
        return Ok(Vec::new());
    };
    set.0
        .iter()
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(c) => Some(c),
            CertificateChoices::Other(_) => None,
        })
        .map(|c| c.to_der().map(CertificateDer::from).map_err(Error::Cms))
        .collect()
}

/// The `/csrattrs` answer (RFC 7030 §4.5.2, DER `CsrAttrs`): what the hub wants in a CSR — a
/// P-256 key (`id-ecPublicKey` with `secp256r1`) signed with ECDSA-SHA256. The hub accepts
/// other keys too (see [`crate::check_csr`]); this is the recommendation EST clients follow.
pub fn csr_attributes() -> Result<Vec<u8>, Error> {
    let mut curve = SetOfVec::new();
    curve
        .insert(Any::encode_from(&SECP256R1).map_err(Error::Cms)?)
        .map_err(Error::Cms)?;
    let ec_key = Attribute {
        oid: ID_EC_PUBLIC_KEY,
        values: curve,
    };
    // CsrAttrs ::= SEQUENCE OF AttrOrOID; AttrOrOID ::= CHOICE { OID, Attribute }.
    let attrs: Vec<Any> = vec![
        Any::encode_from(&ec_key).map_err(Error::Cms)?,
        Any::encode_from(&ECDSA_WITH_SHA256).map_err(Error::Cms)?,
    ];
    attrs.to_der().map_err(Error::Cms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_attributes_are_the_expected_der() {
        let der = csr_attributes().expect("encode");
        // SEQUENCE { SEQUENCE { ecPublicKey, SET { secp256r1 } }, ecdsa-with-SHA256 }
        let expected = hex::decode(concat!(
            "3021",
            "3015",
            "06072a8648ce3d0201",
            "310a",
            "06082a8648ce3d030107",
            "06082a8648ce3d040302",
        ))
        .expect("hex");
        assert_eq!(der, expected);
    }

    #[test]
    fn certs_only_refuses_garbage_and_reads_empty_sets() {
        assert!(matches!(
            certs_only(&[CertificateDer::from(vec![0x30, 0x00])]),
            Err(Error::Cms(_))
        ));
        assert!(parse_certs_only(b"\x30\x00").is_err());
        let empty = certs_only(&[]).expect("empty set");
        assert!(parse_certs_only(&empty).expect("parse").is_empty());
    }

    #[test]
    fn est_bodies_decode_with_any_whitespace_and_padding() {
        // base64 of 00 01 02 03: "AAECAw==".
        for body in [
            &b"AAECAw=="[..],
            b"AAECAw",
            b"  AAE\r\nCAw==\n",
            b"AA EC\tAw =\n=",
        ] {
            assert_eq!(decode_est_body(body).expect("decodes"), [0, 1, 2, 3]);
        }
        assert!(matches!(
            decode_est_body(b" \r\n"),
            Err(Error::EstBodyEmpty)
        ));
        assert!(matches!(
            decode_est_body(b"not base64!"),
            Err(Error::EstBodyNotBase64(_))
        ));
        let pem = b"-----BEGIN CERTIFICATE REQUEST-----\nMII=\n-----END CERTIFICATE REQUEST-----";
        let body = [&pem[..], b"\r\n"].concat();
        assert_eq!(decode_est_body(&body).expect("PEM passes"), pem);
    }
}
