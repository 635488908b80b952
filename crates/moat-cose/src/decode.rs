//! Parsing a signed object (strictly, over borrowed slices) and verifying it.

use p256::ecdsa::signature::hazmat::PrehashVerifier;

use crate::cbor::{ARRAY, MAP, NULL, Reader, TAG, narrow};
use crate::encode::sig_structure_digest;
use crate::error::{Error, Field, Header};
use crate::params::{
    Algorithm, LABEL_ALG, LABEL_PARTIAL_IV, LABEL_X5T, SHA_256, TAG_SIGN1, Tagging, X5t,
};

/// A COSE_Sign1 object of this format, parsed but not yet verified: everything in it is what
/// the sender claims until [`Sign1::verify`] says the signature holds. Borrows the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sign1<'a> {
    tagging: Tagging,
    algorithm: Algorithm,
    x5t: X5t,
    counter: u64,
    protected: &'a [u8],
    payload: &'a [u8],
    signature: &'a [u8; 64],
}

impl<'a> Sign1<'a> {
    /// Whether the object had tag 18.
    pub fn tagging(&self) -> Tagging {
        self.tagging
    }

    /// `alg` (ES256: the only one decoded for now).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// `x5t`: the thumbprint of the certificate whose key signed (claimed).
    pub fn x5t(&self) -> &X5t {
        &self.x5t
    }

    /// The message counter (`Partial IV`), at most [`MAX_COUNTER`](crate::MAX_COUNTER).
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The protected header as sent (the bytes inside the byte string), as signed.
    pub fn protected(&self) -> &'a [u8] {
        self.protected
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The signature, r || s.
    pub fn signature(&self) -> &'a [u8; 64] {
        self.signature
    }

    /// SHA-256 of the Sig_structure `["Signature1", protected, h'', payload]`: what the
    /// signature signs, for a verifier that takes a digest (an HSM).
    pub fn signed_digest(&self) -> [u8; 32] {
        sig_structure_digest(self.protected, self.payload)
    }

    /// Verifies the signature with `key`. The caller finds `key` by [`Sign1::x5t`] (the
    /// certificate it names) and checks that certificate is one it trusts now; only then are
    /// the counter and the payload the device's.
    pub fn verify(&self, key: &p256::ecdsa::VerifyingKey) -> Result<(), Error> {
        match self.algorithm {
            Algorithm::Es256 => {
                let sig = p256::ecdsa::Signature::from_slice(self.signature)
                    .map_err(|_| Error::BadSignature)?;
                key.verify_prehash(&self.signed_digest(), &sig)
                    .map_err(|_| Error::BadSignature)
            }
        }
    }

    /// Checks that `x5t` names this certificate (DER), then verifies with `key`, which must be
    /// that certificate's public key.
    pub fn verify_with_certificate(
        &self,
        certificate_der: &[u8],
        key: &p256::ecdsa::VerifyingKey,
    ) -> Result<(), Error> {
        if X5t::of_certificate(certificate_der) != self.x5t {
            return Err(Error::X5tMismatch);
        }
        self.verify(key)
    }
}

/// Parses a COSE_Sign1 object of this format (see the crate docs), tagged or untagged.
///
/// Strict: definite lengths, preferred (shortest) CBOR heads, exactly the protected
/// parameters alg (ES256), x5t ([-16, 32 bytes]) and Partial IV (1 to 5 bytes, no leading
/// zero) in any order, none twice, an empty unprotected map, a byte-string payload, a 64-byte
/// signature, and nothing after. Never panics, never allocates, never recurses: one pass over
/// the input.
pub fn decode_sign1(bytes: &[u8]) -> Result<Sign1<'_>, Error> {
    let mut r = Reader::new(bytes);
    let mut tagging = Tagging::Untagged;
    let start = r.pos();
    let (major, arg) = r.head()?;
    let count = match major {
        TAG if arg == TAG_SIGN1 => {
            tagging = Tagging::Tagged;
            r.expect(ARRAY, Field::Sign1)?
        }
        TAG => return Err(Error::WrongTag { tag: arg }),
        ARRAY => arg,
        _ => {
            return Err(Error::Unexpected {
                field: Field::Sign1,
                offset: start,
            });
        }
    };
    if count != 4 {
        return Err(Error::Unexpected {
            field: Field::Sign1,
            offset: start,
        });
    }

    let (protected_at, protected) = r.bstr_at(Field::Protected)?;
    if protected.is_empty() {
        // COSE's encoding of "no protected header".
        return Err(Error::MissingHeader(Header::Algorithm));
    }
    let headers = protected_headers(r.within(protected_at, protected_at + protected.len()))?;

    let entries = r.expect(MAP, Field::Unprotected)?;
    if entries != 0 {
        let label = r.int(Field::Label).ok().and_then(narrow);
        return Err(Error::UnprotectedNotEmpty { label });
    }

    if r.peek() == Some(NULL) {
        return Err(Error::DetachedPayload);
    }
    let payload = r.bstr(Field::Payload)?;

    let signature = r.bstr(Field::Signature)?;
    let signature = <&[u8; 64]>::try_from(signature).map_err(|_| Error::SignatureLength {
        len: signature.len(),
    })?;

    if !r.at_end() {
        return Err(Error::TrailingBytes { offset: r.pos() });
    }
    Ok(Sign1 {
        tagging,
        algorithm: headers.algorithm,
        x5t: headers.x5t,
        counter: headers.counter,
        protected,
        payload,
        signature,
    })
}

struct Headers {
    algorithm: Algorithm,
    x5t: X5t,
    counter: u64,
}

/// The protected header map, read from `r` (the byte string's content).
fn protected_headers(mut r: Reader<'_>) -> Result<Headers, Error> {
    let entries = r.expect(MAP, Field::ProtectedMap)?;
    let mut algorithm = None;
    let mut x5t = None;
    let mut counter = None;
    // Each entry takes at least two bytes of a bounded input, and a fourth can only be a
    // duplicate or unknown: the loop ends early either way.
    for _ in 0..entries {
        let label = r.int(Field::Label).map_err(|e| match e {
            Error::Unexpected { .. } => Error::UnknownHeader { label: None },
            e => e,
        })?;
        match label {
            LABEL_ALG => {
                once(algorithm.is_some(), Header::Algorithm)?;
                let id = r.int(Field::Algorithm)?;
                let alg = narrow(id).and_then(Algorithm::from_id);
                algorithm = Some(alg.ok_or(Error::UnsupportedAlgorithm { alg: narrow(id) })?);
            }
            LABEL_X5T => {
                once(x5t.is_some(), Header::X5t)?;
                x5t = Some(read_x5t(&mut r)?);
            }
            LABEL_PARTIAL_IV => {
                once(counter.is_some(), Header::PartialIv)?;
                counter = Some(read_counter(r.bstr(Field::PartialIv)?)?);
            }
            other => {
                return Err(Error::UnknownHeader {
                    label: narrow(other),
                });
            }
        }
    }
    if !r.at_end() {
        return Err(Error::TrailingBytes { offset: r.pos() });
    }
    Ok(Headers {
        algorithm: algorithm.ok_or(Error::MissingHeader(Header::Algorithm))?,
        x5t: x5t.ok_or(Error::MissingHeader(Header::X5t))?,
        counter: counter.ok_or(Error::MissingHeader(Header::PartialIv))?,
    })
}

fn once(seen: bool, header: Header) -> Result<(), Error> {
    if seen {
        Err(Error::DuplicateHeader(header))
    } else {
        Ok(())
    }
}

/// `[-16, h'<32 bytes>']`.
fn read_x5t(r: &mut Reader<'_>) -> Result<X5t, Error> {
    let at = r.pos();
    if r.expect(ARRAY, Field::X5t)? != 2 {
        return Err(Error::Unexpected {
            field: Field::X5t,
            offset: at,
        });
    }
    let alg = r.int(Field::X5tHashAlgorithm).map_err(|e| match e {
        // RFC 9360 allows a text name; this format does not.
        Error::Unexpected { .. } => Error::UnsupportedX5tHash { alg: None },
        e => e,
    })?;
    if alg != SHA_256 {
        return Err(Error::UnsupportedX5tHash { alg: narrow(alg) });
    }
    let hash = r.bstr(Field::X5tHash)?;
    let hash = <[u8; 32]>::try_from(hash).map_err(|_| Error::X5tLength { len: hash.len() })?;
    Ok(X5t(hash))
}

/// A Partial IV as a counter: 1 to 5 bytes, big-endian, no leading zero byte unless it is the
/// one byte of 0.
fn read_counter(piv: &[u8]) -> Result<u64, Error> {
    if piv.is_empty() || piv.len() > 5 {
        return Err(Error::PartialIvLength { len: piv.len() });
    }
    if piv.len() > 1 && piv.first() == Some(&0) {
        return Err(Error::PartialIvLeadingZero);
    }
    Ok(piv.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
}

#[cfg(test)]
mod tests;
