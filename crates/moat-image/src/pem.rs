//! PEM (RFC 7468) framing for public keys, without an allocator: the base64 body is gathered
//! into a stack buffer and decoded into the caller's.

use base64ct::{Base64, Encoding};

use crate::KeyError;

/// Longest base64 body accepted: a P-256 SubjectPublicKeyInfo (91 bytes) is 124 characters.
const MAX_BASE64: usize = 256;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes the first PEM block of `pem`, which must be a `PUBLIC KEY`, into `out`.
pub(crate) fn decode_public_key<'o>(pem: &[u8], out: &'o mut [u8]) -> Result<&'o [u8], KeyError> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    const LABEL: &[u8] = b"PUBLIC KEY";
    const END: &[u8] = b"-----END PUBLIC KEY-----";

    let begin = find(pem, BEGIN).ok_or(KeyError::PemFraming)?;
    let after_begin = pem.get(begin + BEGIN.len()..).ok_or(KeyError::PemFraming)?;
    let label_len = find(after_begin, DASHES).ok_or(KeyError::PemFraming)?;
    if after_begin.get(..label_len) != Some(LABEL) {
        return Err(KeyError::PemLabel);
    }
    let body_and_rest = after_begin
        .get(label_len + DASHES.len()..)
        .ok_or(KeyError::PemFraming)?;
    let end = find(body_and_rest, END).ok_or(KeyError::PemFraming)?;
    let body = body_and_rest.get(..end).ok_or(KeyError::PemFraming)?;

    let mut b64 = [0u8; MAX_BASE64];
    let mut n = 0;
    for &c in body.iter().filter(|c| !c.is_ascii_whitespace()) {
        let slot = b64.get_mut(n).ok_or(KeyError::PemTooLong)?;
        *slot = c;
        n += 1;
    }
    let (b64, _) = b64.split_at(n);
    Base64::decode(b64, out).map_err(KeyError::PemBase64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_errors() {
        let mut out = [0u8; 128];
        assert_eq!(
            decode_public_key(b"no pem here", &mut out),
            Err(KeyError::PemFraming)
        );
        assert_eq!(
            decode_public_key(
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                &mut out
            ),
            Err(KeyError::PemLabel)
        );
        assert_eq!(
            decode_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n", &mut out),
            Err(KeyError::PemFraming)
        );
        assert!(matches!(
            decode_public_key(
                b"-----BEGIN PUBLIC KEY-----\nA*AA\n-----END PUBLIC KEY-----\n",
                &mut out
            ),
            Err(KeyError::PemBase64(_))
        ));
        let long = [b'A'; 400];
        let mut pem = b"-----BEGIN PUBLIC KEY-----\n".to_vec();
        pem.extend_from_slice(&long);
        pem.extend_from_slice(b"\n-----END PUBLIC KEY-----\n");
        assert_eq!(decode_public_key(&pem, &mut out), Err(KeyError::PemTooLong));
    }

    #[test]
    fn decodes_with_text_around_and_crlf() {
        let mut out = [0u8; 16];
        let pem = b"comment\r\n-----BEGIN PUBLIC KEY-----\r\nAQID\r\nBA==\r\n-----END PUBLIC KEY-----\r\n";
        assert_eq!(decode_public_key(pem, &mut out), Ok(&[1u8, 2, 3, 4][..]));
    }
}
