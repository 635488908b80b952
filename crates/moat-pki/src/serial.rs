//! Certificate serial numbers: 128 random bits (RFC 5280 allows up to 20 octets; CA/B asks
//! for at least 64 bits of entropy), always positive, written as lowercase hex.

/// A certificate serial number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh random serial: 16 bytes from the OS CSPRNG, top bit cleared so the DER INTEGER
    /// is positive without padding, and never zero.
    pub fn random() -> Self {
        todo!()
    }
    /// From a hex string (case-insensitive, optional `:` separators, leading zeros ignored).
    pub fn from_hex(s: &str) -> Option<Self> {
        todo!()
    }
    /// Lowercase hex without separators or leading zero bytes: the registry's key.
    pub fn to_hex(&self) -> String {
        todo!()
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
