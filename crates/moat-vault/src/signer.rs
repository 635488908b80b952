//! A hub signing key, in memory (unsealed) or in a token.

/// An ECDSA P-256 key the hub signs with. Implements [`rcgen::SigningKey`] (signatures in
/// X.509's DER form) and [`rcgen::PublicKeyData`]; `Send + Sync` (PKCS#11 sessions are
/// serialised behind a mutex). `Debug` never prints key material.
pub struct HubKey {
    // implementation-defined
}
