//! Firmware image verification for the device: parse and verify images in the MCUboot format,
//! as `imgtool sign` writes them, in `no_std` and without an allocator.
//!
//! What it is:
//! - [`verify`] (an image in memory) and [`verify_source`] (an image read in chunks from flash
//!   or a file through [`ImageSource`], with constant RAM): bounds, TLV structure, image hash,
//!   signature by one of the [`TrustedKey`]s, security counter against a stored minimum. Every
//!   refusal is its own [`ImageError`] variant.
//! - [`TrustedKey`]: an ECDSA P-256 or Ed25519 public key from SubjectPublicKeyInfo DER or PEM,
//!   named in images by the hash of that DER (the KEYHASH TLV) or by the DER itself (PUBKEY).
//! - [`boot`]: an A/B boot state machine over a [`boot::BootStorage`]: a chain of stages each
//!   verifying the next, fallback to the other slot, MCUboot's test → confirm → permanent
//!   update flow, and an anti-rollback counter that moves only when an update is confirmed.
//! - [`report`]: a human-readable verdict (version, counter, key, or the refusal reason).
//! - With `std`: `IoSource`, an image in a file. With `sign`: `sign`, an image builder
//!   and signer for tests and tooling.
//!
//! What it is not: a bootloader (it does not copy, swap, decrypt or decompress images, nor
//! jump to them), an RSA or P-384 verifier, or a replacement for a hardware root of trust:
//! where the trusted keys and the counter live is the device's business. Encrypted images are
//! refused ([`ImageError::Encrypted`]): their hash covers the plaintext.
//!
//! # Layout
//!
//! ```text
//!  offset 0            hdr_size            hdr_size + img_size
//!  ┌────────┬─────────┬────────────────────┬──────────────────────┬─────────────────────────┐
//!  │ header │ padding │ payload (img_size) │ protected TLVs       │ unprotected TLVs        │
//!  │ 32 B   │         │                    │ 0x6908, len = header │ 0x6907, len             │
//!  │        │         │                    │ .protect_tlv_size    │ SHA256, KEYHASH, sig    │
//!  └────────┴─────────┴────────────────────┴──────────────────────┴─────────────────────────┘
//!  ◀──────────────────────── hashed (and signed) ────────────────▶
//!
//!  header (little-endian)                    TLV area
//!   0  u32 magic 0x96f3b83d                   0  u16 magic   2  u16 total length (with these 4)
//!   4  u32 load_addr                          4  entries: u16 type, u16 len, value[len], ...
//!   8  u16 hdr_size      10 u16 protect_tlv_size
//!  12  u32 img_size      16 u32 flags
//!  20  u8 major  21 u8 minor  22 u16 revision  24 u32 build_num
//!  28  u32 pad
//! ```
//!
//! The image hash (SHA256 TLV; SHA-512 with `--sha 512` or Ed25519 `--pure`) covers the header,
//! the padding, the payload and the protected TLVs. ECDSA P-256 signs that range with SHA-256;
//! Ed25519 signs the hash, or with SIG_PURE (0x25) the range itself. The security counter
//! (SEC_CNT, 0x50) is trusted only from the protected area.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = moat_image::TrustedKey::from_pem(&std::fs::read("signing-pub.pem")?)?;
//! let image = std::fs::read("app.signed.bin")?;
//! let v = moat_image::verify(&image, &[key], 3)?;
//! println!("{} counter {:?}, payload at {:?}", v.version(), v.security_counter, v.payload);
//! # Ok(()) }
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod boot;
mod der;
mod error;
mod header;
mod key;
mod pem;
mod report;
#[cfg(any(test, feature = "sign"))]
pub mod sign;
mod source;
pub mod tlv;
mod verify;

pub use error::{DerError, ImageError, KeyError, SourceError, TlvArea};
pub use header::{HEADER_SIZE, IMAGE_MAGIC, ImageHeader, ImageVersion, flags};
pub use key::{KeyKind, MAX_SPKI_LEN, SpkiDer, TrustedKey};
pub use report::{Report, report};
#[cfg(feature = "std")]
pub use source::IoSource;
pub use source::{FEED_CHUNK, ImageSource, OutOfRange};
pub use verify::{ImageDigest, VerifiedImage, read_protected_tlv, verify, verify_source};
