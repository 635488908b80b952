//! Certificate serial numbers: 128 random bits (RFC 5280 allows up to 20 octets; CA/B asks
//! for at least 64 bits of entropy), always positive, written as lowercase hex.

use rand::RngCore;

/// A certificate serial number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh random serial: 16 bytes from the OS CSPRNG, top bit cleared so the DER INTEGER
    /// is positive without padding, and never zero.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        let mut bytes = [0u8; 16];
        loop {
            rng.fill_bytes(&mut bytes);
            bytes[0] &= 0x7f;
            // A zero first byte would be dropped (no leading zero bytes), leaving a shorter
            // serial whose top bit might be set; draw again instead (1 time in 128).
            if bytes[0] != 0 {
                return Serial(bytes.to_vec());
            }
        }
    }

    /// From a hex string (case-insensitive, optional `:` separators, leading zeros ignored).
    pub fn from_hex(s: &str) -> Option<Self> {
        let digits: Vec<u8> = s
            .trim()
            .bytes()
            .filter(|b| *b != b':')
            .map(|b| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                b'A'..=b'F' => Some(b - b'A' + 10),
                _ => None,
            })
            .collect::<Option<_>>()?;
        if digits.is_empty() {
            return None;
        }
        let mut bytes = Vec::with_capacity(digits.len() / 2 + 1);
        let odd = digits.len() % 2 == 1;
        if odd {
            bytes.push(digits[0]);
        }
        for pair in digits[usize::from(odd)..].chunks_exact(2) {
            bytes.push(pair[0] << 4 | pair[1]);
        }
        Some(Self::from_bytes(&bytes))
    }

    /// From big-endian bytes (e.g. a certificate's raw serial); leading zero bytes are
    /// dropped. Zero is kept as the single byte `00`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|b| *b != 0);
        match start {
            Some(i) => Serial(bytes[i..].to_vec()),
            None => Serial(vec![0]),
        }
    }

    /// Lowercase hex without separators or leading zero bytes: the registry's key.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
    /// Big-endian bytes without leading zero bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// For rcgen.
    pub fn to_rcgen(&self) -> rcgen::SerialNumber {
        rcgen::SerialNumber::from_slice(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_positive_16_bytes_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let s = Serial::random();
            assert_eq!(s.as_bytes().len(), 16);
            assert!(s.as_bytes()[0] != 0 && s.as_bytes()[0] & 0x80 == 0);
            assert_eq!(s.to_hex().len(), 32);
            assert!(seen.insert(s));
        }
    }

    #[test]
    fn hex_round_trip_and_forms() {
        let s = Serial::from_hex("00:0A:bc:01").expect("valid hex");
        assert_eq!(s.as_bytes(), &[0x0a, 0xbc, 0x01]);
        assert_eq!(s.to_hex(), "0abc01");
        assert_eq!(Serial::from_hex("abc01"), Some(s.clone()));
        assert_eq!(Serial::from_hex(&s.to_hex()), Some(s));
        assert_eq!(
            Serial::from_hex("0000").map(|s| s.to_hex()),
            Some("00".into())
        );
        assert_eq!(Serial::from_hex(""), None);
        assert_eq!(Serial::from_hex("xyz"), None);
        let r = Serial::random();
        assert_eq!(Serial::from_hex(&r.to_hex().to_uppercase()), Some(r));
    }
}
