//! The member records every node converges on, and their merge.
//!
//! Each node id has one [`MemberRecord`]. The member itself writes its record (address, zone,
//! capacity, and a `version` it bumps on every change); a node that comes back under a new
//! incarnation (a wiped disk) writes it under a higher `generation`. Two records for one id merge
//! to the greater in one total order: by generation, then version, then the rest of the record
//! field by field. So merging is a join of a semilattice — commutative, associative and idempotent
//! (`tests/document.rs` checks the laws) — and nodes that have seen the same records hold the same
//! document, whatever order the records came in. Two different records under one (generation,
//! version) can only come from two processes claiming one node id; the merge still picks one
//! everywhere, and [`Membership::merge`] reports the conflict so the owner can refuse it.
//!
//! Not here: the ring and its epoch, staged changes and transfer progress (with the ring-change
//! issue), and who may change a member's status (an admin's committed ring change; the status
//! here is the member's record of it).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_types::{Capacity, Incarnation, NodeId, Zone};

/// Where a member stands in the cluster, in the order a member passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Known to the cluster, owning no partitions until a ring change commits it.
    Joining,
    /// Owns partitions in the ring.
    Valid,
    /// Handing its partitions off before it leaves.
    Leaving,
    /// Handed everything off; about to stop.
    Exiting,
    /// No longer a member.
    Removed,
}

/// One member as the cluster knows it. See the module docs for the merge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Bumped when the member comes back under a new incarnation; a higher generation replaces
    /// every record of a lower one.
    pub generation: u64,
    /// Bumped by the member on every change of its record within a generation.
    pub version: u64,
    /// The node.
    pub id: NodeId,
    /// The incarnation its data directory runs under.
    pub incarnation: Incarnation,
    /// Where peers and clients reach it.
    pub addr: SocketAddr,
    /// Its failure domain.
    pub zone: Zone,
    /// Its weight when partitions are claimed.
    pub capacity: Capacity,
    /// Where it stands.
    pub status: MemberStatus,
}

impl MemberRecord {
    /// Whether `other` is a different record for the same node at the same generation and
    /// version: two processes claim one node id.
    pub fn conflicts_with(&self, other: &MemberRecord) -> bool {
        self.id == other.id
            && (self.generation, self.version) == (other.generation, other.version)
            && self != other
    }
}

/// Every member record a node knows, by node id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    members: BTreeMap<NodeId, MemberRecord>,
}

impl Membership {
    /// A document that knows no member.
    pub fn new() -> Self {
        Membership::default()
    }

    /// The record of `id`, if known.
    pub fn get(&self, id: &NodeId) -> Option<&MemberRecord> {
        self.members.get(id)
    }

    /// Every record, by node id.
    pub fn members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members.values()
    }

    /// How many members are known (removed ones included).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member is known.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Merges one record in: it replaces the known record of its node if it is greater (see
    /// the module docs). Returns whether the document changed, and whether the record conflicts
    /// with the one known (two processes claiming one node id).
    pub fn merge_record(&mut self, record: MemberRecord) -> Merged {
        match self.members.get_mut(&record.id) {
            None => {
                self.members.insert(record.id.clone(), record);
                Merged {
                    changed: true,
                    conflict: false,
                }
            }
            Some(known) => {
                let conflict = known.conflicts_with(&record);
                let changed = record > *known;
                if changed {
                    *known = record;
                }
                Merged { changed, conflict }
            }
        }
    }

    /// Merges every record of `other` in. Returns the ids whose records conflicted.
    pub fn merge(&mut self, other: &Membership) -> Vec<NodeId> {
        let mut conflicts = Vec::new();
        for record in other.members.values() {
            if self.merge_record(record.clone()).conflict {
                conflicts.push(record.id.clone());
            }
        }
        conflicts
    }
}

/// What merging one record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The document changed.
    pub changed: bool,
    /// The record differs from the known one at the same generation and version.
    pub conflict: bool,
}
