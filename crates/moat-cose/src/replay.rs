//! The receiver's replay protection: a sliding window over message counters, as OSCORE's
//! (RFC 8613 §7.4) and IPsec's (RFC 4303 §3.4.3).

use crate::error::Error;
use crate::params::MAX_COUNTER;

/// The default window: 32 counters, OSCORE's default.
pub const DEFAULT_WINDOW_SIZE: u8 = 32;

/// Bytes of [`ReplayWindow::to_bytes`].
pub const WINDOW_STATE_LEN: usize = 18;

/// Version byte of the stored state.
const STATE_VERSION: u8 = 1;

/// Which counters one sender's messages may still carry: any above the highest accepted, and
/// those of the last `size` counters not yet accepted. Lower ones are refused ([`Error::TooOld`]):
/// they cannot be told from replays. The first counter of a new window is accepted whatever it
/// is.
///
/// Use only after the signature is verified (else anyone could move the window), and keep the
/// state where a restart cannot roll it back:
///
/// ```
/// # use moat_cose::ReplayWindow;
/// # fn store(_: &[u8]) -> Result<(), ()> { Ok(()) }
/// let mut window = ReplayWindow::new(); // or ReplayWindow::from_bytes(&stored)?
/// let counter = 7; // Sign1::counter() of a verified object
/// let next = window.check(counter)?;   // refuses replays; changes nothing
/// store(&next.to_bytes()).expect("persisted before acting on the message");
/// window = next;                       // now accept it
/// assert_eq!(window.check(counter), Err(moat_cose::Error::Replayed { counter }));
/// # Ok::<(), moat_cose::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayWindow {
    /// Counters covered below and including the highest: 1 to 64.
    size: u8,
    /// One more than the highest accepted counter; 0 before any (counter 0 is a counter).
    next: u64,
    /// Bit i set: counter `next - 1 - i` was accepted.
    seen: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window of [`DEFAULT_WINDOW_SIZE`].
    pub const fn new() -> Self {
        ReplayWindow {
            size: DEFAULT_WINDOW_SIZE,
            next: 0,
            seen: 0,
        }
    }

    /// An empty window of `size` counters (1 to 64).
    pub const fn with_size(size: u8) -> Result<Self, Error> {
        if size == 0 || size > 64 {
            return Err(Error::WindowSize { size });
        }
        Ok(ReplayWindow {
            size,
            next: 0,
            seen: 0,
        })
    }

    /// The window's size.
    pub const fn size(&self) -> u8 {
        self.size
    }

    /// The highest accepted counter, `None` before any.
    pub const fn highest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    const fn mask(size: u8) -> u64 {
        if size >= 64 {
            u64::MAX
        } else {
            (1u64 << size) - 1
        }
    }

    /// The window as it is after accepting `counter`, or why `counter` must be refused. Changes
    /// nothing: store the result, then replace this window with it.
    pub fn check(&self, counter: u64) -> Result<ReplayWindow, Error> {
        if counter > MAX_COUNTER {
            return Err(Error::CounterOutOfRange { counter });
        }
        let mut next = *self;
        match self.highest() {
            None => {
                next.next = counter + 1;
                next.seen = 1;
            }
            Some(highest) if counter > highest => {
                let shift = counter - highest;
                let moved = if shift >= 64 { 0 } else { self.seen << shift };
                next.next = counter + 1;
                next.seen = (moved | 1) & Self::mask(self.size);
            }
            Some(highest) => {
                let behind = highest - counter;
                if behind >= u64::from(self.size) {
                    return Err(Error::TooOld {
                        counter,
                        lowest: highest + 1 - u64::from(self.size),
                    });
                }
                let bit = 1u64 << behind;
                if self.seen & bit != 0 {
                    return Err(Error::Replayed { counter });
                }
                next.seen |= bit;
            }
        }
        Ok(next)
    }

    /// [`check`](Self::check), then move the window. For a caller that keeps no state across
    /// restarts, or stores it afterwards.
    pub fn accept(&mut self, counter: u64) -> Result<(), Error> {
        *self = self.check(counter)?;
        Ok(())
    }

    /// The state as 18 bytes: version (1), size, highest + 1 (u64 big-endian, 0 before any),
    /// the bitmap (u64 big-endian; bit i: highest − i was accepted).
    pub fn to_bytes(&self) -> [u8; WINDOW_STATE_LEN] {
        let mut out = [0u8; WINDOW_STATE_LEN];
        out[0] = STATE_VERSION;
        out[1] = self.size;
        out[2..10].copy_from_slice(&self.next.to_be_bytes());
        out[10..18].copy_from_slice(&self.seen.to_be_bytes());
        out
    }

    /// A window from [`to_bytes`](Self::to_bytes). Refuses ([`Error::BadWindowState`]) any
    /// other length, version, size, or a bitmap that `check` could not have left.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bytes =
            <&[u8; WINDOW_STATE_LEN]>::try_from(bytes).map_err(|_| Error::BadWindowState)?;
        let [version, size, rest @ ..] = bytes;
        let (next, seen) = rest.split_at(8);
        let next = u64::from_be_bytes(next.try_into().map_err(|_| Error::BadWindowState)?);
        let seen = u64::from_be_bytes(seen.try_into().map_err(|_| Error::BadWindowState)?);
        let window = ReplayWindow {
            size: *size,
            next,
            seen,
        };
        let valid = *version == STATE_VERSION
            && (1..=64).contains(size)
            && next <= MAX_COUNTER + 1
            && seen & !Self::mask(*size) == 0
            // Nothing seen before the first counter; the highest always seen.
            && if next == 0 { seen == 0 } else { seen & 1 == 1 }
            // No counter below zero.
            && (next >= 64 || seen >> next == 0);
        if valid {
            Ok(window)
        } else {
            Err(Error::BadWindowState)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn accepts(w: &mut ReplayWindow, counters: &[u64]) {
        for &c in counters {
            w.accept(c).unwrap_or_else(|e| panic!("{c}: {e}"));
        }
    }

    #[test]
    fn in_order_out_of_order_replays_and_too_old() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.highest(), None);
        accepts(&mut w, &[0, 1, 2, 5, 4]);
        assert_eq!(w.highest(), Some(5));
        for c in [0, 1, 2, 4, 5] {
            assert_eq!(w.check(c), Err(Error::Replayed { counter: c }));
        }
        accepts(&mut w, &[3, 40]);
        // 40 - 31 = 9 is the lowest the window of 32 still covers.
        assert_eq!(
            w.check(8),
            Err(Error::TooOld {
                counter: 8,
                lowest: 9
            })
        );
        accepts(&mut w, &[9, 39]);
        assert_eq!(w.check(9), Err(Error::Replayed { counter: 9 }));
        // A jump past the window forgets everything below it.
        accepts(&mut w, &[1000]);
        assert_eq!(w.check(999).unwrap().highest(), Some(1000));
        assert!(matches!(w.check(968), Err(Error::TooOld { .. })));
        accepts(&mut w, &[969]);
    }

    #[test]
    fn first_counter_is_any_and_bounds_hold() {
        let mut w = ReplayWindow::new();
        accepts(&mut w, &[MAX_COUNTER]);
        assert_eq!(
            w.check(MAX_COUNTER),
            Err(Error::Replayed {
                counter: MAX_COUNTER
            })
        );
        assert_eq!(
            w.check(MAX_COUNTER + 1),
            Err(Error::CounterOutOfRange {
                counter: MAX_COUNTER + 1
            })
        );
        accepts(&mut w, &[MAX_COUNTER - 31]);
        assert!(matches!(
            w.check(MAX_COUNTER - 32),
            Err(Error::TooOld { .. })
        ));
    }

    #[test]
    fn check_changes_nothing() {
        let w = ReplayWindow::new();
        let next = w.check(3).unwrap();
        assert_eq!(w, ReplayWindow::new());
        assert_eq!(next.highest(), Some(3));
        assert!(w.check(3).is_ok());
    }

    #[test]
    fn sizes() {
        for size in [1u8, 2, 63, 64] {
            let mut w = ReplayWindow::with_size(size).unwrap();
            accepts(&mut w, &[100]);
            let lowest = 100 - u64::from(size) + 1;
            assert_eq!(
                w.check(lowest - 1),
                Err(Error::TooOld {
                    counter: lowest - 1,
                    lowest
                }),
                "{size}"
            );
            if size > 1 {
                accepts(&mut w, &[lowest]);
            }
            accepts(&mut w, &[200]);
            let back = ReplayWindow::from_bytes(&w.to_bytes()).unwrap();
            assert_eq!(back, w);
        }
        assert_eq!(
            ReplayWindow::with_size(0),
            Err(Error::WindowSize { size: 0 })
        );
        assert_eq!(
            ReplayWindow::with_size(65),
            Err(Error::WindowSize { size: 65 })
        );
    }

    #[test]
    fn state_round_trips_and_bad_states_are_refused() {
        let mut w = ReplayWindow::new();
        assert_eq!(ReplayWindow::from_bytes(&w.to_bytes()), Ok(w));
        accepts(&mut w, &[10, 12, 11, 30]);
        let bytes = w.to_bytes();
        assert_eq!(bytes.len(), WINDOW_STATE_LEN);
        let back = ReplayWindow::from_bytes(&bytes).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.check(11), Err(Error::Replayed { counter: 11 }));
        assert!(back.check(13).is_ok());

        let bad = |f: &dyn Fn(&mut [u8; WINDOW_STATE_LEN])| {
            let mut b = bytes;
            f(&mut b);
            assert_eq!(
                ReplayWindow::from_bytes(&b),
                Err(Error::BadWindowState),
                "{b:02x?}"
            );
        };
        bad(&|b| b[0] = 2);
        bad(&|b| b[1] = 0);
        bad(&|b| b[1] = 65);
        // Bits past the size.
        bad(&|b| b[10] = 0x80);
        // Highest not seen.
        bad(&|b| b[17] &= 0xfe);
        // Next above 2^40.
        bad(&|b| b[2..10].copy_from_slice(&(MAX_COUNTER + 2).to_be_bytes()));
        // Empty with bits.
        bad(&|b| b[2..10].copy_from_slice(&0u64.to_be_bytes()));
        // Counters below zero: highest 1, bit 2 set.
        bad(&|b| {
            b[2..10].copy_from_slice(&2u64.to_be_bytes());
            b[10..18].copy_from_slice(&0b101u64.to_be_bytes());
        });
        assert_eq!(
            ReplayWindow::from_bytes(&bytes[..17]),
            Err(Error::BadWindowState)
        );
        assert_eq!(ReplayWindow::from_bytes(&[]), Err(Error::BadWindowState));
    }
}
