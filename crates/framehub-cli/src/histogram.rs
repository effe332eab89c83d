//! Latency histograms with fixed buckets: lock-free to record from any
//! thread (one atomic add per bucket hit, plus the sum), a fixed size
//! whatever the traffic, read as Prometheus' cumulative buckets. A leaf:
//! the sinks record into it, `/metrics` renders it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds: 50 µs to 10 s, about
/// 2.5 steps per decade, which covers a page-cache write and a slow disk's
/// fsync alike. Above the last: the `+Inf` bucket.
pub const BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// Durations counted into [`BOUNDS_NS`]'s buckets.
#[derive(Debug)]
pub struct Histogram {
    /// Per bucket, not cumulative (the last one is `+Inf`).
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// One bucket as Prometheus shows it: its upper bound (`le`) and how many
/// observations were at most that (cumulative).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Upper bound in seconds; `None`: `+Inf`.
    pub le: Option<f64>,
    /// Observations up to `le`.
    pub cumulative: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// Every bucket empty; `const` so a process-wide one can be a static.
    pub const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        self.observe_n(d, 1);
    }

    /// Counts `n` observations of the same duration (frames of one read).
    pub fn observe_n(&self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.counts[i].fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
    }

    /// The buckets, cumulative, `+Inf` last (its count is the total).
    pub fn buckets(&self) -> [Bucket; BUCKETS] {
        let mut total = 0;
        std::array::from_fn(|i| {
            total += self.counts[i].load(Ordering::Relaxed);
            Bucket {
                le: BOUNDS_NS.get(i).map(|&ns| ns as f64 / 1e9),
                cumulative: total,
            }
        })
    }

    /// The sum of every observation, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_add_up() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50)); // on the bound: le="5e-05"
        h.observe(Duration::from_micros(51));
        h.observe_n(Duration::from_millis(3), 2);
        h.observe(Duration::from_secs(60)); // +Inf
        let b = h.buckets();
        assert_eq!(
            b[0],
            Bucket {
                le: Some(0.00005),
                cumulative: 1
            }
        );
        assert_eq!(b[1].cumulative, 2);
        assert_eq!(b[5].le, Some(0.0025));
        assert_eq!(b[5].cumulative, 2);
        assert_eq!(b[6].le, Some(0.005));
        assert_eq!(b[6].cumulative, 4);
        assert_eq!(b[BUCKETS - 2].cumulative, 4);
        assert_eq!(
            b[BUCKETS - 1],
            Bucket {
                le: None,
                cumulative: 5
            }
        );
        assert!(b.windows(2).all(|w| w[0].cumulative <= w[1].cumulative));
        let sum = 0.00005 + 0.000051 + 0.006 + 60.0;
        assert!((h.sum_seconds() - sum).abs() < 1e-9, "{}", h.sum_seconds());
    }
}
