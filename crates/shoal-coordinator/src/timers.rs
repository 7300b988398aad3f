//! The node's one timer table, shared by its parts (quinn-proto's `TimerTable`, foca's `Timer`).
//!
//! A part schedules a [`Timer`] value of its own for an instant; [`TimerTable::next`] is the
//! earliest of all (what [`Node::poll_timeout`](crate::Node::poll_timeout) answers), and
//! [`TimerTable::expire`] hands back, one at a time, the timers due at `now`, which the node
//! dispatches to the part that owns each variant. A part sets each of its timers at most once at
//! a time (again only after it fired or was cancelled) and cancels the timers of work it
//! finished, naming the instant it set them for, so nothing stale stays in the table to wake the
//! node for nothing. The table is one ordered set of (instant, timer): setting and cancelling a
//! timer is one operation each, as cheap as the binary heap it replaced, which could not cancel.
//!
//! Not here: what a timer means (its owner decides) and reading a clock (`now` is passed in).

use std::collections::BTreeSet;
use std::time::Instant;

use crate::client::RequestId;

/// Every timer of the node, one variant per owning part. Timers due at the same instant fire
/// in this type's order (requests by id, which is the order they were made), so the table is
/// deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// A coordinated request's deadline (the client-requests part).
    Request(RequestId),
    /// Time for a round of gossip (the membership part).
    Gossip,
    /// Time to look for hints to hand off or sweep (the hints part).
    HintReplay,
    /// A pair due, a confirm pause or pacing over, an ask to give up (the anti-entropy part).
    Exchange,
    /// Time to check queued keys for reaping, or to sweep old reaping records (the reaper).
    Reap,
}

/// Timers by when they fire.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    due: BTreeSet<(Instant, Timer)>,
}

impl TimerTable {
    /// Sets `timer` to fire at `at`. It must not be set already (a part's own rule, checked in
    /// debug builds only where it is cheap: the same setting twice).
    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) {
        let new = self.due.insert((at, timer));
        debug_assert!(new, "{timer:?} set twice for the same instant");
    }

    /// Unsets `timer`, set for `at` (nothing happens if it is not set for `at`).
    pub(crate) fn cancel(&mut self, at: Instant, timer: Timer) {
        self.due.remove(&(at, timer));
    }

    /// When the earliest timer fires.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// The earliest timer due at `now`, unset; `None` when none is due.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Timer> {
        if self.due.first()?.0 > now {
            return None;
        }
        self.due.pop_first().map(|(_, timer)| timer)
    }

    /// How many timers are set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test needs one real instant to start from
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timers_fire_in_time_order_and_only_when_due() {
        let now = Instant::now();
        let mut t = TimerTable::default();
        t.schedule(now + Duration::from_secs(2), Timer::Request(RequestId(1)));
        t.schedule(now + Duration::from_secs(1), Timer::Gossip);
        assert_eq!(t.next(), Some(now + Duration::from_secs(1)));
        assert_eq!(t.expire(now), None, "nothing is due yet");
        assert_eq!(t.expire(now + Duration::from_secs(5)), Some(Timer::Gossip));
        assert_eq!(
            t.expire(now + Duration::from_secs(5)),
            Some(Timer::Request(RequestId(1)))
        );
        assert_eq!(t.expire(now + Duration::from_secs(5)), None);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn cancelling_a_timer_removes_only_that_setting() {
        let now = Instant::now();
        let mut t = TimerTable::default();
        t.schedule(now + Duration::from_secs(3), Timer::Gossip);
        t.schedule(now + Duration::from_secs(2), Timer::Request(RequestId(9)));
        t.cancel(now + Duration::from_secs(2), Timer::Request(RequestId(9)));
        t.cancel(now + Duration::from_secs(2), Timer::Request(RequestId(10)));
        t.cancel(now + Duration::from_secs(1), Timer::Gossip);
        assert_eq!(t.len(), 1, "only the cancelled setting went");
        assert_eq!(t.next(), Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn timers_due_together_fire_in_timer_order() {
        let now = Instant::now();
        let mut t = TimerTable::default();
        t.schedule(now, Timer::Gossip);
        for id in [5, 3, 8] {
            t.schedule(now, Timer::Request(RequestId(id)));
        }
        let fired: Vec<Timer> = std::iter::from_fn(|| t.expire(now)).collect();
        let mut expected: Vec<Timer> = [3, 5, 8].map(|id| Timer::Request(RequestId(id))).to_vec();
        expected.push(Timer::Gossip);
        assert_eq!(fired, expected);
    }
}
