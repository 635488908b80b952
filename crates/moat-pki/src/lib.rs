//! X.509 for Moat: the hub's CA hierarchy, the issuance policy for device and server
//! certificates, CSR checks, identity rules, CRLs and chain validation, and the CMS objects
//! EST puts on the wire (certs-only SignedData, CSR attributes).
//!
//! This crate does no I/O and holds no state. Signing keys come in as anything that implements
//! [`rcgen::SigningKey`] (a software key, or a PKCS#11 key from `moat-vault`), so the same
//! code issues with a key in memory or in an HSM. What it produces (DER) is stored by the
//! caller (`moat-core`) *before* it is handed out.
//!
//! ```text
//!   root CA (self-signed, pathlen 1) ──┬── device CA (pathlen 0) ──▶ device certs (clientAuth)
//!                                      └── hub server cert (serverAuth)
//! ```

mod ca;
mod crl;
mod csr;
mod dn;
mod error;
mod est;
mod identity;
mod info;
mod issue;
mod pem;
mod serial;
mod validate;

pub use ca::{CaProfile, new_intermediate_ca, new_root_ca};
pub use crl::{CrlInput, RevocationReason, RevokedEntry, build_crl};
pub use csr::{
    CheckedCsr, CsrKeyAlgorithm, MAX_CSR_BYTES, MAX_RSA_BITS, MIN_RSA_BITS, Renewal, check_csr,
    check_renewal, weak_key,
};
pub use error::Error;
pub use est::{certs_only, csr_attributes, decode_est_body, parse_certs_only};
pub use identity::{
    DEVICE_URI_PREFIX, IdentityRule, STATION_URI_PREFIX, identity_of, identity_of_info,
};
pub use info::{
    CertInfo, cert_info, issuer_and_serial, parse_cert_chain_pem, pem_of_cert, pem_of_crl,
    pem_to_der, serial_of, subject_name_der,
};
pub use issue::{
    BACKDATE, DeviceCertRequest, ServerCertRequest, issue_device_cert, issue_server_cert,
    issue_station_cert,
};
pub use serial::Serial;
pub use validate::{ChainError, TrustedCa, check_proof_of_possession, verify_client_chain};

/// Re-exported so callers name the key and public-key traits without depending on rcgen.
pub use rcgen::{KeyPair, PublicKeyData, SigningKey, SubjectPublicKeyInfo};
