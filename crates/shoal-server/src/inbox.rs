//! The node task's inbox: requests decoded and authorised by the accept task that the node has
//! not taken on yet, in two classes, and the rule that decides which to work on, which to
//! refuse, and in what order.
//!
//! - **Peer messages first, never shed here.** Replication, reads for other coordinators and
//!   pings are what other nodes' quorums wait for; shedding them would waste the work those
//!   nodes already did. They are taken before any client request, in arrival order. (The node
//!   drops those whose sender's deadline passed, and refuses replica writes only when its
//!   commit queue is twice as full as it lets its own clients fill it.)
//! - **Client requests under controlled delay**, after Facebook's "Fail at scale" (Maurer,
//!   ACM Queue 2015), a CoDel variant for server queues: while the client queue has been empty
//!   at some moment of the last [`CONGESTION_INTERVAL`], a request may wait up to
//!   [`CONGESTION_INTERVAL`]; once it has not been empty for that long (a standing queue: the
//!   node is falling behind), a request may wait only [`CONGESTED_MAX_WAIT`], and the queue is
//!   served **newest first** (adaptive LIFO), since the newest requests are the ones whose
//!   clients still wait, while the oldest are refused at once with `Overloaded` — a definite
//!   failure the client may retry elsewhere or later. A bounded queue ([`Inbox::new`]'s
//!   `max_client`) refuses the oldest request when a new one arrives and it is full.
//!
//! Prefer refusing new work to finishing old work late: under overload the node answers most
//! requests fast and refuses the rest within milliseconds, instead of answering every request
//! after its client gave up.
//!
//! Pure logic: `now` is passed in, so the tests drive it with made-up instants. Not here:
//! deadlines of individual requests (the node checks them), cancellation (the node task checks
//! whether a request's client is still there when it takes it).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long the client queue must stay non-empty before the node counts as congested, and how
/// long a request may wait while it is not.
pub(crate) const CONGESTION_INTERVAL: Duration = Duration::from_millis(100);
/// How long a client request may wait while the node is congested.
pub(crate) const CONGESTED_MAX_WAIT: Duration = Duration::from_millis(5);

/// Which queue a request waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// From a client or admin.
    Client,
    /// From another node.
    Peer,
}

impl Class {
    /// The label in metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Class::Client => "client",
            Class::Peer => "peer",
        }
    }
}

/// Something that waited in the inbox: when it arrived.
pub(crate) trait Queued {
    /// When it was read from the network.
    fn arrived(&self) -> Instant;
}

/// What to do with the next item.
#[derive(Debug)]
pub(crate) enum Next<T> {
    /// Work on it; it waited this long.
    Serve(T, Class, Duration),
    /// Refuse it with `Overloaded`: it waited (or would wait) too long.
    Shed(T),
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    peer: VecDeque<T>,
    client: VecDeque<T>,
    max_client: usize,
    /// The last moment the client queue was seen empty.
    last_empty: Instant,
}

impl<T: Queued> Inbox<T> {
    /// An empty inbox holding at most `max_client` client requests, at `now`.
    pub(crate) fn new(max_client: usize, now: Instant) -> Inbox<T> {
        Inbox {
            peer: VecDeque::new(),
            client: VecDeque::new(),
            max_client: max_client.max(1),
            last_empty: now,
        }
    }

    /// Queues `item`. A full client queue hands back its oldest request to refuse.
    pub(crate) fn push(&mut self, class: Class, item: T) -> Option<T> {
        match class {
            Class::Peer => {
                self.peer.push_back(item);
                None
            }
            Class::Client => {
                self.client.push_back(item);
                if self.client.len() > self.max_client {
                    self.client.pop_front()
                } else {
                    None
                }
            }
        }
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.peer.is_empty() && self.client.is_empty()
    }

    /// Requests waiting, per class.
    pub(crate) fn len(&self, class: Class) -> usize {
        match class {
            Class::Peer => self.peer.len(),
            Class::Client => self.client.len(),
        }
    }

    /// Whether the client queue has not been empty for a whole [`CONGESTION_INTERVAL`].
    pub(crate) fn is_congested(&mut self, now: Instant) -> bool {
        if self.client.is_empty() {
            self.last_empty = now;
        }
        now.saturating_duration_since(self.last_empty) >= CONGESTION_INTERVAL
    }

    /// The next thing to do at `now`, if anything waits: a peer message to serve, a client
    /// request to serve, or one to refuse. Call until it returns `None` or the caller's turn is
    /// over; refusals come first, so they are answered within milliseconds.
    pub(crate) fn next(&mut self, now: Instant) -> Option<Next<T>> {
        if let Some(item) = self.peer.pop_front() {
            let waited = now.saturating_duration_since(item.arrived());
            return Some(Next::Serve(item, Class::Peer, waited));
        }
        let congested = self.is_congested(now);
        let max_wait = if congested {
            CONGESTED_MAX_WAIT
        } else {
            CONGESTION_INTERVAL
        };
        if let Some(oldest) = self.client.front()
            && now.saturating_duration_since(oldest.arrived()) > max_wait
        {
            return self.client.pop_front().map(Next::Shed);
        }
        let item = if congested {
            self.client.pop_back()
        } else {
            self.client.pop_front()
        }?;
        let waited = now.saturating_duration_since(item.arrived());
        Some(Next::Serve(item, Class::Client, waited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(u32, Instant);

    impl Queued for Item {
        fn arrived(&self) -> Instant {
            self.1
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn served(next: Option<Next<Item>>) -> (u32, Class) {
        match next {
            Some(Next::Serve(Item(n, _), class, _)) => (n, class),
            other => panic!("expected a request to serve, got {other:?}"),
        }
    }

    #[test]
    fn peer_messages_are_served_before_any_client_request_and_never_shed() {
        let t0 = Instant::now();
        let mut inbox = Inbox::new(8, t0);
        inbox.push(Class::Client, Item(1, t0));
        inbox.push(Class::Peer, Item(2, t0));
        inbox.push(Class::Peer, Item(3, t0));
        // Even long after they arrived, peer messages are served, in order.
        let late = t0 + ms(10_000);
        assert_eq!(served(inbox.next(late)), (2, Class::Peer));
        assert_eq!(served(inbox.next(late)), (3, Class::Peer));
        assert!(matches!(inbox.next(late), Some(Next::Shed(Item(1, _)))));
        assert!(inbox.next(late).is_none());
    }

    #[test]
    fn an_uncongested_queue_serves_in_arrival_order() {
        let t0 = Instant::now();
        let mut inbox = Inbox::new(8, t0);
        for i in 0..3 {
            inbox.push(Class::Client, Item(i, t0 + ms(u64::from(i))));
        }
        let now = t0 + ms(10);
        let order: Vec<u32> = (0..3).map(|_| served(inbox.next(now)).0).collect();
        assert_eq!(order, [0, 1, 2]);
    }

    #[test]
    fn a_standing_queue_serves_newest_first_and_refuses_what_waited_too_long() {
        let t0 = Instant::now();
        let mut inbox = Inbox::new(1000, t0);
        // Requests keep arriving faster than they are served: the queue never empties.
        let mut id = 0;
        let mut now = t0;
        for _ in 0..CONGESTION_INTERVAL.as_millis() {
            now += ms(1);
            for _ in 0..2 {
                inbox.push(Class::Client, Item(id, now));
                id += 1;
            }
            let _ = inbox.next(now);
        }
        assert!(inbox.is_congested(now));
        inbox.push(Class::Client, Item(9999, now));
        // Old requests are refused first, then the newest is served.
        let mut shed = 0;
        loop {
            match inbox.next(now) {
                Some(Next::Shed(Item(_, arrived))) => {
                    assert!(now - arrived > CONGESTED_MAX_WAIT);
                    shed += 1;
                }
                Some(Next::Serve(Item(n, _), _, waited)) => {
                    assert_eq!(n, 9999, "the newest request goes first");
                    assert!(waited <= CONGESTED_MAX_WAIT);
                    break;
                }
                None => panic!("the newest request was not served"),
            }
        }
        assert!(
            shed > 0,
            "requests that waited past the congested bound are refused"
        );
    }

    #[test]
    fn the_queue_leaves_congestion_once_it_empties() {
        let t0 = Instant::now();
        let mut inbox = Inbox::new(8, t0);
        inbox.push(Class::Client, Item(1, t0));
        let later = t0 + CONGESTION_INTERVAL;
        assert!(inbox.is_congested(later));
        let _ = inbox.next(later);
        let _ = inbox.next(later);
        assert!(!inbox.is_congested(later), "empty again");
        // Now a request may wait up to the long bound before it is refused.
        inbox.push(Class::Client, Item(2, later));
        assert_eq!(served(inbox.next(later + ms(50))).0, 2);
    }

    #[test]
    fn a_full_client_queue_hands_back_its_oldest_request() {
        let t0 = Instant::now();
        let mut inbox = Inbox::new(2, t0);
        assert!(inbox.push(Class::Client, Item(1, t0)).is_none());
        assert!(inbox.push(Class::Client, Item(2, t0)).is_none());
        assert_eq!(inbox.push(Class::Client, Item(3, t0)), Some(Item(1, t0)));
        assert_eq!(inbox.len(Class::Client), 2);
        assert!(
            inbox.push(Class::Peer, Item(4, t0)).is_none(),
            "peers have no bound here"
        );
    }
}
