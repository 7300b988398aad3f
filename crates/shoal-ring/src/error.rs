use shoal_types::NodeId;
use thiserror::Error;

/// Why a ring could not be built, decoded or compared. Every variant leaves the caller's ring
/// untouched: ring operations return new values and never change the one they were called on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingError {
    /// A ring needs at least one member to own its partitions.
    #[error("a ring needs at least one member")]
    NoMembers,
    /// Two members share one node id.
    #[error("member {0} appears more than once")]
    DuplicateMember(NodeId),
    /// A decoded ring must list its members sorted by node id (its canonical form).
    #[error("members are not sorted by node id")]
    MembersNotSorted,
    /// A ring holds at most `Ring::MAX_MEMBERS` members.
    #[error("{count} members is more than the {max} a ring can hold")]
    TooManyMembers {
        /// How many members were offered.
        count: usize,
        /// The most a ring holds.
        max: usize,
    },
    /// A ring names exactly one owner per partition.
    #[error("ring of {expected} partitions lists {found} owners")]
    WrongOwnerCount {
        /// Q.
        expected: usize,
        /// How many owners were offered.
        found: usize,
    },
    /// An owner is not a member of the ring.
    #[error("the owner of partition {partition} is not a member of the ring")]
    UnknownOwner {
        /// The partition whose owner is unknown.
        partition: u32,
    },
    /// Two rings of different partition counts cannot be compared partition by partition.
    #[error("rings of {old} and {new} partitions cannot be compared")]
    PartitionCountMismatch {
        /// Q of the old ring.
        old: u32,
        /// Q of the new ring.
        new: u32,
    },
    /// Every old primary of a partition is unavailable: nobody is left to send its data.
    #[error("no replica of partition {partition} would be left to copy it from")]
    NoSource {
        /// The partition.
        partition: u32,
    },
}
