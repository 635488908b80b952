//! A human-readable verdict on an image, for `moat fw verify` and logs. Formats without an
//! allocator; `to_string()` it on the workstation.

use core::fmt;

use crate::{HEADER_SIZE, ImageError, ImageHeader, TrustedKey, VerifiedImage, verify};

/// The verdict on one image, with what its header says; see [`report`].
#[derive(Debug, Clone)]
pub struct Report<'k> {
    /// The header as found, if it parses (shown even when the image is refused).
    pub header: Option<ImageHeader>,
    /// The verification result.
    pub result: Result<VerifiedImage, ImageError>,
    /// The keys it was checked against (to name the one that matched).
    keys: &'k [TrustedKey],
    /// The stored minimum security counter it was checked against.
    min_counter: u32,
}

impl Report<'_> {
    /// Whether the image was accepted.
    pub fn accepted(&self) -> bool {
        self.result.is_ok()
    }
}

/// Verifies `image` and returns a report: the version, security counter, image hash and the
/// key that signed it, or the reason it was refused (with the header's unverified claims).
pub fn report<'k>(image: &[u8], keys: &'k [TrustedKey], min_counter: u32) -> Report<'k> {
    let header = image
        .first_chunk::<HEADER_SIZE>()
        .and_then(|h| ImageHeader::parse(h).ok());
    Report {
        header,
        result: verify(image, keys, min_counter),
        keys,
        min_counter,
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(v) => {
                writeln!(f, "verdict: accepted")?;
                writeln!(f, "version: {}", v.version())?;
                match v.security_counter {
                    Some(c) => writeln!(f, "security counter: {c} (minimum {})", self.min_counter)?,
                    None => writeln!(f, "security counter: none")?,
                }
                writeln!(
                    f,
                    "payload: {} bytes at offset {:#x}",
                    v.payload.len(),
                    v.payload.start
                )?;
                writeln!(
                    f,
                    "image hash: {} {}",
                    v.digest.algorithm(),
                    Hex(v.digest.as_bytes())
                )?;
                let key_hash = self.keys.get(v.key_index).map(|k| Hex(k.key_hash()));
                write!(f, "signed by: key #{} ({}", v.key_index, v.key_kind)?;
                if let Some(h) = key_hash {
                    write!(f, ", key hash {h}")?;
                }
                writeln!(f, "{})", if v.pure { ", pure" } else { "" })?;
            }
            Err(e) => {
                writeln!(f, "verdict: refused: {e}")?;
                if let Some(h) = &self.header {
                    writeln!(f, "version (unverified): {}", h.version)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageVersion;
    use crate::sign::{ImageBuilder, SigningKey};

    #[test]
    fn accepted_and_refused() {
        let key = SigningKey::ed25519_from_bytes(&[7; 32]);
        let keys = [key.trusted_key()];
        let image = ImageBuilder::new(ImageVersion {
            major: 1,
            minor: 2,
            revision: 3,
            build: 4,
        })
        .with_security_counter(5)
        .sign(b"payload", &key)
        .expect("signs");
        let ok = report(&image, &keys, 3).to_string();
        assert!(
            ok.starts_with("verdict: accepted\nversion: 1.2.3+4\n"),
            "{ok}"
        );
        assert!(ok.contains("security counter: 5 (minimum 3)"), "{ok}");
        assert!(ok.contains("signed by: key #0 (Ed25519, key hash "), "{ok}");
        let low = report(&image, &keys, 6);
        assert!(!low.accepted());
        assert_eq!(
            low.to_string(),
            "verdict: refused: security counter 5 is below the minimum 6\n\
             version (unverified): 1.2.3+4\n"
        );
    }
}
