//! The member records every node converges on, and their merge.
//!
//! Each node id has one [`MemberRecord`] (its type is in `shoal-protocol`, since it crosses the
//! wire). The member itself writes its record (address, zone, capacity, and a `version` it bumps
//! on every change); every start of its process writes it under a higher `generation`. Two records for one id merge
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

use shoal_protocol::MemberRecord;
use shoal_types::NodeId;

/// Every member record a node knows, by node id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
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

    /// A hash of every record's id, generation and version, in id order: two nodes holding the
    /// same document report the same hash (what `shoal cluster status` compares).
    pub fn hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for r in self.members.values() {
            h.update(r.id.as_str().as_bytes());
            h.update(&[0]);
            h.update(&r.generation.to_le_bytes());
            h.update(&r.version.to_le_bytes());
        }
        h.digest()
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
