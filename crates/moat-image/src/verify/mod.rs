//! The verifier: layout and bounds, TLV scan, one hashing pass, signature, counter.
//!
//! The signature crates return opaque errors on purpose (no side channel through the reason),
//! so a failed check becomes [`ImageError::BadSignature`] with nothing more to keep.

use core::ops::Range;

use ed25519_dalek::StreamVerifier;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256, Sha512};

use crate::header::{HEADER_SIZE, ImageHeader, ImageVersion, flags};
use crate::key::{KeyKind, PublicKey, TrustedKey};
use crate::source::{ImageSource, OutOfRange};
use crate::tlv::{self, Entry, HEADER_LEN};
use crate::{ImageError, SourceError, TlvArea, der};

/// The image hash, as computed and as found in the hash TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageDigest {
    /// SHA-256 (TLV 0x10), the default.
    Sha256([u8; 32]),
    /// SHA-512 (TLV 0x12): `imgtool sign --sha 512`, and Ed25519 `--pure`.
    Sha512([u8; 64]),
}

impl ImageDigest {
    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ImageDigest::Sha256(d) => d,
            ImageDigest::Sha512(d) => d,
        }
    }

    /// `"SHA-256"` or `"SHA-512"`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            ImageDigest::Sha256(_) => "SHA-256",
            ImageDigest::Sha512(_) => "SHA-512",
        }
    }
}

/// An image that passed every check, and where its parts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedImage {
    /// The header (version, flags, load address).
    pub header: ImageHeader,
    /// The security counter from the protected TLVs, if the image has one.
    pub security_counter: Option<u32>,
    /// Where the payload (the firmware itself) is.
    pub payload: Range<usize>,
    /// The protected TLV area with its info header; empty (at the payload's end) if none.
    pub protected_tlvs: Range<usize>,
    /// The unprotected TLV area with its info header. Its end is the end of the image.
    pub unprotected_tlvs: Range<usize>,
    /// Hash of `0..protected_tlvs.end` (header, payload, protected TLVs).
    pub digest: ImageDigest,
    /// Index, in the list given to the verifier, of the key whose signature verified.
    pub key_index: usize,
    /// That key's algorithm.
    pub key_kind: KeyKind,
    /// Whether the signature covers the hashed range itself (SIG_PURE) rather than its hash.
    pub pure: bool,
}

impl VerifiedImage {
    /// The image version.
    pub fn version(&self) -> ImageVersion {
        self.header.version
    }

    /// Where the image ends (slot bytes after it are not part of it).
    pub fn end(&self) -> usize {
        self.unprotected_tlvs.end
    }
}

/// Verifies an image held in memory. See [`verify_source`] for what is checked.
pub fn verify(
    image: &[u8],
    keys: &[TrustedKey],
    min_counter: u32,
) -> Result<VerifiedImage, ImageError> {
    let mut src = image;
    verify_source(&mut src, keys, min_counter).map_err(|e| match e {
        SourceError::Image(e) => e,
        SourceError::Read(OutOfRange { offset, len }) => ImageError::ReadPastEnd {
            offset: offset as u64,
            len,
        },
    })
}

/// Verifies an image read from `src` (a flash slot, a file), with constant memory.
///
/// In order: the header (magic, sizes within the source), the TLV areas (magics, lengths,
/// entries within their area, no hash/key/signature in the protected area, no security counter
/// in the unprotected one, no duplicates), that one of `keys` signed it, the security counter
/// against `min_counter` (an image without one passes only when `min_counter` is 0), then one
/// pass over header + payload + protected TLVs for the hash (and, for pure Ed25519, the
/// signature), the hash against the hash TLV, and the signature.
pub fn verify_source<S: ImageSource + ?Sized>(
    src: &mut S,
    keys: &[TrustedKey],
    min_counter: u32,
) -> Result<VerifiedImage, SourceError<S::Error>> {
    let len = src.len();
    let mut r = Reads { src, len };
    let layout = Layout::read(&mut r)?;
    let counter = scan_protected(&mut r, layout.protected.clone())?;
    let scan = scan_unprotected(&mut r, layout.unprotected.clone(), keys)?;

    let (alg, hash_at) = scan.hash.ok_or(ImageError::MissingHash)?;
    let Some(sig) = scan.signature else {
        return Err(if let Some(key) = scan.mismatch {
            ImageError::KeyTypeMismatch { key }
        } else if scan.saw_untrusted {
            ImageError::UntrustedKey
        } else {
            ImageError::NoSignature
        }
        .into());
    };
    let key = keys.get(sig.key).ok_or(ImageError::UntrustedKey)?;
    match (scan.pure, sig.kind, alg) {
        (true, KeyKind::P256, _) => return Err(ImageError::PureNotEd25519.into()),
        (false, KeyKind::P256, HashAlg::Sha512) => {
            return Err(ImageError::HashAlgorithmMismatch.into());
        }
        _ => {}
    }
    match counter {
        None if min_counter > 0 => {
            return Err(ImageError::CounterMissing {
                minimum: min_counter,
            }
            .into());
        }
        Some(c) if c < min_counter => {
            return Err(ImageError::CounterTooLow {
                counter: c,
                minimum: min_counter,
            }
            .into());
        }
        _ => {}
    }

    // One pass over the hashed range: the image hash, and for pure Ed25519 the signature.
    let mut stream: Option<StreamVerifier> = None;
    if scan.pure {
        let PublicKey::Ed25519(vk) = key.public_key() else {
            return Err(ImageError::PureNotEd25519.into());
        };
        let mut s = [0u8; 64];
        r.read(sig.at, &mut s)?;
        let s = ed25519_dalek::Signature::from_bytes(&s);
        stream = Some(vk.verify_stream(&s).map_err(|_| ImageError::BadSignature)?);
    }
    let mut hasher = match alg {
        HashAlg::Sha256 => Hasher::Sha256(Sha256::new()),
        HashAlg::Sha512 => Hasher::Sha512(Sha512::new()),
    };
    r.feed(0, layout.protected.end, |chunk| {
        match &mut hasher {
            Hasher::Sha256(h) => h.update(chunk),
            Hasher::Sha512(h) => h.update(chunk),
        }
        if let Some(s) = stream.as_mut() {
            s.update(chunk);
        }
    })?;
    let digest = match hasher {
        Hasher::Sha256(h) => ImageDigest::Sha256(h.finalize().into()),
        Hasher::Sha512(h) => ImageDigest::Sha512(h.finalize().into()),
    };
    let mut claimed = [0u8; 64];
    let (claimed, _) = claimed.split_at_mut(digest.as_bytes().len());
    r.read(hash_at, claimed)?;
    if claimed != digest.as_bytes() {
        return Err(ImageError::HashMismatch.into());
    }

    match (stream, key.public_key()) {
        (Some(stream), _) => stream
            .finalize_and_verify()
            .map_err(|_| ImageError::BadSignature)?,
        (None, PublicKey::P256(vk)) => {
            let mut der = [0u8; MAX_ECDSA_SIG];
            let (der, _) = der.split_at_mut(sig.len.min(MAX_ECDSA_SIG));
            r.read(sig.at, der)?;
            let rs = der::ecdsa_signature(der).map_err(ImageError::MalformedSignature)?;
            let s = p256::ecdsa::Signature::from_slice(&rs)
                .map_err(|_| ImageError::SignatureOutOfRange)?;
            vk.verify_prehash(digest.as_bytes(), &s)
                .map_err(|_| ImageError::BadSignature)?;
        }
        (None, PublicKey::Ed25519(vk)) => {
            let mut s = [0u8; 64];
            r.read(sig.at, &mut s)?;
            let s = ed25519_dalek::Signature::from_bytes(&s);
            vk.verify_strict(digest.as_bytes(), &s)
                .map_err(|_| ImageError::BadSignature)?;
        }
    }

    Ok(VerifiedImage {
        header: layout.header,
        security_counter: counter,
        payload: layout.payload,
        protected_tlvs: layout.protected,
        unprotected_tlvs: layout.unprotected,
        digest,
        key_index: sig.key,
        key_kind: sig.kind,
        pure: scan.pure,
    })
}

/// Reads the value of the first protected TLV of type `kind` of an image `verify_source`
/// accepted from `src`, into `buf`. Returns the value's length, which may exceed `buf` (then
/// only `buf.len()` bytes were read), or `None` if there is no such TLV.
pub fn read_protected_tlv<S: ImageSource + ?Sized>(
    src: &mut S,
    image: &VerifiedImage,
    kind: u16,
    buf: &mut [u8],
) -> Result<Option<usize>, SourceError<S::Error>> {
    let len = src.len();
    let mut r = Reads { src, len };
    let mut found = None;
    walk(
        &mut r,
        image.protected_tlvs.clone(),
        TlvArea::Protected,
        |r, e| {
            if e.kind == kind && found.is_none() {
                let n = usize::from(e.len).min(buf.len());
                let (dst, _) = buf.split_at_mut(n);
                r.read(e.value, dst)?;
                found = Some(usize::from(e.len));
            }
            Ok(())
        },
    )?;
    Ok(found)
}

/// Longest ECDSA P-256 signature TLV: 72 bytes of DER (imgtool `--pad-sig` pads to that).
const MAX_ECDSA_SIG: usize = 72;
/// Shortest DER of two one-byte INTEGERs in a SEQUENCE.
const MIN_ECDSA_SIG: usize = 8;

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashAlg {
    Sha256,
    Sha512,
}

/// Reads that are checked against the source's length before the source sees them.
struct Reads<'s, S: ?Sized> {
    src: &'s mut S,
    len: usize,
}

impl<S: ImageSource + ?Sized> Reads<'_, S> {
    fn check(&self, offset: usize, n: usize) -> Result<(), ImageError> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ImageError::ReadPastEnd {
                offset: offset as u64,
                len: n,
            }),
        }
    }

    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), SourceError<S::Error>> {
        self.check(offset, buf.len())?;
        self.src
            .read_exact_at(offset, buf)
            .map_err(SourceError::Read)
    }

    fn feed<F: FnMut(&[u8])>(
        &mut self,
        offset: usize,
        n: usize,
        sink: F,
    ) -> Result<(), SourceError<S::Error>> {
        self.check(offset, n)?;
        self.src.feed(offset, n, sink).map_err(SourceError::Read)
    }
}

/// `end` as an offset, if it lies within `len` bytes.
fn within(end: u64, len: usize) -> Option<usize> {
    usize::try_from(end).ok().filter(|&e| e <= len)
}

/// Where header, payload and TLV areas are, every bound checked against the source.
struct Layout {
    header: ImageHeader,
    payload: Range<usize>,
    protected: Range<usize>,
    unprotected: Range<usize>,
}

impl Layout {
    fn read<S: ImageSource + ?Sized>(r: &mut Reads<'_, S>) -> Result<Self, SourceError<S::Error>> {
        if r.len < HEADER_SIZE {
            return Err(ImageError::TooShort { len: r.len }.into());
        }
        let mut hdr = [0u8; HEADER_SIZE];
        r.read(0, &mut hdr)?;
        let header = ImageHeader::parse(&hdr)?;
        if header.flags & (flags::ENCRYPTED_AES128 | flags::ENCRYPTED_AES256) != 0 {
            return Err(ImageError::Encrypted {
                flags: header.flags,
            }
            .into());
        }
        let end = u64::from(header.hdr_size) + u64::from(header.img_size);
        let payload_end =
            within(end, r.len).ok_or(ImageError::PayloadTruncated { end, len: r.len })?;
        let payload = usize::from(header.hdr_size)..payload_end;

        let protected = if header.protect_tlv_size == 0 {
            payload_end..payload_end
        } else {
            let (magic, total) = info(r, payload_end, TlvArea::Protected)?;
            if magic != tlv::PROT_INFO_MAGIC {
                return Err(ImageError::BadTlvMagic {
                    area: TlvArea::Protected,
                    found: magic,
                    expected: tlv::PROT_INFO_MAGIC,
                }
                .into());
            }
            if total != header.protect_tlv_size {
                return Err(ImageError::ProtectedSizeMismatch {
                    header: header.protect_tlv_size,
                    area: total,
                }
                .into());
            }
            area(r.len, payload_end, total, TlvArea::Protected)?
        };
        let (magic, total) = info(r, protected.end, TlvArea::Unprotected)?;
        if magic != tlv::INFO_MAGIC {
            return Err(ImageError::BadTlvMagic {
                area: TlvArea::Unprotected,
                found: magic,
                expected: tlv::INFO_MAGIC,
            }
            .into());
        }
        let unprotected = area(r.len, protected.end, total, TlvArea::Unprotected)?;
        Ok(Layout {
            header,
            payload,
            protected,
            unprotected,
        })
    }
}

/// Reads the info header (magic, total length) of the area at `at`.
fn info<S: ImageSource + ?Sized>(
    r: &mut Reads<'_, S>,
    at: usize,
    area: TlvArea,
) -> Result<(u16, u16), SourceError<S::Error>> {
    if at.checked_add(HEADER_LEN).is_none_or(|end| end > r.len) {
        return Err(ImageError::TlvInfoTruncated {
            area,
            offset: at as u64,
        }
        .into());
    }
    let mut b = [0u8; HEADER_LEN];
    r.read(at, &mut b)?;
    let [m0, m1, t0, t1] = b;
    Ok((u16::from_le_bytes([m0, m1]), u16::from_le_bytes([t0, t1])))
}

/// The range of an area of `total` bytes at `at`.
fn area(len: usize, at: usize, total: u16, area: TlvArea) -> Result<Range<usize>, ImageError> {
    if usize::from(total) < HEADER_LEN {
        return Err(ImageError::TlvAreaTooSmall { area, len: total });
    }
    let end = at as u64 + u64::from(total);
    let end = within(end, len).ok_or(ImageError::TlvAreaTruncated { area, end, len })?;
    Ok(at..end)
}

/// Calls `f` on each entry of the area at `range` (info header included).
fn walk<S, F>(
    r: &mut Reads<'_, S>,
    range: Range<usize>,
    area: TlvArea,
    mut f: F,
) -> Result<(), SourceError<S::Error>>
where
    S: ImageSource + ?Sized,
    F: FnMut(&mut Reads<'_, S>, Entry) -> Result<(), SourceError<S::Error>>,
{
    let mut at = range.start.saturating_add(HEADER_LEN);
    while at < range.end {
        if range.end - at < HEADER_LEN {
            return Err(ImageError::TlvOverrun {
                area,
                offset: at as u64,
            }
            .into());
        }
        let mut hdr = [0u8; HEADER_LEN];
        r.read(at, &mut hdr)?;
        let e = tlv::entry(area, hdr, at, range.end)?;
        f(r, e)?;
        at = e.next;
    }
    Ok(())
}

/// Reads the security counter; refuses the TLVs that have no place in the protected area.
fn scan_protected<S: ImageSource + ?Sized>(
    r: &mut Reads<'_, S>,
    range: Range<usize>,
) -> Result<Option<u32>, SourceError<S::Error>> {
    let mut counter = None;
    walk(r, range, TlvArea::Protected, |r, e| {
        match e.kind {
            tlv::SEC_CNT => {
                if e.len != 4 {
                    return Err(ImageError::TlvLength {
                        kind: e.kind,
                        len: e.len,
                    }
                    .into());
                }
                if counter.is_some() {
                    return Err(ImageError::DuplicateTlv { kind: e.kind }.into());
                }
                let mut b = [0u8; 4];
                r.read(e.value, &mut b)?;
                counter = Some(u32::from_le_bytes(b));
            }
            tlv::KEYHASH
            | tlv::PUBKEY
            | tlv::SHA256
            | tlv::SHA384
            | tlv::SHA512
            | tlv::ECDSA_SIG
            | tlv::ED25519
            | tlv::SIG_PURE => return Err(ImageError::MisplacedTlv { kind: e.kind }.into()),
            // Dependencies, boot records, vendor TLVs: covered by the hash, read by others.
            _ => {}
        }
        Ok(())
    })?;
    Ok(counter)
}

/// A key TLV waiting for the signature TLV that follows it.
#[derive(Clone, Copy)]
enum Named {
    Trusted(usize, KeyKind),
    Untrusted,
}

/// A signature TLV paired with a trusted key of its algorithm.
#[derive(Clone, Copy)]
struct Sig {
    key: usize,
    kind: KeyKind,
    at: usize,
    len: usize,
}

#[derive(Default)]
struct Scan {
    hash: Option<(HashAlg, usize)>,
    pure: bool,
    signature: Option<Sig>,
    saw_untrusted: bool,
    mismatch: Option<usize>,
}

/// Finds the hash TLV, SIG_PURE, and the first signature by a trusted key. A signature TLV
/// belongs to the KEYHASH or PUBKEY TLV right before it (several may be present).
fn scan_unprotected<S: ImageSource + ?Sized>(
    r: &mut Reads<'_, S>,
    range: Range<usize>,
    keys: &[TrustedKey],
) -> Result<Scan, SourceError<S::Error>> {
    let mut scan = Scan::default();
    let mut named: Option<Named> = None;
    let mut pure_seen = false;
    let lookup = |hash: &[u8]| match keys.iter().position(|k| k.is_named_by(hash)) {
        Some(i) => keys
            .get(i)
            .map_or(Named::Untrusted, |k| Named::Trusted(i, k.kind())),
        None => Named::Untrusted,
    };
    walk(r, range, TlvArea::Unprotected, |r, e| {
        let bad_len = ImageError::TlvLength {
            kind: e.kind,
            len: e.len,
        };
        match e.kind {
            tlv::SEC_CNT => return Err(ImageError::UnprotectedCounter.into()),
            tlv::SHA256 | tlv::SHA512 => {
                let (alg, want) = if e.kind == tlv::SHA256 {
                    (HashAlg::Sha256, 32)
                } else {
                    (HashAlg::Sha512, 64)
                };
                if e.len != want {
                    return Err(bad_len.into());
                }
                if scan.hash.is_some() {
                    return Err(ImageError::DuplicateTlv { kind: e.kind }.into());
                }
                scan.hash = Some((alg, e.value));
            }
            tlv::SIG_PURE => {
                if e.len != 1 {
                    return Err(bad_len.into());
                }
                if pure_seen {
                    return Err(ImageError::DuplicateTlv { kind: e.kind }.into());
                }
                pure_seen = true;
                let mut b = [0u8; 1];
                r.read(e.value, &mut b)?;
                let [value] = b;
                if value != 1 {
                    return Err(ImageError::BadPureFlag { value }.into());
                }
                scan.pure = true;
            }
            tlv::KEYHASH => {
                if e.len != 32 && e.len != 64 {
                    return Err(bad_len.into());
                }
                let mut b = [0u8; 64];
                let (hash, _) = b.split_at_mut(usize::from(e.len));
                r.read(e.value, hash)?;
                named = Some(lookup(hash));
            }
            tlv::PUBKEY => {
                if e.len == 0 {
                    return Err(bad_len.into());
                }
                let mut h = Sha256::new();
                r.feed(e.value, usize::from(e.len), |c| h.update(c))?;
                named = Some(lookup(&h.finalize()));
            }
            tlv::ECDSA_SIG | tlv::ED25519 => {
                let kind = if e.kind == tlv::ECDSA_SIG {
                    KeyKind::P256
                } else {
                    KeyKind::Ed25519
                };
                match named.take() {
                    // A signature that names no key: ignored, as MCUboot does.
                    None => {}
                    Some(Named::Untrusted) => scan.saw_untrusted = true,
                    Some(Named::Trusted(i, k)) if k != kind => {
                        scan.mismatch.get_or_insert(i);
                    }
                    Some(Named::Trusted(i, _)) => {
                        let len = usize::from(e.len);
                        let ok = match kind {
                            KeyKind::Ed25519 => len == 64,
                            KeyKind::P256 => (MIN_ECDSA_SIG..=MAX_ECDSA_SIG).contains(&len),
                        };
                        if !ok {
                            return Err(bad_len.into());
                        }
                        if scan.signature.is_none() {
                            scan.signature = Some(Sig {
                                key: i,
                                kind,
                                at: e.value,
                                len,
                            });
                        }
                    }
                }
            }
            // RSA, P-384, encryption keys, vendor TLVs: not ours to check.
            _ => {}
        }
        Ok(())
    })?;
    Ok(scan)
}

#[cfg(test)]
mod tests;
