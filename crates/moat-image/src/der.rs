//! The little DER this crate reads: SubjectPublicKeyInfo and ECDSA signatures. Strict:
//! definite minimal lengths, minimal positive INTEGERs, nothing trailing.

use crate::DerError;

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OID: u8 = 0x06;

/// Reads consecutive TLVs out of a byte string.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { rest: data }
    }

    fn byte(&mut self) -> Result<u8, DerError> {
        let (&b, rest) = self.rest.split_first().ok_or(DerError::Truncated)?;
        self.rest = rest;
        Ok(b)
    }

    fn length(&mut self) -> Result<usize, DerError> {
        match self.byte()? {
            n @ 0..=0x7f => Ok(usize::from(n)),
            0x81 => match self.byte()? {
                n @ 0x80..=0xff => Ok(usize::from(n)),
                _ => Err(DerError::BadLength),
            },
            0x82 => {
                let n = u16::from_be_bytes([self.byte()?, self.byte()?]);
                if n < 0x100 {
                    return Err(DerError::BadLength);
                }
                Ok(usize::from(n))
            }
            _ => Err(DerError::BadLength),
        }
    }

    /// Reads one element with tag `tag` and returns its contents.
    pub(crate) fn read(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        let found = self.byte()?;
        if found != tag {
            return Err(DerError::UnexpectedTag {
                expected: tag,
                found,
            });
        }
        let len = self.length()?;
        if len > self.rest.len() {
            return Err(DerError::Truncated);
        }
        let (value, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(value)
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Succeeds only if everything was read.
    pub(crate) fn finish(self) -> Result<(), DerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData)
        }
    }
}

/// Reads a DER INTEGER holding a positive value of at most 32 bytes, right-aligned.
fn read_scalar(r: &mut Reader<'_>) -> Result<[u8; 32], DerError> {
    let v = r.read(INTEGER)?;
    let digits = match v {
        [] => return Err(DerError::BadInteger),
        [b, ..] if b & 0x80 != 0 => return Err(DerError::BadInteger),
        [0, next, ..] if next & 0x80 == 0 => return Err(DerError::BadInteger),
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => v,
    };
    let mut out = [0u8; 32];
    let start = out
        .len()
        .checked_sub(digits.len())
        .ok_or(DerError::BadInteger)?;
    let (_, tail) = out.split_at_mut(start);
    tail.copy_from_slice(digits);
    Ok(out)
}

/// Decodes an ECDSA-Sig-Value (SEQUENCE { r INTEGER, s INTEGER }) into `r || s`.
///
/// Zero bytes after the SEQUENCE are accepted: `imgtool sign --pad-sig` pads signatures for
/// MCUboot < 1.5 that way. They are outside the signed range either way.
pub(crate) fn ecdsa_signature(der: &[u8]) -> Result<[u8; 64], DerError> {
    let mut outer = Reader::new(der);
    let body = outer.read(SEQUENCE)?;
    if outer.rest().iter().any(|&b| b != 0) {
        return Err(DerError::TrailingData);
    }
    let mut seq = Reader::new(body);
    let r = read_scalar(&mut seq)?;
    let s = read_scalar(&mut seq)?;
    seq.finish()?;
    let mut rs = [0u8; 64];
    for (dst, src) in rs.iter_mut().zip(r.iter().chain(s.iter())) {
        *dst = *src;
    }
    Ok(rs)
}

/// Encodes `r || s` as an ECDSA-Sig-Value, as imgtool does.
#[cfg(any(test, feature = "sign"))]
pub(crate) fn encode_ecdsa_signature(rs: &[u8; 64]) -> std::vec::Vec<u8> {
    fn int(v: &[u8]) -> std::vec::Vec<u8> {
        let trimmed: std::vec::Vec<u8> = v.iter().copied().skip_while(|&b| b == 0).collect();
        let mut body = std::vec::Vec::new();
        if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(&trimmed);
        let mut out = std::vec![INTEGER, body.len() as u8];
        out.extend_from_slice(&body);
        out
    }
    let (r, s) = rs.split_at(32);
    let mut body = int(r);
    body.extend(int(s));
    let mut out = std::vec![SEQUENCE, body.len() as u8];
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(r0: u8, s0: u8) -> [u8; 64] {
        let mut v = [0x11u8; 64];
        v[0] = r0;
        v[32] = s0;
        v
    }

    #[test]
    fn signature_round_trip_with_and_without_high_bits() {
        for (r0, s0) in [(0x01, 0x7f), (0x80, 0xff), (0x00, 0x00)] {
            let v = rs(r0, s0);
            let der = encode_ecdsa_signature(&v);
            assert_eq!(ecdsa_signature(&der), Ok(v), "{der:02x?}");
            let mut padded = der.clone();
            padded.extend([0, 0]);
            assert_eq!(ecdsa_signature(&padded), Ok(v));
            let mut junk = der.clone();
            junk.push(1);
            assert_eq!(ecdsa_signature(&junk), Err(DerError::TrailingData));
        }
    }

    #[test]
    fn refuses_non_minimal_and_negative_integers() {
        // r = 0x00 0x01 (padded), s = 1
        let padded = [0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01];
        assert_eq!(ecdsa_signature(&padded), Err(DerError::BadInteger));
        let negative = [0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01];
        assert_eq!(ecdsa_signature(&negative), Err(DerError::BadInteger));
        let empty = [0x30, 0x05, 0x02, 0x00, 0x02, 0x01, 0x01];
        assert_eq!(ecdsa_signature(&empty), Err(DerError::BadInteger));
        let long_form_len = [0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
        assert_eq!(ecdsa_signature(&long_form_len), Err(DerError::BadLength));
        let too_long = {
            let mut v = std::vec![0x30, 0x26, 0x02, 0x21, 0x01];
            v.extend([0u8; 32]);
            v.extend([0x02, 0x01, 0x01]);
            v
        };
        assert_eq!(ecdsa_signature(&too_long), Err(DerError::BadInteger));
        assert_eq!(ecdsa_signature(&[0x30, 0x05]), Err(DerError::Truncated));
    }
}
