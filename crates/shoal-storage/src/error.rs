use std::path::PathBuf;

use shoal_types::{NodeId, PartitionCount, PartitionId};
use thiserror::Error;

/// Why a storage operation failed.
///
/// A corrupted record is not an error: reads report it as [`crate::ReadOutcome::Corrupted`]. An
/// error means the operation did not happen (for a write: it was not acknowledged; a failed
/// commit may still have reached the disk, as with any fsync that reports an error).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorageError {
    /// The data directory could not be created or opened.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        reason: String,
    },
    /// The database is already open, in this process or another one.
    #[error("the database is already open (is another shoal process using this data directory?)")]
    AlreadyOpen,
    /// The data directory belongs to another node.
    #[error("the data directory belongs to node {found}, not {expected}")]
    WrongNode {
        /// The node id this process was started with.
        expected: NodeId,
        /// The node id stored in the data directory.
        found: NodeId,
    },
    /// The data directory was created for a ring of another size.
    #[error(
        "the data directory was created for {found:?} partitions, not {expected:?}; Q is fixed when a cluster is created"
    )]
    WrongPartitionCount {
        /// The partition count this process was started with.
        expected: PartitionCount,
        /// The partition count stored in the data directory.
        found: PartitionCount,
    },
    /// The data directory was written by a newer storage format.
    #[error("storage format {found} is newer than this build understands (up to {supported})")]
    UnsupportedFormat {
        /// The format version found on disk.
        found: u8,
        /// The newest format this build reads.
        supported: u8,
    },
    /// The node's identity record (node id, Q, incarnation) is missing or damaged in a database
    /// that holds data, so which node it belongs to cannot be trusted.
    #[error("the database's identity record is damaged: {0}")]
    IdentityCorrupted(String),
    /// A write names a partition that does not exist in a ring of this size.
    #[error("partition {partition} does not exist in a ring of {count:?} partitions")]
    PartitionOutOfRange {
        /// The partition named.
        partition: PartitionId,
        /// The ring size.
        count: PartitionCount,
    },
    /// The database engine failed (I/O error, full disk, internal corruption).
    #[error("database error while {during}: {reason}")]
    Database {
        /// What storage was doing.
        during: &'static str,
        /// The engine's message.
        reason: String,
    },
    /// The storage has shut down (or its commit thread died), so nothing more can be written.
    #[error("storage is closed")]
    Closed,
    /// A clean close was asked while other handles of the storage were still open, so commits
    /// may still come; the run is not recorded clean.
    #[error("other handles of the storage are still open; the run is not recorded clean")]
    StillInUse,
    /// A commit failed during this run (or the commit thread died), so a write this node made a
    /// dot for may be missing here; the run is not recorded clean and the next open takes a new
    /// incarnation.
    #[error("{failed_commits} commit(s) failed in this run; the run is not recorded clean")]
    RunFailed {
        /// Commits that failed in this run (0 if the commit thread died).
        failed_commits: u64,
    },
    /// `write` was called from a completion callback, which runs on the commit thread and would
    /// wait for itself forever. Use `submit` there.
    #[error("write called from a commit callback; use submit")]
    WriteFromCommitThread,
}

/// Turns a database engine error into a [`StorageError`] that says what storage was doing,
/// keeping only the engine's message so that engine types stay out of this crate's API.
pub(crate) trait During<T> {
    /// Names the operation that failed.
    fn during(self, what: &'static str) -> Result<T, StorageError>;
}

impl<T, E: Into<redb::Error>> During<T> for Result<T, E> {
    fn during(self, what: &'static str) -> Result<T, StorageError> {
        self.map_err(|e| match e.into() {
            redb::Error::DatabaseAlreadyOpen => StorageError::AlreadyOpen,
            other => StorageError::Database {
                during: what,
                reason: other.to_string(),
            },
        })
    }
}
