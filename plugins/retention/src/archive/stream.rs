//! Readers and writers the archive code streams through: sha256 while reading or writing,
//! and a reader that yields exactly a file's planned size.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};

/// A reader that yields exactly `len` bytes: the source's bytes, then zeros if it came up
/// short (so the tar stream stays well-formed; the caller drops the archive then). A read
/// error is kept and ends the stream early.
pub(super) struct ExactReader {
    inner: File,
    remaining: u64,
    shortfall: u64,
    error: Option<io::Error>,
    eof: bool,
}

impl ExactReader {
    pub(super) fn new(inner: File, len: u64) -> Self {
        Self {
            inner,
            remaining: len,
            shortfall: 0,
            error: None,
            eof: false,
        }
    }
    pub(super) fn into_parts(self) -> (File, u64, Option<io::Error>) {
        (self.inner, self.shortfall, self.error)
    }
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = if self.eof || self.error.is_some() {
            0
        } else {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    self.error = Some(e);
                    0
                }
            }
        };
        if n == 0 {
            self.eof = true;
            buf[..want].fill(0);
            self.shortfall += want as u64;
            self.remaining -= want as u64;
            return Ok(want);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Hashes (sha256) and counts what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// The inner reader, the hex sha256 and the byte count.
    pub fn into_parts(self) -> (R, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes (sha256) what is written through it.
pub(super) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> HashingWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }
    pub(super) fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
