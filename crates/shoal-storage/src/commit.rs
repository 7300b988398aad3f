//! The group-commit thread.
//!
//! It blocks for the first queued job, drains whatever else is queued (up to a bound), applies it
//! all in one write transaction committed with `Durability::Immediate` (one fsync), and only then
//! calls every batch's callback, with the commit's result. Jobs queued while a commit runs form
//! the next group, so under load one fsync serves many writers. Batches are applied in the order
//! they were queued.
//!
//! The tictac trees live in memory (`crate::trees`): while applying a group the thread notes how
//! each write moves its segment's hash, and folds those changes into the trees only after the
//! commit succeeded, so the trees always describe committed data (while the trees are still
//! being built after an open, the changes are kept and folded in when the build ends, which
//! this thread also does, between two groups). Keeping the trees out of the transaction saves
//! each write the copy-on-write of a tree-table leaf and branch (about 40 % of the pages a
//! group commit wrote).

use std::panic::{self, AssertUnwindSafe};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use redb::{Durability, ReadableTable, Table};
use shoal_causality::Object;
use shoal_types::{Key, PartitionId};

use crate::digest::{decode_object, encode_object};
use crate::error::{During, EngineError};
use crate::record::{
    HINTS, IDENTITY, Identity, META, OBJECTS, REAPED, check_hint_record, check_object_record,
    encode_hint_record, encode_identity, encode_object_record, encode_reaped_record, hint_key,
    object_key, reaped_from_record,
};
use crate::redb_storage::Shared;
use crate::run::RunState;
use crate::storage::{CommitCallback, merge_hint, merge_into_reaped, reapable};
use crate::tree::entry_hash;
use crate::trees::{Built, TreeChanges};
use crate::{CommitError, ObjectDigest, Reaped, SegmentId, Write, WriteBatch};

/// A group holds at most this many writes, unless a single batch is larger.
pub(crate) const MAX_GROUP_WRITES: usize = 4096;
/// A group holds at most about this many bytes of keys and values, unless a single batch is
/// larger.
pub(crate) const MAX_GROUP_BYTES: usize = 32 << 20;

/// What the commit thread is asked to do.
pub(crate) enum Job {
    /// Apply a batch; call `done` once it is durable or failed.
    Batch {
        batch: WriteBatch,
        done: CommitCallback,
    },
    /// Recompute one segment's tree hash from its records (after corruption was seen).
    Rebuild {
        partition: PartitionId,
        segment: SegmentId,
    },
    /// The build thread's trees of the snapshot taken at open: fold in what committed since,
    /// and make them ready. Done between two groups, so no commit is half counted.
    TreesBuilt(Result<Built, EngineError>),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Batch { batch, .. } => write!(f, "Batch({} writes)", batch.len()),
            Job::Rebuild { partition, segment } => write!(f, "Rebuild({partition}, {segment:?})"),
            Job::TreesBuilt(_) => write!(f, "TreesBuilt"),
        }
    }
}

/// The work of one group, and whom to tell.
#[derive(Default)]
struct Group {
    work: Vec<Work>,
    dones: Vec<CommitCallback>,
    writes: usize,
    bytes: usize,
}

enum Work {
    Batch(WriteBatch),
    Rebuild(PartitionId, SegmentId),
}

/// The commit thread's body: runs until every handle is gone and the queue is empty.
pub(crate) fn run(shared: &Shared, jobs: &Receiver<Job>) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let first = match first {
            Job::TreesBuilt(built) => {
                install_trees(shared, built);
                continue;
            }
            job => job,
        };
        let mut group = Group::default();
        group.push(first, shared);
        while group.writes < MAX_GROUP_WRITES && group.bytes < MAX_GROUP_BYTES {
            match jobs.try_recv() {
                // Nothing of the group is committed yet, so its changes come after.
                Ok(Job::TreesBuilt(built)) => install_trees(shared, built),
                Ok(job) if group.fits(&job) => group.push(job, shared),
                Ok(job) => {
                    carried = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        let batches = group.dones.len() as u64;
        let writes = group.writes as u64;
        let work = group.work;
        // A panic inside the engine must still answer every caller; it is reported as a failed
        // commit (redb then refuses further commits until reopened).
        let result = panic::catch_unwind(AssertUnwindSafe(|| commit_group(shared, &work)))
            .unwrap_or(Err(CommitError::Panicked));
        let c = &shared.counters;
        match &result {
            Ok(()) => {
                c.batches.fetch_add(batches, Ordering::Relaxed);
                c.writes.fetch_add(writes, Ordering::Relaxed);
                c.max_batches.fetch_max(batches, Ordering::Relaxed);
                c.max_writes.fetch_max(writes, Ordering::Relaxed);
            }
            Err(e) => {
                c.failed_commits.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, batches, "group commit failed; no batch of it is acknowledged");
            }
        }
        for done in group.dones {
            let r = result.clone();
            if panic::catch_unwind(AssertUnwindSafe(move || done(r))).is_err() {
                tracing::error!("a storage commit callback panicked");
            }
        }
    }
}

impl Group {
    fn fits(&self, job: &Job) -> bool {
        match job {
            Job::Batch { batch, .. } => {
                self.writes + batch.len() <= MAX_GROUP_WRITES
                    && self.bytes + batch.approximate_bytes() <= MAX_GROUP_BYTES
            }
            Job::Rebuild { .. } | Job::TreesBuilt(_) => true,
        }
    }

    fn push(&mut self, job: Job, shared: &Shared) {
        match job {
            Job::Batch { batch, done } => {
                shared.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.writes += batch.len();
                self.bytes += batch.approximate_bytes();
                self.work.push(Work::Batch(batch));
                self.dones.push(done);
            }
            Job::Rebuild { partition, segment } => {
                self.work.push(Work::Rebuild(partition, segment));
            }
            // Taken out by `run` before a job reaches a group.
            Job::TreesBuilt(built) => install_trees(shared, built),
        }
    }
}

/// Makes the build thread's trees ready, with every commit since the snapshot folded in.
fn install_trees(shared: &Shared, built: Result<Built, EngineError>) {
    match shared
        .trees
        .install(&shared.db, built, &shared.counters.corrupt_objects)
    {
        Ok(scanned) => {
            tracing::info!(
                node = %shared.node,
                records = scanned.records,
                corrupted = scanned.corrupted,
                elapsed_ms = scanned.elapsed.as_millis(),
                "tictac trees built; anti-entropy can compare them"
            );
        }
        Err(e) => {
            tracing::error!(node = %shared.node, error = %e, "building the tictac trees failed; anti-entropy stays off until the storage is opened again");
        }
    }
}

/// Applies a group in one write transaction, commits it durably, then moves the trees.
fn commit_group(shared: &Shared, work: &[Work]) -> Result<(), CommitError> {
    let started = Instant::now();
    let mut changes = TreeChanges::default();
    for item in work {
        if let Work::Rebuild(partition, segment) = item {
            shared
                .pending_rebuilds
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&(*partition, *segment));
            changes.recompute(*partition, *segment);
        }
    }
    if !work.iter().any(|w| matches!(w, Work::Batch(_))) {
        // Only rebuilds: nothing to write.
        return move_trees(shared, changes);
    }
    let mut txn = shared.db.begin_write().during("beginning a commit")?;
    txn.set_durability(Durability::Immediate)
        .during("beginning a commit")?;
    // The last renewal of the group wins: each names a fresh incarnation, later ones later.
    let renewal = work.iter().rev().find_map(|w| match w {
        Work::Batch(batch) => batch.renewal(),
        Work::Rebuild(..) => None,
    });
    if let Some(incarnation) = renewal {
        let identity = Identity {
            node: shared.node.clone(),
            partition_count: shared.q,
            incarnation,
            run: RunState::Running,
        };
        let mut meta = txn.open_table(META).during("opening the meta table")?;
        meta.insert(IDENTITY, encode_identity(&identity).as_slice())
            .during("renewing the incarnation")?;
    }
    {
        let mut apply = Apply {
            shared,
            objects: txn
                .open_table(OBJECTS)
                .during("opening the objects table")?,
            hints: txn.open_table(HINTS).during("opening the hints table")?,
            reaped: txn.open_table(REAPED).during("opening the reaped table")?,
            changes: &mut changes,
        };
        for item in work {
            if let Work::Batch(batch) = item {
                for write in batch.writes() {
                    apply.write(write).during("applying a write")?;
                }
            }
        }
    }
    if let Err(e) = txn.commit().during("committing") {
        // The commit may have reached the disk anyway: make the touched segments describe
        // whatever the database now holds (best effort; the next open rebuilds every tree).
        let _ = shared.trees.apply(&shared.db, changes.recompute_all());
        return Err(e.into());
    }
    if let Some(incarnation) = renewal {
        shared.run.lock().unwrap_or_else(PoisonError::into_inner).0 = incarnation;
        tracing::warn!(node = %shared.node, %incarnation, "the run continues under a new incarnation");
    }
    move_trees(shared, changes)?;
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let c = &shared.counters;
    c.commits.fetch_add(1, Ordering::Relaxed);
    c.latency_total_ns.fetch_add(nanos, Ordering::Relaxed);
    c.latency_max_ns.fetch_max(nanos, Ordering::Relaxed);
    Ok(())
}

/// Applies a committed group's tree changes, counting the segments recomputed.
fn move_trees(shared: &Shared, changes: TreeChanges) -> Result<(), CommitError> {
    shared
        .counters
        .segment_rebuilds
        .fetch_add(changes.recomputes(), Ordering::Relaxed);
    Ok(shared.trees.apply(&shared.db, changes)?)
}

/// The open tables of one group's write transaction, and how the group moves the trees.
struct Apply<'s, 't, 'c> {
    shared: &'s Shared,
    objects: Table<'t, &'static [u8], &'static [u8]>,
    hints: Table<'t, &'static [u8], &'static [u8]>,
    reaped: Table<'t, &'static [u8], &'static [u8]>,
    changes: &'c mut TreeChanges,
}

/// What was stored under a key before a write, as far as the tree is concerned.
#[derive(Clone, Copy)]
enum Before {
    Absent,
    /// A record that passes its checksum: its entry is in the tree.
    Valid(ObjectDigest),
    /// A record that fails its checksum: whether it is in the tree is unknown.
    Corrupted,
}

impl Apply<'_, '_, '_> {
    fn write(&mut self, write: &Write) -> Result<(), redb::StorageError> {
        match write {
            Write::Object {
                partition,
                key,
                object,
            } => self.store_object(*partition, key, object, false),
            Write::MergeObject {
                partition,
                key,
                object,
            } => self.store_object(*partition, key, object, true),
            Write::RemoveObject { partition, key } => self.remove_object(*partition, key),
            Write::Reap {
                partition,
                key,
                vv,
                reaped_at_unix_ms,
            } => self.reap(*partition, key, vv, *reaped_at_unix_ms),
            Write::ForgetReaped {
                partition,
                key,
                reaped_before_unix_ms,
            } => {
                let tk = object_key(*partition, SegmentId::of(key, self.shared.q), key);
                let old = self.reaped_record(&tk)?;
                if old.is_some_and(|r| r.reaped_at_unix_ms < *reaped_before_unix_ms) {
                    self.reaped.remove(tk.as_slice())?;
                }
                Ok(())
            }
            Write::Hint {
                target,
                partition,
                key,
                object,
                stored_at_unix_ms,
            } => {
                let tk = hint_key(target, *partition, key);
                // A held record that fails its checksum or does not decode is replaced.
                let held = match self.hints.get(tk.as_slice())? {
                    None => None,
                    Some(g) => check_hint_record(&tk, g.value())
                        .and_then(|r| Some((decode_object(r.encoded)?, r.stored_at_unix_ms))),
                };
                let held = held.as_ref().map(|(object, at)| (object, *at));
                let (object, at) = merge_hint(held, object, *stored_at_unix_ms);
                let record = encode_hint_record(&tk, &encode_object(&object), at);
                self.hints.insert(tk.as_slice(), record.as_slice())?;
                Ok(())
            }
            Write::RemoveHint {
                target,
                partition,
                key,
                if_digest,
            } => {
                let tk = hint_key(target, *partition, key);
                let remove = match self.hints.get(tk.as_slice())? {
                    None => false,
                    Some(g) => match if_digest {
                        None => true,
                        Some(d) => {
                            check_hint_record(&tk, g.value()).is_some_and(|r| r.digest == *d)
                        }
                    },
                };
                if remove {
                    self.hints.remove(tk.as_slice())?;
                }
                Ok(())
            }
        }
    }

    fn store_object(
        &mut self,
        partition: PartitionId,
        key: &Key,
        incoming: &Object,
        merge: bool,
    ) -> Result<(), redb::StorageError> {
        let segment = SegmentId::of(key, self.shared.q);
        let tk = object_key(partition, segment, key);
        let (before, stored) = match self.objects.get(tk.as_slice())? {
            None => (Before::Absent, None),
            Some(g) => match check_object_record(&tk, g.value()) {
                Some(rec) => (
                    Before::Valid(rec.digest),
                    if merge {
                        decode_object(rec.encoded)
                    } else {
                        None
                    },
                ),
                None => (Before::Corrupted, None),
            },
        };
        if matches!(before, Before::Corrupted) {
            self.note_corrupt(&tk);
        }
        let mut object = match stored {
            Some(stored) => stored.merge(incoming),
            None => incoming.clone(),
        };
        // A reaped key: only what is newer than the reap is stored (see `Write::Reap`).
        if let Some(held) = self.reaped_record(&tk)? {
            match merge_into_reaped(&held.vv, &object) {
                Err(vv) => {
                    if vv != held.vv {
                        let record = Reaped {
                            vv,
                            reaped_at_unix_ms: held.reaped_at_unix_ms,
                        };
                        let bytes = encode_reaped_record(&tk, &record);
                        self.reaped.insert(tk.as_slice(), bytes.as_slice())?;
                    }
                    return Ok(());
                }
                Ok(merged) => {
                    self.reaped.remove(tk.as_slice())?;
                    object = merged;
                }
            }
        }
        let encoded = encode_object(&object);
        let (record, digest) = encode_object_record(&tk, &encoded);
        if let Before::Valid(old) = before
            && old == digest
        {
            return Ok(());
        }
        self.objects.insert(tk.as_slice(), record.as_slice())?;
        self.update_tree(partition, segment, key, before, Some(digest));
        Ok(())
    }

    /// [`Write::Reap`]: the compare-and-set, by [`reapable`].
    fn reap(
        &mut self,
        partition: PartitionId,
        key: &Key,
        vv: &shoal_causality::VersionVector,
        reaped_at_unix_ms: u64,
    ) -> Result<(), redb::StorageError> {
        let segment = SegmentId::of(key, self.shared.q);
        let tk = object_key(partition, segment, key);
        let (before, stored) = match self.objects.get(tk.as_slice())? {
            None => (Before::Absent, None),
            Some(g) => match check_object_record(&tk, g.value())
                .and_then(|rec| Some((rec.digest, decode_object(rec.encoded)?)))
            {
                Some((digest, object)) => (Before::Valid(digest), Some(object)),
                // A record that cannot be read is never reaped: it may hold a newer value.
                None => return Ok(()),
            },
        };
        if !reapable(stored.as_ref(), vv) {
            return Ok(());
        }
        if let Before::Valid(_) = before {
            self.objects.remove(tk.as_slice())?;
            self.update_tree(partition, segment, key, before, None);
        }
        let record = match self.reaped_record(&tk)? {
            Some(held) => Reaped {
                vv: held.vv.join(vv),
                reaped_at_unix_ms: held.reaped_at_unix_ms.max(reaped_at_unix_ms),
            },
            None => Reaped {
                vv: vv.clone(),
                reaped_at_unix_ms,
            },
        };
        let bytes = encode_reaped_record(&tk, &record);
        self.reaped.insert(tk.as_slice(), bytes.as_slice())?;
        Ok(())
    }

    /// The reaping record under `tk`, if one is held and sound. A corrupted one is counted and
    /// treated as absent.
    fn reaped_record(&self, tk: &[u8]) -> Result<Option<Reaped>, redb::StorageError> {
        Ok(match self.reaped.get(tk)? {
            None => None,
            Some(g) => {
                let found = reaped_from_record(tk, g.value());
                if found.is_none() {
                    self.note_corrupt(tk);
                }
                found
            }
        })
    }

    fn remove_object(
        &mut self,
        partition: PartitionId,
        key: &Key,
    ) -> Result<(), redb::StorageError> {
        let segment = SegmentId::of(key, self.shared.q);
        let tk = object_key(partition, segment, key);
        let before = match self.objects.remove(tk.as_slice())? {
            None => return Ok(()),
            Some(g) => match check_object_record(&tk, g.value()) {
                Some(rec) => Before::Valid(rec.digest),
                None => Before::Corrupted,
            },
        };
        self.update_tree(partition, segment, key, before, None);
        Ok(())
    }

    /// Notes how the write moves its segment's hash from `before` to `after` (`None`: the key
    /// is gone). When the old record was corrupted, whether the tree counted it is unknown, so
    /// the segment is recomputed from its records after the commit instead.
    fn update_tree(
        &mut self,
        partition: PartitionId,
        segment: SegmentId,
        key: &Key,
        before: Before,
        after: Option<ObjectDigest>,
    ) {
        match before {
            Before::Corrupted => return self.changes.recompute(partition, segment),
            Before::Valid(old) => self
                .changes
                .toggle(partition, segment, &entry_hash(key, old)),
            Before::Absent => {}
        }
        if let Some(new) = after {
            self.changes
                .toggle(partition, segment, &entry_hash(key, new));
        }
    }

    fn note_corrupt(&self, table_key: &[u8]) {
        self.shared
            .counters
            .corrupt_objects
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key = ?table_key, "overwriting a corrupted object record");
    }
}
