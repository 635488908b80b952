//! PKCS#10 checks: signature, key type, no CA request, size.

use crate::Error;

/// CSRs larger than this are refused before parsing (a P-384 or RSA-4096 CSR is < 2 KiB).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

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
}

/// Parses a CSR given as PEM or DER, refuses it if larger than [`MAX_CSR_BYTES`], if its
/// signature does not verify, if its key is not P-256/P-384/Ed25519/RSA>=2048, or if it
/// requests basicConstraints CA:TRUE. Other requested extensions are ignored (the hub sets
/// every extension itself).
pub fn check_csr(input: &[u8]) -> Result<CheckedCsr, Error> {
    todo!()
}
