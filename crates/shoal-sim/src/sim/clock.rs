//! One node's clock: simulated time seen through a rate and an offset, never going backwards.

use std::time::Duration;

/// Rates are in parts per thousand: 1000 is a correct clock, 500 runs at half speed.
pub(crate) const NORMAL_RATE_PERMILLE: u32 = 1000;

/// A node's view of time: `local(t) = anchor_local + (t - anchor_sim) · rate`. Changing the rate
/// or jumping forward re-anchors at the current time, so local time is continuous and monotonic.
#[derive(Clone, Debug)]
pub(crate) struct NodeClock {
    anchor_sim: Duration,
    anchor_local: Duration,
    rate_permille: u32,
}

impl NodeClock {
    /// A correct clock that reads `offset` at simulated time zero.
    pub(crate) fn new(offset: Duration) -> Self {
        NodeClock {
            anchor_sim: Duration::ZERO,
            anchor_local: offset,
            rate_permille: NORMAL_RATE_PERMILLE,
        }
    }

    /// The node's local time at simulated time `t` (not before the last re-anchoring).
    pub(crate) fn local(&self, t: Duration) -> Duration {
        let elapsed = t.saturating_sub(self.anchor_sim).as_nanos();
        let scaled = elapsed * u128::from(self.rate_permille) / 1000;
        self.anchor_local + nanos(scaled)
    }

    /// The first simulated time at which the node's clock reads at least `local`.
    pub(crate) fn sim_time_of(&self, local: Duration) -> Duration {
        let ahead = local.saturating_sub(self.anchor_local).as_nanos();
        let rate = u128::from(self.rate_permille.max(1));
        // Rounded up, so a timer never fires before the node's clock reaches its deadline.
        self.anchor_sim + nanos((ahead * 1000).div_ceil(rate))
    }

    /// From simulated time `t` on, the clock runs at `rate_permille`.
    pub(crate) fn set_rate(&mut self, t: Duration, rate_permille: u32) {
        self.anchor_local = self.local(t);
        self.anchor_sim = t;
        self.rate_permille = rate_permille.max(1);
    }

    /// The clock jumps forward by `by` at simulated time `t`.
    pub(crate) fn jump(&mut self, t: Duration, by: Duration) {
        self.anchor_local = self.local(t) + by;
        self.anchor_sim = t;
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn local_time_is_continuous_and_timers_fire_no_earlier_than_asked() {
        let mut c = NodeClock::new(7 * MS);
        assert_eq!(c.local(10 * MS), 17 * MS);
        c.set_rate(10 * MS, 500);
        assert_eq!(c.local(10 * MS), 17 * MS);
        assert_eq!(c.local(20 * MS), 22 * MS);
        let t = c.sim_time_of(22 * MS + Duration::from_nanos(1));
        assert!(c.local(t) >= 22 * MS + Duration::from_nanos(1));
        c.jump(20 * MS, 100 * MS);
        assert_eq!(c.local(20 * MS), 122 * MS);
        assert_eq!(
            c.sim_time_of(50 * MS),
            20 * MS,
            "a deadline already passed fires at once"
        );
    }
}
