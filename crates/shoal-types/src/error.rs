use serde::{Deserialize, Serialize};
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
    InvalidQuorum(#[from] QuorumError),
    /// A role is `node`, `client` or `admin`.
    #[error("unknown role {0:?}: use node, client or admin")]
    InvalidRole(String),
    /// Limits must be positive and within the hard maximums.
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
}

/// Why R, W, PR or PW cannot be used with a replication factor N. Travels on the wire inside a
/// node's refusal of a request, so a client sees exactly which number was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum QuorumError {
    /// R is 0 or more than N.
    #[error("R={r} must be between 1 and N={n}")]
    ReadOutOfRange {
        /// The R asked for.
        r: u8,
        /// The key's replication factor.
        n: u8,
    },
    /// PR is more than R.
    #[error("PR={pr} must not exceed R={r}")]
    PrimaryReadsOverR {
        /// The PR asked for.
        pr: u8,
        /// The R it belongs to.
        r: u8,
    },
    /// W is 0 or more than N.
    #[error("W={w} must be between 1 and N={n}")]
    WriteOutOfRange {
        /// The W asked for.
        w: u8,
        /// The key's replication factor.
        n: u8,
    },
    /// PW is more than W.
    #[error("PW={pw} must not exceed W={w}")]
    PrimaryWritesOverW {
        /// The PW asked for.
        pw: u8,
        /// The W it belongs to.
        w: u8,
    },
}
