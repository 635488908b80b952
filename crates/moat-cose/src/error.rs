//! Every reason this crate refuses an object, a signature, a counter or a stored window, one
//! variant each; and why encoding failed.

use core::fmt;

/// Where in a COSE_Sign1 object an item of the wrong type was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The object itself: an array of four (after an optional tag 18).
    Sign1,
    /// The protected header: a byte string.
    Protected,
    /// The protected header's content: one map.
    ProtectedMap,
    /// A label of the protected header map: an integer.
    Label,
    /// The value of `alg`: an integer.
    Algorithm,
    /// The value of `x5t`: an array of two.
    X5t,
    /// The hash algorithm inside `x5t`: an integer.
    X5tHashAlgorithm,
    /// The hash inside `x5t`: a byte string.
    X5tHash,
    /// The value of `Partial IV`: a byte string.
    PartialIv,
    /// The unprotected header: a map.
    Unprotected,
    /// The payload: a byte string.
    Payload,
    /// The signature: a byte string.
    Signature,
    /// A COSE_Encrypt object: an array of four (after an optional tag 96).
    Encrypt,
    /// The content encryption's IV (label 5): a byte string.
    Iv,
    /// The ciphertext: a byte string (the AES-GCM tag at its end).
    Ciphertext,
    /// The recipients: an array of one.
    Recipients,
    /// The recipient: an array of three.
    Recipient,
    /// The ephemeral key (label -1): a COSE_Key map.
    EphemeralKey,
    /// A parameter of the ephemeral key (kty, crv, x, y).
    KeyParameter,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Sign1 => "COSE_Sign1 array",
            Field::Protected => "protected header",
            Field::ProtectedMap => "protected header map",
            Field::Label => "header label",
            Field::Algorithm => "alg",
            Field::X5t => "x5t",
            Field::X5tHashAlgorithm => "x5t hash algorithm",
            Field::X5tHash => "x5t hash",
            Field::PartialIv => "Partial IV",
            Field::Unprotected => "unprotected header",
            Field::Payload => "payload",
            Field::Signature => "signature",
            Field::Encrypt => "COSE_Encrypt array",
            Field::Iv => "IV",
            Field::Ciphertext => "ciphertext",
            Field::Recipients => "recipients array",
            Field::Recipient => "recipient",
            Field::EphemeralKey => "ephemeral key",
            Field::KeyParameter => "ephemeral key parameter",
        })
    }
}

/// The three protected header parameters of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// `alg` (label 1).
    Algorithm,
    /// `x5t` (label 34, RFC 9360).
    X5t,
    /// `Partial IV` (label 6): the message counter.
    PartialIv,
}

impl Header {
    /// The header's COSE label.
    pub const fn label(self) -> i64 {
        match self {
            Header::Algorithm => 1,
            Header::X5t => 34,
            Header::PartialIv => 6,
        }
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Header::Algorithm => f.write_str("alg (1)"),
            Header::X5t => f.write_str("x5t (34)"),
            Header::PartialIv => f.write_str("Partial IV (6)"),
        }
    }
}

/// Why an object, a signature, a counter or a stored replay window was refused. Offsets are
/// byte offsets from the start of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ends inside an item.
    #[error("truncated: the object ends inside an item")]
    Truncated,
    /// Bytes follow the object, or the protected header's map.
    #[error("trailing bytes at byte {offset}")]
    TrailingBytes {
        /// Where the first extra byte is.
        offset: usize,
    },
    /// An indefinite-length string, array or map: the format has none.
    #[error("indefinite length at byte {offset}")]
    IndefiniteLength {
        /// Where the item starts.
        offset: usize,
    },
    /// An integer, length or tag in a longer form than needed (RFC 8949 preferred
    /// serialization): a second encoding of the same object.
    #[error("non-preferred (longer than needed) CBOR encoding at byte {offset}")]
    NonPreferredEncoding {
        /// Where the item starts.
        offset: usize,
    },
    /// Not well-formed CBOR: a reserved additional-information value, or a break or
    /// indefinite length where none can be.
    #[error("malformed CBOR at byte {offset}")]
    Malformed {
        /// Where the item starts.
        offset: usize,
    },
    /// A tag other than COSE_Sign1's (18).
    #[error("CBOR tag {tag} is not COSE_Sign1 (18)")]
    WrongTag {
        /// The tag found.
        tag: u64,
    },
    /// An item of the wrong type or size where the format has `field`.
    #[error("unexpected item for the {field} at byte {offset}")]
    Unexpected {
        /// What the format has there.
        field: Field,
        /// Where the item starts.
        offset: usize,
    },
    /// The payload is nil (detached): this format always carries it.
    #[error("detached (nil) payload: this format carries the payload")]
    DetachedPayload,
    /// A protected header parameter other than alg, x5t and Partial IV (crit among them): the
    /// format has exactly those three.
    #[error("protected header parameter {} is not part of this format", Label(*.label))]
    UnknownHeader {
        /// Its label, `None` for a text label or an integer outside `i64`.
        label: Option<i64>,
    },
    /// A protected header parameter appears twice.
    #[error("protected header parameter {0} appears twice")]
    DuplicateHeader(Header),
    /// A protected header parameter is missing.
    #[error("protected header parameter {0} is missing")]
    MissingHeader(Header),
    /// The unprotected header is not empty (an alg or Partial IV there would not be signed).
    #[error("unprotected header is not empty (first label {})", Label(*.label))]
    UnprotectedNotEmpty {
        /// The first label found, `None` for a text label or an integer outside `i64`.
        label: Option<i64>,
    },
    /// An algorithm other than ES256.
    #[error("algorithm {} is not supported (ES256 = -7 is)", Label(*.alg))]
    UnsupportedAlgorithm {
        /// The `alg` value, `None` outside `i64`.
        alg: Option<i64>,
    },
    /// The x5t hash algorithm is not SHA-256 (-16).
    #[error("x5t hash algorithm {} is not SHA-256 (-16)", Label(*.alg))]
    UnsupportedX5tHash {
        /// The hash algorithm, `None` for a text name or an integer outside `i64`.
        alg: Option<i64>,
    },
    /// The x5t hash is not 32 bytes.
    #[error("x5t hash is {len} bytes, not 32")]
    X5tLength {
        /// Its length.
        len: usize,
    },
    /// The Partial IV is empty or longer than 5 bytes (the counter is at most 2^40 - 1).
    #[error("Partial IV is {len} bytes, not 1 to 5")]
    PartialIvLength {
        /// Its length.
        len: usize,
    },
    /// The Partial IV has a leading zero byte: counters have one encoding (OSCORE).
    #[error("Partial IV has a leading zero byte")]
    PartialIvLeadingZero,
    /// The signature is not 64 bytes (r || s).
    #[error("signature is {len} bytes, not 64")]
    SignatureLength {
        /// Its length.
        len: usize,
    },
    /// The signature does not verify with the key, or its r or s is zero or not below the
    /// group order. The signature library says no more, on purpose.
    #[error("signature does not verify")]
    BadSignature,
    /// The object names a certificate other than the one given.
    #[error("x5t does not match the certificate")]
    X5tMismatch,
    /// A counter above 2^40 - 1 given to a replay window.
    #[error("counter {counter} is above 2^40 - 1")]
    CounterOutOfRange {
        /// The counter.
        counter: u64,
    },
    /// The counter was seen before.
    #[error("counter {counter} was already accepted (replay)")]
    Replayed {
        /// The counter.
        counter: u64,
    },
    /// The counter is below the replay window: it cannot be told from a replay.
    #[error("counter {counter} is below the replay window (lowest acceptable {lowest})")]
    TooOld {
        /// The counter.
        counter: u64,
        /// The lowest counter the window could still accept.
        lowest: u64,
    },
    /// A replay window size outside 1 to 64.
    #[error("replay window size {size} is not between 1 and 64")]
    WindowSize {
        /// The size asked for.
        size: u8,
    },
    /// Stored replay window bytes that this crate did not write.
    #[error("stored replay window state is invalid")]
    BadWindowState,
    /// A tag other than COSE_Encrypt's (96) on an encrypted payload.
    #[error("CBOR tag {tag} is not COSE_Encrypt (96)")]
    WrongEncryptTag {
        /// The tag found.
        tag: u64,
    },
    /// A content encryption algorithm other than A128GCM.
    #[error("content encryption algorithm {} is not supported (A128GCM = 1 is)", Label(*.alg))]
    UnsupportedEncryption {
        /// The `alg` value, `None` outside `i64`.
        alg: Option<i64>,
    },
    /// A key agreement other than ECDH-ES + HKDF-256.
    #[error("key agreement {} is not supported (ECDH-ES + HKDF-256 = -25 is)", Label(*.alg))]
    UnsupportedKeyAgreement {
        /// The recipient's `alg` value, `None` outside `i64`.
        alg: Option<i64>,
    },
    /// A header or key parameter this format does not have, in an encrypted payload.
    #[error("{field}: parameter {} is not part of this format", Label(*.label))]
    UnknownParameter {
        /// Where it was found.
        field: Field,
        /// Its label, `None` for a text label or an integer outside `i64`.
        label: Option<i64>,
    },
    /// A parameter appears twice in one map of an encrypted payload.
    #[error("{field}: parameter {} appears twice", Label(*.label))]
    DuplicateParameter {
        /// Where it was found.
        field: Field,
        /// Its label.
        label: Option<i64>,
    },
    /// A required part of an encrypted payload is missing (the IV, the ephemeral key or one
    /// of its parameters).
    #[error("the {0} is missing")]
    Missing(Field),
    /// The IV is not 12 bytes (AES-GCM).
    #[error("IV is {len} bytes, not 12")]
    IvLength {
        /// Its length.
        len: usize,
    },
    /// The ephemeral key is not a P-256 public key (wrong key type or curve, or not a point on
    /// the curve).
    #[error("the ephemeral key is not a P-256 point")]
    BadEphemeralKey,
    /// AES-GCM refused the ciphertext: the wrong recipient key, or the ciphertext, its IV or
    /// its protected headers were altered. The cipher says no more, on purpose.
    #[error("decryption failed (not for this key, or altered)")]
    DecryptionFailed,
    /// The buffer for the plaintext is too small.
    #[error("plaintext buffer holds {available} bytes, the plaintext needs {needed}")]
    OutputTooSmall {
        /// Bytes the plaintext needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

/// Why [`encode_sign1`](crate::encode_sign1) failed. `E` is the signer's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError<E> {
    /// The output buffer is too small; nothing useful was written.
    #[error("output buffer holds {available} bytes, the object needs {needed}")]
    BufferTooSmall {
        /// Bytes the object needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The counter is above 2^40 - 1 (OSCORE's limit): the device must get a new identity
    /// rather than wrap.
    #[error("counter {counter} is above 2^40 - 1")]
    CounterTooLarge {
        /// The counter.
        counter: u64,
    },
    /// The signer failed.
    #[error("signing failed")]
    Sign(#[source] E),
    /// AES-GCM refused to encrypt (a plaintext longer than it allows: 2^36 - 32 bytes) or
    /// HKDF to derive the key. Neither says more.
    #[error("encryption failed")]
    Encrypt,
}

/// A label or algorithm value in messages: the number, or "non-integer".
struct Label(Option<i64>);

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("(text or out of range)"),
        }
    }
}
