//! Minimal PEM: encoding (RFC 7468, 64-column base64) and block extraction.

use crate::Error;
use x509_parser::pem::Pem;

/// Whether `input` is to be read as PEM (anything that does not start like DER does).
pub(crate) fn looks_like_pem(input: &[u8]) -> bool {
    // Every DER object we read (certificate, CSR, CRL, SPKI) is a SEQUENCE: tag 0x30.
    input.first() != Some(&0x30)
}

/// All PEM blocks of `input`, in order. A block that is present but broken is an error.
pub(crate) fn blocks(input: &[u8], what: &'static str) -> Result<Vec<Pem>, Error> {
    Pem::iter_from_buffer(input)
        .map(|r| {
            r.map_err(|e| Error::Malformed {
                what,
                detail: format!("bad PEM: {e}"),
            })
        })
        .collect()
}

/// The contents of the first block labelled with one of `labels`.
pub(crate) fn first_block(
    input: &[u8],
    labels: &[&str],
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    blocks(input, what)?
        .into_iter()
        .find(|b| labels.contains(&b.label.as_str()))
        .map(|b| b.contents)
        .ok_or_else(|| Error::Malformed {
            what,
            detail: format!("no PEM block labelled {}", labels.join(" or ")),
        })
}

/// `-----BEGIN {label}-----` PEM of `der`.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so each chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = encode("X509 CRL", &data);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back = first_block(pem.as_bytes(), &["X509 CRL"], "CRL").expect("decodes");
        assert_eq!(back, data);
        assert!(first_block(pem.as_bytes(), &["CERTIFICATE"], "certificate").is_err());
    }
}
