//! Reconnect delays: exponential backoff with jitter, never over the
//! configured maximum.
//!
//! Jitter spreads the reconnects of a fleet that lost the same server at
//! the same moment, so they do not all hit its restart at once.

use std::time::Duration;

#[derive(Debug)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration) -> Backoff {
        // Randomly seeded per client, so a fleet does not draw alike.
        Backoff::with_rng(initial, max, fastrand::Rng::new())
    }

    fn with_rng(initial: Duration, max: Duration, rng: fastrand::Rng) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng,
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
        half + (ceiling - half).mul_f64(self.rng.f64())
    }

    /// Back to the initial delay, after a connection that proved stable.
    pub(super) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stay_under_the_maximum() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for seed in 0..50 {
            let mut b = Backoff::with_rng(initial, max, fastrand::Rng::with_seed(seed));
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
        let mut b = Backoff::with_rng(
            Duration::from_secs(1),
            Duration::from_secs(1),
            fastrand::Rng::with_seed(7),
        );
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 15, "{delays:?}");
    }
}
