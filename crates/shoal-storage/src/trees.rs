//! The tictac trees of a [`crate::RedbStorage`], kept in memory.
//!
//! They are not stored: a tree table updated in every write transaction cost each write the
//! copy-on-write of its own leaf and branch pages, about 40 % of what a group commit wrote.
//! They are derived from the objects table instead, and moved by the commit thread after each
//! successful commit, so they describe committed data.
//!
//! **Built beside serving.** An open does not scan. It takes a read snapshot of the objects
//! table before the commit thread starts (so before any write of the run), and a build thread
//! folds every record of that snapshot that passes its checksum into fresh trees, as
//! [`TictacTree::build`] would, in slices of [`BUILD_SLICE_RECORDS`] records, pausing after
//! each so that it takes at most [`BUILD_DUTY`] of a core from the requests and the commit
//! thread. Meanwhile the commit thread keeps what each commit changes ([`TreeChanges`]) in
//! [`State::Building`] instead of applying it. When the scan ends the build thread hands its
//! trees to the commit thread, which folds the kept changes in (XOR toggles commute with the
//! snapshot's contents; segments marked for recomputation are recomputed from the records as
//! they are then, the commit thread being the only writer) and makes the trees ready. The
//! result is the trees of a full scan of the data as it is at that moment. Until then
//! [`crate::Storage::tree`] and [`crate::Storage::segment_keys`] answer
//! [`crate::ReadError::TreesNotReady`]; nothing else waits. A database with no objects is
//! ready at once, without a thread.
//!
//! Across a crash nothing needs keeping consistent: the trees are never on disk, and every
//! open derives them again from the records it finds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use shoal_types::{PartitionCount, PartitionId};

use crate::commit::Job;
use crate::error::{During, EngineError};
use crate::record::{
    OBJECTS, check_object_record, key_of_object_key, partition_segment_in_key, segment_range,
};
use crate::tree::{entry_hash, xor_into};
use crate::{ReadError, SegmentId, TictacTree, TreesStatus};

/// Records the build reads between two pauses (and looks at whether the storage is closing).
/// About a millisecond of work: short enough that a pause comes before a request notices.
pub(crate) const BUILD_SLICE_RECORDS: u64 = 1024;

/// The share of one core the build takes at most: after a slice that took `t` it pauses
/// `t × (1 − BUILD_DUTY) / BUILD_DUTY`. A half leaves a two-core machine one and a half cores
/// for requests, the commit thread and the other processes on it, and makes the build take
/// about twice a bare scan (a million records: ready 1.5–2.3 s after the open, see
/// `docs/results/2026-12-08-startup/`).
pub(crate) const BUILD_DUTY: f64 = 0.5;

/// Every partition's tree. Partitions without objects have none (the empty tree).
#[derive(Debug)]
pub(crate) struct Trees {
    state: Mutex<State>,
    /// Signalled when the state leaves [`State::Building`].
    settled: Condvar,
    /// Records of the snapshot folded in so far, and in all (for [`TreesStatus::Building`]).
    done: AtomicU64,
    total: AtomicU64,
}

/// Where the trees stand.
#[derive(Debug)]
enum State {
    /// The build thread is scanning the snapshot; what each commit since changed waits here.
    Building(TreeChanges),
    /// The trees describe the committed data.
    Ready(HashMap<PartitionId, TictacTree>),
    /// The build failed (the engine failed reading the snapshot); a new open builds again.
    Failed(EngineError),
}

/// How one group commit moves the trees: hashes to fold into segments, and segments to
/// recompute from their records (which wins over folding for that segment).
#[derive(Debug, Default)]
pub(crate) struct TreeChanges {
    toggles: BTreeMap<(PartitionId, SegmentId), [u8; 16]>,
    recompute: BTreeSet<(PartitionId, SegmentId)>,
}

/// Trees built from a snapshot, with what the scan found.
#[derive(Debug, Default)]
pub(crate) struct Built {
    trees: HashMap<PartitionId, TictacTree>,
    pub(crate) scanned: Scanned,
}

/// What a scan found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Scanned {
    /// Records counted in the trees.
    pub(crate) records: u64,
    /// Records left out because they fail their checksum or their key does not parse.
    pub(crate) corrupted: u64,
    /// How long the scan took, pauses included.
    pub(crate) elapsed: Duration,
}

/// What the build thread needs: the snapshot taken at open, and the way to the commit thread.
pub(crate) struct Build {
    pub(crate) snapshot: ReadTransaction,
    pub(crate) q: PartitionCount,
    pub(crate) commit_queue: Sender<Job>,
    /// Tests only: where the scan waits for a go-ahead.
    pub(crate) hold: Option<Arc<BuildHold>>,
}

/// Holds a build once it has scanned `at_records` records, until released (for tests that
/// commit while a build is under way).
#[derive(Debug, Default)]
pub(crate) struct BuildHold {
    at_records: u64,
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl BuildHold {
    /// A hold at `at_records` records (0: before the scan starts; otherwise a multiple of
    /// [`BUILD_SLICE_RECORDS`], where the scan looks).
    #[cfg(test)]
    pub(crate) fn at(at_records: u64) -> Arc<BuildHold> {
        Arc::new(BuildHold {
            at_records,
            ..BuildHold::default()
        })
    }

    /// Waits until the build reached the hold, at most `timeout`; whether it did.
    #[cfg(test)]
    pub(crate) fn wait_held(&self, timeout: Duration) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |(held, _)| !*held)
            .unwrap_or_else(PoisonError::into_inner);
        state.0
    }

    /// Lets the build go on.
    #[cfg(test)]
    pub(crate) fn release(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.changed.notify_all();
    }

    /// Called by the scan with the records done: waits there if this is the hold.
    fn reached(&self, done: u64) {
        if done != self.at_records {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = true;
        self.changed.notify_all();
        while !state.1 {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Trees {
    /// Trees that are ready and empty (a database without objects).
    pub(crate) fn ready_empty() -> Trees {
        Trees::with(State::Ready(HashMap::new()), 0)
    }

    /// Trees waiting for a build of `total` records.
    pub(crate) fn building(total: u64) -> Trees {
        Trees::with(State::Building(TreeChanges::default()), total)
    }

    fn with(state: State, total: u64) -> Trees {
        Trees {
            state: Mutex::new(state),
            settled: Condvar::new(),
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
        }
    }

    /// Builds every tree from the objects table at once, in the calling thread (tests).
    #[cfg(test)]
    pub(crate) fn build_now(db: &Database, q: PartitionCount) -> Result<Built, EngineError> {
        let txn = db.begin_read().during("building the trees")?;
        let never = AtomicBool::new(false);
        let built = scan(&txn, q, &AtomicU64::new(0), &never, 1.0, None)?;
        Ok(built.unwrap_or_default())
    }

    /// Replaces every tree with `built`'s (tests that write records behind the storage's back).
    #[cfg(test)]
    pub(crate) fn replace(&self, built: Built) {
        *self.lock() = State::Ready(built.trees);
        self.settled.notify_all();
    }

    /// Where the trees stand.
    pub(crate) fn status(&self) -> TreesStatus {
        match &*self.lock() {
            State::Ready(_) => TreesStatus::Ready,
            State::Failed(_) => TreesStatus::Failed,
            State::Building(_) => TreesStatus::Building {
                records_done: self.done.load(Ordering::Relaxed),
                records_total: self.total.load(Ordering::Relaxed),
            },
        }
    }

    /// Waits until the trees are ready (or their build failed), at most `timeout`; returns
    /// where they stand then.
    pub(crate) fn wait(&self, timeout: Duration) -> TreesStatus {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while matches!(*state, State::Building(_)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .settled
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        self.status()
    }

    /// A copy of `partition`'s tree, once the trees are ready.
    pub(crate) fn tree(&self, partition: PartitionId) -> Result<TictacTree, ReadError> {
        match &*self.lock() {
            State::Ready(trees) => Ok(trees.get(&partition).cloned().unwrap_or_default()),
            State::Building(_) => Err(self.not_ready()),
            State::Failed(e) => Err(ReadError::Engine(e.clone())),
        }
    }

    /// `Ok` once the trees are ready: what a segment's key list, which is compared with a
    /// tree, waits for too.
    pub(crate) fn check_ready(&self) -> Result<(), ReadError> {
        match &*self.lock() {
            State::Ready(_) => Ok(()),
            State::Building(_) => Err(self.not_ready()),
            State::Failed(e) => Err(ReadError::Engine(e.clone())),
        }
    }

    fn not_ready(&self) -> ReadError {
        ReadError::TreesNotReady {
            records_done: self.done.load(Ordering::Relaxed),
            records_total: self.total.load(Ordering::Relaxed),
        }
    }

    /// Applies a committed group's changes (kept for the end of the build while it runs);
    /// segments to recompute are read from `db` as it is now (the commit thread is the only
    /// writer, so that is the state after the group).
    pub(crate) fn apply(&self, db: &Database, changes: TreeChanges) -> Result<(), EngineError> {
        if let State::Building(kept) = &mut *self.lock() {
            kept.absorb(changes);
            return Ok(());
        }
        let recomputed = recompute(db, &changes.recompute)?;
        let mut state = self.lock();
        // Building cannot come back, and a failed build takes no changes.
        if let State::Ready(trees) = &mut *state {
            fold(trees, changes, recomputed);
        }
        Ok(())
    }

    /// The build thread's trees arrive (on the commit thread, between two groups): folds in
    /// what the commits since the snapshot changed, and makes the trees ready. The records the
    /// scan found corrupted are added to `corrupt` first, so whoever sees the trees ready sees
    /// them counted.
    pub(crate) fn install(
        &self,
        db: &Database,
        built: Result<Built, EngineError>,
        corrupt: &AtomicU64,
    ) -> Result<Scanned, EngineError> {
        let mut state = self.lock();
        let kept = match &mut *state {
            State::Building(kept) => std::mem::take(kept),
            _ => return built.map(|b| b.scanned),
        };
        let outcome = built.and_then(|mut built| {
            let recomputed = recompute(db, &kept.recompute)?;
            fold(&mut built.trees, kept, recomputed);
            Ok(built)
        });
        let result = match outcome {
            Ok(built) => {
                corrupt.fetch_add(built.scanned.corrupted, Ordering::Relaxed);
                *state = State::Ready(built.trees);
                Ok(built.scanned)
            }
            Err(e) => {
                *state = State::Failed(e.clone());
                Err(e)
            }
        };
        drop(state);
        self.settled.notify_all();
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The build thread's body: scans `build.snapshot`, then hands the trees to the commit
    /// thread. Stops early, handing nothing, once `stop` is set (the storage is closing).
    pub(crate) fn run_build(&self, build: Build, stop: &AtomicBool) {
        let hold = build.hold.as_deref();
        let scanned = scan(&build.snapshot, build.q, &self.done, stop, BUILD_DUTY, hold);
        // The snapshot pins the pages it reads; let them go before the commit thread installs.
        drop(build.snapshot);
        let built = match scanned {
            Ok(None) => return,
            Ok(Some(built)) => Ok(built),
            Err(e) => Err(e),
        };
        // The commit thread is gone only if the storage closed; nothing to install then.
        let _ = build.commit_queue.send(Job::TreesBuilt(built));
    }
}

impl TreeChanges {
    /// Folds an entry hash (added or removed: XOR is its own inverse) into a segment.
    pub(crate) fn toggle(&mut self, partition: PartitionId, segment: SegmentId, hash: &[u8; 16]) {
        xor_into(self.toggles.entry((partition, segment)).or_default(), hash);
    }

    /// Marks a segment to be recomputed from its records after the commit.
    pub(crate) fn recompute(&mut self, partition: PartitionId, segment: SegmentId) {
        self.recompute.insert((partition, segment));
    }

    /// How many segments are to be recomputed.
    pub(crate) fn recomputes(&self) -> u64 {
        self.recompute.len() as u64
    }

    /// Every touched segment recomputed instead of folded (after a commit that failed, whose
    /// writes may or may not be in the database).
    pub(crate) fn recompute_all(mut self) -> TreeChanges {
        let touched: Vec<_> = self.toggles.keys().copied().collect();
        self.recompute.extend(touched);
        self.toggles.clear();
        self
    }

    /// Adds a later commit's changes: toggles XOR together (they commute), and a segment
    /// either marks for recomputation is recomputed, from the records as they are when the
    /// changes are applied, which include both commits.
    fn absorb(&mut self, later: TreeChanges) {
        for (slot, hash) in later.toggles {
            self.toggle(slot.0, slot.1, &hash);
        }
        self.recompute.extend(later.recompute);
    }
}

/// Scans every object record of `txn` into trees, counting progress in `done` and taking at
/// most `duty` of a core (1.0: no pauses). `None` if `stop` was set before it finished.
fn scan(
    txn: &ReadTransaction,
    q: PartitionCount,
    done: &AtomicU64,
    stop: &AtomicBool,
    duty: f64,
    hold: Option<&BuildHold>,
) -> Result<Option<Built>, EngineError> {
    let started = Instant::now();
    let mut scanned = 0u64;
    if let Some(hold) = hold {
        hold.reached(scanned);
    }
    let objects = txn.open_table(OBJECTS).during("building the trees")?;
    let mut built = Built::default();
    let mut slice_started = Instant::now();
    let mut in_slice = 0u64;
    for entry in objects.iter().during("building the trees")? {
        let (k, v) = entry.during("building the trees")?;
        let tk = k.value();
        let parsed = key_of_object_key(tk).zip(partition_segment_in_key(tk, q));
        match (parsed, check_object_record(tk, v.value())) {
            (Some((key, (partition, segment))), Some(rec)) => {
                built
                    .trees
                    .entry(partition)
                    .or_default()
                    .toggle(segment, &key, rec.digest);
                built.scanned.records += 1;
            }
            _ => built.scanned.corrupted += 1,
        }
        in_slice += 1;
        if in_slice == BUILD_SLICE_RECORDS {
            done.fetch_add(in_slice, Ordering::Relaxed);
            scanned += in_slice;
            in_slice = 0;
            if let Some(hold) = hold {
                hold.reached(scanned);
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if duty < 1.0 {
                let worked = slice_started.elapsed();
                thread::sleep(worked.mul_f64((1.0 - duty) / duty));
                slice_started = Instant::now();
            }
        }
    }
    done.fetch_add(in_slice, Ordering::Relaxed);
    built.scanned.elapsed = started.elapsed();
    Ok(Some(built))
}

/// The hashes of `segments`, recomputed from the records as they are now.
fn recompute(
    db: &Database,
    segments: &BTreeSet<(PartitionId, SegmentId)>,
) -> Result<Vec<(PartitionId, SegmentId, [u8; 16])>, EngineError> {
    let mut recomputed = Vec::with_capacity(segments.len());
    if segments.is_empty() {
        return Ok(recomputed);
    }
    let txn = db.begin_read().during("recomputing a segment")?;
    let objects = txn.open_table(OBJECTS).during("recomputing a segment")?;
    for &(partition, segment) in segments {
        let hash = segment_hash(&objects, partition, segment).during("recomputing a segment")?;
        recomputed.push((partition, segment, hash));
    }
    Ok(recomputed)
}

/// Moves `trees` by `changes`, with the segments it recomputes already read.
fn fold(
    trees: &mut HashMap<PartitionId, TictacTree>,
    changes: TreeChanges,
    recomputed: Vec<(PartitionId, SegmentId, [u8; 16])>,
) {
    for ((partition, segment), hash) in changes.toggles {
        if !changes.recompute.contains(&(partition, segment)) {
            trees
                .entry(partition)
                .or_default()
                .fold_into_segment(segment, &hash);
        }
    }
    for (partition, segment, hash) in recomputed {
        trees
            .entry(partition)
            .or_default()
            .set_segment(segment, hash);
    }
}

/// The hash of one segment, recomputed from its records; records that fail their checksum do
/// not count.
pub(crate) fn segment_hash(
    objects: &impl ReadableTable<&'static [u8], &'static [u8]>,
    partition: PartitionId,
    segment: SegmentId,
) -> Result<[u8; 16], redb::StorageError> {
    let (start, end) = segment_range(partition, segment);
    let mut hash = [0u8; 16];
    for entry in objects.range::<&[u8]>(&start[..]..&end[..])? {
        let (k, v) = entry?;
        let tk = k.value();
        if let (Some(key), Some(rec)) = (key_of_object_key(tk), check_object_record(tk, v.value()))
        {
            xor_into(&mut hash, &entry_hash(&key, rec.digest));
        }
    }
    Ok(hash)
}
