use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_types::{Key, PartitionCount};

use crate::ObjectDigest;

/// One of a partition's [`TictacTree::SEGMENTS`] key segments.
///
/// A key's segment is taken from the bits of `xxh3_64(key)` just below the partition bits, so
/// the keys of one partition spread evenly over its segments (see [`SegmentId::of`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct SegmentId(u16);

impl SegmentId {
    /// Segment 0.
    pub const FIRST: SegmentId = SegmentId(0);

    /// The segment `index`, if it is below [`TictacTree::SEGMENTS`].
    pub fn new(index: u16) -> Option<SegmentId> {
        (usize::from(index) < TictacTree::SEGMENTS).then_some(SegmentId(index))
    }

    /// The segment of `key` in a ring of `q` partitions.
    ///
    /// The ring's partitioner takes the partition from the top `log2(Q)` bits of
    /// `xxh3_64(key)`; the segment is the next [`TictacTree::SEGMENT_BITS`] bits.
    pub fn of(key: &Key, q: PartitionCount) -> SegmentId {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        // bits() <= 16, so the shift is in range; the result has SEGMENT_BITS bits.
        let below_partition = hash << q.bits();
        SegmentId((below_partition >> (64 - TictacTree::SEGMENT_BITS)) as u16)
    }

    /// Every segment, in order.
    pub fn all() -> impl Iterator<Item = SegmentId> {
        (0..TictacTree::SEGMENTS as u16).map(SegmentId)
    }

    /// The segment's index.
    pub const fn index(self) -> u16 {
        self.0
    }

    /// The branch this segment hangs under.
    pub const fn branch(self) -> usize {
        self.0 as usize / TictacTree::SEGMENTS_PER_BRANCH
    }
}

impl TryFrom<u16> for SegmentId {
    type Error = String;
    fn try_from(index: u16) -> Result<Self, String> {
        SegmentId::new(index).ok_or_else(|| format!("segment {index} out of range"))
    }
}

impl From<SegmentId> for u16 {
    fn from(s: SegmentId) -> u16 {
        s.0
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seg{}", self.0)
    }
}

/// A partition's two-level tictac hash tree (Riak 3's anti-entropy tree).
///
/// Each segment's hash is the XOR, over the keys in it, of `xxh3_128(key ‖ object digest)`;
/// each of the [`TictacTree::BRANCHES`] branches is the XOR of its 32 segments, and the root the
/// XOR of the branches. XOR is its own inverse, so a write moves the tree in O(1): XOR the old
/// entry out and the new one in. Two replicas hold the same data for a partition exactly when
/// their trees are equal (up to hash collisions).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TictacTree {
    segments: Vec<[u8; 16]>,
}

impl TictacTree {
    /// Segments per partition.
    pub const SEGMENTS: usize = 1 << Self::SEGMENT_BITS;
    /// Bits of the key hash that pick the segment.
    pub const SEGMENT_BITS: u32 = 10;
    /// Branches (the tree's middle level).
    pub const BRANCHES: usize = 32;
    /// Segments under each branch.
    pub const SEGMENTS_PER_BRANCH: usize = Self::SEGMENTS / Self::BRANCHES;

    /// The tree of an empty partition: every hash zero.
    pub fn empty() -> TictacTree {
        TictacTree {
            segments: vec![[0; 16]; Self::SEGMENTS],
        }
    }

    /// A tree from its segment hashes (received from a peer); `None` unless there are exactly
    /// [`TictacTree::SEGMENTS`] of them.
    pub fn from_segments(segments: Vec<[u8; 16]>) -> Option<TictacTree> {
        (segments.len() == Self::SEGMENTS).then_some(TictacTree { segments })
    }

    /// The tree of a set of keys with their object digests, built from scratch.
    pub fn build<'a>(
        q: PartitionCount,
        entries: impl IntoIterator<Item = (&'a Key, ObjectDigest)>,
    ) -> TictacTree {
        let mut tree = TictacTree::empty();
        for (key, digest) in entries {
            tree.toggle(SegmentId::of(key, q), key, digest);
        }
        tree
    }

    /// Adds the entry `(key, digest)` to `segment`, or removes it if it is there (XOR).
    pub fn toggle(&mut self, segment: SegmentId, key: &Key, digest: ObjectDigest) {
        xor_into(
            &mut self.segments[usize::from(segment.0)],
            &entry_hash(key, digest),
        );
    }

    /// Folds `hash` (a XOR of entry hashes) into one segment.
    pub(crate) fn fold_into_segment(&mut self, segment: SegmentId, hash: &[u8; 16]) {
        xor_into(&mut self.segments[usize::from(segment.0)], hash);
    }

    /// Replaces one segment's hash (recomputed from its records).
    pub(crate) fn set_segment(&mut self, segment: SegmentId, hash: [u8; 16]) {
        self.segments[usize::from(segment.0)] = hash;
    }

    /// The hash of one segment.
    pub fn segment(&self, segment: SegmentId) -> [u8; 16] {
        self.segments[usize::from(segment.0)]
    }

    /// Every segment hash, in segment order.
    pub fn segments(&self) -> &[[u8; 16]] {
        &self.segments
    }

    /// The hash of branch `branch` (below [`TictacTree::BRANCHES`]): the XOR of its segments.
    pub fn branch(&self, branch: usize) -> [u8; 16] {
        let start = branch * Self::SEGMENTS_PER_BRANCH;
        let mut out = [0; 16];
        for s in self
            .segments
            .iter()
            .skip(start)
            .take(Self::SEGMENTS_PER_BRANCH)
        {
            xor_into(&mut out, s);
        }
        out
    }

    /// Every branch hash, in order.
    pub fn branches(&self) -> Vec<[u8; 16]> {
        (0..Self::BRANCHES).map(|b| self.branch(b)).collect()
    }

    /// The root hash: the XOR of every segment.
    pub fn root(&self) -> [u8; 16] {
        let mut out = [0; 16];
        for s in &self.segments {
            xor_into(&mut out, s);
        }
        out
    }

    /// The segments whose hashes differ, found the way two replicas compare over the network:
    /// roots first, then the branches, then the segments of the branches that differ.
    ///
    /// Like the exchange it models, it trusts equal XORs: a difference is missed only if the
    /// differences of several segments cancel out, which for independent 128-bit hashes has
    /// probability about 2^-128.
    pub fn diff(&self, other: &TictacTree) -> Vec<SegmentId> {
        if self.root() == other.root() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for b in 0..Self::BRANCHES {
            if self.branch(b) == other.branch(b) {
                continue;
            }
            let start = b * Self::SEGMENTS_PER_BRANCH;
            for i in start..start + Self::SEGMENTS_PER_BRANCH {
                if self.segments[i] != other.segments[i] {
                    // i < SEGMENTS = 1024, so it fits in u16.
                    out.push(SegmentId(i as u16));
                }
            }
        }
        out
    }
}

impl Default for TictacTree {
    fn default() -> Self {
        TictacTree::empty()
    }
}

impl fmt::Debug for TictacTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nonzero = self.segments.iter().filter(|s| **s != [0; 16]).count();
        write!(
            f,
            "TictacTree(root {:02x?}…, {nonzero} non-empty segments)",
            &self.root()[..4]
        )
    }
}

/// One key's entry in its segment: `xxh3_128(key ‖ digest)`, big-endian.
pub(crate) fn entry_hash(key: &Key, digest: ObjectDigest) -> [u8; 16] {
    let mut buf = Vec::with_capacity(key.len() + 16);
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(&digest.to_bytes());
    xxhash_rust::xxh3::xxh3_128(&buf).to_be_bytes()
}

/// `acc ^= x`, bytewise.
pub(crate) fn xor_into(acc: &mut [u8; 16], x: &[u8; 16]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a ^= b;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn q(n: u32) -> PartitionCount {
        PartitionCount::new(n).unwrap()
    }

    #[test]
    fn segment_uses_the_bits_below_the_partition() {
        for n in [1, 2, 256, 65536] {
            for i in 0..200u32 {
                let key = Key::new(format!("key{i}")).unwrap();
                let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
                let seg = SegmentId::of(&key, q(n));
                let bits = q(n).bits();
                let expected = ((h << bits) >> 54) as u16;
                assert_eq!(seg.index(), expected);
                assert!(usize::from(seg.index()) < TictacTree::SEGMENTS);
            }
        }
    }

    #[test]
    fn toggling_twice_restores_the_tree() {
        let key = Key::new("k").unwrap();
        let d = ObjectDigest::from_bytes([7; 16]);
        let mut tree = TictacTree::empty();
        let s = SegmentId::of(&key, q(4));
        tree.toggle(s, &key, d);
        assert_ne!(tree, TictacTree::empty());
        assert_eq!(tree.diff(&TictacTree::empty()), vec![s]);
        tree.toggle(s, &key, d);
        assert_eq!(tree, TictacTree::empty());
    }

    proptest! {
        #[test]
        fn diff_finds_exactly_the_differing_segments(
            base in proptest::collection::vec(any::<[u8; 16]>(), TictacTree::SEGMENTS),
            changed in proptest::collection::btree_map(0u16..1024, any::<[u8; 16]>(), 0..40),
        ) {
            let a = TictacTree::from_segments(base.clone()).unwrap();
            let mut segs = base;
            let mut expected = BTreeSet::new();
            for (i, delta) in changed {
                if delta != [0; 16] {
                    xor_into(&mut segs[usize::from(i)], &delta);
                    expected.insert(SegmentId(i));
                }
            }
            let b = TictacTree::from_segments(segs).unwrap();
            let found: BTreeSet<SegmentId> = a.diff(&b).into_iter().collect();
            prop_assert_eq!(&found, &expected);
            let back: BTreeSet<SegmentId> = b.diff(&a).into_iter().collect();
            prop_assert_eq!(back, expected);
        }

        #[test]
        fn branches_and_root_are_xors_of_segments(
            segs in proptest::collection::vec(any::<[u8; 16]>(), TictacTree::SEGMENTS),
        ) {
            let t = TictacTree::from_segments(segs).unwrap();
            let mut root = [0; 16];
            for b in t.branches() {
                xor_into(&mut root, &b);
            }
            prop_assert_eq!(root, t.root());
        }
    }
}
