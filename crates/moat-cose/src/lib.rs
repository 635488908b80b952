//! Signed messages for devices without IP (behind a LoRa, BLE or serial gateway): each message
//! is a COSE_Sign1 object (RFC 9052, ES256 per RFC 9053) signed with the device's key, naming
//! the device's certificate by its SHA-256 thumbprint (`x5t`, RFC 9360) and carrying a
//! per-device message counter (`Partial IV`, as OSCORE, RFC 8613) against replays. `no_std`,
//! without an allocator; builds for `thumbv7em-none-eabihf`.
//!
//! What it is:
//! - [`encode_sign1`]: writes a signed object into the caller's buffer. Signing goes through
//!   [`Sign1Signer`] (the SHA-256 of the Sig_structure in, r || s out), so a secure element or
//!   a PKCS#11 token can sign; `p256::ecdsa::SigningKey` implements it. [`encoded_len`] and
//!   [`max_payload_len`] size buffers and frames.
//! - [`decode_sign1`]: a strict parser over borrowed bytes into a [`Sign1`] (every deviation
//!   from the format is its own [`Error`]), then [`Sign1::verify`] with the P-256 key of the
//!   certificate it names ([`X5t::of_certificate`]).
//! - [`ReplayWindow`]: the receiver's sliding window over counters (32 by default, as
//!   OSCORE), whose state is 18 bytes to keep in a database or in flash.
//! - [`seal`] / [`open`]: a payload encrypted to the receiving application's P-256 key
//!   (COSE_Encrypt, ECDH-ES + HKDF-256, A128GCM; see the `encrypt` module's docs), which the
//!   device then signs as above: the gateway and the hub relay ciphertext.
//!
//! What it is not: a general COSE library (one algorithm and one header layout for
//! each of signing and encryption, no COSE_Sign/Mac), a certificate validator (finding the certificate by its x5t and
//! trusting it is the caller's), or the keeper of the sender's counter (a device must store
//! the next counter before it sends, and never reuse one).
//!
//! # Wire format
//!
//! ```text
//!  D2                             tag 18 (COSE_Sign1), or none (untagged)
//!  84                             array(4)
//!   58 2C..30                     bstr: the protected header, 44 to 48 bytes:
//!    A3                            map(3), written in this order, read in any
//!     01 26                         1 (alg): -7 (ES256)
//!     06 41..45 <counter>           6 (Partial IV): the counter, 1 to 5 bytes big-endian,
//!                                     no leading zero byte; 0 is h'00'; at most 2^40 - 1
//!     18 22 82 2F 58 20 <32 bytes>  34 (x5t): [-16 (SHA-256), SHA-256(certificate DER)]
//!   A0                            unprotected header: empty map
//!   40..5B <payload>              payload: bstr (never nil: not detached)
//!   58 40 <r || s>                signature: 64 bytes, IEEE P1363 (not DER)
//! ```
//!
//! The signature is ECDSA P-256 over SHA-256 of the Sig_structure `["Signature1", protected,
//! h'', payload]` (external AAD empty): `84 6A "Signature1" bstr(protected) 40 bstr(payload)`.
//! Every CBOR head is in its shortest form and lengths are definite (the decoder refuses
//! anything else, so each message has one encoding apart from the header order and the
//! signature's own randomness).
//!
//! # Size
//!
//! An object is the payload plus 116 bytes, untagged, with a counter below 256 and a payload
//! of 24 to 255 bytes; add one for the tag, one per further counter byte (up to 4 more), and
//! one less for payloads under 24 bytes: 115 to 121 bytes for payloads under 256 bytes
//! ([`encoded_len`]; longer payloads need a longer length). In a
//! 222-byte LoRaWAN frame that leaves 106 payload bytes (untagged, counter < 256), 104 with
//! a 3-byte counter (< 2^24), 101 in the worst case (tagged, 5-byte counter)
//! ([`max_payload_len`]). Nine tenths of the overhead are the signature (66 bytes with its
//! head) and the x5t (38).
//!
//! # Example
//!
//! ```
//! use moat_cose::{ReplayWindow, Tagging, X5t, decode_sign1, encode_sign1, encoded_len};
//! # let key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
//! # let certificate_der = b"the device certificate, DER";
//! // Device: sign message 41 with the device key.
//! let x5t = X5t::of_certificate(certificate_der);
//! let mut frame = [0u8; 222];
//! let len = encode_sign1(&mut frame, b"21.5 C", 41, &x5t, Tagging::Untagged, &key).unwrap();
//! assert_eq!(len, encoded_len(6, 41, Tagging::Untagged));
//! assert_eq!(len, 6 + 115);
//!
//! // Hub: parse, find the certificate by x5t, verify, then check and store the counter.
//! let msg = decode_sign1(&frame[..len])?;
//! assert_eq!(msg.x5t(), &x5t);
//! msg.verify(key.verifying_key())?;
//! let mut window = ReplayWindow::new();
//! window = window.check(msg.counter())?; // store window.to_bytes() before acting
//! assert_eq!(msg.payload(), b"21.5 C");
//! # Ok::<(), moat_cose::Error>(())
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]

mod cbor;
mod decode;
mod encode;
mod encrypt;
mod error;
mod params;
mod replay;

pub use decode::{Sign1, decode_sign1};
#[cfg(feature = "std")]
pub use encode::encode_sign1_to_vec;
pub use encode::{Sign1Signer, encode_sign1, encoded_len, max_payload_len};
pub use encrypt::{is_sealed, open, seal, sealed_len};
#[cfg(feature = "std")]
pub use encrypt::{open_to_vec, seal_to_vec};
pub use error::{EncodeError, Error, Field, Header};
pub use params::{Algorithm, MAX_COUNTER, Tagging, X5t};
pub use replay::{DEFAULT_WINDOW_SIZE, ReplayWindow, WINDOW_STATE_LEN};
