//! TLV areas: type constants, and walking the entries of an area.
//!
//! Each entry is a 4-byte little-endian header, `u16 type, u16 len`, then `len` bytes. (imgtool
//! 2.x packs built-in types as `u8 type, u8 0`, which is the same bytes little-endian.)

use core::ops::Range;

use crate::{ImageError, TlvArea};

/// Magic of the unprotected TLV area's info header.
pub const INFO_MAGIC: u16 = 0x6907;
/// Magic of the protected TLV area's info header.
pub const PROT_INFO_MAGIC: u16 = 0x6908;
/// Size of an area's info header (`u16 magic, u16 total length`) and of an entry header.
pub const HEADER_LEN: usize = 4;

/// SHA-256 of the public key's SubjectPublicKeyInfo (SHA-512 for SHA-512 images).
pub const KEYHASH: u16 = 0x01;
/// The public key's SubjectPublicKeyInfo itself.
pub const PUBKEY: u16 = 0x02;
/// SHA-256 over header, payload and protected TLVs.
pub const SHA256: u16 = 0x10;
/// SHA-384 of the same (not supported here: P-384 images).
pub const SHA384: u16 = 0x11;
/// SHA-512 of the same (imgtool `--sha 512`, and Ed25519 `--pure`).
pub const SHA512: u16 = 0x12;
/// RSA-2048 signature (not supported here).
pub const RSA2048: u16 = 0x20;
/// DER ECDSA signature (P-256 with SHA-256 here).
pub const ECDSA_SIG: u16 = 0x22;
/// Ed25519 signature over the image hash, or over the hashed range with [`SIG_PURE`].
pub const ED25519: u16 = 0x24;
/// Present (value 1) when the signature covers the hashed range itself, not its hash.
pub const SIG_PURE: u16 = 0x25;
/// Dependency on another image's version.
pub const DEPENDENCY: u16 = 0x40;
/// Security counter (u32), accepted only in the protected area.
pub const SEC_CNT: u16 = 0x50;
/// Start of the range imgtool leaves to vendors (`--custom-tlv`).
pub const VENDOR_MIN: u16 = 0x00a0;

/// One TLV entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Its type.
    pub kind: u16,
    /// Its value.
    pub value: &'a [u8],
}

/// Where one entry is, found by [`entry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub kind: u16,
    pub len: u16,
    /// Offset of the value.
    pub value: usize,
    /// Offset of the next entry.
    pub next: usize,
}

/// Decodes the entry header `hdr` read at `at`, in an area ending at `end`: the value must end
/// inside the area.
pub(crate) fn entry(
    area: TlvArea,
    hdr: [u8; HEADER_LEN],
    at: usize,
    end: usize,
) -> Result<Entry, ImageError> {
    let [k0, k1, l0, l1] = hdr;
    let kind = u16::from_le_bytes([k0, k1]);
    let len = u16::from_le_bytes([l0, l1]);
    let overrun = ImageError::TlvOverrun {
        area,
        offset: at as u64,
    };
    let value = at.checked_add(HEADER_LEN).ok_or(overrun)?;
    let next = value.checked_add(usize::from(len)).ok_or(overrun)?;
    if next > end {
        return Err(overrun);
    }
    Ok(Entry {
        kind,
        len,
        value,
        next,
    })
}

/// The entries of one TLV area of an image in memory, for instance the protected area of a
/// [`VerifiedImage`](crate::VerifiedImage) (`TlvIter::new(image, v.protected_tlvs.clone(), ..)`).
///
/// Yields an error and stops if an entry runs past the end of the area.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    image: &'a [u8],
    area: TlvArea,
    pos: usize,
    end: usize,
    failed: bool,
}

impl<'a> TlvIter<'a> {
    /// Walks the area at `range` of `image`, info header included.
    pub fn new(image: &'a [u8], range: Range<usize>, area: TlvArea) -> Self {
        let end = range.end.min(image.len());
        TlvIter {
            image,
            area,
            // An empty range (no area) yields nothing.
            pos: range.start.saturating_add(HEADER_LEN).min(end),
            end,
            failed: false,
        }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, ImageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.end {
            return None;
        }
        let overrun = ImageError::TlvOverrun {
            area: self.area,
            offset: self.pos as u64,
        };
        let hdr = self
            .pos
            .checked_add(HEADER_LEN)
            .filter(|&e| e <= self.end)
            .and_then(|e| self.image.get(self.pos..e))
            .and_then(|h| <[u8; HEADER_LEN]>::try_from(h).ok());
        let found = hdr
            .ok_or(overrun)
            .and_then(|hdr| entry(self.area, hdr, self.pos, self.end))
            .and_then(|e| {
                let value = self.image.get(e.value..e.next).ok_or(overrun)?;
                Ok((e, value))
            });
        match found {
            Ok((e, value)) => {
                self.pos = e.next;
                Some(Ok(Tlv {
                    kind: e.kind,
                    value,
                }))
            }
            Err(err) => {
                self.failed = true;
                Some(Err(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_and_stops_at_overrun() {
        // info header, SEC_CNT = 5, then an entry claiming 9 bytes with 2 left.
        let area = [
            0x08, 0x69, 20, 0, 0x50, 0, 4, 0, 5, 0, 0, 0, 0xa0, 0, 9, 0, 1, 2,
        ];
        let mut it = TlvIter::new(&area, 0..area.len(), TlvArea::Protected);
        assert_eq!(
            it.next(),
            Some(Ok(Tlv {
                kind: SEC_CNT,
                value: &[5, 0, 0, 0]
            }))
        );
        assert_eq!(
            it.next(),
            Some(Err(ImageError::TlvOverrun {
                area: TlvArea::Protected,
                offset: 12
            }))
        );
        assert_eq!(it.next(), None);
        assert_eq!(TlvIter::new(&area, 3..3, TlvArea::Protected).count(), 0);
    }
}
