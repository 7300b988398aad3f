use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use shoal_causality::Object;
use shoal_types::{Incarnation, Key, NodeId, PartitionCount, PartitionId};

use crate::run::{self, RunStart, RunState};
use crate::storage::{CommitCallback, merge_hint, merge_into_reaped, reapable};
use crate::{
    CommitError, EngineError, Hint, HintEntry, ObjectDigest, ReadError, ReadOutcome, Reaped,
    SegmentId, Storage, StorageStats, TictacTree, TreesStatus, Write, WriteBatch,
};

/// Storage in memory: ordered maps behind a mutex, for tests and the simulator.
///
/// Behaves like [`crate::RedbStorage`] (same orders, same merge rules, same trees) except that
/// nothing is ever corrupted or lost unless a test injects it ([`MemoryStorage::corrupt`],
/// [`MemoryStorage::fail_reads`]), and `submit` applies the batch and calls `done` before it
/// returns. Cheap to clone; clones share the data.
#[derive(Clone, Debug)]
pub struct MemoryStorage {
    q: PartitionCount,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Keyed like the redb objects table: (partition, segment, key).
    objects: BTreeMap<(PartitionId, SegmentId, Key), (Object, ObjectDigest)>,
    hints: BTreeMap<(NodeId, PartitionId, Key), StoredHint>,
    /// Reaping records, keyed like the objects (never both for one key).
    reaped: BTreeMap<(PartitionId, SegmentId, Key), Reaped>,
    trees: BTreeMap<PartitionId, TictacTree>,
    stats: StorageStats,
    /// The current (or last) run's incarnation and how it ended; `None` until the first run.
    run: Option<(Incarnation, RunState)>,
    /// Injected faults: records that read as corrupted until a write replaces them (their tree
    /// entries stay, as redb's may), and how many object reads are still to fail.
    corrupted: BTreeSet<(PartitionId, Key)>,
    failing_reads: u64,
    /// Trees held as "being built" (records done, in all), as a redb store's are after an
    /// open, until [`MemoryStorage::hold_trees`] lets them go.
    trees_building: Option<(u64, u64)>,
}

#[derive(Debug)]
struct StoredHint {
    object: Object,
    digest: ObjectDigest,
    stored_at_unix_ms: u64,
}

impl StoredHint {
    /// The hint as a listing or a lookup hands it out.
    fn entry(&self, target: &NodeId, partition: PartitionId, key: &Key) -> HintEntry {
        HintEntry::Found(Hint {
            target: target.clone(),
            partition,
            key: key.clone(),
            object: self.object.clone(),
            digest: self.digest,
            stored_at_unix_ms: self.stored_at_unix_ms,
        })
    }
}

impl MemoryStorage {
    /// An empty store for a ring of `q` partitions.
    pub fn new(q: PartitionCount) -> MemoryStorage {
        MemoryStorage {
            q,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Begins a run by the same rule as [`crate::RedbStorage::open`]: a store never run on takes
    /// `candidate`; otherwise the incarnation of the last run is kept (recorded as recovered
    /// unless it was closed with [`MemoryStorage::close_clean`]).
    pub fn begin_run(&self, candidate: Incarnation) -> (Incarnation, RunStart) {
        let mut state = self.state();
        let (incarnation, start) = run::begin(state.run, candidate);
        state.run = Some((incarnation, RunState::Running));
        (incarnation, start)
    }

    /// Records that the current run stopped cleanly (nothing here can fail or be pending).
    pub fn close_clean(&self) {
        let mut state = self.state();
        if let Some((incarnation, _)) = state.run {
            state.run = Some((incarnation, RunState::Clean));
        }
    }

    /// Injects a corrupted record: the key's record reads as [`ReadOutcome::Corrupted`] until a
    /// write replaces or removes it. Returns whether a record was there to corrupt.
    pub fn corrupt(&self, partition: PartitionId, key: &Key) -> bool {
        let segment = SegmentId::of(key, self.q);
        let mut state = self.state();
        let stored = state
            .objects
            .contains_key(&(partition, segment, key.clone()));
        if stored {
            state.corrupted.insert((partition, key.clone()));
        }
        stored
    }

    /// Injects read errors: the next `reads` object reads fail with an I/O error, as a disk
    /// that returns EIO would (nothing is changed).
    pub fn fail_reads(&self, reads: u64) {
        self.state().failing_reads = reads;
    }

    /// Makes the trees read as being built (`Some((records_done, records_total))`), as a
    /// [`crate::RedbStorage`]'s do after an open: [`Storage::tree`] and
    /// [`Storage::segment_keys`] answer [`ReadError::TreesNotReady`] until this is called with
    /// `None`. Writes move the trees meanwhile, as the build's end would fold them in.
    pub fn hold_trees(&self, building: Option<(u64, u64)>) {
        self.state().trees_building = building;
    }

    /// The ring size this store was made for.
    pub fn partition_count(&self) -> PartitionCount {
        self.q
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that breaks
        // memory safety; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Storage for MemoryStorage {
    fn object(&self, partition: PartitionId, key: &Key) -> Result<ReadOutcome, ReadError> {
        let segment = SegmentId::of(key, self.q);
        let mut state = self.state();
        if state.failing_reads > 0 {
            state.failing_reads -= 1;
            let error = io::Error::other("injected read error");
            return Err(ReadError::Engine(EngineError::io(
                "reading an object",
                error,
            )));
        }
        if state.corrupted.contains(&(partition, key.clone())) {
            state.stats.corrupt_objects += 1;
            return Ok(ReadOutcome::Corrupted);
        }
        let slot = (partition, segment, key.clone());
        Ok(match state.objects.get(&slot) {
            Some((object, _)) => ReadOutcome::Found(object.clone()),
            None => match state.reaped.get(&slot) {
                Some(r) => ReadOutcome::Found(Object::reaped(r.vv.clone())),
                None => ReadOutcome::NotFound,
            },
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), CommitError> {
        check_partitions(&batch, self.q)?;
        self.state().apply(batch, self.q);
        Ok(())
    }

    fn submit(&self, batch: WriteBatch, done: CommitCallback) {
        done(self.write(batch));
    }

    fn partition_objects(
        &self,
        partition: PartitionId,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, ReadOutcome)>, ReadError> {
        let start = match after {
            Some(k) => Bound::Excluded((partition, SegmentId::of(k, self.q), k.clone())),
            None => Bound::Included((partition, SegmentId::FIRST, first_key())),
        };
        let state = self.state();
        Ok(state
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|((p, _, _), _)| *p == partition)
            .take(limit)
            .map(|((p, _, k), (o, _))| {
                let outcome = if state.corrupted.contains(&(*p, k.clone())) {
                    ReadOutcome::Corrupted
                } else {
                    ReadOutcome::Found(o.clone())
                };
                (k.clone(), outcome)
            })
            .collect())
    }

    fn tree(&self, partition: PartitionId) -> Result<TictacTree, ReadError> {
        let state = self.state();
        state.check_trees()?;
        Ok(state.trees.get(&partition).cloned().unwrap_or_default())
    }

    fn segment_keys(
        &self,
        partition: PartitionId,
        segment: SegmentId,
    ) -> Result<Vec<(Key, ObjectDigest)>, ReadError> {
        let state = self.state();
        state.check_trees()?;
        Ok(state
            .objects
            .range((partition, segment, first_key())..)
            .take_while(|((p, s, _), _)| (*p, *s) == (partition, segment))
            .map(|((_, _, k), (_, d))| (k.clone(), *d))
            .collect())
    }

    fn hints(
        &self,
        target: &NodeId,
        after: Option<(PartitionId, &Key)>,
        limit: usize,
    ) -> Result<Vec<HintEntry>, ReadError> {
        let state = self.state();
        let start = match after {
            Some((p, k)) => Bound::Excluded((target.clone(), p, k.clone())),
            None => Bound::Included((
                target.clone(),
                PartitionId::from_index_unchecked(0),
                first_key(),
            )),
        };
        Ok(state
            .hints
            .range((start, Bound::Unbounded))
            .take_while(|((t, _, _), _)| t == target)
            .take(limit)
            .map(|((t, p, k), h)| h.entry(t, *p, k))
            .collect())
    }

    fn hint(
        &self,
        target: &NodeId,
        partition: PartitionId,
        key: &Key,
    ) -> Result<Option<HintEntry>, ReadError> {
        let state = self.state();
        let slot = (target.clone(), partition, key.clone());
        Ok(state
            .hints
            .get(&slot)
            .map(|h| h.entry(target, partition, key)))
    }

    fn reaped(&self, partition: PartitionId, key: &Key) -> Result<Option<Reaped>, ReadError> {
        let segment = SegmentId::of(key, self.q);
        Ok(self
            .state()
            .reaped
            .get(&(partition, segment, key.clone()))
            .cloned())
    }

    fn reaped_records(
        &self,
        after: Option<(PartitionId, &Key)>,
        limit: usize,
    ) -> Result<Vec<(PartitionId, Key, Reaped)>, ReadError> {
        let start = match after {
            Some((p, k)) => Bound::Excluded((p, SegmentId::of(k, self.q), k.clone())),
            None => Bound::Unbounded,
        };
        Ok(self
            .state()
            .reaped
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|((p, _, k), r)| (*p, k.clone(), r.clone()))
            .collect())
    }

    fn reaped_count(&self) -> Result<u64, ReadError> {
        Ok(self.state().reaped.len() as u64)
    }

    fn stats(&self) -> StorageStats {
        self.state().stats
    }

    fn trees_status(&self) -> TreesStatus {
        match self.state().trees_building {
            None => TreesStatus::Ready,
            Some((records_done, records_total)) => TreesStatus::Building {
                records_done,
                records_total,
            },
        }
    }
}

impl State {
    /// `Ok` unless the trees are held as being built.
    fn check_trees(&self) -> Result<(), ReadError> {
        match self.trees_building {
            None => Ok(()),
            Some((records_done, records_total)) => Err(ReadError::TreesNotReady {
                records_done,
                records_total,
            }),
        }
    }

    fn apply(&mut self, batch: WriteBatch, q: PartitionCount) {
        let writes = batch.len() as u64;
        if let Some(incarnation) = batch.renewal() {
            self.run = Some((incarnation, RunState::Running));
        }
        for write in batch {
            self.apply_one(write, q);
        }
        let s = &mut self.stats;
        s.commits += 1;
        s.batches += 1;
        s.writes += writes;
        s.max_batches_per_commit = s.max_batches_per_commit.max(1);
        s.max_writes_per_commit = s.max_writes_per_commit.max(writes);
    }

    fn apply_one(&mut self, write: Write, q: PartitionCount) {
        let replaced = match &write {
            Write::Object { partition, key, .. }
            | Write::MergeObject { partition, key, .. }
            | Write::RemoveObject { partition, key } => {
                self.corrupted.remove(&(*partition, key.clone()))
            }
            Write::Reap { .. }
            | Write::ForgetReaped { .. }
            | Write::Hint { .. }
            | Write::RemoveHint { .. } => false,
        };
        match write {
            Write::Object {
                partition,
                key,
                object,
            } => self.store_object(partition, key, object, q),
            Write::MergeObject {
                partition,
                key,
                object,
            } => {
                let segment = SegmentId::of(&key, q);
                // A corrupted record is replaced, as redb's store does.
                let merged = match self.objects.get(&(partition, segment, key.clone())) {
                    Some((old, _)) if !replaced => old.merge(&object),
                    _ => object,
                };
                self.store_object(partition, key, merged, q);
            }
            Write::Reap {
                partition,
                key,
                vv,
                reaped_at_unix_ms,
            } => {
                let slot = (partition, SegmentId::of(&key, q), key);
                if self.corrupted.contains(&(partition, slot.2.clone())) {
                    return;
                }
                let stored = self.objects.get(&slot).map(|(o, _)| o);
                if !reapable(stored, &vv) {
                    return;
                }
                if let Some((_, old)) = self.objects.remove(&slot) {
                    self.trees
                        .entry(partition)
                        .or_default()
                        .toggle(slot.1, &slot.2, old);
                }
                let record = match self.reaped.remove(&slot) {
                    Some(held) => Reaped {
                        vv: held.vv.join(&vv),
                        reaped_at_unix_ms: held.reaped_at_unix_ms.max(reaped_at_unix_ms),
                    },
                    None => Reaped {
                        vv,
                        reaped_at_unix_ms,
                    },
                };
                self.reaped.insert(slot, record);
            }
            Write::ForgetReaped {
                partition,
                key,
                reaped_before_unix_ms,
            } => {
                let slot = (partition, SegmentId::of(&key, q), key);
                if self
                    .reaped
                    .get(&slot)
                    .is_some_and(|r| r.reaped_at_unix_ms < reaped_before_unix_ms)
                {
                    self.reaped.remove(&slot);
                }
            }
            Write::RemoveObject { partition, key } => {
                let segment = SegmentId::of(&key, q);
                if let Some((_, old)) = self.objects.remove(&(partition, segment, key.clone())) {
                    self.trees
                        .entry(partition)
                        .or_default()
                        .toggle(segment, &key, old);
                }
            }
            Write::Hint {
                target,
                partition,
                key,
                object,
                stored_at_unix_ms,
            } => {
                let slot = (target, partition, key);
                let held = self
                    .hints
                    .get(&slot)
                    .map(|h| (&h.object, h.stored_at_unix_ms));
                let (object, stored_at_unix_ms) = merge_hint(held, &object, stored_at_unix_ms);
                let digest = ObjectDigest::of(&object);
                self.hints.insert(
                    slot,
                    StoredHint {
                        object,
                        digest,
                        stored_at_unix_ms,
                    },
                );
            }
            Write::RemoveHint {
                target,
                partition,
                key,
                if_digest,
            } => {
                let slot = (target, partition, key);
                let unchanged = match (self.hints.get(&slot), if_digest) {
                    (Some(h), Some(d)) => h.digest == d,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if unchanged {
                    self.hints.remove(&slot);
                }
            }
        }
    }

    fn store_object(
        &mut self,
        partition: PartitionId,
        key: Key,
        object: Object,
        q: PartitionCount,
    ) {
        let segment = SegmentId::of(&key, q);
        let slot = (partition, segment, key);
        let object = match self.reaped.get_mut(&slot) {
            None => object,
            Some(held) => match merge_into_reaped(&held.vv, &object) {
                // Nothing newer than the reap: the record absorbs it, nothing is stored.
                Err(vv) => {
                    held.vv = vv;
                    return;
                }
                Ok(merged) => {
                    self.reaped.remove(&slot);
                    merged
                }
            },
        };
        let key = slot.2;
        let digest = ObjectDigest::of(&object);
        let tree = self.trees.entry(partition).or_default();
        tree.toggle(segment, &key, digest);
        if let Some((_, old)) = self
            .objects
            .insert((partition, segment, key.clone()), (object, digest))
        {
            tree.toggle(segment, &key, old);
        }
    }
}

/// Refuses a batch that names a partition outside the ring, before anything is applied.
pub(crate) fn check_partitions(batch: &WriteBatch, q: PartitionCount) -> Result<(), CommitError> {
    match batch.partitions().find(|p| p.index() >= q.get()) {
        Some(partition) => Err(CommitError::PartitionOutOfRange {
            partition,
            count: q,
        }),
        None => Ok(()),
    }
}

/// The smallest key (a single zero byte), the start of a target's hints.
fn first_key() -> Key {
    #[allow(clippy::expect_used)] // One byte is a valid key length.
    Key::new(vec![0u8]).expect("a one-byte key is valid")
}
