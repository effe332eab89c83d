//! The hub-wide budget for bytes of unfinished frames
//! (`partial_frame_budget`): each connection may hold up to
//! `max_frame_bytes` of a frame still arriving, and hundreds of peers
//! trickling never-ending frames could otherwise hold gigabytes. When all
//! of them together hold more than the budget, the connections holding the
//! largest unfinished frames are closed (`partial_budget`) until the rest
//! fits: the peers pushing the most memory go, small partial frames (a
//! line split across two reads) never do.
//!
//! A leaf: the connection drivers report what they hold after each read
//! and release it when they end; a cut is a cancellation of the
//! connection's token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// Unfinished frames smaller than this are only summed, never cut: the
/// table of holders that can be cut stays small, and a connection's read
/// ending inside a line is no reason to close it.
pub(crate) const TRACKED_BYTES: usize = 4 << 10;

/// A connection holding at least [`TRACKED_BYTES`] of an unfinished frame.
struct Holder {
    bytes: usize,
    /// Its connection's token: cancelled to cut it.
    cancel: CancellationToken,
    /// Cut already: its bytes are no longer in `used`.
    cut: bool,
}

/// The budget, shared by every connection of a hub.
pub(crate) struct PartialBudget {
    limit: usize,
    /// Bytes of unfinished frames held now, over all connections (those
    /// cut excluded).
    used: AtomicUsize,
    holders: Mutex<HashMap<u64, Holder>>,
}

impl PartialBudget {
    pub(crate) fn new(limit: usize) -> PartialBudget {
        PartialBudget {
            limit,
            used: AtomicUsize::new(0),
            holders: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes held now, over all connections.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Connection `conn`, which held `*held` bytes of an unfinished frame,
    /// now holds `now`: recorded, and if the hub is over budget the largest
    /// holders (maybe this one) are cut. `cancel` cuts `conn`. Once cut,
    /// its reports are ignored.
    pub(crate) fn update(
        &self,
        conn: u64,
        held: &mut usize,
        now: usize,
        cancel: &CancellationToken,
    ) {
        let before = *held;
        if before == now {
            return;
        }
        if before < TRACKED_BYTES && now < TRACKED_BYTES {
            // The common case: no lock.
            self.adjust(before, now);
        } else {
            let mut holders = self.holders.lock();
            if holders.get(&conn).is_some_and(|h| h.cut) {
                return;
            }
            self.adjust(before, now);
            if now >= TRACKED_BYTES {
                holders
                    .entry(conn)
                    .and_modify(|h| h.bytes = now)
                    .or_insert_with(|| Holder {
                        bytes: now,
                        cancel: cancel.clone(),
                        cut: false,
                    });
            } else {
                holders.remove(&conn);
            }
        }
        *held = now;
        if now > before && self.used() > self.limit {
            self.cut_largest();
        }
    }

    fn adjust(&self, before: usize, now: usize) {
        if now > before {
            self.used.fetch_add(now - before, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// Cuts the largest holders until the rest fits the budget (or no
    /// holder is left to cut).
    fn cut_largest(&self) {
        let mut holders = self.holders.lock();
        while self.used() > self.limit {
            let Some(largest) = holders
                .values_mut()
                .filter(|h| !h.cut)
                .max_by_key(|h| h.bytes)
            else {
                return;
            };
            largest.cut = true;
            largest.cancel.cancel();
            self.used.fetch_sub(largest.bytes, Ordering::Relaxed);
        }
    }

    /// Whether `conn` was cut (its close reason is `partial_budget`).
    pub(crate) fn was_cut(&self, conn: u64) -> bool {
        self.holders.lock().get(&conn).is_some_and(|h| h.cut)
    }

    /// Connection `conn` ended holding `held` bytes.
    pub(crate) fn release(&self, conn: u64, held: usize) {
        // Only a tracked holder is ever cut, and a cut one's reports are
        // ignored: its last report was a tracked size.
        let cut = if held >= TRACKED_BYTES {
            self.holders.lock().remove(&conn).is_some_and(|h| h.cut)
        } else {
            false
        };
        if !cut {
            self.used.fetch_sub(held, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_holders_are_cut_until_the_rest_fits() {
        let budget = PartialBudget::new(100 << 10);
        let tokens: Vec<CancellationToken> = (0..6).map(|_| CancellationToken::new()).collect();
        let mut held = [0usize; 6];
        // Small partial frames add up but are never cut.
        budget.update(0, &mut held[0], 1000, &tokens[0]);
        // Four holders of 30 KiB: the fourth goes over 100 KiB.
        for conn in 1..5 {
            budget.update(conn as u64, &mut held[conn], 30 << 10, &tokens[conn]);
        }
        let cut: Vec<bool> = tokens.iter().map(CancellationToken::is_cancelled).collect();
        assert_eq!(cut.iter().filter(|c| **c).count(), 1, "{cut:?}");
        assert!(!cut[0], "the small holder stays");
        assert!(budget.used() <= 100 << 10, "{}", budget.used());
        // One grows: it is now the largest, and it is the one cut.
        budget.update(5, &mut held[5], 5 << 10, &tokens[5]);
        assert_eq!(tokens.iter().filter(|t| t.is_cancelled()).count(), 1);
        let survivor = (1..5)
            .find(|c| !tokens[*c].is_cancelled())
            .expect("one left");
        budget.update(
            survivor as u64,
            &mut held[survivor],
            90 << 10,
            &tokens[survivor],
        );
        assert!(tokens[survivor].is_cancelled());
        assert!(budget.was_cut(survivor as u64));
        assert!(budget.used() <= 100 << 10);
        // A cut connection's later reports and its release change nothing.
        let used = budget.used();
        budget.update(survivor as u64, &mut held[survivor], 1, &tokens[survivor]);
        budget.release(survivor as u64, held[survivor]);
        assert_eq!(budget.used(), used);
        assert!(!budget.was_cut(survivor as u64), "forgotten once released");
        // Everyone else ends: nothing is left held.
        for (conn, held) in held.iter().enumerate() {
            if conn != survivor {
                budget.release(conn as u64, *held);
            }
        }
        assert_eq!(budget.used(), 0);
        assert!(budget.holders.lock().is_empty());
    }
}
