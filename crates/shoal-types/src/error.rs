use thiserror::Error;

/// Why a value could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TypesError {
    /// A node id must be 1 to 64 characters from `[A-Za-z0-9._-]`.
    #[error("invalid node id {0:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidNodeId(String),
    /// A zone name follows the same rules as a node id.
    #[error("invalid zone {0:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidZone(String),
    /// Capacity weights are between 1 and 1,000.
    #[error("capacity {0} is out of range: use 1 to 1000")]
    InvalidCapacity(u32),
    /// Keys are between 1 byte and `Key::MAX_LEN` bytes.
    #[error("key of {len} bytes is out of range: keys are 1 to {max} bytes")]
    InvalidKeyLength {
        /// The length that was offered.
        len: usize,
        /// The largest key Shoal accepts.
        max: usize,
    },
    /// The partition count Q must be a power of two within the supported range.
    #[error("partition count {0} is invalid: use a power of two from 1 to 65536")]
    InvalidPartitionCount(u32),
    /// A partition id must be below the partition count.
    #[error("partition {partition} does not exist in a ring of {count} partitions")]
    PartitionOutOfRange {
        /// The id that was offered.
        partition: u32,
        /// The ring's partition count.
        count: u32,
    },
    /// N is between 1 and `ReplicationFactor::MAX`.
    #[error("replication factor {0} is out of range: use 1 to 16")]
    InvalidReplicationFactor(u8),
    /// R, W, PR and PW must fit inside N: 1 <= R <= N, 1 <= W <= N, PR <= R, PW <= W.
    #[error("invalid quorum: {0}")]
    InvalidQuorum(String),
    /// Limits must be positive and within the hard maximums.
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
}
