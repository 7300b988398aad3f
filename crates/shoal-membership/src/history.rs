//! The layout history (DESIGN §4; issue 16; Garage v1.0's design): while partitions move, every
//! ring version that still has transfers in flight stays live, and this decides where a write
//! must go, which version a read uses, and when an old version retires.
//!
//! - **Versions** are the committed rings, consecutive epochs, oldest first. A new one is
//!   pushed when a commit chooses it ([`LayoutHistory::push`]).
//! - **Transfer progress**: for each version after the oldest, the new primaries of each
//!   partition (primaries in that version that were not in the one before) that have durably
//!   received it ([`LayoutHistory::received`]). It only grows, and merges by union, so nodes
//!   that learn it in any order agree ([`LayoutHistory::merge`]).
//! - **Writes** go to the primaries of the partition in *every* live version
//!   ([`LayoutHistory::write_sets`]): a write needs its quorum in each, so it lands on old and
//!   new owners alike and nothing written during a move is missed by either.
//! - **Reads** use the newest version whose partition is *ready*: every version from the oldest
//!   up to it has had all its new primaries of the partition receive it
//!   ([`LayoutHistory::read_version`]). So a read never asks a new owner that has not got the
//!   data yet, and never goes backwards once it moved forward.
//! - **Retirement**: the oldest version retires once the next is ready for every partition
//!   ([`LayoutHistory::retire`]); only then may the primaries it had and the next has not delete
//!   their copies (the releases it returns).
//!
//! Not here: the transfers themselves (the coordinator's handoff part), how progress is gossiped,
//! and persisting the history. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use shoal_ring::{Release, Ring, RingError, transfer_plan};
use shoal_types::{NodeId, PartitionId, RingEpoch};

/// Why the history refused a change. A refused change changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A pushed ring must be at the epoch after the newest version's.
    #[error("ring epoch {got} does not follow the newest version, {newest}")]
    NotNext {
        /// The newest version's epoch.
        newest: RingEpoch,
        /// The pushed ring's epoch.
        got: RingEpoch,
    },
    /// A pushed ring must have the same partition count.
    #[error("{0}")]
    Ring(#[from] RingError),
    /// More live versions than the history keeps: retire some first (finish their transfers).
    #[error("{live} ring versions are live already (at most {max})")]
    TooManyVersions {
        /// Live versions.
        live: usize,
        /// The most kept.
        max: usize,
    },
}

/// The live ring versions and the transfer progress between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutHistory {
    /// Oldest first; epochs consecutive.
    versions: Vec<Ring>,
    /// For each version after the oldest, by epoch: the new primaries that received each
    /// partition.
    received: BTreeMap<RingEpoch, BTreeMap<PartitionId, BTreeSet<NodeId>>>,
}

impl LayoutHistory {
    /// Most versions live at once: a commit while this many are live is refused.
    pub const MAX_VERSIONS: usize = 8;

    /// A history of one version.
    pub fn new(ring: Ring) -> LayoutHistory {
        LayoutHistory {
            versions: vec![ring],
            received: BTreeMap::new(),
        }
    }

    /// The newest version: the ring new changes are planned from.
    pub fn current(&self) -> &Ring {
        self.versions.last().unwrap_or_else(|| unreachable_empty())
    }

    /// Every live version, oldest first.
    pub fn versions(&self) -> &[Ring] {
        &self.versions
    }

    /// Adds the ring a commit chose, at the next epoch.
    pub fn push(&mut self, ring: Ring) -> Result<(), HistoryError> {
        let newest = self.current().epoch();
        if ring.epoch() != newest.next() {
            return Err(HistoryError::NotNext {
                newest,
                got: ring.epoch(),
            });
        }
        transfer_plan(self.current(), &ring)?;
        if self.versions.len() >= Self::MAX_VERSIONS {
            return Err(HistoryError::TooManyVersions {
                live: self.versions.len(),
                max: Self::MAX_VERSIONS,
            });
        }
        self.versions.push(ring);
        Ok(())
    }

    /// The primaries of `partition` in version `i` that were not primaries in version `i - 1`.
    fn incoming(&self, i: usize, partition: PartitionId) -> impl Iterator<Item = &NodeId> {
        let before = self.versions[i - 1].primaries(partition);
        self.versions[i]
            .primaries(partition)
            .iter()
            .filter(move |n| !before.contains(n))
    }

    /// `node` durably received `partition` for the version at `epoch`. Returns whether that
    /// was news. Ignored (false) for a version not live, or a node that is not one of that
    /// version's new primaries of the partition.
    pub fn received(&mut self, epoch: RingEpoch, partition: PartitionId, node: &NodeId) -> bool {
        let Some(i) = self.index(epoch).filter(|i| *i > 0) else {
            return false;
        };
        if partition.index() >= self.versions[i].q().get()
            || !self.incoming(i, partition).any(|n| n == node)
        {
            return false;
        }
        self.received
            .entry(epoch)
            .or_default()
            .entry(partition)
            .or_default()
            .insert(node.clone())
    }

    fn index(&self, epoch: RingEpoch) -> Option<usize> {
        let oldest = self.versions.first()?.epoch().get();
        let i = usize::try_from(epoch.get().checked_sub(oldest)?).ok()?;
        (i < self.versions.len()).then_some(i)
    }

    /// Whether every new primary of `partition` in version `i` has received it.
    fn complete(&self, i: usize, partition: PartitionId) -> bool {
        if i == 0 {
            return true;
        }
        let epoch = self.versions[i].epoch();
        let got = self.received.get(&epoch).and_then(|r| r.get(&partition));
        self.incoming(i, partition)
            .all(|n| got.is_some_and(|g| g.contains(n)))
    }

    /// The primaries a write of `partition` must reach W of, in each live version (oldest
    /// first; a node may be in several).
    pub fn write_sets(&self, partition: PartitionId) -> Vec<&[NodeId]> {
        self.versions
            .iter()
            .map(|r| r.primaries(partition))
            .collect()
    }

    /// The version a read of `partition` uses: the newest one such that it and every version
    /// before it have all their new primaries of the partition holding it.
    pub fn read_version(&self, partition: PartitionId) -> &Ring {
        let ready = (1..self.versions.len())
            .take_while(|&i| self.complete(i, partition))
            .last()
            .unwrap_or(0);
        &self.versions[ready]
    }

    /// Retires the oldest versions whose next version is complete for every partition, and
    /// returns what each retired step releases: copies their old primaries may now delete.
    pub fn retire(&mut self) -> Vec<Release> {
        let mut released = Vec::new();
        while self.versions.len() > 1 {
            let q = self.versions[1].q();
            if !q.partitions().all(|p| self.complete(1, p)) {
                break;
            }
            // Rings of one Q, checked when pushed.
            if let Ok(plan) = transfer_plan(&self.versions[0], &self.versions[1]) {
                released.extend(plan.releases);
            }
            let next = self.versions[1].epoch();
            self.versions.remove(0);
            // The new oldest version needs no progress of its own.
            self.received.remove(&next);
        }
        released
    }

    /// Joins another node's view of the same history: the union of versions (by epoch) and of
    /// progress, then retirement. Returns what the versions it retired release (also those the
    /// other side had retired already: it retires a version only once the next is complete).
    /// A ring the other holds at an epoch this one holds too is the same ring (one commit
    /// chooses each epoch); one that does not follow this history's newest is ignored.
    pub fn merge(&mut self, other: &LayoutHistory) -> Vec<Release> {
        for ring in &other.versions {
            if ring.epoch() > self.current().epoch() {
                let _ = self.push(ring.clone());
            }
        }
        for (epoch, partitions) in &other.received {
            for (partition, nodes) in partitions {
                for node in nodes {
                    self.received(*epoch, *partition, node);
                }
            }
        }
        let mut released = Vec::new();
        if let Some(oldest) = other.versions.first() {
            while self.versions.len() > 1 && self.versions[0].epoch() < oldest.epoch() {
                if let Ok(plan) = transfer_plan(&self.versions[0], &self.versions[1]) {
                    released.extend(plan.releases);
                }
                let next = self.versions[1].epoch();
                self.versions.remove(0);
                self.received.remove(&next);
            }
        }
        released.extend(self.retire());
        released
    }
}

#[cold]
fn unreachable_empty() -> ! {
    // Every constructor puts one version in and retirement always keeps one.
    panic!("a layout history always holds a version")
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use shoal_ring::Member;
    use shoal_types::{PartitionCount, ReplicationFactor};

    use super::*;

    fn id(n: u16) -> NodeId {
        NodeId::new(&format!("n{n}")).unwrap()
    }

    fn members(nodes: std::ops::RangeInclusive<u16>) -> Vec<Member> {
        nodes
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + i).parse().unwrap();
                Member::new(id(i), addr)
            })
            .collect()
    }

    fn ring3() -> Ring {
        Ring::new(
            members(1..=3),
            PartitionCount::new(16).unwrap(),
            ReplicationFactor::new(3).unwrap(),
        )
        .unwrap()
    }

    /// Marks every transfer into the version at `epoch` received, for partitions `ps` (some
    /// may be already).
    fn receive_all(h: &mut LayoutHistory, epoch: RingEpoch, ps: &[PartitionId]) {
        let i = h.index(epoch).unwrap();
        for &p in ps {
            let nodes: Vec<NodeId> = h.incoming(i, p).cloned().collect();
            for n in nodes {
                h.received(epoch, p, &n);
            }
        }
    }

    #[test]
    fn writes_reach_old_and_new_primaries_and_reads_move_only_once_a_partition_arrived() {
        let old = ring3();
        let new = old.claim(members(1..=5)).unwrap();
        let mut h = LayoutHistory::new(old.clone());
        h.push(new.clone()).unwrap();
        let q = old.q();
        let moved = q
            .partitions()
            .find(|p| old.primaries(*p) != new.primaries(*p))
            .unwrap();
        let sets = h.write_sets(moved);
        assert_eq!(sets, vec![old.primaries(moved), new.primaries(moved)]);
        // Not received yet: reads stay on the old ring.
        assert_eq!(h.read_version(moved).epoch(), old.epoch());
        // One of two new primaries is not enough.
        let incoming: Vec<NodeId> = h.incoming(1, moved).cloned().collect();
        assert!(h.received(new.epoch(), moved, &incoming[0]));
        if incoming.len() > 1 {
            assert_eq!(h.read_version(moved).epoch(), old.epoch());
        }
        receive_all(&mut h, new.epoch(), &[moved]);
        assert_eq!(h.read_version(moved).epoch(), new.epoch());
        // A partition that did not move reads the new ring at once.
        let stayed = q
            .partitions()
            .find(|p| old.primaries(*p) == new.primaries(*p));
        if let Some(p) = stayed {
            assert_eq!(h.read_version(p).epoch(), new.epoch());
        }
        // The old version retires only when every partition arrived.
        assert!(h.retire().is_empty());
        assert_eq!(h.versions().len(), 2);
        let all: Vec<PartitionId> = q.partitions().collect();
        receive_all(&mut h, new.epoch(), &all);
        let released = h.retire();
        assert_eq!(h.versions().len(), 1);
        assert_eq!(h.current(), &new);
        assert_eq!(released, transfer_plan(&old, &new).unwrap().releases);
    }

    #[test]
    fn progress_from_nobody_entitled_is_ignored_and_pushes_must_follow() {
        let old = ring3();
        let new = old.claim(members(1..=4)).unwrap();
        let mut h = LayoutHistory::new(old.clone());
        assert!(matches!(
            h.push(old.clone()),
            Err(HistoryError::NotNext { .. })
        ));
        h.push(new.clone()).unwrap();
        let p = old.q().partitions().next().unwrap();
        // n9 is nobody; an old primary is not a new one; the oldest version takes no progress.
        assert!(!h.received(new.epoch(), p, &id(9)));
        for n in old.primaries(p) {
            if new.primaries(p).contains(n) {
                assert!(!h.received(new.epoch(), p, n));
            }
        }
        assert!(!h.received(old.epoch(), p, &id(4)));
        assert!(!h.received(RingEpoch::new(99), p, &id(4)));
    }

    #[test]
    fn reads_never_skip_a_version_whose_partition_has_not_arrived() {
        let v1 = ring3();
        let v2 = v1.claim(members(1..=4)).unwrap();
        let v3 = v2.claim(members(1..=5)).unwrap();
        let mut h = LayoutHistory::new(v1.clone());
        h.push(v2.clone()).unwrap();
        h.push(v3.clone()).unwrap();
        let all: Vec<PartitionId> = v3.q().partitions().collect();
        // v3's transfers done, v2's not: reads of a partition that moved in v2 stay on v1.
        receive_all(&mut h, v3.epoch(), &all);
        let moved_in_v2 = all
            .iter()
            .find(|p| h.incoming(1, **p).next().is_some())
            .unwrap();
        assert_eq!(h.read_version(*moved_in_v2).epoch(), RingEpoch::INITIAL);
        assert!(h.retire().is_empty());
        receive_all(&mut h, v2.epoch(), &all);
        assert_eq!(h.read_version(*moved_in_v2).epoch(), v3.epoch());
        // Both steps retire at once, with everything they release.
        let expected = transfer_plan(&v1, &v2).unwrap().releases.len()
            + transfer_plan(&v2, &v3).unwrap().releases.len();
        assert_eq!(h.retire().len(), expected);
        assert_eq!(h.current(), &v3);
    }

    #[test]
    fn views_learnt_in_any_order_merge_to_one_history() {
        let v1 = ring3();
        let v2 = v1.claim(members(1..=4)).unwrap();
        let all: Vec<PartitionId> = v1.q().partitions().collect();
        let mut full = LayoutHistory::new(v1.clone());
        full.push(v2.clone()).unwrap();
        // Two nodes each saw half of the transfers.
        let mut a = full.clone();
        let mut b = full.clone();
        receive_all(&mut a, v2.epoch(), &all[..8]);
        receive_all(&mut b, v2.epoch(), &all[8..]);
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(&b);
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.versions().len(), 1, "complete after the merge: retired");
        // Idempotent, and a node that never saw v2 learns it.
        let again = ab.clone();
        ab.merge(&again);
        assert_eq!(ab, again);
        let mut behind = LayoutHistory::new(v1);
        behind.merge(&a);
        assert_eq!(behind.current(), &v2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Three versions (3 → 4 → 5 or 6 nodes) and any progress, split between two nodes'
        /// views: merging is commutative and idempotent; a read's version only moves forward
        /// as progress arrives, and every primary it reads from holds the partition (an
        /// original primary, or one that received it in each version it came in by).
        #[test]
        fn merged_views_agree_and_reads_only_reach_nodes_holding_the_partition(
            last in 5u16..=6,
            marks in proptest::collection::vec((0usize..2, 0u32..16, 0usize..3, proptest::bool::ANY), 0..120),
        ) {
            let v1 = ring3();
            let v2 = v1.claim(members(1..=4)).unwrap();
            let v3 = v2.claim(members(1..=last)).unwrap();
            let mut base = LayoutHistory::new(v1.clone());
            base.push(v2).unwrap();
            base.push(v3).unwrap();
            let (mut a, mut b) = (base.clone(), base.clone());
            let q = v1.q();
            for (version, p, k, to_a) in marks {
                let h = if to_a { &mut a } else { &mut b };
                if h.versions().len() < 3 {
                    continue;
                }
                let p = q.partition(p).unwrap();
                let before = h.read_version(p).epoch();
                let i = version + 1;
                let epoch = h.versions()[i].epoch();
                let incoming: Vec<NodeId> = h.incoming(i, p).cloned().collect();
                if let Some(n) = incoming.get(k % incoming.len().max(1)) {
                    h.received(epoch, p, n);
                }
                proptest::prop_assert!(h.read_version(p).epoch() >= before);
            }
            let (mut ab, mut ba) = (a.clone(), b.clone());
            ab.merge(&b);
            ba.merge(&a);
            proptest::prop_assert_eq!(&ab, &ba);
            let again = ab.clone();
            ab.merge(&again);
            proptest::prop_assert_eq!(&ab, &again);
            // Reads reach only nodes that hold the partition.
            for p in q.partitions() {
                let read = ab.read_version(p);
                for n in read.primaries(p) {
                    let mut holds = v1.primaries(p).contains(n);
                    for i in 1..base.versions().len() {
                        if base.versions()[i].epoch() > read.epoch() {
                            break;
                        }
                        let came_in = base.incoming(i, p).any(|m| m == n);
                        let epoch = base.versions()[i].epoch();
                        let got = ab.received.get(&epoch).and_then(|r| r.get(&p)).is_some_and(|g| g.contains(n));
                        if came_in {
                            // A version became the oldest only once complete.
                            holds = got || ab.versions()[0].epoch() >= epoch;
                        }
                    }
                    proptest::prop_assert!(holds, "{n} read for {p} without the data");
                }
            }
        }
    }
}
