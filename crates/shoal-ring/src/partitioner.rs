use shoal_types::{PartitionCount, PartitionId};
use xxhash_rust::xxh3::xxh3_64;

/// The 64-bit hash every placement decision starts from: `xxh3_64(key)`.
///
/// The top log2(Q) bits name the key's partition ([`partition_for`]); the bits below them are
/// free for finer structure inside a partition (storage takes its hash-tree segment from them).
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The partition of `key` in a ring of `q` partitions: the top log2(Q) bits of
/// [`key_hash`]. With Q = 1 every key is in partition 0.
pub fn partition_for(key: &[u8], q: PartitionCount) -> PartitionId {
    partition_of_hash(key_hash(key), q)
}

/// The partition of an already computed [`key_hash`].
pub fn partition_of_hash(hash: u64, q: PartitionCount) -> PartitionId {
    let bits = q.bits();
    let index = if bits == 0 { 0 } else { hash >> (64 - bits) };
    // The shift leaves at most `bits` <= 16 significant bits, so the index is below Q.
    PartitionId::from_index_unchecked(index as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_the_top_bits_of_the_hash() {
        let q = PartitionCount::new(256).unwrap();
        let key = b"user:42";
        let expected = (xxh3_64(key) >> 56) as u32;
        assert_eq!(partition_for(key, q).index(), expected);
    }

    #[test]
    fn a_single_partition_holds_every_key() {
        let q = PartitionCount::new(1).unwrap();
        for key in [&b"a"[..], b"b", b"some longer key"] {
            assert_eq!(partition_for(key, q).index(), 0);
        }
    }

    #[test]
    fn keys_spread_over_all_partitions() {
        let q = PartitionCount::new(64).unwrap();
        let mut seen = [0u32; 64];
        for i in 0..64_000u32 {
            seen[partition_for(&i.to_be_bytes(), q).index() as usize] += 1;
        }
        // 1000 expected per partition; a hash this skewed would be broken, not unlucky.
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn doubling_q_splits_each_partition_in_two() {
        let q = PartitionCount::new(128).unwrap();
        let q2 = PartitionCount::new(256).unwrap();
        for i in 0..1000u32 {
            let key = i.to_le_bytes();
            assert_eq!(
                partition_for(&key, q2).index() / 2,
                partition_for(&key, q).index()
            );
        }
    }
}
