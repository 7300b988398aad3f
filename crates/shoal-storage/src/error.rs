//! The errors of storage, one type per operation, as redb splits its own: opening
//! ([`OpenError`]), reading ([`ReadError`]), committing ([`CommitError`]) and closing cleanly
//! ([`CloseError`]). Each holds only the variants its operation can produce, and each variant
//! says what happened and whether anything changed.
//!
//! A corrupted record is not an error: reads report it as [`crate::ReadOutcome::Corrupted`].
//! Engine failures are an [`EngineError`], which keeps redb's error as its
//! [`source`](std::error::Error::source) without naming redb's types in this crate's API; I/O
//! failures outside the engine keep their [`io::Error`] as theirs. Every message also includes
//! its source's, so a log line or a string sent to a peer says everything.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use shoal_types::{NodeId, PartitionCount, PartitionId};
use thiserror::Error;

/// Why opening a database, or beginning a run on an open one, failed
/// ([`crate::RedbStorage::open`], [`crate::RedbStorage::open_in_memory`],
/// [`crate::RedbStorage::begin_run`]).
#[derive(Debug, Error)]
pub enum OpenError {
    /// The data directory could not be created or opened; nothing was opened.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The database is already open, in this process or another one; nothing was opened or
    /// changed.
    #[error("the database is already open (is another shoal process using this data directory?)")]
    AlreadyOpen,
    /// The data directory belongs to another node; nothing was changed.
    #[error("the data directory belongs to node {found}, not {expected}")]
    WrongNode {
        /// The node id this process was started with.
        expected: NodeId,
        /// The node id stored in the data directory.
        found: NodeId,
    },
    /// The data directory was created for a ring of another size; nothing was changed.
    #[error(
        "the data directory was created for {found:?} partitions, not {expected:?}; Q is fixed when a cluster is created"
    )]
    WrongPartitionCount {
        /// The partition count this process was started with.
        expected: PartitionCount,
        /// The partition count stored in the data directory.
        found: PartitionCount,
    },
    /// The data directory was written by a newer storage format; nothing was changed.
    #[error("storage format {found} is newer than this build understands (up to {supported})")]
    UnsupportedFormat {
        /// The format version found on disk.
        found: u8,
        /// The newest format this build reads.
        supported: u8,
    },
    /// The node's identity record (node id, Q, incarnation) is missing or damaged in a database
    /// that holds data, so which node it belongs to cannot be trusted; nothing was changed.
    #[error("the database's identity record is damaged: {0}")]
    IdentityCorrupted(&'static str),
    /// A storage thread (the commit thread, or the one building the trees) could not be
    /// started. The run was already recorded as begun, so the next open reports a recovery;
    /// nothing else changed.
    #[error("cannot start a storage thread: {0}")]
    CommitThread(#[source] io::Error),
    /// The database engine failed (I/O error, full disk, internal corruption) while opening,
    /// reading the identity or taking the snapshot the trees are built from. If the run was recorded as begun before it
    /// failed, the next open reports a recovery; nothing else changed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why a read (an object, a partition listing, a tree, a segment's keys, hints) failed. Nothing
/// was changed; the read can be tried again.
#[derive(Clone, Debug, Error)]
pub enum ReadError {
    /// The database engine failed (I/O error, internal corruption).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The trees (and so the segment key lists compared with them) are still being built from
    /// the records after the storage opened; ask again later. Nothing else waits for them.
    #[error(
        "the anti-entropy trees are still being built ({records_done} of {records_total} records)"
    )]
    TreesNotReady {
        /// Records folded into the trees so far.
        records_done: u64,
        /// Records the build scans in all.
        records_total: u64,
    },
}

/// Why a batch was not acknowledged ([`crate::Storage::write`], or the callback of
/// [`crate::Storage::submit`]). `Clone`, because one failed group commit is reported to the
/// callback of every batch in it.
#[derive(Clone, Debug, Error)]
pub enum CommitError {
    /// A write names a partition that does not exist in a ring of this size. The batch was
    /// refused before anything of it was applied.
    #[error("partition {partition} does not exist in a ring of {count:?} partitions")]
    PartitionOutOfRange {
        /// The partition named.
        partition: PartitionId,
        /// The ring size.
        count: PartitionCount,
    },
    /// The database engine failed to apply or commit the group the batch was in (I/O error,
    /// full disk, internal corruption). No batch of the group is acknowledged, but the commit
    /// may still have reached the disk, as with any fsync that reports an error; the engine
    /// then refuses further commits until the database is reopened.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Applying the group the batch was in panicked. No batch of the group is acknowledged;
    /// the engine refuses further commits until the database is reopened.
    #[error("the group commit panicked")]
    Panicked,
    /// The storage has shut down (or its commit thread died); the batch was not applied.
    #[error("storage is closed")]
    Closed,
    /// `write` was called from a commit callback, which runs on the commit thread and would
    /// wait for itself forever; the batch was not queued. Use `submit` there.
    #[error("write called from a commit callback; use submit")]
    WriteFromCommitThread,
}

/// Why [`crate::RedbStorage::close_clean`] did not record a clean stop. In every case the run
/// stays "running", so the next open reports a recovery (under the same incarnation), and this
/// handle is gone.
#[derive(Clone, Debug, Error)]
pub enum CloseError {
    /// Called from a commit callback, on the commit thread it would have to join; the handle
    /// was dropped.
    #[error("close_clean called from a commit callback; the run is not recorded clean")]
    FromCommitThread,
    /// Other handles of the storage are still open, so commits may still come; the handle was
    /// dropped and the database stays open for the others.
    #[error("other handles of the storage are still open; the run is not recorded clean")]
    StillInUse,
    /// A commit failed during this run (or the commit thread died), so a write this node made a
    /// dot for may be missing here. The queued commits were finished and the database closed.
    #[error("{failed_commits} commit(s) failed in this run; the run is not recorded clean")]
    RunFailed {
        /// Commits that failed in this run (0 if the commit thread died).
        failed_commits: u64,
    },
    /// Every commit of the run succeeded, but recording the clean stop failed in the engine.
    /// The database is closed.
    #[error("the clean stop could not be recorded: {0}")]
    Engine(#[from] EngineError),
}

/// A failure of the database engine (redb): what storage was doing, and the engine's error,
/// which [`source`](StdError::source) returns. Cheap to clone, so that one failed commit can be
/// reported to many callers.
#[derive(Clone, Debug)]
pub struct EngineError {
    during: &'static str,
    source: Arc<redb::Error>,
}

impl EngineError {
    /// An I/O failure of the engine while `during` (for instance "committing"), as a
    /// fault-injecting caller (a simulated disk, a test harness) reports one.
    pub fn io(during: &'static str, error: io::Error) -> EngineError {
        EngineError::new(during, redb::Error::Io(error))
    }

    /// What storage was doing when the engine failed.
    pub fn during(&self) -> &'static str {
        self.during
    }

    pub(crate) fn new(during: &'static str, error: impl Into<redb::Error>) -> EngineError {
        EngineError {
            during,
            source: Arc::new(error.into()),
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database error while {}: {}", self.during, self.source)
    }
}

impl StdError for EngineError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Turns a database engine error into an [`EngineError`] that says what storage was doing.
pub(crate) trait During<T> {
    /// Names the operation that failed.
    fn during(self, what: &'static str) -> Result<T, EngineError>;
}

impl<T, E: Into<redb::Error>> During<T> for Result<T, E> {
    fn during(self, what: &'static str) -> Result<T, EngineError> {
        self.map_err(|e| EngineError::new(what, e))
    }
}

/// The error of creating or opening the database file: [`OpenError::AlreadyOpen`] if another
/// handle holds it, otherwise the engine's.
pub(crate) fn opening(error: redb::DatabaseError) -> OpenError {
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::AlreadyOpen,
        other => EngineError::new("opening the database", other).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_threads() {
        // Commit errors go from the commit thread to the node's task; open errors to a caller.
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<OpenError>();
        send_sync::<ReadError>();
        send_sync::<CommitError>();
        send_sync::<CloseError>();
    }

    #[test]
    fn an_engine_error_says_what_failed_and_keeps_the_engine_error_as_its_source() {
        let e = CommitError::from(EngineError::io(
            "committing",
            io::Error::other("disk on fire"),
        ));
        assert_eq!(
            e.to_string(),
            "database error while committing: I/O error: disk on fire"
        );
        // Transparent: the commit error's source is the engine's error itself.
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), "I/O error: disk on fire");
        assert!(source.downcast_ref::<redb::Error>().is_some());
        let CommitError::Engine(engine) = &e else {
            panic!("{e:?}");
        };
        assert_eq!(engine.during(), "committing");
        assert_eq!(
            engine.source().map(ToString::to_string),
            Some("I/O error: disk on fire".into())
        );
    }

    #[test]
    fn io_failures_outside_the_engine_keep_the_io_error_as_their_source() {
        let e = OpenError::DataDir {
            path: PathBuf::from("/nowhere"),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(e.to_string().starts_with("data directory /nowhere: "));
        let source = e.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(
            source.map(io::Error::kind),
            Some(io::ErrorKind::PermissionDenied)
        );
    }

    #[test]
    fn a_refused_open_is_already_open_only_when_another_handle_holds_the_file() {
        assert!(matches!(
            opening(redb::DatabaseError::DatabaseAlreadyOpen),
            OpenError::AlreadyOpen
        ));
        assert!(matches!(
            opening(redb::DatabaseError::UpgradeRequired(1)),
            OpenError::Engine(e) if e.during() == "opening the database"
        ));
    }
}
