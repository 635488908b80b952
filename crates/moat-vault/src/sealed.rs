//! The sealed (envelope-encrypted) format.
//!
//! ```text
//! byte 0       format: 1 = data key wrapped under a software master key,
//!                      2 = data key wrapped by an AES key inside a PKCS#11 token
//! 1..13        nonce of the data-key wrap
//! 13..61       the 256-bit data key, AES-256-GCM encrypted (32 bytes + 16-byte tag)
//! 61..73       nonce of the secret
//! 73..         the secret, AES-256-GCM encrypted under the data key (AAD = context), + tag
//! ```
//! Every seal uses a fresh random data key and fresh random nonces.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;
use crate::store::KEY_LEN;

/// Format byte: data key wrapped under a software master key.
pub(crate) const FORMAT_SOFTWARE: u8 = 1;
/// Format byte: data key wrapped by a PKCS#11 token's AES key.
pub(crate) const FORMAT_TOKEN: u8 = 2;

const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = KEY_LEN + TAG_LEN;
const HEADER_LEN: usize = 1 + NONCE_LEN + WRAPPED_LEN + NONCE_LEN;

/// Associated data of the data-key wrap: binds the wrapped key to this format.
pub(crate) fn wrap_aad(format: u8) -> [u8; 17] {
    let mut aad = *b"moat-vault:dk:v1\0";
    aad[16] = format;
    aad
}

/// Something that encrypts 256-bit data keys: the software master key or a token key.
pub(crate) trait KeyWrapper {
    /// The format byte written in front of what this wrapper seals.
    fn format(&self) -> u8;
    /// Encrypts `data_key`; returns the nonce and the ciphertext with its tag.
    fn wrap(&self, data_key: &[u8; KEY_LEN]) -> Result<([u8; NONCE_LEN], Vec<u8>), Error>;
    /// Decrypts a wrapped data key; `Error::Unseal` if it does not authenticate.
    fn unwrap(
        &self,
        nonce: &[u8; NONCE_LEN],
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, Error>;
}

/// The software master key (from the key file or the passphrase).
pub(crate) struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    pub(crate) fn new(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        MasterKey(key)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl KeyWrapper for MasterKey {
    fn format(&self) -> u8 {
        FORMAT_SOFTWARE
    }

    fn wrap(&self, data_key: &[u8; KEY_LEN]) -> Result<([u8; NONCE_LEN], Vec<u8>), Error> {
        let mut buf = data_key.to_vec();
        let nonce = aead_seal(self.0.as_ref(), &wrap_aad(FORMAT_SOFTWARE), &mut buf)?;
        Ok((nonce, buf))
    }

    fn unwrap(
        &self,
        nonce: &[u8; NONCE_LEN],
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
        let plain = aead_open(self.0.as_ref(), *nonce, &wrap_aad(FORMAT_SOFTWARE), wrapped)?;
        to_key(&plain)
    }
}

/// Copies a decrypted data key into a fixed-size zeroizing array.
pub(crate) fn to_key(bytes: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
    if bytes.len() != KEY_LEN {
        return Err(Error::Unseal);
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(bytes);
    Ok(key)
}

/// AES-256-GCM seal in place with a random nonce; appends the tag, returns the nonce.
fn aead_seal(key: &[u8], aad: &[u8], in_out: &mut Vec<u8>) -> Result<[u8; NONCE_LEN], Error> {
    let key = RandomizedNonceKey::new(&AES_256_GCM, key)
        .map_err(|e| Error::Crypto(format!("AES-256-GCM key: {e}")))?;
    let nonce = key
        .seal_in_place_append_tag(Aad::from(aad), in_out)
        .map_err(|e| {
            // `in_out` may still hold the plaintext: do not leave it in freed memory.
            in_out.zeroize();
            Error::Crypto(format!("AES-256-GCM seal: {e}"))
        })?;
    Ok(*nonce.as_ref())
}

/// AES-256-GCM open into a zeroizing buffer; `Error::Unseal` if it does not authenticate.
fn aead_open(
    key: &[u8],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let key = RandomizedNonceKey::new(&AES_256_GCM, key)
        .map_err(|e| Error::Crypto(format!("AES-256-GCM key: {e}")))?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            buf.as_mut_slice(),
        )
        .map_err(unseal_failed)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// aws-lc's `Unspecified` carries no detail beyond "did not authenticate", which is exactly
/// what `Error::Unseal` says.
fn unseal_failed(_unspecified: aws_lc_rs::error::Unspecified) -> Error {
    Error::Unseal
}

/// Seals `plaintext` with a fresh data key wrapped by `wrapper`; `context` is the AAD.
pub(crate) fn seal(
    wrapper: &dyn KeyWrapper,
    plaintext: &[u8],
    context: &str,
) -> Result<Vec<u8>, Error> {
    let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(data_key.as_mut()).map_err(|e| Error::Crypto(format!("random: {e}")))?;
    let (wrap_nonce, wrapped) = wrapper.wrap(&data_key)?;
    if wrapped.len() != WRAPPED_LEN {
        return Err(Error::Crypto(format!(
            "wrapped data key is {} bytes, expected {WRAPPED_LEN}",
            wrapped.len()
        )));
    }
    let mut body = Vec::with_capacity(plaintext.len() + TAG_LEN);
    body.extend_from_slice(plaintext);
    let nonce = aead_seal(data_key.as_ref(), context.as_bytes(), &mut body)?;

    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(wrapper.format());
    out.extend_from_slice(&wrap_nonce);
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens what [`seal`] sealed, with the same wrapper and context.
pub(crate) fn unseal(
    wrapper: &dyn KeyWrapper,
    sealed: &[u8],
    context: &str,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != wrapper.format() {
        return Err(Error::Unseal);
    }
    let (wrap_nonce, rest) = split_nonce(&sealed[1..])?;
    let (wrapped, rest) = rest.split_at(WRAPPED_LEN);
    let (nonce, body) = split_nonce(rest)?;
    let data_key = wrapper.unwrap(&wrap_nonce, wrapped)?;
    aead_open(data_key.as_ref(), nonce, context.as_bytes(), body)
}

fn split_nonce(bytes: &[u8]) -> Result<([u8; NONCE_LEN], &[u8]), Error> {
    let (n, rest) = bytes
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(Error::Unseal)?;
    Ok((*n, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> MasterKey {
        MasterKey::new(Zeroizing::new([b; KEY_LEN]))
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = key(7);
        let s = seal(&k, b"top secret value", "ctx").expect("seal");
        assert_eq!(s.len(), HEADER_LEN + 16 + TAG_LEN);
        assert_eq!(
            unseal(&k, &s, "ctx").expect("unseal").as_slice(),
            b"top secret value"
        );
        assert!(matches!(unseal(&k, &s, "other"), Err(Error::Unseal)));
        assert!(matches!(unseal(&key(8), &s, "ctx"), Err(Error::Unseal)));
        for i in [0, 1, 20, 62, 80, s.len() - 1] {
            let mut t = s.clone();
            t[i] ^= 1;
            assert!(
                matches!(unseal(&k, &t, "ctx"), Err(Error::Unseal)),
                "byte {i}"
            );
        }
        assert!(matches!(
            unseal(&k, &s[..s.len() - 1], "ctx"),
            Err(Error::Unseal)
        ));
        assert!(matches!(unseal(&k, &[], "ctx"), Err(Error::Unseal)));
    }

    #[test]
    fn empty_plaintext_and_fresh_randomness() {
        let k = key(1);
        let a = seal(&k, b"", "c").expect("seal");
        let b = seal(&k, b"", "c").expect("seal");
        assert_ne!(a, b);
        assert!(unseal(&k, &a, "c").expect("unseal").is_empty());
    }
}
