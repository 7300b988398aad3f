use std::collections::{BTreeMap, BTreeSet};

use shoal_types::{NodeId, PartitionId, RingEpoch};

use crate::RingError;
use crate::ring::Ring;

/// What a ring change means for data: which partitions each node must receive, from whom, and
/// which copies become surplus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferPlan {
    /// The epoch of the ring the data is on now.
    pub from_epoch: RingEpoch,
    /// The epoch of the ring the data moves to.
    pub to_epoch: RingEpoch,
    /// Ownership handoffs, by partition, then in the new preference-list order.
    pub transfers: Vec<Transfer>,
    /// Old primaries that are no longer primaries, by partition, then in the old
    /// preference-list order. Each may delete its copy once every transfer of that partition is
    /// acknowledged.
    pub releases: Vec<Release>,
    /// Per node: partitions it receives, sends and releases.
    pub per_node: BTreeMap<NodeId, NodeTransfers>,
}

/// One partition a node must receive: it becomes a primary and was not one before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The partition to copy.
    pub partition: PartitionId,
    /// Who sends it: an old primary that leaves the preference list if one is left to pair
    /// with, else the old owner. Any old primary holds the data, should this one be unreachable.
    pub from: NodeId,
    /// The new primary that receives it.
    pub to: NodeId,
}

/// A copy that becomes surplus: `node` was a primary of `partition` and is no longer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The partition.
    pub partition: PartitionId,
    /// The old primary that may delete it after the new primaries acknowledge.
    pub node: NodeId,
}

/// One node's share of a transfer plan, in partitions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeTransfers {
    /// Partitions it receives.
    pub incoming: usize,
    /// Partitions it sends.
    pub outgoing: usize,
    /// Partitions whose copy it may delete afterwards.
    pub released: usize,
}

impl TransferPlan {
    /// True if the change moves no data.
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty() && self.releases.is_empty()
    }
}

/// The data movement from ring `old` to ring `new`: for each partition, each node that is a
/// primary in `new` but was not in `old` receives the partition (a [`Transfer`]), and each old
/// primary that is not a new primary releases it. Refuses rings of different Q.
pub fn transfer_plan(old: &Ring, new: &Ring) -> Result<TransferPlan, RingError> {
    transfer_plan_without(old, new, &BTreeSet::new())
}

/// [`transfer_plan`] with no transfer sent from a node of `unavailable` (nodes an admin
/// removes because they are gone): each such transfer is sent by another old primary instead,
/// and a partition whose every old primary is unavailable is refused
/// ([`RingError::NoSource`]) — its data would be lost.
pub fn transfer_plan_without(
    old: &Ring,
    new: &Ring,
    unavailable: &BTreeSet<NodeId>,
) -> Result<TransferPlan, RingError> {
    if old.q() != new.q() {
        return Err(RingError::PartitionCountMismatch {
            old: old.q().get(),
            new: new.q().get(),
        });
    }
    let mut plan = TransferPlan {
        from_epoch: old.epoch(),
        to_epoch: new.epoch(),
        transfers: Vec::new(),
        releases: Vec::new(),
        per_node: BTreeMap::new(),
    };
    for partition in old.q().partitions() {
        let before = old.primaries(partition);
        let after = new.primaries(partition);
        let mut leaving = before
            .iter()
            .filter(|node| !after.contains(node) && !unavailable.contains(*node));
        let fallback = std::iter::once(old.owner(partition))
            .chain(before.iter())
            .find(|node| !unavailable.contains(*node));
        for to in after.iter().filter(|node| !before.contains(node)) {
            let from = match leaving.next().or(fallback) {
                Some(from) => from,
                None => {
                    return Err(RingError::NoSource {
                        partition: partition.index(),
                    });
                }
            };
            plan.per_node.entry(to.clone()).or_default().incoming += 1;
            plan.per_node.entry(from.clone()).or_default().outgoing += 1;
            plan.transfers.push(Transfer {
                partition,
                from: from.clone(),
                to: to.clone(),
            });
        }
        for node in before.iter().filter(|node| !after.contains(node)) {
            plan.per_node.entry(node.clone()).or_default().released += 1;
            plan.releases.push(Release {
                partition,
                node: node.clone(),
            });
        }
    }
    Ok(plan)
}
