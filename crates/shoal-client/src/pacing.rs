//! How hard the client pushes a cluster that is struggling: a **retry budget** (retries and
//! hedges together at most a share of requests, so a client cannot multiply the load on
//! overloaded nodes — the amplification that turns an overload into a metastable collapse),
//! **jittered exponential backoff** between rounds of retries, and a **hedge delay** drawn from
//! the reads' observed latency instead of a fixed figure (a read is also sent to a second node
//! only when it is slower than most reads were recently).
//!
//! Not here: which errors may be retried at all (that is about whether a write may have been
//! applied: `client.rs` decides), and which node to try next (`routing`, `health`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

/// The budget counts in thousandths of a retry, so its arithmetic is exact.
const RETRY: u64 = 1000;
/// Retries and hedges may add at most this share of requests (a tenth), over time.
const EARNED_PER_REQUEST: u64 = RETRY / 10;
/// However few requests a client makes, it may retry this many times a second.
const MIN_RETRIES_PER_SECOND: u64 = 10;
/// Retries saved up at most: a quiet client does not build up a burst of them.
const MAX_SAVED: u64 = 100 * RETRY;
/// The first backoff of a new round of retries; it doubles with each round.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// The longest backoff.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Read latencies remembered for the hedge delay.
const LATENCY_WINDOW: usize = 512;
/// The hedge delay is recomputed after this many new reads.
const RECOMPUTE_EVERY: usize = 64;

/// The retry budget: a token bucket filled by requests (a tenth of a retry each) and by time
/// (`MIN_RETRIES_PER_SECOND`), emptied one retry at a time.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    /// In thousandths of a retry.
    saved: u64,
    refilled: Instant,
}

impl RetryBudget {
    pub(crate) fn new() -> RetryBudget {
        RetryBudget {
            state: Mutex::new(BudgetState {
                saved: MIN_RETRIES_PER_SECOND * RETRY,
                refilled: Instant::now(),
            }),
        }
    }

    /// A request starts: it earns a share of a retry.
    pub(crate) fn deposit(&self) {
        let mut state = self.lock();
        state.saved = (state.saved + EARNED_PER_REQUEST).min(MAX_SAVED);
    }

    /// Whether one more attempt of a request may go out now; spends a token if so.
    pub(crate) fn withdraw(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.refilled);
        // MIN_RETRIES_PER_SECOND retries a second is that many thousandths a millisecond.
        let earned = u64::try_from(elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(MIN_RETRIES_PER_SECOND);
        if earned > 0 {
            state.refilled = now;
            state.saved = state.saved.saturating_add(earned).min(MAX_SAVED);
        }
        if state.saved >= RETRY {
            state.saved -= RETRY;
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        // Every update is a few float stores: a poisoned budget is still a budget.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The wait before round `round` (1 for the first retry round): a random time up to
/// `FIRST_BACKOFF × 2^(round-1)`, capped at `MAX_BACKOFF` ("full jitter"), so clients that
/// were refused together do not come back together.
pub(crate) fn backoff(round: u32) -> Duration {
    let shift = round.saturating_sub(1).min(16);
    let ceiling = FIRST_BACKOFF.saturating_mul(1 << shift).min(MAX_BACKOFF);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// When a read is also sent to the next node: the `quantile` of recent reads' latency, kept
/// between `min` and `max`. Until enough reads were seen, `max`.
#[derive(Debug)]
pub(crate) struct HedgeDelay {
    quantile: f64,
    min: Duration,
    max: Duration,
    /// The delay now, in nanoseconds, read without a lock.
    current: AtomicU64,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    latencies: Vec<Duration>,
    next: usize,
    since_recompute: usize,
}

impl HedgeDelay {
    pub(crate) fn new(quantile: f64, min: Duration, max: Duration) -> HedgeDelay {
        HedgeDelay {
            quantile: quantile.clamp(0.0, 1.0),
            min,
            max: max.max(min),
            current: AtomicU64::new(nanos(max.max(min))),
            window: Mutex::new(Window::default()),
        }
    }

    /// The delay to hedge after, now.
    pub(crate) fn current(&self) -> Duration {
        Duration::from_nanos(self.current.load(Ordering::Relaxed))
    }

    /// A read answered after `latency`.
    pub(crate) fn observe(&self, latency: Duration) {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if window.latencies.len() < LATENCY_WINDOW {
            window.latencies.push(latency);
        } else {
            let at = window.next;
            window.latencies[at] = latency;
        }
        window.next = (window.next + 1) % LATENCY_WINDOW;
        window.since_recompute += 1;
        if window.since_recompute < RECOMPUTE_EVERY {
            return;
        }
        window.since_recompute = 0;
        let mut sorted = window.latencies.clone();
        drop(window);
        let rank = ((sorted.len() as f64 - 1.0) * self.quantile).round() as usize;
        let rank = rank.min(sorted.len().saturating_sub(1));
        let (_, q, _) = sorted.select_nth_unstable(rank);
        let delay = (*q).clamp(self.min, self.max);
        self.current.store(nanos(delay), Ordering::Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_tenth_of_requests_plus_a_few_a_second() {
        let budget = RetryBudget::new();
        // The starting allowance: a second's worth of the floor.
        let mut granted: u64 = 0;
        while budget.withdraw() {
            granted += 1;
        }
        assert_eq!(granted, MIN_RETRIES_PER_SECOND);
        // 1,000 requests earn 100 retries, no more.
        for _ in 0..1000 {
            budget.deposit();
        }
        let mut granted: u64 = 0;
        while budget.withdraw() {
            granted += 1;
        }
        assert_eq!(granted, 100);
        // Time alone earns the floor.
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut granted: u64 = 0;
        while budget.withdraw() {
            granted += 1;
        }
        assert_eq!(granted, MIN_RETRIES_PER_SECOND);
    }

    #[test]
    fn backoff_is_jittered_below_a_ceiling_that_doubles() {
        for round in 1..=10 {
            let ceiling = FIRST_BACKOFF
                .saturating_mul(1 << (round - 1))
                .min(MAX_BACKOFF);
            let waits: Vec<Duration> = (0..200).map(|_| backoff(round)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "round {round}");
            assert!(
                waits.iter().any(|w| *w != waits[0]),
                "round {round}: jittered"
            );
        }
    }

    #[test]
    fn the_hedge_delay_follows_the_reads_quantile_within_its_bounds() {
        let hedge = HedgeDelay::new(0.95, Duration::from_millis(1), Duration::from_millis(200));
        assert_eq!(
            hedge.current(),
            Duration::from_millis(200),
            "max until reads are seen"
        );
        // 95 % of reads take 2 ms, 5 % take 40 ms: the delay lands between them.
        for i in 0..RECOMPUTE_EVERY * 8 {
            let ms = if i % 20 == 0 { 40 } else { 2 };
            hedge.observe(Duration::from_millis(ms));
        }
        let delay = hedge.current();
        assert!(
            delay >= Duration::from_millis(2) && delay <= Duration::from_millis(40),
            "{delay:?}"
        );
        // A slowed-down cluster pushes it up, but never past the bound.
        for _ in 0..LATENCY_WINDOW {
            hedge.observe(Duration::from_secs(3));
        }
        assert_eq!(hedge.current(), Duration::from_millis(200));
        // Very fast reads do not drive it below the floor.
        for _ in 0..LATENCY_WINDOW {
            hedge.observe(Duration::from_micros(10));
        }
        assert_eq!(hedge.current(), Duration::from_millis(1));
    }
}
