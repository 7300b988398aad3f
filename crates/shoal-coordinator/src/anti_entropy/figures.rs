//! Divergence you can see: what this node last learned of each pair of its partitions, kept for
//! the admin status, `/metrics` and `shoal cluster repair --status`.
//!
//! A pair's record comes from the last exchange this node ran with the peer (the counts it
//! found and repaired), or from the last root ask it served whose root matched its own (the
//! asker's root comes with the ask, at an exchange's start and at its check after a repair):
//! a served ask whose roots differed is the asker's to count, and leaves the record as it was.
//! A pair is *known equal* when its roots were found equal (at the start of an exchange, or at
//! the check after its repair), or when no difference lasted past the confirm pause; a
//! partition *matched all its replicas* at the oldest of its pairs' latest such times, once
//! each other primary has one.
//!
//! Not here: the process-wide counters (`NodeMetrics`), which the part adds to as it goes.

use std::collections::BTreeMap;
use std::time::Instant;

use shoal_protocol::{PairDivergence, PartitionDivergence};
use shoal_ring::Ring;
use shoal_types::{NodeId, PartitionId};

/// What an exchange this node ran found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ran {
    /// No difference lasted past the confirm pause.
    pub(crate) matched: bool,
    /// The roots matched at the check after the repair.
    pub(crate) verified: bool,
    pub(crate) segments_differing: u64,
    pub(crate) keys_differing: u64,
    pub(crate) keys_repaired: u64,
}

#[derive(Clone, Debug)]
struct Record {
    at: Instant,
    ran_here: bool,
    ran: Ran,
    known_equal_at: Option<Instant>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Figures {
    pairs: BTreeMap<PartitionId, BTreeMap<NodeId, Record>>,
}

impl Figures {
    /// An exchange of `partition` with `peer` that this node ran ended at `now`.
    pub(crate) fn ran(&mut self, partition: PartitionId, peer: &NodeId, now: Instant, ran: Ran) {
        let record = self.record(partition, peer, now);
        record.at = now;
        record.ran_here = true;
        record.ran = ran;
        if ran.matched || ran.verified {
            record.known_equal_at = Some(now);
        }
    }

    /// This node served `peer`'s root ask for `partition` at `now`, and the roots matched.
    pub(crate) fn served_match(&mut self, partition: PartitionId, peer: &NodeId, now: Instant) {
        let record = self.record(partition, peer, now);
        record.at = now;
        record.ran_here = false;
        record.ran = Ran {
            matched: true,
            ..Ran::default()
        };
        record.known_equal_at = Some(now);
    }

    /// Every partition with a record, as the status shows it at `now`: its pairs, and since
    /// when it has matched each other primary of it in `ring` (`me` is this node).
    pub(crate) fn status(
        &self,
        ring: &Ring,
        me: &NodeId,
        now: Instant,
    ) -> Vec<PartitionDivergence> {
        self.pairs
            .iter()
            .map(|(partition, peers)| {
                let others = ring.primaries(*partition).iter().filter(|p| *p != me);
                let oldest = others
                    .map(|p| peers.get(p).and_then(|r| r.known_equal_at))
                    .try_fold(now, |oldest, at| at.map(|at| oldest.min(at)));
                PartitionDivergence {
                    partition: *partition,
                    matched_all_ago: oldest.map(|at| now.saturating_duration_since(at)),
                    peers: peers
                        .iter()
                        .map(|(peer, r)| PairDivergence {
                            peer: peer.clone(),
                            ago: now.saturating_duration_since(r.at),
                            ran_here: r.ran_here,
                            matched: r.ran.matched,
                            segments_differing: r.ran.segments_differing,
                            keys_differing: r.ran.keys_differing,
                            keys_repaired: r.ran.keys_repaired,
                            matched_ago: r
                                .known_equal_at
                                .map(|at| now.saturating_duration_since(at)),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn record(&mut self, partition: PartitionId, peer: &NodeId, now: Instant) -> &mut Record {
        self.pairs
            .entry(partition)
            .or_default()
            .entry(peer.clone())
            .or_insert(Record {
                at: now,
                ran_here: false,
                ran: Ran::default(),
                known_equal_at: None,
            })
    }
}
