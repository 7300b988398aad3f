use std::fmt;

use serde::{Deserialize, Serialize};

use crate::TypesError;

/// Q: how many fixed, equal slices the 64-bit hash space is cut into. A power of two from 1 to
/// 65,536, fixed when the cluster is created.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PartitionCount(u32);

impl PartitionCount {
    /// The default Q.
    pub const DEFAULT: PartitionCount = PartitionCount(256);
    /// The largest Q.
    pub const MAX: u32 = 1 << 16;

    /// Parses Q: a power of two from 1 to 65,536.
    pub fn new(q: u32) -> Result<Self, TypesError> {
        if q.is_power_of_two() && q <= Self::MAX {
            Ok(PartitionCount(q))
        } else {
            Err(TypesError::InvalidPartitionCount(q))
        }
    }

    /// Q itself.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// log2(Q): how many top bits of a key's hash name its partition.
    pub const fn bits(self) -> u32 {
        self.0.trailing_zeros()
    }

    /// Every partition of the ring, in order.
    pub fn partitions(self) -> impl Iterator<Item = PartitionId> {
        (0..self.0).map(PartitionId)
    }

    /// The partition `id`, if it exists in a ring of this size.
    pub fn partition(self, id: u32) -> Result<PartitionId, TypesError> {
        if id < self.0 {
            Ok(PartitionId(id))
        } else {
            Err(TypesError::PartitionOutOfRange {
                partition: id,
                count: self.0,
            })
        }
    }
}

impl Default for PartitionCount {
    fn default() -> Self {
        PartitionCount::DEFAULT
    }
}

impl TryFrom<u32> for PartitionCount {
    type Error = TypesError;
    fn try_from(q: u32) -> Result<Self, TypesError> {
        PartitionCount::new(q)
    }
}

impl From<PartitionCount> for u32 {
    fn from(q: PartitionCount) -> u32 {
        q.0
    }
}

impl fmt::Debug for PartitionCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Q={}", self.0)
    }
}

/// One partition of the ring, numbered from 0 in hash order.
///
/// A `PartitionId` on its own does not know the ring size; `PartitionCount::partition` is the
/// checked way to make one from a number, and decoders check ids against the ring they apply to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionId(u32);

impl PartitionId {
    /// The partition's index in hash order.
    pub const fn index(self) -> u32 {
        self.0
    }

    /// The partition that follows this one on the ring, wrapping around at Q.
    pub fn successor(self, q: PartitionCount) -> PartitionId {
        PartitionId((self.0 + 1) & (q.0 - 1))
    }

    /// Builds a partition id from an index already known to be below Q (by construction, e.g.
    /// the top bits of a hash).
    pub const fn from_index_unchecked(index: u32) -> PartitionId {
        PartitionId(index)
    }
}

impl fmt::Debug for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The version of the ring. Every committed ring change makes epoch e+1; a change planned from
/// an older epoch is refused.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RingEpoch(u64);

impl RingEpoch {
    /// The epoch of a ring that was never changed.
    pub const INITIAL: RingEpoch = RingEpoch(1);

    /// Wraps a stored or received epoch number.
    pub const fn new(n: u64) -> Self {
        RingEpoch(n)
    }

    /// The epoch number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The epoch after this one.
    pub const fn next(self) -> RingEpoch {
        RingEpoch(self.0.saturating_add(1))
    }
}

impl fmt::Debug for RingEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

impl fmt::Display for RingEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_count_is_a_power_of_two() {
        for q in [1, 2, 64, 256, 1024, 65536] {
            assert_eq!(PartitionCount::new(q).unwrap().get(), q);
        }
        for q in [0, 3, 100, 65537, 1 << 17] {
            assert!(PartitionCount::new(q).is_err(), "{q}");
        }
        assert_eq!(PartitionCount::new(256).unwrap().bits(), 8);
    }

    #[test]
    fn successor_wraps_around() {
        let q = PartitionCount::new(4).unwrap();
        assert_eq!(
            q.partition(3).unwrap().successor(q),
            q.partition(0).unwrap()
        );
        assert!(q.partition(4).is_err());
    }
}
