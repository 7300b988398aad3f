//! The tictac trees of a [`crate::RedbStorage`], kept in memory.
//!
//! They are built from the objects table when the database opens (every record that passes its
//! checksum counts, as it would in [`TictacTree::build`]) and moved by the commit thread after
//! each successful commit, so they describe committed data. They are not stored: a tree table
//! updated in every write transaction cost each write the copy-on-write of its own leaf and
//! branch pages, about 40 % of what a group commit wrote, and a tree is cheap to rebuild (one
//! scan of the objects table, which reads each record's stored digest without decoding it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable};
use shoal_types::{PartitionCount, PartitionId};

use crate::error::{During, EngineError};
use crate::record::{
    OBJECTS, check_object_record, key_of_object_key, partition_segment_in_key, segment_range,
};
use crate::tree::{entry_hash, xor_into};
use crate::{SegmentId, TictacTree};

/// Every partition's tree. Partitions without objects have none (the empty tree).
#[derive(Debug, Default)]
pub(crate) struct Trees {
    trees: RwLock<HashMap<PartitionId, TictacTree>>,
}

/// How one group commit moves the trees: hashes to fold into segments, and segments to
/// recompute from their records (which wins over folding for that segment).
#[derive(Debug, Default)]
pub(crate) struct TreeChanges {
    toggles: BTreeMap<(PartitionId, SegmentId), [u8; 16]>,
    recompute: BTreeSet<(PartitionId, SegmentId)>,
}

/// What the scan at open found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Built {
    /// Records counted in the trees.
    pub(crate) records: u64,
    /// Records left out because they fail their checksum or their key does not parse.
    pub(crate) corrupted: u64,
}

impl Trees {
    /// Builds every tree from the objects table.
    pub(crate) fn build(db: &Database, q: PartitionCount) -> Result<(Trees, Built), EngineError> {
        let txn = db.begin_read().during("building the trees")?;
        let objects = txn.open_table(OBJECTS).during("building the trees")?;
        let mut trees: HashMap<PartitionId, TictacTree> = HashMap::new();
        let mut built = Built::default();
        for entry in objects.iter().during("building the trees")? {
            let (k, v) = entry.during("building the trees")?;
            let tk = k.value();
            let parsed = key_of_object_key(tk).zip(partition_segment_in_key(tk, q));
            match (parsed, check_object_record(tk, v.value())) {
                (Some((key, (partition, segment))), Some(rec)) => {
                    trees
                        .entry(partition)
                        .or_default()
                        .toggle(segment, &key, rec.digest);
                    built.records += 1;
                }
                _ => built.corrupted += 1,
            }
        }
        let trees = Trees {
            trees: RwLock::new(trees),
        };
        Ok((trees, built))
    }

    /// Replaces every tree with `other`'s.
    #[cfg(test)]
    pub(crate) fn replace(&self, other: Trees) {
        let other = other
            .trees
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        *self.trees.write().unwrap_or_else(PoisonError::into_inner) = other;
    }

    /// A copy of `partition`'s tree.
    pub(crate) fn tree(&self, partition: PartitionId) -> TictacTree {
        self.trees
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&partition)
            .cloned()
            .unwrap_or_default()
    }

    /// Applies a committed group's changes; segments to recompute are read from `db` as it is
    /// now (the commit thread is the only writer, so that is the state after the group).
    pub(crate) fn apply(&self, db: &Database, changes: TreeChanges) -> Result<(), EngineError> {
        let mut recomputed = Vec::with_capacity(changes.recompute.len());
        if !changes.recompute.is_empty() {
            let txn = db.begin_read().during("recomputing a segment")?;
            let objects = txn.open_table(OBJECTS).during("recomputing a segment")?;
            for &(partition, segment) in &changes.recompute {
                let hash =
                    segment_hash(&objects, partition, segment).during("recomputing a segment")?;
                recomputed.push((partition, segment, hash));
            }
        }
        let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
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
        Ok(())
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
