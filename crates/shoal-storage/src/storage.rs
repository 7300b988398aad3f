use std::sync::mpsc;
use std::time::Duration;

use shoal_causality::{Object, VersionVector};
use shoal_types::{Incarnation, Key, NodeId, PartitionId};

use crate::{CommitError, ObjectDigest, ReadError, SegmentId, TictacTree};

/// A node's local store: objects by (partition, key), hints for other nodes, and one
/// anti-entropy tree per partition, kept in step with the objects.
///
/// Reads never wait for a commit in progress. Writes are applied in batches, atomically and
/// durably, in the order they were submitted.
pub trait Storage: Send + Sync + 'static {
    /// One key's object.
    fn object(&self, partition: PartitionId, key: &Key) -> Result<ReadOutcome, ReadError>;

    /// Applies `batch` atomically and durably, returning once it is durable (group-committed with
    /// whatever else is queued). Must not be called from a `submit` callback.
    fn write(&self, batch: WriteBatch) -> Result<(), CommitError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(
            batch,
            Box::new(move |result| {
                // The receiver only goes away if the caller's thread died; nothing to tell then.
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or(Err(CommitError::Closed))
    }

    /// Queues `batch` for the next group commit and returns at once. `done` is called exactly once:
    /// after the batch is durable, or with the error that failed it. It may run on the commit
    /// thread, so it must be quick and must not call [`Storage::write`].
    fn submit(&self, batch: WriteBatch, done: CommitCallback);

    /// Up to `limit` objects of `partition`, in storage order (by segment, then key), starting
    /// after `after` (for handoff and anti-entropy). A corrupted record is listed as
    /// [`ReadOutcome::Corrupted`].
    fn partition_objects(
        &self,
        partition: PartitionId,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, ReadOutcome)>, ReadError>;

    /// The tictac tree of `partition`; [`ReadError::TreesNotReady`] while the trees are being
    /// built after an open (see [`Storage::trees_status`]).
    fn tree(&self, partition: PartitionId) -> Result<TictacTree, ReadError>;

    /// The keys of one segment of `partition` with their object digests, in key order (for the
    /// anti-entropy key exchange). Corrupted records are left out, as they are of the tree.
    /// [`ReadError::TreesNotReady`] while the trees are, since the list is compared with them.
    fn segment_keys(
        &self,
        partition: PartitionId,
        segment: SegmentId,
    ) -> Result<Vec<(Key, ObjectDigest)>, ReadError>;

    /// Up to `limit` hints held for `target`, in (partition, key) order, starting after `after`.
    fn hints(
        &self,
        target: &NodeId,
        after: Option<(PartitionId, &Key)>,
        limit: usize,
    ) -> Result<Vec<HintEntry>, ReadError>;

    /// The hint held for (`target`, `partition`, `key`), if one is (what a fallback answers a
    /// read with). A corrupted record is [`HintEntry::Corrupted`].
    fn hint(
        &self,
        target: &NodeId,
        partition: PartitionId,
        key: &Key,
    ) -> Result<Option<HintEntry>, ReadError>;

    /// The reaping record of a key whose tombstone was reaped ([`Write::Reap`]), if one is held.
    /// [`Storage::object`] already answers such a key as [`Object::reaped`]; this tells the
    /// two apart (for `get --local` and the reap's answer). A record that fails its checksum
    /// is counted as corrupt and answered as absent.
    fn reaped(&self, partition: PartitionId, key: &Key) -> Result<Option<Reaped>, ReadError>;

    /// Up to `limit` reaping records in (partition, key) storage order, starting after `after`
    /// (for the sweep that forgets them after their retention). Corrupted ones are skipped.
    fn reaped_records(
        &self,
        after: Option<(PartitionId, &Key)>,
        limit: usize,
    ) -> Result<Vec<(PartitionId, Key, Reaped)>, ReadError>;

    /// How many reaping records are held.
    fn reaped_count(&self) -> Result<u64, ReadError>;

    /// Counters since the storage was opened.
    fn stats(&self) -> StorageStats;

    /// Whether the trees can be read yet. A store that builds them in the background after
    /// opening (as [`crate::RedbStorage`] does) says how far it got; the default is a store
    /// whose trees are always ready.
    fn trees_status(&self) -> TreesStatus {
        TreesStatus::Ready
    }
}

/// Where a store's trees stand ([`Storage::trees_status`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TreesStatus {
    /// The trees describe the committed data; [`Storage::tree`] answers.
    #[default]
    Ready,
    /// The trees are being built from the records found at open.
    Building {
        /// Records folded in so far.
        records_done: u64,
        /// Records to scan in all.
        records_total: u64,
    },
    /// The build failed (the engine failed reading the records); the trees stay unreadable
    /// until the storage is opened again.
    Failed,
}

impl TreesStatus {
    /// Whether the trees can be read.
    pub fn is_ready(self) -> bool {
        self == TreesStatus::Ready
    }
}

/// A reaping record: the key's tombstone was removed, and every dot `vv` covers is dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaped {
    /// Everything the reaped tombstone (and any later reap of the key) had seen.
    pub vv: VersionVector,
    /// When the key was (last) reaped here, in Unix milliseconds (the caller's clock).
    pub reaped_at_unix_ms: u64,
}

/// What `submit` calls when a batch is durable, or failed.
pub type CommitCallback = Box<dyn FnOnce(Result<(), CommitError>) + Send + 'static>;

/// The result of reading one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The stored object.
    Found(Object),
    /// Nothing is stored under the key.
    NotFound,
    /// A record is stored but fails its checksum or does not decode. Counted in
    /// [`StorageStats::corrupt_objects`]; the caller treats it as a missing replica.
    Corrupted,
}

impl ReadOutcome {
    /// The object, if one was found.
    pub fn object(&self) -> Option<&Object> {
        match self {
            ReadOutcome::Found(o) => Some(o),
            _ => None,
        }
    }
}

/// Writes applied together: all of them or none, in one durable commit.
///
/// A batch may also renew the run's incarnation ([`WriteBatch::renew_incarnation`]): the
/// identity record then names the new incarnation in the same transaction as the writes, so a
/// record the batch replaces and the incarnation that must follow its replacement become durable
/// together (the node lost track of its own dots for that key; see `shoal-coordinator`'s
/// durability part).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    writes: Vec<Write>,
    renewal: Option<Incarnation>,
}

impl WriteBatch {
    /// An empty batch. Committing one waits for everything submitted before it.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Adds a write at the end of the batch.
    pub fn push(&mut self, write: Write) {
        self.writes.push(write);
    }

    /// The writes, in order.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// Makes the run continue under `incarnation` once this batch is durable: recorded (still
    /// running) in the same transaction as the writes, and what a clean close records after it.
    pub fn renew_incarnation(&mut self, incarnation: Incarnation) {
        self.renewal = Some(incarnation);
    }

    /// The incarnation this batch renews the run to, if it does.
    pub fn renewal(&self) -> Option<Incarnation> {
        self.renewal
    }

    /// How many writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether there are no writes.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Bytes of keys and values, roughly what the batch costs to commit.
    pub(crate) fn approximate_bytes(&self) -> usize {
        self.writes.iter().map(Write::approximate_bytes).sum()
    }

    /// The partitions the batch names.
    pub(crate) fn partitions(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.writes.iter().map(Write::partition)
    }
}

impl From<Vec<Write>> for WriteBatch {
    fn from(writes: Vec<Write>) -> Self {
        WriteBatch {
            writes,
            renewal: None,
        }
    }
}

impl From<Write> for WriteBatch {
    fn from(write: Write) -> Self {
        WriteBatch {
            writes: vec![write],
            renewal: None,
        }
    }
}

impl FromIterator<Write> for WriteBatch {
    fn from_iter<I: IntoIterator<Item = Write>>(iter: I) -> Self {
        WriteBatch {
            writes: iter.into_iter().collect(),
            renewal: None,
        }
    }
}

impl IntoIterator for WriteBatch {
    type Item = Write;
    type IntoIter = std::vec::IntoIter<Write>;
    fn into_iter(self) -> Self::IntoIter {
        self.writes.into_iter()
    }
}

/// One change to storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Stores `object` under the key, replacing what was there.
    Object {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
        /// The new object.
        object: Object,
    },
    /// Merges `object` (DVV merge) into what is stored under the key; stores it if nothing is,
    /// or if what is stored is corrupted.
    MergeObject {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
        /// The object to merge in.
        object: Object,
    },
    /// Removes the key's object (tombstone reaping, handoff cleanup). Removing a missing key is
    /// not an error.
    RemoveObject {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
    },
    /// Reaps the key's tombstone, a compare-and-set: only if the stored object holds no value
    /// (tombstones only, or no siblings) and `vv` descends its version vector (no object, or a
    /// reaping record already held, counts as empty). Then the object is removed (and leaves
    /// the tree) and the key's reaping record becomes `vv` joined with any held before, stamped
    /// `reaped_at_unix_ms` (the later of the two). Otherwise nothing changes (something newer
    /// is stored, or the record is corrupted); [`Storage::reaped`] tells which it was.
    ///
    /// While a reaping record is held, every write that stores an object under the key
    /// ([`Write::Object`], [`Write::MergeObject`]) merges it into [`Object::reaped`] first: if
    /// no sibling survives (all are covered), nothing is stored and the record's vector takes
    /// in the incoming one; if one does, the merged object is stored and the record removed.
    /// So no sibling the reaped tombstone superseded can come back.
    Reap {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
        /// The tombstone's version vector (joined over the key's primaries).
        vv: VersionVector,
        /// Now, in Unix milliseconds.
        reaped_at_unix_ms: u64,
    },
    /// Drops the key's reaping record if it was reaped before `reaped_before_unix_ms` (its
    /// retention is over; one reaped again since stays).
    ForgetReaped {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
        /// Records stamped before this (Unix ms) go.
        reaped_before_unix_ms: u64,
    },
    /// Holds `object` for `target`, merged with any hint already held for the same
    /// (target, partition, key).
    Hint {
        /// The node the hint is for.
        target: NodeId,
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
        /// The object to hand off.
        object: Object,
        /// When the hint was stored, in Unix milliseconds (the caller's clock). A merge keeps
        /// the later time.
        stored_at_unix_ms: u64,
    },
    /// Drops the hint for (target, partition, key): only if its digest is still `if_digest`
    /// (it did not change since it was sent), or unconditionally when `if_digest` is `None`.
    RemoveHint {
        /// The node the hint is for.
        target: NodeId,
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
        /// The digest of the hint that was handed off.
        if_digest: Option<ObjectDigest>,
    },
}

impl Write {
    /// The partition this write touches.
    pub fn partition(&self) -> PartitionId {
        match self {
            Write::Object { partition, .. }
            | Write::MergeObject { partition, .. }
            | Write::RemoveObject { partition, .. }
            | Write::Reap { partition, .. }
            | Write::ForgetReaped { partition, .. }
            | Write::Hint { partition, .. }
            | Write::RemoveHint { partition, .. } => *partition,
        }
    }

    fn approximate_bytes(&self) -> usize {
        match self {
            Write::Object { key, object, .. }
            | Write::MergeObject { key, object, .. }
            | Write::Hint { key, object, .. } => key.len() + object.value_bytes() + 64,
            Write::RemoveObject { key, .. }
            | Write::RemoveHint { key, .. }
            | Write::ForgetReaped { key, .. } => key.len() + 16,
            Write::Reap { key, vv, .. } => key.len() + 16 * vv.len() + 32,
        }
    }
}

/// An object held on behalf of another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The node the hint is for.
    pub target: NodeId,
    /// The key's partition.
    pub partition: PartitionId,
    /// The key.
    pub key: Key,
    /// The object to hand off.
    pub object: Object,
    /// The object's digest: pass it to [`Write::RemoveHint`] once the target has it.
    pub digest: ObjectDigest,
    /// When the hint was (last) stored, in Unix milliseconds.
    pub stored_at_unix_ms: u64,
}

/// One entry of a hint listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HintEntry {
    /// A hint that can be handed off.
    Found(Hint),
    /// A hint record that fails its checksum or does not decode (counted in
    /// [`StorageStats::corrupt_objects`]). Remove it with `if_digest: None`; anti-entropy
    /// repairs what it held.
    Corrupted {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
    },
}

/// Counters of a storage since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Commits made: one fsync each for a file-backed store.
    pub commits: u64,
    /// Commits that failed; each failed every batch in it.
    pub failed_commits: u64,
    /// Batches submitted and not yet taken into a commit: the commit queue's backlog.
    pub queued_batches: u64,
    /// Batches acknowledged as durable.
    pub batches: u64,
    /// Writes in those batches.
    pub writes: u64,
    /// The most batches one commit carried.
    pub max_batches_per_commit: u64,
    /// The most writes one commit carried.
    pub max_writes_per_commit: u64,
    /// Object and hint records found corrupted (checksum mismatch or undecodable), each time one
    /// was read.
    pub corrupt_objects: u64,
    /// Tree segments recomputed from their records because a record was found corrupted.
    pub segment_rebuilds: u64,
    /// Time spent applying and committing, summed over commits.
    pub commit_latency_total: Duration,
    /// The longest commit.
    pub commit_latency_max: Duration,
}

impl StorageStats {
    /// Writes per commit (per fsync), on average.
    pub fn writes_per_commit(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.writes as f64 / self.commits as f64
        }
    }

    /// Batches per commit, on average.
    pub fn batches_per_commit(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.batches as f64 / self.commits as f64
        }
    }

    /// The mean commit latency.
    pub fn mean_commit_latency(&self) -> Duration {
        if self.commits == 0 {
            Duration::ZERO
        } else {
            let nanos = self.commit_latency_total.as_nanos() / u128::from(self.commits);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        }
    }
}

/// The one rule for [`Write::Hint`], which every store applies: the hint held for (target,
/// partition, key) once `incoming`, stored at `incoming_at_unix_ms`, meets `held` (the object
/// and time already held there, if one is and it is readable). The objects are DVV-merged, so
/// no write either carries is lost, and the time is the later of the two, so a hint's age is
/// that of its newest write (a clock that went back does not make it older).
pub(crate) fn merge_hint(
    held: Option<(&Object, u64)>,
    incoming: &Object,
    incoming_at_unix_ms: u64,
) -> (Object, u64) {
    match held {
        Some((object, at)) => (object.merge(incoming), at.max(incoming_at_unix_ms)),
        None => (incoming.clone(), incoming_at_unix_ms),
    }
}

/// The one rule for [`Write::Reap`], which every store applies: whether the stored object
/// (`None`: none) may be replaced by a reaping record of `vv`.
pub(crate) fn reapable(stored: Option<&Object>, vv: &VersionVector) -> bool {
    stored.is_none_or(|o| o.holds_no_value() && vv.descends(o.version_vector()))
}

/// The one rule for storing `incoming` under a key reaped at `reaped` (its record's vector):
/// `Err(vv)` when nothing survives the merge (no object is stored; the record's vector becomes
/// `vv`), `Ok(merged)` when a sibling newer than the reap does (it is stored, the record goes).
pub(crate) fn merge_into_reaped(
    reaped: &VersionVector,
    incoming: &Object,
) -> Result<Object, VersionVector> {
    let merged = Object::reaped(reaped.clone()).merge(incoming);
    if merged.siblings().is_empty() {
        Err(merged.version_vector().clone())
    } else {
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shoal_causality::{Actor, CausalContext, Sibling};
    use shoal_types::Incarnation;

    use super::*;

    fn written_by(actor: &str, value: &'static str) -> Object {
        let actor = Actor::new(NodeId::new(actor).unwrap(), Incarnation::new(1));
        let sibling = Sibling::Value(Bytes::from_static(value.as_bytes()));
        Object::new()
            .update(&CausalContext::empty(), sibling, &actor, 64)
            .unwrap()
    }

    #[test]
    fn a_hint_merges_into_the_one_held_and_keeps_the_later_time() {
        let (a, b) = (written_by("a", "from a"), written_by("b", "from b"));
        assert_eq!(merge_hint(None, &a, 10), (a.clone(), 10));

        let both = a.merge(&b);
        assert_eq!(both.values().len(), 2, "concurrent writes stay siblings");
        assert_eq!(merge_hint(Some((&a, 10)), &b, 20), (both.clone(), 20));
        assert_eq!(
            merge_hint(Some((&a, 30)), &b, 20),
            (both, 30),
            "an older incoming time does not make the held hint older"
        );

        let newer = a
            .update(
                &a.context(),
                Sibling::Value(Bytes::from_static(b"again")),
                &Actor::new(NodeId::new("a").unwrap(), Incarnation::new(1)),
                64,
            )
            .unwrap();
        assert_eq!(
            merge_hint(Some((&a, 10)), &newer, 20).0,
            newer,
            "a write that saw the held one replaces it"
        );
    }
}
