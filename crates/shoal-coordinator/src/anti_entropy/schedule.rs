//! When this node compares which of its partitions with which peer: the anti-entropy part's
//! schedule, a pure value over the ring, the clock passed in and the node's seeded RNG.
//!
//! A **pair** is one partition and one other primary of it; the pairs of a node are every
//! partition it is a primary of, with each of that partition's other primaries (fallbacks are
//! never compared: they hold hints, not replicas). Of the two nodes of a pair, exactly one
//! compares it on the interval, the *initiator* ([`initiator`]): the lower node id on even
//! partitions, the higher on odd ones. Both nodes compute the same answer from the same ring,
//! with no message, and each node initiates about half of its pairs (the partitions two nodes
//! share run in consecutive stretches of the ring, so their parities alternate).
//!
//! - **Start round.** `catch_up_delay` after the node starts, every pair is due once, whoever
//!   initiates it: a node that starts may have missed anything while it was away (or lost its
//!   disk). Pairs due together are taken peer rank first (each partition with its first other
//!   primary, then every partition with its second...), so a refilled partition is compared
//!   with its second peer only after its first repaired it, and then matches at the root.
//! - **Interval.** After each run, an initiated pair is due again after a random
//!   `[3/4, 1) × interval` ([`Schedule::take_due`]), so each pair is compared at least every
//!   interval (when a slot is free) and at most once in three quarters of one, and nodes that
//!   started together drift apart instead of comparing in step.
//! - **A peer back.** When a peer judged unreachable is reachable again, the initiated pairs
//!   with it are due `catch_up_delay` later (unless due sooner): it may have missed writes, and
//!   the delay lets its hints go home first, so anti-entropy repairs only what they missed.
//!   The peer, seeing this node back, does the same for the pairs it initiates.
//! - **On demand.** Any pair can be queued at once ([`Schedule::queue`]), whoever initiates it.
//!
//! If the initiator of a pair is down, the pair is not compared: one of its two replicas is
//! away. The partition's other pairs go on, and the initiator, once back, compares every pair
//! in its start round.
//!
//! Due pairs wait in a queue until the part has a slot free; a pair already queued is not
//! queued twice. Not here: running exchanges, and reachability (the part asks membership).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;
use shoal_ring::Ring;
use shoal_types::{NodeId, PartitionId};

/// One partition and one other primary of it, as this node compares them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pair {
    pub(crate) partition: PartitionId,
    pub(crate) peer: NodeId,
}

/// Which node of a pair of primaries of `partition` compares it on the interval: the lower id
/// on even partitions, the higher on odd ones.
pub(crate) fn initiator<'a>(partition: PartitionId, a: &'a NodeId, b: &'a NodeId) -> &'a NodeId {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    if partition.index().is_multiple_of(2) {
        low
    } else {
        high
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Schedule {
    interval: Duration,
    catch_up_delay: Duration,
    /// Every pair this node has (initiated or not), with its peer's rank among the partition's
    /// other primaries (preference-list order).
    ranks: BTreeMap<Pair, u8>,
    /// The same pairs, peer rank first: the order they are taken in when due together.
    order: Vec<Pair>,
    /// The pairs this node initiates.
    initiated: BTreeSet<Pair>,
    /// When each scheduled pair is next due, ordered by (instant, rank, pair).
    due: BTreeSet<(Instant, u8, Pair)>,
    /// The instant each scheduled pair is in `due` for.
    due_at: BTreeMap<Pair, Instant>,
    /// Pairs due and waiting for a slot, in order.
    waiting: VecDeque<Pair>,
    queued: BTreeSet<Pair>,
}

/// The shortest interval a schedule takes: a zero interval would make every pair due forever.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

impl Schedule {
    /// The schedule of node `me` in `ring`, started at `now`. With `periodic` off, nothing is
    /// ever due by itself (only pairs queued on demand run).
    pub(crate) fn new(
        now: Instant,
        ring: &Ring,
        me: &NodeId,
        interval: Duration,
        catch_up_delay: Duration,
        periodic: bool,
    ) -> Schedule {
        let mut schedule = Schedule {
            interval: interval.max(MIN_INTERVAL),
            catch_up_delay,
            ranks: BTreeMap::new(),
            order: Vec::new(),
            initiated: BTreeSet::new(),
            due: BTreeSet::new(),
            due_at: BTreeMap::new(),
            waiting: VecDeque::new(),
            queued: BTreeSet::new(),
        };
        for partition in ring.q().partitions() {
            let primaries = ring.primaries(partition);
            if !primaries.contains(me) {
                continue;
            }
            let peers = primaries.iter().filter(|p| *p != me);
            for (rank, peer) in peers.enumerate() {
                let pair = Pair {
                    partition,
                    peer: peer.clone(),
                };
                if initiator(partition, me, peer) == me {
                    schedule.initiated.insert(pair.clone());
                }
                let rank = u8::try_from(rank).unwrap_or(u8::MAX);
                schedule.ranks.insert(pair, rank);
            }
        }
        let mut order: Vec<(u8, Pair)> = schedule
            .ranks
            .iter()
            .map(|(pair, rank)| (*rank, pair.clone()))
            .collect();
        order.sort();
        schedule.order = order.into_iter().map(|(_, pair)| pair).collect();
        if periodic {
            let start_round = now + catch_up_delay;
            for pair in schedule.order.clone() {
                schedule.set_due(pair, start_round);
            }
        }
        schedule
    }

    /// Every pair this node has, peer rank first (every partition with its first other
    /// primary, then with its second, ...).
    pub(crate) fn pairs(&self) -> impl Iterator<Item = &Pair> {
        self.order.iter()
    }

    /// Whether this node initiates `pair`.
    #[cfg(test)]
    pub(crate) fn initiates(&self, pair: &Pair) -> bool {
        self.initiated.contains(pair)
    }

    /// When the next pair is due, if one is scheduled.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(at, _, _)| *at)
    }

    /// Queues every pair due at `now`, and schedules each initiated one again a random
    /// `[3/4, 1)` interval after it was due (never at or before `now`).
    pub(crate) fn take_due(&mut self, now: Instant, rng: &mut StdRng) {
        while let Some((at, _, _)) = self.due.first()
            && *at <= now
        {
            let Some((at, _, pair)) = self.due.pop_first() else {
                break;
            };
            self.due_at.remove(&pair);
            if self.initiated.contains(&pair) {
                let next = at + self.interval.mul_f64(rng.random_range(0.75..1.0));
                let next = if next > now {
                    next
                } else {
                    // The node was not woken for a long while: start the count again.
                    now + self.interval.mul_f64(rng.random_range(0.75..1.0))
                };
                self.set_due(pair.clone(), next);
            }
            self.queue(pair);
        }
    }

    /// `peer` is reachable again after it was judged unreachable: the initiated pairs with it
    /// are due `catch_up_delay` from `now`, unless they are due sooner.
    pub(crate) fn peer_back(&mut self, now: Instant, peer: &NodeId) {
        let at = now + self.catch_up_delay;
        let pairs: Vec<Pair> = self
            .initiated
            .iter()
            .filter(|p| p.peer == *peer)
            .cloned()
            .collect();
        for pair in pairs {
            if self.due_at.get(&pair).is_none_or(|due| *due > at) {
                self.set_due(pair, at);
            }
        }
    }

    /// `pair` could not be compared yet (trees still being built): due again at `at`, unless
    /// it is due sooner.
    pub(crate) fn retry(&mut self, pair: Pair, at: Instant) {
        if self.due_at.get(&pair).is_none_or(|due| *due > at) {
            self.set_due(pair, at);
        }
    }

    /// Whether some pair waits for a slot.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Puts `pair` at the end of the queue, unless it is queued already. Returns whether it
    /// was queued now.
    pub(crate) fn queue(&mut self, pair: Pair) -> bool {
        if !self.queued.insert(pair.clone()) {
            return false;
        }
        self.waiting.push_back(pair);
        true
    }

    /// The next pair waiting for a slot.
    pub(crate) fn next_waiting(&mut self) -> Option<Pair> {
        let pair = self.waiting.pop_front()?;
        self.queued.remove(&pair);
        Some(pair)
    }

    /// Sets `pair` due at `at`, replacing when it was due.
    fn set_due(&mut self, pair: Pair, at: Instant) {
        let rank = self.ranks.get(&pair).copied().unwrap_or(u8::MAX);
        if let Some(old) = self.due_at.insert(pair.clone(), at) {
            self.due.remove(&(old, rank, pair.clone()));
        }
        self.due.insert((at, rank, pair));
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test needs one real instant to start from
mod tests {
    use std::net::SocketAddr;

    use rand::SeedableRng;
    use shoal_ring::Member;
    use shoal_types::{PartitionCount, ReplicationFactor};

    use super::*;

    fn ring(nodes: usize) -> Ring {
        let members = (1..=nodes)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + i).parse().unwrap();
                Member::new(NodeId::new(&format!("n{i}")).unwrap(), addr)
            })
            .collect();
        Ring::new(
            members,
            PartitionCount::new(64).unwrap(),
            ReplicationFactor::new(3).unwrap(),
        )
        .unwrap()
    }

    fn schedules(ring: &Ring, now: Instant) -> BTreeMap<NodeId, Schedule> {
        let interval = Duration::from_secs(120);
        let delay = Duration::from_secs(10);
        ring.members()
            .iter()
            .map(|m| {
                let s = Schedule::new(now, ring, &m.id, interval, delay, true);
                (m.id.clone(), s)
            })
            .collect()
    }

    #[test]
    fn exactly_one_node_of_each_pair_of_primaries_initiates_it() {
        let ring = ring(5);
        let now = Instant::now();
        let all = schedules(&ring, now);
        for partition in ring.q().partitions() {
            let primaries = ring.primaries(partition);
            for (i, a) in primaries.iter().enumerate() {
                for b in &primaries[i + 1..] {
                    let by_a = all[a].initiates(&Pair {
                        partition,
                        peer: b.clone(),
                    });
                    let by_b = all[b].initiates(&Pair {
                        partition,
                        peer: a.clone(),
                    });
                    assert!(by_a != by_b, "{partition:?} {a}-{b}: {by_a} {by_b}");
                }
            }
        }
        // Balanced: each node initiates about half of its pairs.
        for (id, s) in &all {
            let initiated = s.pairs().filter(|p| s.initiates(p)).count();
            let pairs = s.pairs().count();
            assert!(
                initiated * 3 >= pairs && initiated * 3 <= pairs * 2,
                "{id} initiates {initiated} of {pairs}"
            );
        }
    }

    #[test]
    fn the_start_round_takes_every_pair_first_peers_first() {
        let ring = ring(3);
        let now = Instant::now();
        let me = NodeId::new("n1").unwrap();
        let mut s = Schedule::new(
            now,
            &ring,
            &me,
            Duration::from_secs(120),
            Duration::from_secs(10),
            true,
        );
        assert_eq!(s.next_due(), Some(now + Duration::from_secs(10)));
        let mut rng = StdRng::seed_from_u64(1);
        s.take_due(now + Duration::from_secs(9), &mut rng);
        assert_eq!(s.next_waiting(), None, "nothing before the delay");
        s.take_due(now + Duration::from_secs(10), &mut rng);
        let taken: Vec<Pair> = std::iter::from_fn(|| s.next_waiting()).collect();
        assert_eq!(taken.len(), 64 * 2, "every partition with both peers");
        let first_peers = &taken[..64];
        for (i, pair) in first_peers.iter().enumerate() {
            assert_eq!(pair.partition.index() as usize, i);
            assert_eq!(s.ranks[pair], 0);
        }
        // Only the initiated pairs come back, each within [3/4, 1) of the interval.
        let later: Vec<(Instant, Pair)> = s
            .due
            .iter()
            .map(|(at, _, pair)| (*at, pair.clone()))
            .collect();
        assert_eq!(later.len(), s.initiated.len());
        for (at, pair) in later {
            assert!(s.initiates(&pair));
            let after = at - (now + Duration::from_secs(10));
            assert!(
                after >= Duration::from_secs(90) && after < Duration::from_secs(120),
                "{pair:?} due {after:?} after the start round"
            );
        }
    }

    #[test]
    fn a_peer_back_brings_its_initiated_pairs_forward_only() {
        let ring = ring(3);
        let now = Instant::now();
        let me = NodeId::new("n1").unwrap();
        let peer = NodeId::new("n2").unwrap();
        let interval = Duration::from_secs(120);
        let delay = Duration::from_secs(10);
        let mut s = Schedule::new(now, &ring, &me, interval, delay, true);
        let mut rng = StdRng::seed_from_u64(2);
        s.take_due(now + delay, &mut rng);
        while s.next_waiting().is_some() {}
        let back = now + Duration::from_secs(30);
        s.peer_back(back, &peer);
        s.take_due(back + delay, &mut rng);
        let taken: Vec<Pair> = std::iter::from_fn(|| s.next_waiting()).collect();
        let expected: Vec<Pair> = s
            .initiated
            .iter()
            .filter(|p| p.peer == peer)
            .cloned()
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(
            taken.iter().collect::<BTreeSet<_>>(),
            expected.iter().collect::<BTreeSet<_>>()
        );
    }

    #[test]
    fn a_pair_is_queued_once_however_often_it_is_asked() {
        let ring = ring(3);
        let now = Instant::now();
        let me = NodeId::new("n1").unwrap();
        let mut s = Schedule::new(
            now,
            &ring,
            &me,
            Duration::from_secs(120),
            Duration::from_secs(10),
            false,
        );
        assert_eq!(s.next_due(), None, "no schedule when it is off");
        let pair = s.pairs().next().unwrap().clone();
        assert!(s.queue(pair.clone()));
        assert!(!s.queue(pair.clone()));
        assert_eq!(s.next_waiting(), Some(pair.clone()));
        assert_eq!(s.next_waiting(), None);
        assert!(s.queue(pair), "again once it left the queue");
    }
}
