//! The storage a simulated node runs on: the in-memory maps, or redb on an in-memory backend.

use shoal_storage::{
    CommitCallback, CommitError, HintEntry, MemoryStorage, ObjectDigest, OpenError, ReadError,
    ReadOutcome, Reaped, RedbStorage, RunStart, SegmentId, Storage, StorageStats, TictacTree,
    WriteBatch,
};
use shoal_types::{Incarnation, Key, NodeId, PartitionId};

/// One node's disk. It only ever holds batches whose simulated fsync completed: the simulator
/// keeps pending batches itself and writes them here when they become durable, so a crash
/// loses exactly what was not yet durable.
#[derive(Clone, Debug)]
pub(crate) enum SimStorage {
    Memory(MemoryStorage),
    Redb(RedbStorage),
}

impl SimStorage {
    /// Begins a run of the node on this disk, by the rule a real node's open follows: a run
    /// that follows anything but a recorded clean stop (every simulated crash) takes
    /// `candidate`.
    pub(crate) fn begin_run(
        &self,
        candidate: Incarnation,
    ) -> Result<(Incarnation, RunStart), OpenError> {
        match self {
            SimStorage::Memory(s) => Ok(s.begin_run(candidate)),
            SimStorage::Redb(s) => s.begin_run(candidate),
        }
    }
}

impl SimStorage {
    /// Records that the current run stopped cleanly, as a real node's `close_clean` does once
    /// its commit queue has finished. Only the in-memory storage can: closing redb cleanly
    /// consumes its handle, which the simulator reopens in place, so a redb node's clean stop
    /// is recorded as unclean (its restart is a recovery, under the same incarnation). Returns
    /// whether it was recorded.
    pub(crate) fn record_clean_stop(&self) -> bool {
        match self {
            SimStorage::Memory(s) => {
                s.close_clean();
                true
            }
            SimStorage::Redb(_) => false,
        }
    }
}

impl SimStorage {
    /// Marks the record of `key` corrupted, if this disk can be reached into (memory storage)
    /// and holds one. Returns whether it did.
    pub(crate) fn corrupt(&self, partition: PartitionId, key: &Key) -> bool {
        match self {
            SimStorage::Memory(s) => s.corrupt(partition, key),
            SimStorage::Redb(_) => false,
        }
    }

    /// Makes the next `reads` object reads fail (memory storage only); 0 ends the fault.
    pub(crate) fn fail_reads(&self, reads: u64) {
        if let SimStorage::Memory(s) = self {
            s.fail_reads(reads);
        }
    }
}

impl Storage for SimStorage {
    fn object(&self, partition: PartitionId, key: &Key) -> Result<ReadOutcome, ReadError> {
        match self {
            SimStorage::Memory(s) => s.object(partition, key),
            SimStorage::Redb(s) => s.object(partition, key),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), CommitError> {
        match self {
            SimStorage::Memory(s) => s.write(batch),
            SimStorage::Redb(s) => s.write(batch),
        }
    }

    fn submit(&self, batch: WriteBatch, done: CommitCallback) {
        match self {
            SimStorage::Memory(s) => s.submit(batch, done),
            SimStorage::Redb(s) => s.submit(batch, done),
        }
    }

    fn partition_objects(
        &self,
        partition: PartitionId,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, ReadOutcome)>, ReadError> {
        match self {
            SimStorage::Memory(s) => s.partition_objects(partition, after, limit),
            SimStorage::Redb(s) => s.partition_objects(partition, after, limit),
        }
    }

    fn tree(&self, partition: PartitionId) -> Result<TictacTree, ReadError> {
        match self {
            SimStorage::Memory(s) => s.tree(partition),
            SimStorage::Redb(s) => s.tree(partition),
        }
    }

    fn segment_keys(
        &self,
        partition: PartitionId,
        segment: SegmentId,
    ) -> Result<Vec<(Key, ObjectDigest)>, ReadError> {
        match self {
            SimStorage::Memory(s) => s.segment_keys(partition, segment),
            SimStorage::Redb(s) => s.segment_keys(partition, segment),
        }
    }

    fn hints(
        &self,
        target: &NodeId,
        after: Option<(PartitionId, &Key)>,
        limit: usize,
    ) -> Result<Vec<HintEntry>, ReadError> {
        match self {
            SimStorage::Memory(s) => s.hints(target, after, limit),
            SimStorage::Redb(s) => s.hints(target, after, limit),
        }
    }

    fn hint(
        &self,
        target: &NodeId,
        partition: PartitionId,
        key: &Key,
    ) -> Result<Option<HintEntry>, ReadError> {
        match self {
            SimStorage::Memory(s) => s.hint(target, partition, key),
            SimStorage::Redb(s) => s.hint(target, partition, key),
        }
    }

    fn reaped(&self, partition: PartitionId, key: &Key) -> Result<Option<Reaped>, ReadError> {
        match self {
            SimStorage::Memory(s) => s.reaped(partition, key),
            SimStorage::Redb(s) => s.reaped(partition, key),
        }
    }

    fn reaped_records(
        &self,
        after: Option<(PartitionId, &Key)>,
        limit: usize,
    ) -> Result<Vec<(PartitionId, Key, Reaped)>, ReadError> {
        match self {
            SimStorage::Memory(s) => s.reaped_records(after, limit),
            SimStorage::Redb(s) => s.reaped_records(after, limit),
        }
    }

    fn reaped_count(&self) -> Result<u64, ReadError> {
        match self {
            SimStorage::Memory(s) => s.reaped_count(),
            SimStorage::Redb(s) => s.reaped_count(),
        }
    }

    fn stats(&self) -> StorageStats {
        match self {
            SimStorage::Memory(s) => s.stats(),
            SimStorage::Redb(s) => s.stats(),
        }
    }
}
