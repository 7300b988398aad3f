use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use shoal_types::{Incarnation, Key, NodeId, PartitionCount, PartitionId};

use crate::commit::{self, Job};
use crate::data_dir;
use crate::digest::decode_object;
use crate::error::{During, EngineError, opening};
use crate::memory::check_partitions;
use crate::record::{
    self, HINTS, IDENTITY, Identity, LEGACY_AAE, META, OBJECTS, REAPED, check_object_record,
    hint_from_record, hint_key, hint_target_prefix, key_of_object_key, object_key, parse_hint_key,
    partition_range, prefix_end, reaped_from_record, segment_in_key, segment_range,
};
use crate::run::{self, RunStart, RunState};
use crate::storage::CommitCallback;
use crate::trees::{Build, BuildHold, Trees};
use crate::{
    CloseError, CommitError, HintEntry, ObjectDigest, OpenError, ReadError, ReadOutcome, Reaped,
    SegmentId, Storage, StorageStats, TictacTree, TreesStatus, WriteBatch,
};

/// The database file inside a node's data directory.
pub const DATABASE_FILE: &str = "shoal.redb";

/// Page cache of a file-backed database. Reads of recent writes stay in memory.
const FILE_CACHE_BYTES: usize = 256 << 20;
/// Page cache of an in-memory database: its pages are in memory anyway.
const MEMORY_CACHE_BYTES: usize = 16 << 20;

/// Storage in a redb database, with one group-commit thread.
///
/// Reads use their own read transactions and never wait for a commit. Writes go through a queue
/// to the commit thread, which applies everything queued in one write transaction and one fsync
/// (see the crate docs). Cheap to clone; the last clone to go finishes the queued batches,
/// stops the commit thread and closes the database.
#[derive(Clone, Debug)]
pub struct RedbStorage {
    inner: Arc<Inner>,
}

/// What the handles share; dropping it shuts the commit thread down.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    queue: Option<Sender<Job>>,
    committer: Option<JoinHandle<()>>,
    committer_id: ThreadId,
    /// The thread building the trees after the open, until it ends (`None` if there was
    /// nothing to build).
    builder: Option<JoinHandle<()>>,
}

/// What the handles and the commit thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) db: Database,
    pub(crate) q: PartitionCount,
    pub(crate) node: NodeId,
    /// The incarnation of the current run, and how the run began. A batch that renews the
    /// incarnation replaces it once committed.
    pub(crate) run: Mutex<(Incarnation, RunStart)>,
    pub(crate) counters: Counters,
    /// Segments with a rebuild queued, so that repeated reads of one corrupted record queue one.
    pub(crate) pending_rebuilds: Mutex<HashSet<(PartitionId, SegmentId)>>,
    /// The tictac trees, in memory; built beside serving after the open, and moved by the
    /// commit thread after each commit (see `trees`).
    pub(crate) trees: Trees,
    /// Set when the storage closes: a build still under way stops at its next slice.
    stop_build: AtomicBool,
}

/// The live counters behind [`StorageStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) max_batches: AtomicU64,
    pub(crate) max_writes: AtomicU64,
    pub(crate) corrupt_objects: AtomicU64,
    pub(crate) segment_rebuilds: AtomicU64,
    pub(crate) latency_total_ns: AtomicU64,
    pub(crate) latency_max_ns: AtomicU64,
}

impl RedbStorage {
    /// Opens (or creates) the database `dir/shoal.redb` for `node` in a ring of `q` partitions,
    /// and begins a run on it; returns the run's incarnation. The directory is made 0700 and the
    /// file 0600, or tightened to that if its group or others may access them.
    ///
    /// A new data directory records `node`, `q` and `candidate_incarnation`. An existing one
    /// keeps its incarnation, whether its last run ended with [`RedbStorage::close_clean`] or
    /// not (a crash, a kill, a failed commit): see `run` for why that is safe. Either way
    /// "running" is durably recorded before this returns; [`RedbStorage::run_start`] says which
    /// case it was. Opening a directory that belongs to another node or another Q
    /// fails with [`OpenError::WrongNode`] or [`OpenError::WrongPartitionCount`].
    pub fn open(
        dir: &Path,
        node: &NodeId,
        q: PartitionCount,
        candidate_incarnation: Incarnation,
    ) -> Result<(RedbStorage, Incarnation), OpenError> {
        let file = data_dir::prepare(dir)?;
        let db = Database::builder()
            .set_cache_size(FILE_CACHE_BYTES)
            .create(file)
            .map_err(opening)?;
        RedbStorage::start(db, node, q, candidate_incarnation, None)
    }

    /// A new database held in memory (for the simulator). It is always new, so the incarnation
    /// returned is the candidate.
    pub fn open_in_memory(
        node: &NodeId,
        q: PartitionCount,
        candidate_incarnation: Incarnation,
    ) -> Result<(RedbStorage, Incarnation), OpenError> {
        RedbStorage::open_with_backend(
            redb::backends::InMemoryBackend::new(),
            node,
            q,
            candidate_incarnation,
        )
    }

    /// Opens on any redb backend: the door for fault-injecting backends in this crate's tests.
    pub(crate) fn open_with_backend(
        backend: impl redb::StorageBackend,
        node: &NodeId,
        q: PartitionCount,
        candidate_incarnation: Incarnation,
    ) -> Result<(RedbStorage, Incarnation), OpenError> {
        let db = Database::builder()
            .set_cache_size(MEMORY_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(opening)?;
        RedbStorage::start(db, node, q, candidate_incarnation, None)
    }

    /// [`RedbStorage::open`], with the tree build held at `hold` (measurements).
    #[cfg(test)]
    pub(crate) fn open_holding_build(
        dir: &Path,
        node: &NodeId,
        q: PartitionCount,
        candidate_incarnation: Incarnation,
        hold: Arc<BuildHold>,
    ) -> Result<(RedbStorage, Incarnation), OpenError> {
        let file = data_dir::prepare(dir)?;
        let db = Database::builder()
            .set_cache_size(FILE_CACHE_BYTES)
            .create(file)
            .map_err(opening)?;
        RedbStorage::start(db, node, q, candidate_incarnation, Some(hold))
    }

    /// [`RedbStorage::open_with_backend`], with the tree build held at `hold` (tests).
    #[cfg(test)]
    pub(crate) fn open_with_backend_holding_build(
        backend: impl redb::StorageBackend,
        node: &NodeId,
        q: PartitionCount,
        candidate_incarnation: Incarnation,
        hold: Arc<BuildHold>,
    ) -> Result<(RedbStorage, Incarnation), OpenError> {
        let db = Database::builder()
            .set_cache_size(MEMORY_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(opening)?;
        RedbStorage::start(db, node, q, candidate_incarnation, Some(hold))
    }

    /// The node this database belongs to.
    pub fn node(&self) -> &NodeId {
        &self.inner.shared.node
    }

    /// The incarnation of the current run.
    pub fn incarnation(&self) -> Incarnation {
        self.run().0
    }

    /// How the current run began: on a new directory, after a clean stop, or recovering after
    /// one that was not clean.
    pub fn run_start(&self) -> RunStart {
        self.run().1
    }

    /// Begins a new run on this open database, as an open would after a crash (the current run
    /// was not closed cleanly). For a simulator
    /// whose "disk" outlives a simulated process: its crash-restart goes through this, the same
    /// rule as a real restart. A real node opens the directory again instead.
    pub fn begin_run(&self, candidate: Incarnation) -> Result<(Incarnation, RunStart), OpenError> {
        let shared = self.shared();
        let begun = begin_run(&shared.db, &shared.node, shared.q, candidate)?;
        *shared.run.lock().unwrap_or_else(PoisonError::into_inner) = begun;
        Ok(begun)
    }

    /// Ends the run cleanly: finishes every queued commit, stops the commit thread, and, if no
    /// commit of this run failed, durably records that the run stopped cleanly (with the
    /// incarnation it ended under). Call it only after the node stopped taking requests. Fails
    /// with [`CloseError::StillInUse`] if other handles exist, and with
    /// [`CloseError::RunFailed`] if a commit failed; the run then stays "running" and the next
    /// open reports a recovery. Either way this handle is gone, and, unless others remain, the
    /// database is closed.
    pub fn close_clean(self) -> Result<(), CloseError> {
        if thread::current().id() == self.inner.committer_id {
            return Err(CloseError::FromCommitThread);
        }
        let mut inner = Arc::try_unwrap(self.inner).map_err(|_| CloseError::StillInUse)?;
        inner.stop_build();
        drop(inner.queue.take());
        let joined = inner.committer.take().is_none_or(|c| c.join().is_ok());
        let shared = &inner.shared;
        let failed_commits = shared.counters.failed_commits.load(Ordering::Relaxed);
        if !joined || failed_commits > 0 {
            tracing::warn!(
                failed_commits,
                "storage closed; the run is not recorded clean"
            );
            return Err(CloseError::RunFailed { failed_commits });
        }
        let (incarnation, _) = *shared.run.lock().unwrap_or_else(PoisonError::into_inner);
        write_identity(
            &shared.db,
            &Identity {
                node: shared.node.clone(),
                partition_count: shared.q,
                incarnation,
                run: RunState::Clean,
            },
        )?;
        tracing::info!(node = %shared.node, %incarnation, "storage closed cleanly");
        Ok(())
    }

    /// The ring size the database was created for.
    pub fn partition_count(&self) -> PartitionCount {
        self.inner.shared.q
    }

    /// Waits until the trees are built (or their build failed), at most `timeout`, and says
    /// where they stand then. Nothing needs to wait for them but what reads them (tests,
    /// tools); anti-entropy asks [`Storage::trees_status`] instead.
    pub fn wait_for_trees(&self, timeout: Duration) -> TreesStatus {
        self.shared().trees.wait(timeout)
    }

    /// Checks (or writes) the identity record and begins a run, then starts the commit thread.
    fn start(
        db: Database,
        node: &NodeId,
        q: PartitionCount,
        candidate: Incarnation,
        hold: Option<Arc<BuildHold>>,
    ) -> Result<(RedbStorage, Incarnation), OpenError> {
        let begun = begin_run(&db, node, q, candidate)?;
        let incarnation = begun.0;
        // The snapshot the trees are built from: taken before the commit thread starts, so
        // every commit of the run comes after it and is kept for the end of the build.
        let snapshot = db
            .begin_read()
            .during("taking the snapshot to build the trees")?;
        let records = snapshot
            .open_table(OBJECTS)
            .and_then(|t| t.len().map_err(redb::TableError::from))
            .during("taking the snapshot to build the trees")?;
        let trees = if records == 0 {
            Trees::ready_empty()
        } else {
            Trees::building(records)
        };
        let shared = Arc::new(Shared {
            db,
            q,
            node: node.clone(),
            run: Mutex::new(begun),
            counters: Counters::default(),
            pending_rebuilds: Mutex::new(HashSet::new()),
            trees,
            stop_build: AtomicBool::new(false),
        });
        let (queue, jobs) = mpsc::channel();
        let builder = if records == 0 {
            drop(snapshot);
            None
        } else {
            let build = Build {
                snapshot,
                q,
                commit_queue: queue.clone(),
                hold,
            };
            let for_thread = Arc::clone(&shared);
            tracing::info!(%node, records, "building the tictac trees beside serving");
            let builder = thread::Builder::new()
                .name(format!("shoal-trees-{node}"))
                .spawn(move || for_thread.trees.run_build(build, &for_thread.stop_build))
                .map_err(OpenError::CommitThread)?;
            Some(builder)
        };
        let for_thread = Arc::clone(&shared);
        let committer = match thread::Builder::new()
            .name(format!("shoal-commit-{node}"))
            .spawn(move || commit::run(&for_thread, &jobs))
        {
            Ok(committer) => committer,
            Err(e) => {
                shared.stop_build.store(true, Ordering::Relaxed);
                if let Some(builder) = builder {
                    let _ = builder.join();
                }
                return Err(OpenError::CommitThread(e));
            }
        };
        let committer_id = committer.thread().id();
        let storage = RedbStorage {
            inner: Arc::new(Inner {
                shared,
                queue: Some(queue),
                committer: Some(committer),
                committer_id,
                builder,
            }),
        };
        Ok((storage, incarnation))
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn run(&self) -> (Incarnation, RunStart) {
        *self
            .shared()
            .run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The database itself, for tests that damage records on purpose.
    #[cfg(test)]
    pub(crate) fn database(&self) -> &Database {
        &self.inner.shared.db
    }

    /// Rebuilds the trees from the records, as an open does (for tests that write records
    /// behind the storage's back).
    #[cfg(test)]
    pub(crate) fn rebuild_trees(&self) {
        let shared = self.shared();
        if let Ok(built) = Trees::build_now(&shared.db, shared.q) {
            shared.trees.replace(built);
        }
    }

    fn enqueue(&self, job: Job) -> Result<(), Job> {
        match &self.inner.queue {
            Some(queue) => queue.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Records a corrupted object or hint record, and, when `rebuild` names the segment whose
    /// tree entry may still count it, queues a rebuild of that entry so that the tree stops
    /// claiming data this replica no longer has (anti-entropy then repairs it from a peer).
    fn note_corrupt(
        &self,
        what: &str,
        table_key: &[u8],
        rebuild: Option<(PartitionId, SegmentId)>,
    ) {
        self.shared()
            .counters
            .corrupt_objects
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(record = what, key = ?table_key, "corrupted record (checksum or decoding failed)");
        if let Some(slot) = rebuild {
            self.request_rebuild(slot);
        }
    }

    fn request_rebuild(&self, slot: (PartitionId, SegmentId)) {
        let queued = self
            .shared()
            .pending_rebuilds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(slot);
        if queued {
            // If the commit thread is gone there is nothing to repair with; the next open's
            // first write to the segment rebuilds it.
            let _ = self.enqueue(Job::Rebuild {
                partition: slot.0,
                segment: slot.1,
            });
        }
    }

    /// The reaping record under the objects-table key `tk`, read in `txn`.
    fn reaped_in(
        &self,
        txn: &redb::ReadTransaction,
        tk: &[u8],
    ) -> Result<Option<Reaped>, ReadError> {
        let table = txn.open_table(REAPED).during("opening the reaped table")?;
        let Some(v) = table.get(tk).during("reading a reaping record")? else {
            return Ok(None);
        };
        let found = reaped_from_record(tk, v.value());
        if found.is_none() {
            self.note_corrupt("reaping record", tk, None);
        }
        Ok(found)
    }

    /// Reads one object record found under `table_key` in segment `segment` of `partition`.
    fn object_outcome(
        &self,
        partition: PartitionId,
        table_key: &[u8],
        bytes: &[u8],
    ) -> ReadOutcome {
        let segment = segment_in_key(table_key);
        match check_object_record(table_key, bytes) {
            Some(rec) => match decode_object(rec.encoded) {
                Some(object) => ReadOutcome::Found(object),
                None => {
                    // The checksum matched, so the tree counts this record as written; only
                    // the decoder refuses it. Nothing to rebuild.
                    self.note_corrupt("object", table_key, None);
                    ReadOutcome::Corrupted
                }
            },
            None => {
                self.note_corrupt("object", table_key, segment.map(|s| (partition, s)));
                ReadOutcome::Corrupted
            }
        }
    }
}

impl Storage for RedbStorage {
    fn object(&self, partition: PartitionId, key: &Key) -> Result<ReadOutcome, ReadError> {
        let txn = self.shared().db.begin_read().during("beginning a read")?;
        let table = txn
            .open_table(OBJECTS)
            .during("opening the objects table")?;
        let tk = object_key(partition, SegmentId::of(key, self.shared().q), key);
        let found = table.get(tk.as_slice()).during("reading an object")?;
        if let Some(guard) = found {
            return Ok(self.object_outcome(partition, &tk, guard.value()));
        }
        // A reaped key reads as what its tombstone stood for: no value, the tombstone's vector.
        Ok(match self.reaped_in(&txn, &tk)? {
            Some(r) => ReadOutcome::Found(shoal_causality::Object::reaped(r.vv)),
            None => ReadOutcome::NotFound,
        })
    }

    fn reaped(&self, partition: PartitionId, key: &Key) -> Result<Option<Reaped>, ReadError> {
        let txn = self.shared().db.begin_read().during("beginning a read")?;
        let tk = object_key(partition, SegmentId::of(key, self.shared().q), key);
        self.reaped_in(&txn, &tk)
    }

    fn reaped_records(
        &self,
        after: Option<(PartitionId, &Key)>,
        limit: usize,
    ) -> Result<Vec<(PartitionId, Key, Reaped)>, ReadError> {
        let txn = self.shared().db.begin_read().during("beginning a read")?;
        let table = txn.open_table(REAPED).during("opening the reaped table")?;
        let from = after.map(|(p, k)| object_key(p, SegmentId::of(k, self.shared().q), k));
        let lower = match &from {
            Some(tk) => Bound::Excluded(tk.as_slice()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in table
            .range::<&[u8]>((lower, Bound::Unbounded))
            .during("listing reaping records")?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.during("listing reaping records")?;
            let tk = k.value();
            let partition = tk
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(|b| PartitionId::from_index_unchecked(u32::from_be_bytes(b)));
            match (
                partition,
                key_of_object_key(tk),
                reaped_from_record(tk, v.value()),
            ) {
                (Some(p), Some(key), Some(r)) => out.push((p, key, r)),
                _ => self.note_corrupt("reaping record", tk, None),
            }
        }
        Ok(out)
    }

    fn reaped_count(&self) -> Result<u64, ReadError> {
        let txn = self.shared().db.begin_read().during("beginning a read")?;
        let table = txn.open_table(REAPED).during("opening the reaped table")?;
        Ok(table.len().during("counting reaping records")?)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), CommitError> {
        if thread::current().id() == self.inner.committer_id {
            return Err(CommitError::WriteFromCommitThread);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(
            batch,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or(Err(CommitError::Closed))
    }

    fn submit(&self, batch: WriteBatch, done: CommitCallback) {
        if let Err(e) = check_partitions(&batch, self.shared().q) {
            done(Err(e));
            return;
        }
        // Counted before sending, so the commit thread's decrement never comes first.
        let queued = &self.shared().counters.queued;
        queued.fetch_add(1, Ordering::Relaxed);
        if let Err(Job::Batch { done, .. }) = self.enqueue(Job::Batch { batch, done }) {
            queued.fetch_sub(1, Ordering::Relaxed);
            done(Err(CommitError::Closed));
        }
    }

    fn partition_objects(
        &self,
        partition: PartitionId,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, ReadOutcome)>, ReadError> {
        let txn = self.shared().db.begin_read().during("beginning a read")?;
        let table = txn
            .open_table(OBJECTS)
            .during("opening the objects table")?;
        let (start, end) = partition_range(partition);
        let from = after.map(|k| object_key(partition, SegmentId::of(k, self.shared().q), k));
        let lower = match &from {
            Some(tk) => Bound::Excluded(tk.as_slice()),
            None => Bound::Included(&start[..]),
        };
        let range = table
            .range::<&[u8]>((lower, Bound::Excluded(&end[..])))
            .during("listing a partition")?;
        let mut out = Vec::new();
        for entry in range {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.during("listing a partition")?;
            let tk = k.value();
            match key_of_object_key(tk) {
                Some(key) => out.push((key, self.object_outcome(partition, tk, v.value()))),
                None => {
                    self.note_corrupt("object key", tk, segment_in_key(tk).map(|s| (partition, s)))
                }
            }
        }
        Ok(out)
    }

    fn tree(&self, partition: PartitionId) -> Result<TictacTree, ReadError> {
        self.shared().trees.tree(partition)
    }

    fn segment_keys(
        &self,
        partition: PartitionId,
        segment: SegmentId,
    ) -> Result<Vec<(Key, ObjectDigest)>, ReadError> {
        self.shared().trees.check_ready()?;
        let txn = self.shared().db.begin_read().during("beginning a read")?;
        let table = txn
            .open_table(OBJECTS)
            .during("opening the objects table")?;
        let (start, end) = segment_range(partition, segment);
        let mut out = Vec::new();
        for entry in table
            .range::<&[u8]>(&start[..]..&end[..])
            .during("listing a segment")?
        {
            let (k, v) = entry.during("listing a segment")?;
            let tk = k.value();
            match (key_of_object_key(tk), check_object_record(tk, v.value())) {
                (Some(key), Some(rec)) => out.push((key, rec.digest)),
                _ => self.note_corrupt("object", tk, Some((partition, segment))),
            }
        }
        Ok(out)
    }

    fn hints(
        &self,
        target: &NodeId,
        after: Option<(PartitionId, &Key)>,
        limit: usize,
    ) -> Result<Vec<HintEntry>, ReadError> {
        let txn = self.shared().db.begin_read().during("beginning a read")?;
        let table = txn.open_table(HINTS).during("opening the hints table")?;
        let prefix = hint_target_prefix(target);
        let from = after.map(|(p, k)| hint_key(target, p, k));
        let end = prefix_end(&prefix);
        let lower = match &from {
            Some(tk) => Bound::Excluded(tk.as_slice()),
            None => Bound::Included(prefix.as_slice()),
        };
        let upper = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in table
            .range::<&[u8]>((lower, upper))
            .during("listing hints")?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.during("listing hints")?;
            let tk = k.value();
            let Some((partition, key)) = parse_hint_key(tk, prefix.len()) else {
                self.note_corrupt("hint key", tk, None);
                continue;
            };
            out.push(
                match hint_from_record(target, partition, &key, tk, v.value()) {
                    Some(hint) => HintEntry::Found(hint),
                    None => {
                        self.note_corrupt("hint", tk, None);
                        HintEntry::Corrupted { partition, key }
                    }
                },
            );
        }
        Ok(out)
    }

    fn hint(
        &self,
        target: &NodeId,
        partition: PartitionId,
        key: &Key,
    ) -> Result<Option<HintEntry>, ReadError> {
        let txn = self.shared().db.begin_read().during("beginning a read")?;
        let table = txn.open_table(HINTS).during("opening the hints table")?;
        let tk = hint_key(target, partition, key);
        let Some(v) = table.get(tk.as_slice()).during("reading a hint")? else {
            return Ok(None);
        };
        Ok(Some(
            match hint_from_record(target, partition, key, &tk, v.value()) {
                Some(hint) => HintEntry::Found(hint),
                None => {
                    self.note_corrupt("hint", &tk, None);
                    HintEntry::Corrupted {
                        partition,
                        key: key.clone(),
                    }
                }
            },
        ))
    }

    fn stats(&self) -> StorageStats {
        self.shared().counters.snapshot()
    }

    fn trees_status(&self) -> TreesStatus {
        self.shared().trees.status()
    }
}

impl Inner {
    /// Stops a build still under way and waits for its thread, which holds a way into the
    /// commit queue (the commit thread stops only once every such way is gone).
    fn stop_build(&mut self) {
        self.shared.stop_build.store(true, Ordering::Relaxed);
        if let Some(builder) = self.builder.take()
            && builder.join().is_err()
        {
            tracing::error!("the storage tree-build thread panicked");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_build();
        // Closing the queue lets the commit thread finish what is queued and stop.
        drop(self.queue.take());
        if let Some(committer) = self.committer.take() {
            // The last handle can be dropped by a commit callback, on the commit thread itself,
            // which then stops on its own once the queue is empty.
            if thread::current().id() != self.committer_id && committer.join().is_err() {
                tracing::error!("the storage commit thread panicked");
            }
        }
    }
}

impl Counters {
    fn snapshot(&self) -> StorageStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StorageStats {
            commits: get(&self.commits),
            failed_commits: get(&self.failed_commits),
            queued_batches: get(&self.queued),
            batches: get(&self.batches),
            writes: get(&self.writes),
            max_batches_per_commit: get(&self.max_batches),
            max_writes_per_commit: get(&self.max_writes),
            corrupt_objects: get(&self.corrupt_objects),
            segment_rebuilds: get(&self.segment_rebuilds),
            commit_latency_total: Duration::from_nanos(get(&self.latency_total_ns)),
            commit_latency_max: Duration::from_nanos(get(&self.latency_max_ns)),
        }
    }
}

/// Begins a run: reads the identity record (or makes one if the database is new), picks the
/// run's incarnation by the rule in [`run`], and durably records it with the state "running"
/// before any write of the run can happen.
fn begin_run(
    db: &Database,
    node: &NodeId,
    q: PartitionCount,
    candidate: Incarnation,
) -> Result<(Incarnation, RunStart), OpenError> {
    let mut txn = db.begin_write().during("beginning the first commit")?;
    txn.set_durability(Durability::Immediate)
        .during("beginning the first commit")?;
    let begun = {
        let objects = txn.open_table(OBJECTS).during("creating the tables")?;
        let hints = txn.open_table(HINTS).during("creating the tables")?;
        txn.open_table(REAPED).during("creating the tables")?;
        // Trees are no longer stored: drop the table older versions kept them in.
        txn.delete_table(LEGACY_AAE)
            .during("removing the old tree table")?;
        let mut meta = txn.open_table(META).during("creating the tables")?;
        let stored = meta
            .get(IDENTITY)
            .during("reading the identity")?
            .map(|g| record::identity_from_record(g.value()));
        let recorded = match stored {
            None => {
                let holds_data = !objects.is_empty().during("reading the identity")?
                    || !hints.is_empty().during("reading the identity")?;
                if holds_data {
                    return Err(OpenError::IdentityCorrupted(
                        "the database holds data but no identity record",
                    ));
                }
                None
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(found)) => {
                if found.node != *node {
                    return Err(OpenError::WrongNode {
                        expected: node.clone(),
                        found: found.node,
                    });
                }
                if found.partition_count != q {
                    return Err(OpenError::WrongPartitionCount {
                        expected: q,
                        found: found.partition_count,
                    });
                }
                Some((found.incarnation, found.run))
            }
        };
        let (incarnation, start) = run::begin(recorded, candidate);
        let identity = Identity {
            node: node.clone(),
            partition_count: q,
            incarnation,
            run: RunState::Running,
        };
        meta.insert(IDENTITY, record::encode_identity(&identity).as_slice())
            .during("writing the identity")?;
        (incarnation, start)
    };
    txn.commit().during("writing the identity")?;
    let (incarnation, start) = begun;
    match start {
        RunStart::Recovered => {
            tracing::warn!(%node, %incarnation, %start, "the last run did not stop cleanly; recovering from the disk")
        }
        RunStart::Created | RunStart::Kept => {
            tracing::info!(%node, %incarnation, %start, "run begun")
        }
    }
    Ok(begun)
}

/// Durably replaces the identity record.
fn write_identity(db: &Database, identity: &Identity) -> Result<(), EngineError> {
    let mut txn = db.begin_write().during("beginning the last commit")?;
    txn.set_durability(Durability::Immediate)
        .during("beginning the last commit")?;
    {
        let mut meta = txn.open_table(META).during("opening the meta table")?;
        meta.insert(IDENTITY, record::encode_identity(identity).as_slice())
            .during("writing the identity")?;
    }
    txn.commit().during("writing the identity")
}
