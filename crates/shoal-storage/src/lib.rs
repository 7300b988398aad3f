//! Shoal's node-local storage: each key's object (a DVV sibling set), the hints a node holds for
//! others, and one tictac anti-entropy tree per partition, kept in step with the objects.
//!
//! [`Storage`] is the trait the coordinator and server use. [`RedbStorage`] keeps everything in
//! one redb database (`DATA_DIR/shoal.redb`) and writes through a **group commit**: callers
//! [`Storage::submit`] (or [`Storage::write`], which waits) batches to a queue; one commit thread
//! applies everything queued in one write transaction and one fsync, then acknowledges every
//! batch in it. Reads use their own read transactions and never wait for a commit.
//! [`MemoryStorage`] is the same behaviour in ordered maps, for tests and the simulator.
//!
//! Every record carries a CRC32 (over its table key and its bytes). A record that fails it, or
//! does not decode, is reported as [`ReadOutcome::Corrupted`] — counted, logged, never a panic
//! and never wrong data — and its tree segment is recomputed so anti-entropy repairs it from a
//! peer. The partitions' [`TictacTree`]s live in memory: built from the objects after the
//! database opens, by a paced thread beside serving (until then [`Storage::tree`] answers
//! [`ReadError::TreesNotReady`] and [`Storage::trees_status`] says how far the build got), and
//! moved by the commit thread once each commit is durable, so they always describe committed
//! data (they used to be a table written in every commit, which cost each write about 40 % more
//! pages). An open therefore does not grow with the data, apart from redb's own repair after an
//! unclean shutdown (`docs/storage-format.md`). The database records the node id, Q and the node's
//! incarnation when it is created, and refuses to open for another node or Q. It also records
//! whether the last run stopped cleanly ([`RedbStorage::close_clean`]); a run that follows any
//! other end (crash, kill, failed write) is a recovery under the same incarnation
//! ([`RunStart`]): coordinators send out only dots durable here, so the disk knows every dot the
//! node made that anyone holds. A batch may renew the incarnation
//! ([`WriteBatch::renew_incarnation`]), which the coordinator does when it replaces a corrupted
//! record.
//! A key whose tombstone was reaped keeps a *reaping record* instead of its object
//! ([`Write::Reap`], a compare-and-set; [`Reaped`]): out of the tree and the listings, read as
//! an object with no siblings, and merged into by every later store of the key, so that no
//! older copy of the key is stored again.
//! `docs/storage-format.md` draws the on-disk format; [`decode_object_record`],
//! [`decode_hint_record`] and [`decode_identity_record`] decode stored bytes exactly as reads do,
//! for fuzzing and inspection tools.
//!
//! Not here: deciding what to write (merges on put, read repair, hint delivery and limits,
//! when to reap and when to forget a reaping record) is the coordinator's; the key → partition mapping is the ring's (storage takes the
//! partition from the caller and derives the segment from the bits of the same `xxh3_64(key)`
//! hash below the partition bits). No async, no network; the commit thread is a plain thread.
//!
//! Main types: [`Storage`], [`RedbStorage`], [`MemoryStorage`], [`RunStart`], [`WriteBatch`], [`Write`],
//! [`ReadOutcome`], [`Reaped`], [`Hint`], [`HintEntry`], [`TictacTree`], [`SegmentId`], [`ObjectDigest`],
//! [`StorageStats`], [`TreesStatus`], and the errors, one per operation: [`OpenError`], [`ReadError`],
//! [`CommitError`], [`CloseError`] (engine failures inside them are an [`EngineError`]).

mod commit;
#[cfg(test)]
mod crash;
mod data_dir;
mod digest;
mod error;
mod memory;
mod record;
mod redb_storage;
mod run;
mod storage;
mod tree;
mod trees;

pub use digest::ObjectDigest;
pub use error::{CloseError, CommitError, EngineError, OpenError, ReadError};
pub use memory::MemoryStorage;
pub use record::{decode_hint_record, decode_identity_record, decode_object_record};
pub use redb_storage::{DATABASE_FILE, RedbStorage};
pub use run::RunStart;
pub use storage::{
    CommitCallback, Hint, HintEntry, ReadOutcome, Reaped, Storage, StorageStats, TreesStatus,
    Write, WriteBatch,
};
pub use tree::{SegmentId, TictacTree};

#[cfg(test)]
mod tests;
