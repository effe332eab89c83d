//! The bounded delimiter search shared by `lines` (`\n`) and `cobs` (`0x00`).
//!
//! Only a window of `limit + 1` bytes is ever searched, the end of the previous search is
//! remembered so a frame arriving in many reads is not rescanned from its start, and a frame
//! over the limit is discarded up to its delimiter while consuming the buffer, so a peer that
//! never sends the delimiter cannot make us hold more than the current read.

use std::ops::Range;

#[cfg(test)]
use bytes::BytesMut;

/// What one call to [`DelimitedScanner::scan_at`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// The range of the bytes before the next delimiter (the delimiter is consumed).
    Frame(Range<usize>),
    /// A frame longer than the limit began here; it is being discarded up to its delimiter.
    Oversize,
    /// No delimiter yet; call again after the next read.
    Pending,
}

#[derive(Debug, Clone)]
pub(super) struct DelimitedScanner {
    delimiter: u8,
    /// Offset up to which the buffer has already been searched without finding the delimiter.
    next_index: usize,
    /// Inside an oversize frame: drop everything up to and including the next delimiter.
    discarding: bool,
}

impl DelimitedScanner {
    pub(super) fn new(delimiter: u8) -> Self {
        Self {
            delimiter,
            next_index: 0,
            discarding: false,
        }
    }

    /// Finds the next delimited frame of at most `limit` bytes in `buf[*pos..]`: moves `*pos`
    /// past what it consumed (a frame and its delimiter, or discarded bytes) and returns the
    /// frame's range in `buf`. The caller drops `buf[..*pos]` once it is done with the frames
    /// (and may cut the frame out first).
    pub(super) fn scan_at(&mut self, buf: &[u8], pos: &mut usize, limit: usize) -> Found {
        if self.discarding {
            // Everything scanned here belongs to the oversize frame, so the whole buffer can be
            // searched and dropped: no window is needed to bound memory.
            match memchr::memchr(self.delimiter, &buf[*pos..]) {
                Some(at) => {
                    *pos += at + 1;
                    self.discarding = false;
                }
                None => {
                    *pos = buf.len();
                    return Found::Pending;
                }
            }
        }
        let rest = &buf[*pos..];
        let read_to = limit.saturating_add(1).min(rest.len());
        // `limit` may have been lowered since the last search.
        let start = self.next_index.min(read_to);
        match memchr::memchr(self.delimiter, &rest[start..read_to]) {
            Some(offset) => {
                let at = start + offset;
                self.next_index = 0;
                let frame = *pos..*pos + at;
                *pos += at + 1;
                Found::Frame(frame)
            }
            None if rest.len() > limit => {
                // No delimiter within `limit + 1` bytes: the frame is too long whatever follows.
                *pos += read_to;
                self.next_index = 0;
                self.discarding = true;
                Found::Oversize
            }
            None => {
                self.next_index = read_to;
                Found::Pending
            }
        }
    }

    /// At end of stream: forgets the search state and says whether the bytes left are the tail
    /// of an already reported oversize frame (which the caller then drops).
    pub(super) fn finish(&mut self) -> bool {
        self.next_index = 0;
        std::mem::take(&mut self.discarding)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Runs `scan_at` on `buf` and drops what it consumed, as the decoders do.
    fn scan(scanner: &mut DelimitedScanner, buf: &mut BytesMut, limit: usize) -> Found {
        let mut pos = 0;
        let found = scanner.scan_at(buf, &mut pos, limit);
        if let Found::Frame(r) = &found {
            // Frames are returned as the bytes they were, then consumed.
            assert!(r.end < pos);
        }
        crate::codec::consume(buf, pos);
        found
    }

    #[test]
    fn search_resumes_where_it_stopped() {
        let mut scanner = DelimitedScanner::new(b'\n');
        let mut buf = BytesMut::new();
        for i in 1..=1000 {
            buf.extend_from_slice(b"0123456789");
            assert_eq!(scan(&mut scanner, &mut buf, 1 << 20), Found::Pending);
            assert_eq!(scanner.next_index, i * 10);
        }
        buf.extend_from_slice(b"\n");
        assert_eq!(
            scan(&mut scanner, &mut buf, 1 << 20),
            Found::Frame(0..10_000)
        );
        assert_eq!(scanner.next_index, 0);
    }

    #[test]
    fn frame_of_exactly_the_limit() {
        let mut scanner = DelimitedScanner::new(0);
        let mut buf = BytesMut::from(&b"abcd"[..]);
        assert_eq!(scan(&mut scanner, &mut buf, 4), Found::Pending);
        buf.extend_from_slice(b"\0abcde");
        let mut pos = 0;
        assert_eq!(scanner.scan_at(&buf, &mut pos, 4), Found::Frame(0..4));
        assert_eq!(&buf[0..4], b"abcd");
        crate::codec::consume(&mut buf, pos);
        assert_eq!(scan(&mut scanner, &mut buf, 4), Found::Oversize);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"f\0\0");
        assert_eq!(scan(&mut scanner, &mut buf, 4), Found::Frame(2..2));
        assert!(buf.is_empty());
    }
}
