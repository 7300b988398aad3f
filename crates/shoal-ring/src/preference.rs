use std::iter::FusedIterator;
use std::slice;

use shoal_types::{NodeId, PartitionId};

use crate::ring::Ring;

/// The nodes that should hold one partition's keys: its N primaries, owner first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferenceList {
    /// The partition the list is for.
    pub partition: PartitionId,
    /// N distinct nodes (all owning nodes, when fewer than N own partitions), owner first,
    /// spread over distinct zones while enough zones exist.
    pub primaries: Vec<NodeId>,
}

impl PreferenceList {
    /// True if `node` is a primary.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.primaries.contains(node)
    }

    /// The owner of the partition: the first primary.
    pub fn owner(&self) -> Option<&NodeId> {
        self.primaries.first()
    }
}

/// One node a sloppy quorum sends to: a reachable primary, or a fallback standing in for an
/// unreachable primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node to send to.
    pub node: NodeId,
    /// For a fallback: the primary it stands in for, to which it hands the data back as a hint.
    /// `None` for a primary.
    pub stands_in_for: Option<NodeId>,
}

impl Target {
    /// True if this target is a primary, not a fallback.
    pub fn is_primary(&self) -> bool {
        self.stands_in_for.is_none()
    }

    /// The primary this target is, or stands in for.
    pub fn primary(&self) -> &NodeId {
        self.stands_in_for.as_ref().unwrap_or(&self.node)
    }
}

/// The fallbacks of one partition: owning nodes that are not primaries, in the order they first
/// appear walking the ring from the partition. Each at most once; allocation-free (a bit set of
/// members on the stack).
#[derive(Clone)]
pub struct Fallbacks<'a> {
    ring: &'a Ring,
    start: usize,
    offset: usize,
    seen: MemberSet,
}

impl<'a> Fallbacks<'a> {
    pub(crate) fn new(ring: &'a Ring, partition: PartitionId) -> Self {
        Fallbacks {
            ring,
            start: partition.index() as usize,
            offset: 0,
            seen: MemberSet::default(),
        }
    }

    /// Leaves member `index` out of the walk (it is a primary).
    pub(crate) fn skip_member(&mut self, index: usize) {
        self.seen.insert(index);
    }
}

impl<'a> Iterator for Fallbacks<'a> {
    type Item = &'a NodeId;

    fn next(&mut self) -> Option<&'a NodeId> {
        let q = self.ring.partition_len();
        while self.offset < q {
            let owner = self.ring.owner_index((self.start + self.offset) % q);
            self.offset += 1;
            if self.seen.insert(owner) {
                return Some(&self.ring.members()[owner].id);
            }
        }
        None
    }
}

impl FusedIterator for Fallbacks<'_> {}

impl std::fmt::Debug for Fallbacks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallbacks")
            .field("partition", &self.start)
            .field("offset", &self.offset)
            .finish()
    }
}

/// The full walk of one partition: its primaries, then its fallbacks.
#[derive(Clone, Debug)]
pub struct Walk<'a> {
    primaries: slice::Iter<'a, NodeId>,
    fallbacks: Fallbacks<'a>,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(primaries: slice::Iter<'a, NodeId>, fallbacks: Fallbacks<'a>) -> Self {
        Walk {
            primaries,
            fallbacks,
        }
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a NodeId;

    fn next(&mut self) -> Option<&'a NodeId> {
        self.primaries.next().or_else(|| self.fallbacks.next())
    }
}

impl FusedIterator for Walk<'_> {}

/// A set of member indices below `Ring::MAX_MEMBERS`, on the stack.
#[derive(Clone, Default)]
struct MemberSet([u64; Ring::MAX_MEMBERS / 64]);

impl MemberSet {
    /// Adds `index`; true if it was not there yet. Indices come from a checked ring, so they are
    /// below `Ring::MAX_MEMBERS`; an index beyond is reported as already present.
    fn insert(&mut self, index: usize) -> bool {
        let Some(word) = self.0.get_mut(index / 64) else {
            return false;
        };
        let bit = 1u64 << (index % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}
