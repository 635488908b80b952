//! Every reason this crate refuses an image or a key, one variant each.

use core::fmt;

/// Which of the two TLV areas an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlvArea {
    /// The area right after the payload, covered by the image hash (magic 0x6908).
    Protected,
    /// The area after it, outside the hash: hash, key and signature (magic 0x6907).
    Unprotected,
}

impl fmt::Display for TlvArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlvArea::Protected => "protected",
            TlvArea::Unprotected => "unprotected",
        })
    }
}

/// Why an image was refused. Offsets are byte offsets from the start of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image is shorter than the 32-byte header.
    #[error("image is {len} bytes, shorter than the 32-byte header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The header does not start with the MCUboot magic.
    #[error("bad header magic {found:#010x} (expected 0x96f3b83d)")]
    BadMagic {
        /// The first four bytes, little-endian.
        found: u32,
    },
    /// The header says it is smaller than the 32 bytes it occupies.
    #[error("header size {hdr_size} is smaller than the 32-byte header")]
    HeaderTooSmall {
        /// The header's `hdr_size` field.
        hdr_size: u16,
    },
    /// The payload is encrypted; its hash covers the plaintext, which this crate never sees.
    #[error("image is encrypted (flags {flags:#x}): decrypt it before verifying")]
    Encrypted {
        /// The header's flags.
        flags: u32,
    },
    /// Header size plus payload size runs past the end of the image.
    #[error("payload ends at byte {end}, past the end of the {len}-byte image")]
    PayloadTruncated {
        /// Where the header says the payload ends.
        end: u64,
        /// Bytes available.
        len: usize,
    },
    /// The 4-byte info header of a TLV area runs past the end of the image.
    #[error("{area} TLV info at byte {offset} runs past the end of the image")]
    TlvInfoTruncated {
        /// The area.
        area: TlvArea,
        /// Where its info header starts.
        offset: u64,
    },
    /// A TLV area does not start with its magic.
    #[error("{area} TLV area has magic {found:#06x}, expected {expected:#06x}")]
    BadTlvMagic {
        /// The area looked for.
        area: TlvArea,
        /// The magic found.
        found: u16,
        /// The magic expected.
        expected: u16,
    },
    /// The header's `protect_tlv_size` and the protected area's own length disagree.
    #[error("header says the protected TLV area is {header} bytes, the area says {area}")]
    ProtectedSizeMismatch {
        /// `protect_tlv_size` from the header.
        header: u16,
        /// Total length from the area's info header.
        area: u16,
    },
    /// A TLV area's total length is smaller than its own 4-byte info header.
    #[error("{area} TLV area length {len} is smaller than its 4-byte info header")]
    TlvAreaTooSmall {
        /// The area.
        area: TlvArea,
        /// Its total length field.
        len: u16,
    },
    /// A TLV area runs past the end of the image.
    #[error("{area} TLV area ends at byte {end}, past the end of the {len}-byte image")]
    TlvAreaTruncated {
        /// The area.
        area: TlvArea,
        /// Where it says it ends.
        end: u64,
        /// Bytes available.
        len: usize,
    },
    /// A TLV entry (its 4-byte header or its value) runs past the end of its area.
    #[error("{area} TLV entry at byte {offset} runs past the end of its area")]
    TlvOverrun {
        /// The area.
        area: TlvArea,
        /// Where the entry starts.
        offset: u64,
    },
    /// A TLV has a length its type does not allow.
    #[error("TLV {kind:#04x} has length {len}, which its type does not allow")]
    TlvLength {
        /// The TLV type.
        kind: u16,
        /// Its length field.
        len: u16,
    },
    /// A TLV that may appear once appears twice (two hashes, two counters, ...).
    #[error("TLV {kind:#04x} appears more than once")]
    DuplicateTlv {
        /// The TLV type.
        kind: u16,
    },
    /// A hash, key or signature TLV sits in the protected area, where none belongs.
    #[error("TLV {kind:#04x} is in the protected area, where it does not belong")]
    MisplacedTlv {
        /// The TLV type.
        kind: u16,
    },
    /// A security counter sits in the unprotected area: anyone could change it.
    #[error("security counter in the unprotected TLV area (it must be protected)")]
    UnprotectedCounter,
    /// The SIG_PURE TLV holds something other than 1.
    #[error("SIG_PURE TLV holds {value}, expected 1")]
    BadPureFlag {
        /// The byte it holds.
        value: u8,
    },
    /// No SHA-256 (or SHA-512) TLV in the unprotected area.
    #[error("no image hash TLV")]
    MissingHash,
    /// No signature TLV preceded by a key (KEYHASH or PUBKEY) TLV.
    #[error("image is not signed")]
    NoSignature,
    /// Signed, but by no key we trust.
    #[error("image is signed by a key that is not trusted")]
    UntrustedKey,
    /// The image names a trusted key but carries a signature of the other algorithm.
    #[error("signature type does not match trusted key #{key}")]
    KeyTypeMismatch {
        /// Index of the trusted key in the list given to the verifier.
        key: usize,
    },
    /// A P-256 signature over an image hashed with something other than SHA-256.
    #[error("ECDSA P-256 images must be hashed with SHA-256")]
    HashAlgorithmMismatch,
    /// SIG_PURE on an image signed with something other than Ed25519.
    #[error("pure signatures exist only for Ed25519")]
    PureNotEd25519,
    /// The verifier requires a security counter and the image has none.
    #[error("image has no security counter; at least {minimum} is required")]
    CounterMissing {
        /// The stored minimum.
        minimum: u32,
    },
    /// The image's security counter is below the stored minimum (a rollback).
    #[error("security counter {counter} is below the minimum {minimum}")]
    CounterTooLow {
        /// The image's counter.
        counter: u32,
        /// The stored minimum.
        minimum: u32,
    },
    /// The hash of header, payload and protected TLVs differs from the hash TLV.
    #[error("image hash does not match the hash TLV")]
    HashMismatch,
    /// The ECDSA signature is not the DER encoding of two integers.
    #[error("ECDSA signature is not valid DER")]
    MalformedSignature(#[source] DerError),
    /// The ECDSA signature's r or s is zero or not below the group order.
    #[error("ECDSA signature scalar out of range")]
    SignatureOutOfRange,
    /// The signature does not verify. The signature libraries say no more, on purpose.
    #[error("signature does not verify")]
    BadSignature,
    /// A read past the end of the image that the bounds checks should have stopped.
    #[error("read of {len} bytes at byte {offset} past the end of the image")]
    ReadPastEnd {
        /// Where the read started.
        offset: u64,
        /// How many bytes it wanted.
        len: usize,
    },
}

/// A failure while verifying from an [`ImageSource`](crate::ImageSource): either the image is
/// bad, or reading it failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError<E> {
    /// The image was read and refused.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The source could not be read.
    #[error("reading the image failed")]
    Read(#[source] E),
}

/// Why a DER structure (a public key, an ECDSA signature) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DerError {
    /// The input ends inside a tag, length or value.
    #[error("truncated DER")]
    Truncated,
    /// A different tag than the structure calls for.
    #[error("DER tag {found:#04x} where {expected:#04x} was expected")]
    UnexpectedTag {
        /// Tag expected.
        expected: u8,
        /// Tag found.
        found: u8,
    },
    /// A length in a longer form than needed, indefinite, or over 65535.
    #[error("DER length not in minimal definite form")]
    BadLength,
    /// An INTEGER that is empty, negative, padded, or longer than 32 bytes.
    #[error("DER INTEGER not a minimal positive value of at most 32 bytes")]
    BadInteger,
    /// A BIT STRING with unused bits.
    #[error("BIT STRING with unused bits")]
    BadBitString,
    /// Bytes left after the structure.
    #[error("trailing bytes after DER structure")]
    TrailingData,
}

/// Why a public key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not a DER SubjectPublicKeyInfo.
    #[error("public key is not a DER SubjectPublicKeyInfo")]
    Der(#[source] DerError),
    /// An algorithm other than id-ecPublicKey and id-Ed25519.
    #[error("public key algorithm is neither EC nor Ed25519")]
    UnsupportedAlgorithm,
    /// An EC key on a curve other than P-256.
    #[error("EC public key is not on P-256")]
    UnsupportedCurve,
    /// The P-256 point is not a valid point (or the encoding is not SEC1).
    #[error("invalid P-256 public key point")]
    InvalidP256Point,
    /// The Ed25519 key is not 32 bytes or not the encoding of a curve point.
    #[error("invalid Ed25519 public key")]
    InvalidEd25519Key,
    /// The Ed25519 key has small order: anyone could sign for it.
    #[error("Ed25519 public key has small order (weak key)")]
    WeakEd25519Key,
    /// No `-----BEGIN ...-----` / `-----END ...-----` pair.
    #[error("no PEM block found")]
    PemFraming,
    /// A PEM block that is not `PUBLIC KEY` (for instance a private key).
    #[error("PEM block is not a PUBLIC KEY (for imgtool keys: imgtool getpub -k KEY -e pem)")]
    PemLabel,
    /// More base64 than any supported public key needs.
    #[error("PEM block too long for a P-256 or Ed25519 public key")]
    PemTooLong,
    /// The PEM body is not base64.
    #[error("PEM body is not valid base64")]
    PemBase64(#[source] base64ct::Error),
}
