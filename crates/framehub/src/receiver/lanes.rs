//! The fair store of a raw listener's queue: one lane of frames per
//! connection (per stream, under acknowledged delivery: [`lane_of`]),
//! taken round-robin, so that a peer flooding the listener can only lose
//! its own frames (issue 18).
//!
//! Every connection with frames waiting has a share of the queue's
//! capacity (capacity / connections with frames, at least one frame). A
//! connection below its share always gets its frame in, even when the queue
//! is full; one at or above it, when the queue is full, drops its own
//! frames by the queue's policy (drop-oldest: its oldest; drop-newest: the
//! new one; block: it waits). So a flooder fills the queue, a quiet
//! neighbour still gets in, and the flooder sheds back to its share. The
//! frames held stay under twice the capacity: the capacity, plus at most
//! the shares of the connections that pushed past it.

use std::collections::{HashMap, VecDeque};

use crate::config::OverflowPolicy;
use crate::frame::Frame;

/// The lane a frame belongs to: its connection's, except for a numbered
/// frame of an acknowledged `length` stream, whose lane is its stream's.
/// A stream's frames must reach the consumer in its order, and after a
/// silent network drop the stream's old connection may still hold frames
/// queued before its client's new connection delivers the later ones: in
/// lanes of their own, round-robin would interleave them.
pub(crate) fn lane_of(frame: &Frame) -> u64 {
    match (&frame.source.node, frame.seq) {
        (Some(stream), Some(_)) => {
            use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
            // The top bit keeps stream lanes apart from connection ids
            // (counted up from 1). Two streams hashing alike share a lane:
            // fairness between them, never order, is what that costs.
            BuildHasherDefault::<DefaultHasher>::default().hash_one(stream.as_bytes()) | 1 << 63
        }
        _ => frame.source.conn,
    }
}

/// What offering one frame did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Offered {
    /// The frame went in.
    pub(super) enqueued: bool,
    /// Frames of the offering connection dropped (the new one, or its
    /// oldest).
    pub(super) dropped: usize,
}

/// Per-connection lanes and the round-robin turn over them. Only lanes with
/// frames exist: the table is bounded by the frames held.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    /// Keyed by [`lane_of`]. foldhash rather than the default SipHash: a
    /// lookup is on every frame's path, and SipHash's ~100 instructions
    /// per lookup were most of a raw frame's delivery cost (callgrind,
    /// `bench/callgrind.sh` case `length`); its per-process random seed
    /// keeps the keys unguessable.
    lanes: HashMap<u64, VecDeque<Frame>, foldhash::fast::RandomState>,
    /// Connections with frames, in the order the consumer serves them.
    turn: VecDeque<u64>,
    len: usize,
    /// Emptied lanes kept for the next lane to start with their room: a
    /// consumer that keeps up empties a lane on every take, and growing a
    /// new one from nothing each time cost ~80 instructions per frame
    /// (callgrind, case `length`). At most [`SPARE_LANES`], each with room
    /// for at most [`SPARE_FRAMES`]: a bounded memory of ~150 KB.
    spare: Vec<VecDeque<Frame>>,
}

/// Emptied lanes kept for reuse, at most.
const SPARE_LANES: usize = 16;
/// Room (frames) an emptied lane keeps when it is kept for reuse, at most.
const SPARE_FRAMES: usize = 128;

impl Lanes {
    /// Frames held, over all lanes.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn lane_len(&self, conn: u64) -> usize {
        self.lanes.get(&conn).map_or(0, VecDeque::len)
    }

    /// The frames `conn` may hold however full the queue is: an equal part
    /// of `capacity` among the connections with frames, `conn` included.
    fn share(&self, conn: u64, capacity: usize) -> usize {
        let active = self.lanes.len() + usize::from(!self.lanes.contains_key(&conn));
        capacity.div_ceil(active.max(1)).max(1)
    }

    /// Frames `conn` can push now without dropping any: the queue's free
    /// room, or what is left of its share, whichever is more.
    pub(super) fn room_for(&self, conn: u64, capacity: usize) -> usize {
        let free = capacity.saturating_sub(self.len);
        let own = self
            .share(conn, capacity)
            .saturating_sub(self.lane_len(conn));
        free.max(own)
    }

    /// How many frames `conn` should wait for room for, when it has `n`
    /// to push: never more than its share.
    pub(super) fn wanted(&self, conn: u64, n: usize, capacity: usize) -> usize {
        n.min(self.share(conn, capacity)).max(1)
    }

    /// Offers one frame of `conn` under `policy` (with `Block` the caller
    /// already checked [`Lanes::room_for`]).
    pub(super) fn offer(
        &mut self,
        conn: u64,
        frame: Frame,
        capacity: usize,
        policy: OverflowPolicy,
    ) -> Offered {
        let mut out = Offered::default();
        if self.len >= capacity && self.lane_len(conn) >= self.share(conn, capacity) {
            // Full, and this connection holds its share already: it pays.
            match policy {
                OverflowPolicy::DropNewest => {
                    out.dropped = 1;
                    return out;
                }
                OverflowPolicy::DropOldest | OverflowPolicy::Block => {
                    if self.pop_oldest(conn) {
                        out.dropped += 1;
                    }
                }
            }
        }
        self.push(conn, frame);
        out.enqueued = true;
        if policy == OverflowPolicy::DropOldest && self.len > capacity {
            // Others pushed past the capacity within their shares: shed
            // this connection's oldest frames back towards its share.
            let share = self.share(conn, capacity);
            while self.len > capacity && self.lane_len(conn) > share && self.pop_oldest(conn) {
                out.dropped += 1;
            }
        }
        out
    }

    fn push(&mut self, conn: u64, frame: Frame) {
        let lane = self.lanes.entry(conn).or_insert_with(|| {
            self.turn.push_back(conn);
            self.spare.pop().unwrap_or_default()
        });
        lane.push_back(frame);
        self.len += 1;
    }

    /// Drops the oldest frame of `conn`'s lane; false if it has none.
    fn pop_oldest(&mut self, conn: u64) -> bool {
        let Some(lane) = self.lanes.get_mut(&conn) else {
            return false;
        };
        if lane.pop_front().is_none() {
            return false;
        }
        self.len -= 1;
        if lane.is_empty() {
            self.remove_lane(conn);
        }
        true
    }

    fn remove_lane(&mut self, conn: u64) {
        self.retire(conn);
        if let Some(at) = self.turn.iter().position(|c| *c == conn) {
            self.turn.remove(at);
        }
    }

    /// Takes `conn`'s emptied lane out of the table and keeps it for reuse,
    /// within the bounds of [`Lanes::spare`].
    // A few lines on the consumer's path; the callgrind `length` case measured
    // 220-226 instructions per frame of delivery with it inlined, 232 once without
    // (within the spread of that case between runs).
    #[inline]
    fn retire(&mut self, conn: u64) {
        let Some(mut lane) = self.lanes.remove(&conn) else {
            return;
        };
        if self.spare.len() < SPARE_LANES {
            lane.clear();
            lane.shrink_to(SPARE_FRAMES);
            self.spare.push(lane);
        }
    }

    /// Moves up to `max` frames into `out`, round-robin over the lanes:
    /// each connection in turn gives an equal part of what is left to
    /// take, its frames in their order. Returns how many.
    pub(super) fn take(&mut self, max: usize, out: &mut impl Extend<Frame>) -> usize {
        let mut taken = 0;
        while taken < max {
            let Some(conn) = self.turn.pop_front() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&conn) else {
                continue;
            };
            let quantum = ((max - taken) / (self.turn.len() + 1)).max(1);
            let k = quantum.min(lane.len());
            out.extend(lane.drain(..k));
            taken += k;
            self.len -= k;
            if lane.is_empty() {
                self.retire(conn);
            } else {
                self.turn.push_back(conn);
            }
        }
        taken
    }

    /// Drops every frame; returns how many there were.
    pub(super) fn clear(&mut self) -> usize {
        let n = self.len;
        self.lanes.clear();
        self.turn.clear();
        self.spare.clear();
        self.len = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::config::Protocol;
    use crate::frame::Source;

    fn frame(conn: u64, n: u32) -> Frame {
        Frame {
            payload: Bytes::from(format!("{conn}:{n}")),
            received_at: SystemTime::UNIX_EPOCH,
            source: Arc::new(Source {
                conn,
                peer: "127.0.0.1:1".parse().expect("addr"),
                listener: "raw".into(),
                node: None,
                protocol: Protocol::Raw,
            }),
            seq: None,
        }
    }

    fn names(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
            .collect()
    }

    /// A flooder fills the queue; a quiet connection still gets every
    /// frame in, the flooder loses only its own, and the total stays
    /// under twice the capacity.
    #[test]
    fn a_flooder_loses_only_its_own_frames() {
        for policy in [OverflowPolicy::DropOldest, OverflowPolicy::DropNewest] {
            let mut lanes = Lanes::default();
            let capacity = 10;
            let mut flooder_dropped = 0;
            // A slow consumer: 3 frames taken for every 10 flooded.
            let mut out = Vec::new();
            for n in 0..100 {
                let o = lanes.offer(1, frame(1, n), capacity, policy);
                flooder_dropped += o.dropped;
                if n % 10 == 0 {
                    let o = lanes.offer(2, frame(2, n / 10), capacity, policy);
                    assert_eq!(
                        o,
                        Offered {
                            enqueued: true,
                            dropped: 0
                        },
                        "{policy:?}"
                    );
                }
                if n % 10 == 9 {
                    lanes.take(3, &mut out);
                }
                assert!(lanes.len() < 2 * capacity, "{policy:?}: {}", lanes.len());
            }
            lanes.take(usize::MAX, &mut out);
            let quiet: Vec<_> = names(&out)
                .into_iter()
                .filter(|n| n.starts_with("2:"))
                .collect();
            assert_eq!(quiet.len(), 10, "{policy:?}: every quiet frame is there");
            let flooder = out.len() - quiet.len();
            assert_eq!(
                flooder + flooder_dropped,
                100,
                "{policy:?}: every drop counted"
            );
            assert!(flooder_dropped > 0, "{policy:?}");
            assert_eq!(lanes.len(), 0);
        }
    }

    /// Consumers take round-robin, each connection's frames in order.
    #[test]
    fn takes_go_round_robin_in_order() {
        let mut lanes = Lanes::default();
        for n in 0..4 {
            lanes.offer(1, frame(1, n), 100, OverflowPolicy::DropOldest);
        }
        lanes.offer(2, frame(2, 0), 100, OverflowPolicy::DropOldest);
        lanes.offer(3, frame(3, 0), 100, OverflowPolicy::DropOldest);
        let mut out = Vec::new();
        for _ in 0..4 {
            assert_eq!(lanes.take(1, &mut out), 1);
        }
        assert_eq!(names(&out), ["1:0", "2:0", "3:0", "1:1"]);
        out.clear();
        assert_eq!(lanes.take(10, &mut out), 2);
        assert_eq!(names(&out), ["1:2", "1:3"]);
        assert!(lanes.lanes.is_empty() && lanes.turn.is_empty());
    }

    /// Emptied lanes are kept for reuse within their bounds: at most
    /// `SPARE_LANES` of them, each with room for at most `SPARE_FRAMES`.
    #[test]
    fn emptied_lanes_are_kept_within_bounds() {
        let mut lanes = Lanes::default();
        let mut out = Vec::new();
        // One lane flooded far past the spare room, then emptied.
        for n in 0..1000 {
            lanes.offer(1, frame(1, n), 2000, OverflowPolicy::DropOldest);
        }
        assert_eq!(lanes.take(usize::MAX, &mut out), 1000);
        assert_eq!(lanes.spare.len(), 1);
        assert!(lanes.spare[0].capacity() <= SPARE_FRAMES);
        // The next lane starts with that room, and its frames are its own.
        lanes.offer(2, frame(2, 0), 2000, OverflowPolicy::DropOldest);
        assert!(lanes.spare.is_empty());
        // Many lanes emptied at once: at most SPARE_LANES are kept.
        for conn in 3..100 {
            lanes.offer(conn, frame(conn, 0), 2000, OverflowPolicy::DropOldest);
        }
        out.clear();
        assert_eq!(lanes.take(usize::MAX, &mut out), 98);
        assert_eq!(names(&out)[0], "2:0");
        assert_eq!(lanes.spare.len(), SPARE_LANES);
        assert_eq!(lanes.len(), 0);
    }

    /// With `block`, room is what the queue has free or what is left of
    /// the connection's share.
    #[test]
    fn room_is_free_space_or_the_rest_of_a_share() {
        let mut lanes = Lanes::default();
        for n in 0..10 {
            lanes.offer(1, frame(1, n), 10, OverflowPolicy::Block);
        }
        assert_eq!(lanes.room_for(1, 10), 0, "the flooder waits");
        assert_eq!(lanes.room_for(2, 10), 5, "a newcomer gets half");
        assert_eq!(lanes.wanted(1, 100, 10), 10);
        assert_eq!(lanes.wanted(2, 100, 10), 5);
        assert_eq!(lanes.clear(), 10);
    }
}
