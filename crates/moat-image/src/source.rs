//! Where the verifier reads an image from: a slice, a flash slot, a file.

/// Bytes the default [`ImageSource::feed`] reads at a time (a stack buffer).
pub const FEED_CHUNK: usize = 1024;

/// Random-access, read-only bytes of one image (and whatever follows it in its slot).
///
/// The verifier reads the header, walks the TLVs through small reads, then streams the hashed
/// range through [`feed`](Self::feed), so a device can verify straight from flash with a
/// constant amount of RAM. It never asks for bytes past [`len`](Self::len).
pub trait ImageSource {
    /// Why a read failed (a flash driver's error, `std::io::Error`, ...).
    type Error;

    /// How many bytes can be read.
    fn len(&self) -> usize;

    /// Whether there is nothing to read.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    fn read_exact_at(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Passes the bytes at `offset..offset + len` to `sink`, in order, in chunks. The default
    /// reads [`FEED_CHUNK`] bytes at a time; a source that has the bytes in memory should hand
    /// them over in one piece.
    fn feed<F: FnMut(&[u8])>(
        &mut self,
        offset: usize,
        len: usize,
        mut sink: F,
    ) -> Result<(), Self::Error> {
        let mut buf = [0u8; FEED_CHUNK];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len());
            let (chunk, _) = buf.split_at_mut(n);
            self.read_exact_at(offset + done, chunk)?;
            sink(chunk);
            done += n;
        }
        Ok(())
    }
}

/// A read outside a slice (the verifier's own bounds checks come first, so this is only a
/// second line of defence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("read of {len} bytes at byte {offset} is outside the image")]
pub struct OutOfRange {
    /// Where the read started.
    pub offset: usize,
    /// How many bytes it wanted.
    pub len: usize,
}

impl ImageSource for &[u8] {
    type Error = OutOfRange;

    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn read_exact_at(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let bytes = offset
            .checked_add(buf.len())
            .and_then(|end| self.get(offset..end))
            .ok_or(OutOfRange {
                offset,
                len: buf.len(),
            })?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn feed<F: FnMut(&[u8])>(
        &mut self,
        offset: usize,
        len: usize,
        mut sink: F,
    ) -> Result<(), OutOfRange> {
        let bytes = offset
            .checked_add(len)
            .and_then(|end| self.get(offset..end))
            .ok_or(OutOfRange { offset, len })?;
        sink(bytes);
        Ok(())
    }
}

/// An image in anything that reads and seeks, a file for instance.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct IoSource<R> {
    inner: R,
    len: usize,
}

#[cfg(feature = "std")]
impl<R: std::io::Read + std::io::Seek> IoSource<R> {
    /// Wraps `inner`; its length is where it ends now.
    pub fn new(mut inner: R) -> std::io::Result<Self> {
        let end = inner.seek(std::io::SeekFrom::End(0))?;
        let len = usize::try_from(end).map_err(std::io::Error::other)?;
        Ok(IoSource { inner, len })
    }
}

#[cfg(feature = "std")]
impl<R: std::io::Read + std::io::Seek> ImageSource for IoSource<R> {
    type Error = std::io::Error;

    fn len(&self) -> usize {
        self.len
    }

    fn read_exact_at(&mut self, offset: usize, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.seek(std::io::SeekFrom::Start(offset as u64))?;
        self.inner.read_exact(buf)
    }

    fn feed<F: FnMut(&[u8])>(
        &mut self,
        offset: usize,
        len: usize,
        mut sink: F,
    ) -> std::io::Result<()> {
        self.inner.seek(std::io::SeekFrom::Start(offset as u64))?;
        let mut buf = std::vec![0u8; 256 * 1024];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len());
            let (chunk, _) = buf.split_at_mut(want);
            std::io::Read::read_exact(&mut self.inner, chunk)?;
            sink(chunk);
            left -= want;
        }
        Ok(())
    }
}
