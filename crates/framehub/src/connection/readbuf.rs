//! The connection's read buffer and how it grows: small until the peer
//! shows it sends more than a hello, then `read_buffer_bytes` for good.
//!
//! An idle authenticated connection used to hold a `read_buffer_bytes`
//! (64 KiB) allocation of which its hello had touched one page: 4 KiB of
//! resident memory, about half of what such a connection cost (issue 16).
//! Now the first reads go to a [`FIRST_READ`]-byte buffer; the first read
//! that fills it, or that leaves an unfinished frame behind, switches to
//! the full size, which is then kept (handing the big buffer back whenever
//! a connection paused was tried before and cost throughput). A read that
//! did not fill the small buffer took everything the socket had, so a
//! connection that stays small makes the same reads it would have made
//! with the big one.

use bytes::BytesMut;

/// The size of a connection's first read buffer: a hello with a token and
/// a node name fits, with room to spare.
pub(crate) const FIRST_READ: usize = 512;

/// A connection's read buffer.
pub(crate) struct ReadBuffer {
    pub(crate) buf: BytesMut,
    /// `read_buffer_bytes`.
    read_size: usize,
    /// Still the first, small buffer.
    small: bool,
    /// Room for the read being made, as [`ReadBuffer::prepare`] left it.
    room: usize,
}

impl ReadBuffer {
    pub(crate) fn new(read_size: usize) -> ReadBuffer {
        let read_size = read_size.max(1);
        let first = FIRST_READ.min(read_size);
        ReadBuffer {
            buf: BytesMut::with_capacity(first),
            read_size,
            small: first < read_size,
            room: 0,
        }
    }

    /// Makes room for the next read; returns the new allocation's size when
    /// it reallocated (frames that share the buffer keep this much alive).
    pub(crate) fn prepare(&mut self) -> Option<usize> {
        let room = self.buf.capacity() - self.buf.len();
        let grow = if self.small {
            // Handing out frames as slices of the small buffer can leave
            // it nearly full.
            room < FIRST_READ / 2
        } else {
            room < self.read_size / 2
        };
        let grown = grow.then(|| {
            self.small = false;
            self.buf.reserve(self.read_size);
            self.buf.capacity()
        });
        self.room = self.buf.capacity() - self.buf.len();
        grown
    }

    /// After a read of `n` bytes was handed to the core (what is left in
    /// the buffer is an unfinished frame): a read that filled the small
    /// buffer, or a frame still coming, means the peer streams, and the
    /// next [`ReadBuffer::prepare`] takes the full size.
    pub(crate) fn after_read(&mut self, n: usize) {
        if self.small && (n >= self.room || !self.buf.is_empty()) {
            self.small = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_alone_keeps_the_small_buffer() {
        let mut r = ReadBuffer::new(64 << 10);
        assert_eq!(r.prepare(), None);
        assert_eq!(r.buf.capacity(), FIRST_READ);
        // A 100-byte hello, consumed whole.
        r.after_read(100);
        assert_eq!(r.prepare(), None);
        assert_eq!(r.buf.capacity(), FIRST_READ);
    }

    #[test]
    fn a_full_read_or_an_unfinished_frame_switches_to_the_full_size() {
        let mut r = ReadBuffer::new(64 << 10);
        r.prepare();
        r.after_read(FIRST_READ);
        assert!(r.prepare().is_some_and(|cap| cap >= 64 << 10));

        let mut r = ReadBuffer::new(64 << 10);
        r.prepare();
        r.buf.extend_from_slice(b"{\"half\":");
        r.after_read(8);
        assert!(r.prepare().is_some_and(|cap| cap >= 64 << 10));
        assert_eq!(&r.buf[..], b"{\"half\":");
        // Kept from then on, however short the reads.
        r.buf.clear();
        r.after_read(1);
        assert_eq!(r.prepare(), None);
        assert!(r.buf.capacity() >= 64 << 10);
    }

    #[test]
    fn a_small_read_size_is_used_from_the_start() {
        let mut r = ReadBuffer::new(FIRST_READ);
        r.prepare();
        assert_eq!(r.buf.capacity(), FIRST_READ);
        r.after_read(FIRST_READ);
        r.prepare();
        assert!(r.buf.capacity() >= FIRST_READ);
    }
}
