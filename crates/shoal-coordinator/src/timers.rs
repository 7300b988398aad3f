//! The node's one timer table, shared by its parts (quinn-proto's `TimerTable`, foca's `Timer`).
//!
//! A part schedules a [`Timer`] value of its own for an instant; [`TimerTable::next`] is the
//! earliest of all (what [`Node::poll_timeout`](crate::Node::poll_timeout) answers), and
//! [`TimerTable::expire`] hands back, one at a time, the timers due at `now`, which the node
//! dispatches to the part that owns each variant. A timer is set at most once: scheduling it
//! again moves it, and a part cancels the timers of work it finished, so nothing stale stays in
//! the table to wake the node for nothing.
//!
//! Not here: what a timer means (its owner decides) and reading a clock (`now` is passed in).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::client::RequestId;

/// Every timer of the node, one variant per owning part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// A coordinated request's deadline (the client-requests part).
    Request(RequestId),
    /// Time to ping every other member again (the liveness part).
    Ping,
}

/// Timers by when they fire. Ordered by (instant, order set), so timers due together fire in
/// the order they were scheduled, and the table is deterministic.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    due: BTreeMap<(Instant, u64), Timer>,
    set: BTreeMap<Timer, (Instant, u64)>,
    scheduled: u64,
}

impl TimerTable {
    /// Sets `timer` to fire at `at`, replacing its earlier setting if it had one.
    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) {
        self.cancel(timer);
        self.scheduled += 1;
        let slot = (at, self.scheduled);
        self.due.insert(slot, timer);
        self.set.insert(timer, slot);
    }

    /// Unsets `timer` (nothing happens if it was not set).
    pub(crate) fn cancel(&mut self, timer: Timer) {
        if let Some(slot) = self.set.remove(&timer) {
            self.due.remove(&slot);
        }
    }

    /// When the earliest timer fires.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    /// The earliest timer due at `now`, unset; `None` when none is due.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Timer> {
        let entry = self.due.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let timer = entry.remove();
        self.set.remove(&timer);
        Some(timer)
    }

    /// How many timers are set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
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
        t.schedule(now + Duration::from_secs(1), Timer::Ping);
        assert_eq!(t.next(), Some(now + Duration::from_secs(1)));
        assert_eq!(t.expire(now), None, "nothing is due yet");
        assert_eq!(t.expire(now + Duration::from_secs(5)), Some(Timer::Ping));
        assert_eq!(
            t.expire(now + Duration::from_secs(5)),
            Some(Timer::Request(RequestId(1)))
        );
        assert_eq!(t.expire(now + Duration::from_secs(5)), None);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn scheduling_a_timer_again_moves_it_and_cancelling_removes_it() {
        let now = Instant::now();
        let mut t = TimerTable::default();
        t.schedule(now + Duration::from_secs(1), Timer::Ping);
        t.schedule(now + Duration::from_secs(3), Timer::Ping);
        assert_eq!(t.len(), 1, "one setting per timer");
        assert_eq!(t.next(), Some(now + Duration::from_secs(3)));
        t.schedule(now + Duration::from_secs(2), Timer::Request(RequestId(9)));
        t.cancel(Timer::Request(RequestId(9)));
        t.cancel(Timer::Request(RequestId(10)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.next(), Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn timers_due_together_fire_in_the_order_they_were_set() {
        let now = Instant::now();
        let mut t = TimerTable::default();
        for id in [5, 3, 8] {
            t.schedule(now, Timer::Request(RequestId(id)));
        }
        let fired: Vec<Timer> = std::iter::from_fn(|| t.expire(now)).collect();
        assert_eq!(
            fired,
            [5, 3, 8].map(|id| Timer::Request(RequestId(id))).to_vec()
        );
    }
}
