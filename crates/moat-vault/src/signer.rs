//! A hub signing key, in memory (unsealed) or in a token.

use std::fmt;

use cryptoki::object::ObjectHandle;
use rcgen::{PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm, SigningKey};

use crate::pkcs11::{SharedSession, sign_raw};

/// An ECDSA P-256 key the hub signs with. Implements [`rcgen::SigningKey`] (signatures in
/// X.509's DER form) and [`rcgen::PublicKeyData`]; `Send + Sync` (PKCS#11 sessions are
/// serialised behind a mutex). `Debug` never prints key material.
pub struct HubKey {
    inner: Inner,
}

enum Inner {
    /// Unsealed in memory.
    Software(rcgen::KeyPair),
    /// Inside a PKCS#11 token; only a handle is held here.
    Pkcs11 {
        /// The vault's logged-in session (shared, serialised).
        session: SharedSession,
        /// The private key object.
        handle: ObjectHandle,
        /// Uncompressed SEC1 public point, read from CKA_EC_POINT.
        point: Vec<u8>,
        /// The key reference, for error logs.
        key_ref: String,
    },
}

impl HubKey {
    pub(crate) fn software(pair: rcgen::KeyPair) -> HubKey {
        HubKey {
            inner: Inner::Software(pair),
        }
    }

    pub(crate) fn pkcs11(
        session: SharedSession,
        handle: ObjectHandle,
        point: Vec<u8>,
        key_ref: String,
    ) -> HubKey {
        HubKey {
            inner: Inner::Pkcs11 {
                session,
                handle,
                point,
                key_ref,
            },
        }
    }

    /// `"software"` or `"pkcs11"`: where the private key lives.
    pub fn backend(&self) -> &'static str {
        match self.inner {
            Inner::Software(_) => "software",
            Inner::Pkcs11 { .. } => "pkcs11",
        }
    }
}

impl fmt::Debug for HubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HubKey {{ backend: {:?}, [redacted] }}", self.backend())
    }
}

impl PublicKeyData for HubKey {
    fn der_bytes(&self) -> &[u8] {
        match &self.inner {
            Inner::Software(pair) => pair.der_bytes(),
            Inner::Pkcs11 { point, .. } => point,
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for HubKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match &self.inner {
            Inner::Software(pair) => pair.sign(msg),
            Inner::Pkcs11 {
                session,
                handle,
                key_ref,
                ..
            } => {
                // rcgen's error type cannot carry our cause: log it, then report a remote-key failure.
                let raw = sign_raw(session, *handle, msg).map_err(|error| {
                    tracing::error!(%error, key = %key_ref, "PKCS#11 signing failed");
                    rcgen::Error::RemoteKeyError
                })?;
                let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|error| {
                    tracing::error!(%error, key = %key_ref, len = raw.len(), "token returned a malformed ECDSA signature");
                    rcgen::Error::RemoteKeyError
                })?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_sync_and_redacted_debug() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<HubKey>();
        let k = HubKey::software(rcgen::KeyPair::generate().expect("generate"));
        assert_eq!(
            format!("{k:?}"),
            r#"HubKey { backend: "software", [redacted] }"#
        );
    }
}
