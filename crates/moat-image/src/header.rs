//! The 32-byte image header.

use core::fmt;

use crate::ImageError;

/// First four bytes of every image (little-endian).
pub const IMAGE_MAGIC: u32 = 0x96f3_b83d;
/// Size of the header structure; `hdr_size` may be larger (padding before the payload).
pub const HEADER_SIZE: usize = 32;

/// Header flag bits (MCUboot `IMAGE_F_*`).
pub mod flags {
    /// Position-independent code.
    pub const PIC: u32 = 0x0000_0001;
    /// Payload encrypted with AES-128-CTR.
    pub const ENCRYPTED_AES128: u32 = 0x0000_0004;
    /// Payload encrypted with AES-256-CTR.
    pub const ENCRYPTED_AES256: u32 = 0x0000_0008;
    /// Not a bootable image (for instance data for another processor).
    pub const NON_BOOTABLE: u32 = 0x0000_0010;
    /// Runs from RAM at `load_addr`.
    pub const RAM_LOAD: u32 = 0x0000_0020;
    /// Built for a fixed flash address (`load_addr`).
    pub const ROM_FIXED: u32 = 0x0000_0100;
    /// Payload compressed with LZMA1.
    pub const COMPRESSED_LZMA1: u32 = 0x0000_0200;
    /// Payload compressed with LZMA2.
    pub const COMPRESSED_LZMA2: u32 = 0x0000_0400;
    /// ARM Thumb filter applied before compression.
    pub const COMPRESSED_ARM_THUMB: u32 = 0x0000_0800;
}

/// Image version: `major.minor.revision+build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ImageVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Revision.
    pub revision: u16,
    /// Build number (MCUboot ignores it when comparing versions).
    pub build: u32,
}

impl fmt::Display for ImageVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}+{}",
            self.major, self.minor, self.revision, self.build
        )
    }
}

/// The parsed header. Offsets and sizes are as the header states them; [`crate::verify`]
/// checks them against the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Load address for RAM-load or ROM-fixed images, else 0.
    pub load_addr: u32,
    /// Where the payload starts (header plus padding).
    pub hdr_size: u16,
    /// Size of the protected TLV area including its info header, 0 if there is none.
    pub protect_tlv_size: u16,
    /// Payload size.
    pub img_size: u32,
    /// `IMAGE_F_*` bits, see [`flags`].
    pub flags: u32,
    /// The version.
    pub version: ImageVersion,
}

impl ImageHeader {
    /// Parses the header: checks the magic and that `hdr_size` covers the header itself.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<Self, ImageError> {
        // A pattern over the whole array: every field is read without an index that could fail.
        let [
            m0,
            m1,
            m2,
            m3,
            l0,
            l1,
            l2,
            l3,
            h0,
            h1,
            p0,
            p1,
            s0,
            s1,
            s2,
            s3,
            f0,
            f1,
            f2,
            f3,
            major,
            minor,
            r0,
            r1,
            b0,
            b1,
            b2,
            b3,
            _,
            _,
            _,
            _,
        ] = *b;
        let magic = u32::from_le_bytes([m0, m1, m2, m3]);
        if magic != IMAGE_MAGIC {
            return Err(ImageError::BadMagic { found: magic });
        }
        let header = ImageHeader {
            load_addr: u32::from_le_bytes([l0, l1, l2, l3]),
            hdr_size: u16::from_le_bytes([h0, h1]),
            protect_tlv_size: u16::from_le_bytes([p0, p1]),
            img_size: u32::from_le_bytes([s0, s1, s2, s3]),
            flags: u32::from_le_bytes([f0, f1, f2, f3]),
            version: ImageVersion {
                major,
                minor,
                revision: u16::from_le_bytes([r0, r1]),
                build: u32::from_le_bytes([b0, b1, b2, b3]),
            },
        };
        if usize::from(header.hdr_size) < HEADER_SIZE {
            return Err(ImageError::HeaderTooSmall {
                hdr_size: header.hdr_size,
            });
        }
        Ok(header)
    }

    /// Encodes the header (for signing tools and tests).
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let mut parts = IMAGE_MAGIC
            .to_le_bytes()
            .into_iter()
            .chain(self.load_addr.to_le_bytes())
            .chain(self.hdr_size.to_le_bytes())
            .chain(self.protect_tlv_size.to_le_bytes())
            .chain(self.img_size.to_le_bytes())
            .chain(self.flags.to_le_bytes())
            .chain([self.version.major, self.version.minor])
            .chain(self.version.revision.to_le_bytes())
            .chain(self.version.build.to_le_bytes());
        for (slot, v) in b.iter_mut().zip(&mut parts) {
            *slot = v;
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = ImageHeader {
            load_addr: 0x2000_0000,
            hdr_size: 0x200,
            protect_tlv_size: 12,
            img_size: 1000,
            flags: flags::RAM_LOAD,
            version: ImageVersion {
                major: 1,
                minor: 2,
                revision: 3,
                build: 4,
            },
        };
        assert_eq!(ImageHeader::parse(&h.to_bytes()), Ok(h));
        assert_eq!(h.version.to_string(), "1.2.3+4");
    }

    #[test]
    fn refuses_bad_magic_and_small_header() {
        let mut h = ImageHeader {
            load_addr: 0,
            hdr_size: 31,
            protect_tlv_size: 0,
            img_size: 0,
            flags: 0,
            version: ImageVersion::default(),
        };
        assert_eq!(
            ImageHeader::parse(&h.to_bytes()),
            Err(ImageError::HeaderTooSmall { hdr_size: 31 })
        );
        h.hdr_size = 32;
        let mut b = h.to_bytes();
        b[0] ^= 1;
        assert_eq!(
            ImageHeader::parse(&b),
            Err(ImageError::BadMagic {
                found: IMAGE_MAGIC ^ 1
            })
        );
    }
}
