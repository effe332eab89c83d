//! Reconnect delays: exponential backoff with jitter, never over the
//! configured maximum.
//!
//! Jitter spreads the reconnects of a fleet that lost the same server at
//! the same moment, so they do not all hit its restart at once.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Debug)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff::with_seed(initial, max, random_seed())
    }

    fn with_seed(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng: SplitMix64(seed),
        }
    }

    /// The next delay: `initial * 2^attempt`, capped at the maximum, then
    /// drawn uniformly from its upper half ("equal jitter"), so the wait
    /// still grows but two clients rarely wait the same.
    pub(super) fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let fraction = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        half + (ceiling - half).mul_f64(fraction)
    }

    /// Back to the initial delay, after a connection that proved stable.
    pub(super) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A tiny, fast, statistically decent generator: jitter needs spread, not
/// secrecy.
#[derive(Debug)]
pub(super) struct SplitMix64(pub(super) u64);

impl SplitMix64 {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A per-process random seed from std's randomly keyed hasher, so two
/// clients (or two processes) do not draw the same delays.
pub(super) fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stay_under_the_maximum() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for seed in 0..50 {
            let mut b = Backoff::with_seed(initial, max, seed);
            for attempt in 0..30u32 {
                let ceiling = (initial * 2u32.pow(attempt.min(20))).min(max);
                let d = b.next_delay();
                assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
                assert!(d >= ceiling / 2, "attempt {attempt}: {d:?} < half");
            }
            b.reset();
            assert!(b.next_delay() <= initial);
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(1), 7);
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 15, "{delays:?}");
    }
}
