//! Where a read's delivered frames live: copied out of the read buffer into
//! one allocation of their size, so a frame waiting in a queue never pins a
//! whole read buffer.

use bytes::{Bytes, BytesMut};

use crate::frame::Incoming;

/// Copies the payloads of a batch into one allocation of exactly their size.
///
/// Frames cut from a read buffer share its allocation: a queue of 2000 small
/// frames would otherwise pin up to 2000 whole read buffers. One copy and one
/// allocation per read keeps a waiting frame's cost near its own size and
/// leaves the read buffer unshared, so it is reused for the next read.
pub(crate) fn compact(batch: &mut [Incoming]) {
    let arena = pack(batch.iter().map(|i| &i.frame.payload[..]));
    share_out(batch, arena, |_, item| item.frame.payload.len());
}

/// Copies `pieces` one after the other into one allocation of exactly their total size.
pub(crate) fn pack<'a>(pieces: impl Iterator<Item = &'a [u8]> + Clone) -> Bytes {
    let total: usize = pieces.clone().map(<[u8]>::len).sum();
    if total == 0 {
        return Bytes::new();
    }
    let mut arena = BytesMut::with_capacity(total);
    for piece in pieces {
        arena.extend_from_slice(piece);
    }
    arena.freeze()
}

/// Gives each frame of `batch` its slice of `arena`, which holds their payloads in order;
/// `len_of(index, frame)` says how long each is.
pub(crate) fn share_out(
    batch: &mut [Incoming],
    arena: Bytes,
    len_of: impl Fn(usize, &Incoming) -> usize,
) {
    let mut offset = 0;
    for (i, item) in batch.iter_mut().enumerate() {
        let len = len_of(i, item);
        item.frame.payload = arena.slice(offset..offset + len);
        offset += len;
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::frame::Frame;

    use crate::frame::test_source as source;

    #[test]
    fn compact_copies_into_one_exact_allocation() {
        let big = Bytes::from(vec![7u8; 65536]);
        let mut batch: Vec<Incoming> = (0..3)
            .map(|i| {
                Incoming::new(
                    Frame {
                        payload: big.slice(i * 10..i * 10 + 5),
                        received_at: SystemTime::now(),
                        source: source(),
                        seq: None,
                    },
                    None,
                )
            })
            .collect();
        compact(&mut batch);
        drop(big);
        for item in &batch {
            assert_eq!(&item.frame.payload[..], &[7u8; 5]);
        }
    }
}
