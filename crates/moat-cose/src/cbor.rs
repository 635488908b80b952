//! The little CBOR (RFC 8949) this format needs: item heads, written in preferred (shortest)
//! form and read strictly (definite lengths, preferred form, bounds checked, no recursion).

use crate::error::{Error, Field};

pub(crate) const UINT: u8 = 0;
pub(crate) const NINT: u8 = 1;
pub(crate) const BSTR: u8 = 2;
pub(crate) const ARRAY: u8 = 4;
pub(crate) const MAP: u8 = 5;
pub(crate) const TAG: u8 = 6;
pub(crate) const SIMPLE: u8 = 7;

/// The simple value `null`, as a whole item.
pub(crate) const NULL: u8 = 0xf6;

/// A head: up to 9 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    bytes: [u8; 9],
    len: u8,
}

impl Head {
    /// The preferred (shortest) head of an item of major type `major` with argument `arg`.
    pub(crate) const fn new(major: u8, arg: u64) -> Head {
        let mut bytes = [0u8; 9];
        let m = major << 5;
        let len = if arg < 24 {
            bytes[0] = m | arg as u8;
            1
        } else if arg <= 0xff {
            bytes[0] = m | 24;
            bytes[1] = arg as u8;
            2
        } else if arg <= 0xffff {
            bytes[0] = m | 25;
            let b = (arg as u16).to_be_bytes();
            bytes[1] = b[0];
            bytes[2] = b[1];
            3
        } else if arg <= 0xffff_ffff {
            bytes[0] = m | 26;
            let b = (arg as u32).to_be_bytes();
            let mut i = 0;
            while i < 4 {
                bytes[1 + i] = b[i];
                i += 1;
            }
            5
        } else {
            bytes[0] = m | 27;
            let b = arg.to_be_bytes();
            let mut i = 0;
            while i < 8 {
                bytes[1 + i] = b[i];
                i += 1;
            }
            9
        };
        Head { bytes, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The length of the preferred head for `arg`.
    pub(crate) const fn len_of(arg: u64) -> usize {
        if arg < 24 {
            1
        } else if arg <= 0xff {
            2
        } else if arg <= 0xffff {
            3
        } else if arg <= 0xffff_ffff {
            5
        } else {
            9
        }
    }
}

/// A strict reader over one input. Offsets in errors are from the start of `buf`.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Where reading must stop (the end of `buf`, or of a byte string read inside it).
    end: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// A reader over `range` of the same input (offsets stay those of the whole input).
    pub(crate) fn within(&self, start: usize, end: usize) -> Self {
        Reader {
            buf: self.buf,
            pos: start,
            end,
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        if self.pos < self.end {
            self.buf.get(self.pos).copied()
        } else {
            None
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let stop = self.pos.checked_add(n).ok_or(Error::Truncated)?;
        if stop > self.end {
            return Err(Error::Truncated);
        }
        let s = self.buf.get(self.pos..stop).ok_or(Error::Truncated)?;
        self.pos = stop;
        Ok(s)
    }

    /// One head: major type and argument. Refuses reserved values, indefinite lengths and
    /// (except for major type 7, whose floats are never preferred-checked) longer-than-needed
    /// arguments.
    pub(crate) fn head(&mut self) -> Result<(u8, u64), Error> {
        let offset = self.pos;
        let [first] = *self.take(1)? else {
            return Err(Error::Truncated);
        };
        let major = first >> 5;
        let ai = first & 0x1f;
        let (arg, min) = match ai {
            0..=23 => (u64::from(ai), 0),
            24 => (u64::from(self.byte()?), 24),
            25 => (u64::from(u16::from_be_bytes(self.array()?)), 0x100),
            26 => (u64::from(u32::from_be_bytes(self.array()?)), 0x1_0000),
            27 => (u64::from_be_bytes(self.array()?), 0x1_0000_0000),
            31 if (BSTR..=MAP).contains(&major) => return Err(Error::IndefiniteLength { offset }),
            _ => return Err(Error::Malformed { offset }),
        };
        if major == SIMPLE {
            // Simple values below 32 in two bytes are not well-formed; floats are what they are.
            if ai == 24 && arg < 32 {
                return Err(Error::Malformed { offset });
            }
        } else if arg < min {
            return Err(Error::NonPreferredEncoding { offset });
        }
        Ok((major, arg))
    }

    fn byte(&mut self) -> Result<u8, Error> {
        let [b] = *self.take(1)? else {
            return Err(Error::Truncated);
        };
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let s = self.take(N)?;
        <[u8; N]>::try_from(s).map_err(|_| Error::Truncated)
    }

    /// A head of major type `major`, else `Unexpected { field }`.
    pub(crate) fn expect(&mut self, major: u8, field: Field) -> Result<u64, Error> {
        let offset = self.pos;
        match self.head()? {
            (m, arg) if m == major => Ok(arg),
            _ => Err(Error::Unexpected { field, offset }),
        }
    }

    /// A byte string's content.
    pub(crate) fn bstr(&mut self, field: Field) -> Result<&'a [u8], Error> {
        let len = self.expect(BSTR, field)?;
        let len = usize::try_from(len).map_err(|_| Error::Truncated)?;
        self.take(len)
    }

    /// A byte string's content and where it starts.
    pub(crate) fn bstr_at(&mut self, field: Field) -> Result<(usize, &'a [u8]), Error> {
        let len = self.expect(BSTR, field)?;
        let len = usize::try_from(len).map_err(|_| Error::Truncated)?;
        let start = self.pos;
        Ok((start, self.take(len)?))
    }

    /// An integer (major type 0 or 1), as i128 so that every CBOR integer fits.
    pub(crate) fn int(&mut self, field: Field) -> Result<i128, Error> {
        let offset = self.pos;
        match self.head()? {
            (UINT, v) => Ok(i128::from(v)),
            (NINT, v) => Ok(-1 - i128::from(v)),
            _ => Err(Error::Unexpected { field, offset }),
        }
    }
}

/// An integer as `i64` for error messages, `None` outside.
pub(crate) fn narrow(v: i128) -> Option<i64> {
    i64::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn heads_are_shortest_and_read_back() {
        for (arg, len) in [
            (0u64, 1),
            (23, 1),
            (24, 2),
            (255, 2),
            (256, 3),
            (65535, 3),
            (65536, 5),
            (u64::from(u32::MAX), 5),
            (1 << 32, 9),
            (u64::MAX, 9),
        ] {
            let h = Head::new(BSTR, arg);
            assert_eq!(h.as_bytes().len(), len, "{arg}");
            assert_eq!(Head::len_of(arg), len, "{arg}");
            let mut r = Reader::new(h.as_bytes());
            assert_eq!(r.head().unwrap(), (BSTR, arg));
            assert!(r.at_end());
        }
    }

    #[test]
    fn refusals() {
        let cases: &[(&[u8], Error)] = &[
            (&[], Error::Truncated),
            (&[0x58], Error::Truncated),
            (&[0x59, 0x01], Error::Truncated),
            (&[0x18, 0x17], Error::NonPreferredEncoding { offset: 0 }),
            (
                &[0x19, 0x00, 0xff],
                Error::NonPreferredEncoding { offset: 0 },
            ),
            (
                &[0x1a, 0x00, 0x00, 0xff, 0xff],
                Error::NonPreferredEncoding { offset: 0 },
            ),
            (
                &[0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
                Error::NonPreferredEncoding { offset: 0 },
            ),
            (&[0x1c], Error::Malformed { offset: 0 }),
            (&[0x1f], Error::Malformed { offset: 0 }),
            (&[0xff], Error::Malformed { offset: 0 }),
            (&[0x5f], Error::IndefiniteLength { offset: 0 }),
            (&[0x9f], Error::IndefiniteLength { offset: 0 }),
            (&[0xbf], Error::IndefiniteLength { offset: 0 }),
            (&[0xf8, 0x10], Error::Malformed { offset: 0 }),
        ];
        for (bytes, want) in cases {
            assert_eq!(Reader::new(bytes).head(), Err(*want), "{bytes:02x?}");
        }
        // A length past the end, even one that overflows usize arithmetic.
        let mut r = Reader::new(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.bstr(Field::Payload), Err(Error::Truncated));
        assert_eq!(
            Reader::new(&[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .int(Field::Label)
                .unwrap(),
            -1 - i128::from(u64::MAX)
        );
    }
}
