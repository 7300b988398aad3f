//! The on-disk layout: table definitions, table keys and record encodings. `docs/storage-format.md`
//! draws the same thing; keep the two in step.
//!
//! Every integer is big-endian, so byte order is numeric order and a partition (or a segment of
//! one) is a contiguous key range. Every record starts with a CRC32 over the record's table key
//! followed by the rest of the record, so a damaged value, a damaged key, and a value that ended
//! up under the wrong key are all detected.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};
use shoal_types::{Incarnation, Key, NodeId, PartitionCount, PartitionId};

use crate::digest::{decode_bounded, decode_object};
use crate::run::RunState;
use crate::{Hint, HintEntry, ObjectDigest, OpenError, ReadOutcome, SegmentId};

/// The newest storage format this build writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// (partition, segment, key) → object record.
pub(crate) const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
/// (partition, segment, key) → reaping record: the key's tombstone was reaped (see
/// `Write::Reap`). Laid out like a hint record, its object [`shoal_causality::Object::reaped`].
pub(crate) const REAPED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("reaped");
/// (target, partition, key) → hint record.
pub(crate) const HINTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("hints");
/// (partition, segment) → tree entry, written by versions that stored the tictac trees; the
/// trees now live in memory (see `trees.rs`) and an open deletes this table if it finds it.
pub(crate) const LEGACY_AAE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("aae");
/// name → setting record.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The meta entry naming the node, Q and incarnation the database belongs to.
pub(crate) const IDENTITY: &str = "identity";

const CRC_LEN: usize = 4;
const DIGEST_LEN: usize = 16;
/// `[crc 4][version 1][digest 16]` before the encoded object.
const OBJECT_HEADER: usize = CRC_LEN + 1 + DIGEST_LEN;
/// `[crc 4][version 1][digest 16][stored_at 8]` before the encoded object.
const HINT_HEADER: usize = OBJECT_HEADER + 8;
/// `[partition 4][segment 2]`.
const SEGMENT_PREFIX_LEN: usize = 6;

// ---- decoding stored bytes --------------------------------------------------------------------

/// What a read makes of `record`, the bytes stored under the objects-table key `table_key`:
/// [`ReadOutcome::Found`] with the object, or [`ReadOutcome::Corrupted`] when the checksum, the
/// format version or the object's encoding is wrong (never `NotFound`).
///
/// Reads decode object records with the same checks. This is public so that fuzzing and
/// inspection tools can feed any bytes to them; it never panics. Writes do not use it.
pub fn decode_object_record(table_key: &[u8], record: &[u8]) -> ReadOutcome {
    match check_object_record(table_key, record).and_then(|r| decode_object(r.encoded)) {
        Some(object) => ReadOutcome::Found(object),
        None => ReadOutcome::Corrupted,
    }
}

/// What a hint listing makes of `record`, the bytes stored under the hints-table key
/// `table_key`: `None` when the key itself is malformed (a listing skips such keys), otherwise
/// [`HintEntry::Found`] or, when the checksum, version or object is wrong,
/// [`HintEntry::Corrupted`]. Public for fuzzing and tools, like [`decode_object_record`].
pub fn decode_hint_record(table_key: &[u8], record: &[u8]) -> Option<HintEntry> {
    let len = usize::from(*table_key.first()?);
    let id = std::str::from_utf8(table_key.get(1..1 + len)?).ok()?;
    let target = NodeId::new(id).ok()?;
    let (partition, key) = parse_hint_key(table_key, 1 + len)?;
    Some(
        match hint_from_record(&target, partition, &key, table_key, record) {
            Some(hint) => HintEntry::Found(hint),
            None => HintEntry::Corrupted { partition, key },
        },
    )
}

/// What opening a database makes of its identity record: the node id, Q and incarnation it
/// belongs to, or the error the open reports, [`OpenError::UnsupportedFormat`] or
/// [`OpenError::IdentityCorrupted`]. Public for fuzzing and tools, like
/// [`decode_object_record`].
pub fn decode_identity_record(
    record: &[u8],
) -> Result<(NodeId, PartitionCount, Incarnation), OpenError> {
    identity_from_record(record).map(|id| (id.node, id.partition_count, id.incarnation))
}

/// The identity record checked, with the errors an open reports.
pub(crate) fn identity_from_record(record: &[u8]) -> Result<Identity, OpenError> {
    decode_identity(record).map_err(|problem| match problem {
        IdentityProblem::Newer(found) => OpenError::UnsupportedFormat {
            found,
            supported: FORMAT_VERSION,
        },
        IdentityProblem::Damaged => OpenError::IdentityCorrupted("checksum or decoding failed"),
    })
}

// ---- objects ----------------------------------------------------------------------------------

/// The objects-table key of `key`.
pub(crate) fn object_key(partition: PartitionId, segment: SegmentId, key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_PREFIX_LEN + key.len());
    out.extend_from_slice(&segment_prefix(partition, segment));
    out.extend_from_slice(key.as_bytes());
    out
}

/// `[partition][segment]`: the prefix of a segment's object keys, and its tree-entry key.
pub(crate) fn segment_prefix(partition: PartitionId, segment: SegmentId) -> [u8; 6] {
    let mut out = [0; 6];
    out[..4].copy_from_slice(&partition.index().to_be_bytes());
    out[4..].copy_from_slice(&segment.index().to_be_bytes());
    out
}

/// The half-open key range `[start, end)` of a partition's objects (or tree entries).
pub(crate) fn partition_range(partition: PartitionId) -> ([u8; 4], [u8; 4]) {
    let p = partition.index();
    // p < Q <= 65536, so p + 1 cannot overflow.
    (p.to_be_bytes(), (p + 1).to_be_bytes())
}

/// The half-open key range `[start, end)` of a segment's objects.
pub(crate) fn segment_range(partition: PartitionId, segment: SegmentId) -> ([u8; 6], [u8; 6]) {
    let start = segment_prefix(partition, segment);
    let mut end = start;
    // segment < 1024, so segment + 1 fits its two bytes.
    end[4..].copy_from_slice(&(segment.index() + 1).to_be_bytes());
    (start, end)
}

/// The key inside an objects-table key, if the table key is well formed.
pub(crate) fn key_of_object_key(table_key: &[u8]) -> Option<Key> {
    Key::new(table_key.get(SEGMENT_PREFIX_LEN..)?.to_vec()).ok()
}

/// A checked object record, borrowing the stored bytes.
#[derive(Debug)]
pub(crate) struct ObjectRecord<'a> {
    pub(crate) digest: ObjectDigest,
    pub(crate) encoded: &'a [u8],
}

/// `[crc][version][digest][object]`.
pub(crate) fn encode_object_record(table_key: &[u8], encoded: &[u8]) -> (Vec<u8>, ObjectDigest) {
    let digest = ObjectDigest::of_encoded(encoded);
    let mut out = Vec::with_capacity(OBJECT_HEADER + encoded.len());
    out.extend_from_slice(&[0; CRC_LEN]);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&digest.to_bytes());
    out.extend_from_slice(encoded);
    seal(table_key, &mut out);
    (out, digest)
}

/// The record, if its checksum matches and its version is known. The object itself is not
/// decoded here: a record is part of the tree exactly when this accepts it.
pub(crate) fn check_object_record<'a>(
    table_key: &[u8],
    bytes: &'a [u8],
) -> Option<ObjectRecord<'a>> {
    if bytes.len() < OBJECT_HEADER || !sealed(table_key, bytes) || bytes[CRC_LEN] != FORMAT_VERSION
    {
        return None;
    }
    Some(ObjectRecord {
        digest: digest_at(bytes, CRC_LEN + 1)?,
        encoded: &bytes[OBJECT_HEADER..],
    })
}

// ---- hints ------------------------------------------------------------------------------------

/// `[len(target) u8][target]`: the prefix of every hint key of `target`.
pub(crate) fn hint_target_prefix(target: &NodeId) -> Vec<u8> {
    let id = target.as_str().as_bytes();
    let mut out = Vec::with_capacity(1 + id.len() + 4 + 64);
    // Node ids are at most NodeId::MAX_LEN = 64 bytes, so the length fits in a byte.
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out
}

/// The hints-table key of (target, partition, key).
pub(crate) fn hint_key(target: &NodeId, partition: PartitionId, key: &Key) -> Vec<u8> {
    let mut out = hint_target_prefix(target);
    out.extend_from_slice(&partition.index().to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// The (partition, key) inside a hints-table key of a target whose prefix is `prefix_len` long.
pub(crate) fn parse_hint_key(table_key: &[u8], prefix_len: usize) -> Option<(PartitionId, Key)> {
    let rest = table_key.get(prefix_len..)?;
    let partition = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let key = Key::new(rest.get(4..)?.to_vec()).ok()?;
    Some((PartitionId::from_index_unchecked(partition), key))
}

/// A checked hint record, borrowing the stored bytes.
#[derive(Debug)]
pub(crate) struct HintRecord<'a> {
    pub(crate) digest: ObjectDigest,
    pub(crate) stored_at_unix_ms: u64,
    pub(crate) encoded: &'a [u8],
}

/// `[crc][version][digest][stored_at][object]`.
pub(crate) fn encode_hint_record(
    table_key: &[u8],
    encoded: &[u8],
    stored_at_unix_ms: u64,
) -> Vec<u8> {
    let digest = ObjectDigest::of_encoded(encoded);
    let mut out = Vec::with_capacity(HINT_HEADER + encoded.len());
    out.extend_from_slice(&[0; CRC_LEN]);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&digest.to_bytes());
    out.extend_from_slice(&stored_at_unix_ms.to_be_bytes());
    out.extend_from_slice(encoded);
    seal(table_key, &mut out);
    out
}

/// The hint record, if its checksum matches and its version is known.
pub(crate) fn check_hint_record<'a>(table_key: &[u8], bytes: &'a [u8]) -> Option<HintRecord<'a>> {
    if bytes.len() < HINT_HEADER || !sealed(table_key, bytes) || bytes[CRC_LEN] != FORMAT_VERSION {
        return None;
    }
    let at = OBJECT_HEADER;
    Some(HintRecord {
        digest: digest_at(bytes, CRC_LEN + 1)?,
        stored_at_unix_ms: u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?),
        encoded: &bytes[HINT_HEADER..],
    })
}

/// The hint stored in `record` under `table_key` for (target, partition, key), if its
/// checksum, version and object are sound.
pub(crate) fn hint_from_record(
    target: &NodeId,
    partition: PartitionId,
    key: &Key,
    table_key: &[u8],
    record: &[u8],
) -> Option<Hint> {
    let rec = check_hint_record(table_key, record)?;
    Some(Hint {
        target: target.clone(),
        partition,
        key: key.clone(),
        object: decode_object(rec.encoded)?,
        digest: rec.digest,
        stored_at_unix_ms: rec.stored_at_unix_ms,
    })
}

// ---- reaping records -------------------------------------------------------------------------

/// `[crc][version][digest][reaped_at][object with no siblings]`, as a hint record.
pub(crate) fn encode_reaped_record(table_key: &[u8], reaped: &crate::Reaped) -> Vec<u8> {
    let object = shoal_causality::Object::reaped(reaped.vv.clone());
    encode_hint_record(
        table_key,
        &crate::digest::encode_object(&object),
        reaped.reaped_at_unix_ms,
    )
}

/// The reaping record stored as `record` under `table_key`, if its checksum, version and
/// object are sound (and the object has no siblings).
pub(crate) fn reaped_from_record(table_key: &[u8], record: &[u8]) -> Option<crate::Reaped> {
    let rec = check_hint_record(table_key, record)?;
    let object = decode_object(rec.encoded)?;
    if !object.siblings().is_empty() {
        return None;
    }
    Some(crate::Reaped {
        vv: object.version_vector().clone(),
        reaped_at_unix_ms: rec.stored_at_unix_ms,
    })
}

// ---- keys -------------------------------------------------------------------------------------

/// The segment named by an objects-table key (it starts `[partition][segment]`).
pub(crate) fn segment_in_key(table_key: &[u8]) -> Option<SegmentId> {
    let bytes: [u8; 2] = table_key.get(4..SEGMENT_PREFIX_LEN)?.try_into().ok()?;
    SegmentId::new(u16::from_be_bytes(bytes))
}

/// The partition and segment named by an objects-table key, if they are valid for `q`.
pub(crate) fn partition_segment_in_key(
    table_key: &[u8],
    q: PartitionCount,
) -> Option<(PartitionId, SegmentId)> {
    let bytes: [u8; 4] = table_key.get(..4)?.try_into().ok()?;
    let partition = q.partition(u32::from_be_bytes(bytes)).ok()?;
    Some((partition, segment_in_key(table_key)?))
}

// ---- meta -------------------------------------------------------------------------------------

/// Who the database belongs to, and how its last run ended. Written when the data directory
/// is created, at every open (running, with the run's incarnation) and at a clean close.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) node: NodeId,
    pub(crate) partition_count: PartitionCount,
    pub(crate) incarnation: Incarnation,
    /// Absent in records written before it existed: those read as `Running` (not clean), so the
    /// next open takes a new incarnation.
    #[serde(default)]
    pub(crate) run: RunState,
}

/// Why the identity record could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IdentityProblem {
    /// Written by a newer format.
    Newer(u8),
    /// Checksum or decoding failed.
    Damaged,
}

/// `[crc][format][identity, rmp-serde]`.
pub(crate) fn encode_identity(identity: &Identity) -> Vec<u8> {
    let mut out = vec![0; CRC_LEN];
    out.push(FORMAT_VERSION);
    // Cannot fail: the writer is a Vec and Identity holds only strings and integers.
    #[allow(clippy::expect_used)]
    out.extend(rmp_serde::to_vec(identity).expect("an Identity always encodes"));
    seal(IDENTITY.as_bytes(), &mut out);
    out
}

/// The identity record, checked.
pub(crate) fn decode_identity(bytes: &[u8]) -> Result<Identity, IdentityProblem> {
    if bytes.len() < CRC_LEN + 1 || !sealed(IDENTITY.as_bytes(), bytes) {
        return Err(IdentityProblem::Damaged);
    }
    match bytes[CRC_LEN] {
        FORMAT_VERSION => decode_bounded(&bytes[CRC_LEN + 1..]).ok_or(IdentityProblem::Damaged),
        v if v > FORMAT_VERSION => Err(IdentityProblem::Newer(v)),
        _ => Err(IdentityProblem::Damaged),
    }
}

// ---- shared -----------------------------------------------------------------------------------

/// The first key after every key that starts with `prefix`, or `None` if there is none (the
/// prefix is all 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn crc(table_key: &[u8], rest: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(table_key);
    h.update(rest);
    h.finalize()
}

/// Fills the first four bytes of `record` with the CRC of the table key and the rest.
fn seal(table_key: &[u8], record: &mut [u8]) {
    let c = crc(table_key, &record[CRC_LEN..]);
    record[..CRC_LEN].copy_from_slice(&c.to_be_bytes());
}

/// Whether the record's CRC matches (the caller checked it is at least `CRC_LEN` long).
fn sealed(table_key: &[u8], record: &[u8]) -> bool {
    record[..CRC_LEN] == crc(table_key, &record[CRC_LEN..]).to_be_bytes()
}

fn digest_at(bytes: &[u8], at: usize) -> Option<ObjectDigest> {
    let d: [u8; 16] = bytes.get(at..at + DIGEST_LEN)?.try_into().ok()?;
    Some(ObjectDigest::from_bytes(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(i: u32) -> PartitionId {
        PartitionId::from_index_unchecked(i)
    }

    #[test]
    fn object_keys_sort_by_partition_then_segment_then_key() {
        let s = |i| SegmentId::new(i).unwrap();
        let k = |b: &str| Key::new(b.to_owned()).unwrap();
        let mut keys = [
            object_key(p(1), s(0), &k("a")),
            object_key(p(0), s(1), &k("a")),
            object_key(p(0), s(0), &k("b")),
            object_key(p(0), s(0), &k("ab")),
            object_key(p(0), s(0), &k("a")),
        ];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|t| key_of_object_key(t).unwrap()).collect();
        assert_eq!(decoded, vec![k("a"), k("ab"), k("b"), k("a"), k("a")]);
        let (start, end) = partition_range(p(0));
        assert!(
            keys[..4]
                .iter()
                .all(|t| t.as_slice() >= &start[..] && t.as_slice() < &end[..])
        );
        assert!(keys[4].as_slice() >= &end[..]);
    }

    #[test]
    fn records_detect_damage_and_misplacement() {
        let tk = object_key(p(3), SegmentId::new(9).unwrap(), &Key::new("k").unwrap());
        let (rec, digest) = encode_object_record(&tk, b"\x92\x90\x90");
        let ok = check_object_record(&tk, &rec).unwrap();
        assert_eq!(ok.digest, digest);
        assert_eq!(ok.encoded, b"\x92\x90\x90");
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x10;
            assert!(check_object_record(&tk, &bad).is_none(), "flip at {i}");
        }
        let other = object_key(p(3), SegmentId::new(9).unwrap(), &Key::new("j").unwrap());
        assert!(check_object_record(&other, &rec).is_none());
        assert!(check_object_record(&tk, &rec[..3]).is_none());

        let hk = hint_key(&NodeId::new("n2").unwrap(), p(3), &Key::new("k").unwrap());
        let h = encode_hint_record(&hk, b"\x92\x90\x90", 42);
        let ok = check_hint_record(&hk, &h).unwrap();
        assert_eq!(ok.stored_at_unix_ms, 42);
        assert_eq!(parse_hint_key(&hk, 3), Some((p(3), Key::new("k").unwrap())));

        let q = PartitionCount::new(8).unwrap();
        assert_eq!(segment_in_key(&tk), SegmentId::new(9));
        assert_eq!(
            partition_segment_in_key(&tk, q),
            Some((p(3), SegmentId::new(9).unwrap()))
        );
        let beyond_q = object_key(p(8), SegmentId::new(9).unwrap(), &Key::new("k").unwrap());
        assert_eq!(partition_segment_in_key(&beyond_q, q), None);
        assert_eq!(partition_segment_in_key(&tk[..5], q), None);
    }

    #[test]
    fn identity_round_trips_and_refuses_newer_formats() {
        let id = Identity {
            node: NodeId::new("n1").unwrap(),
            partition_count: PartitionCount::new(64).unwrap(),
            incarnation: Incarnation::new(99),
            run: RunState::Clean,
        };
        let mut bytes = encode_identity(&id);
        assert_eq!(decode_identity(&bytes), Ok(id));
        bytes[CRC_LEN] = FORMAT_VERSION + 1;
        seal(IDENTITY.as_bytes(), &mut bytes);
        assert_eq!(
            decode_identity(&bytes),
            Err(IdentityProblem::Newer(FORMAT_VERSION + 1))
        );
        assert_eq!(decode_identity(b"xx"), Err(IdentityProblem::Damaged));
    }

    #[test]
    fn the_public_decoders_read_what_storage_writes_and_refuse_the_rest() {
        use crate::digest::encode_object;
        let object = shoal_causality::Object::new();
        let tk = object_key(p(3), SegmentId::new(9).unwrap(), &Key::new("k").unwrap());
        let (rec, _) = encode_object_record(&tk, &encode_object(&object));
        assert_eq!(
            decode_object_record(&tk, &rec),
            ReadOutcome::Found(object.clone())
        );
        assert_eq!(
            decode_object_record(&tk, &rec[..10]),
            ReadOutcome::Corrupted
        );
        let (undecodable, _) = encode_object_record(&tk, b"\xc1");
        assert_eq!(
            decode_object_record(&tk, &undecodable),
            ReadOutcome::Corrupted
        );

        let target = NodeId::new("n2").unwrap();
        let hk = hint_key(&target, p(3), &Key::new("k").unwrap());
        let h = encode_hint_record(&hk, &encode_object(&object), 42);
        match decode_hint_record(&hk, &h) {
            Some(HintEntry::Found(hint)) => {
                assert_eq!((hint.target, hint.partition), (target, p(3)));
                assert_eq!((hint.object, hint.stored_at_unix_ms), (object, 42));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode_hint_record(&hk, &h[1..]),
            Some(HintEntry::Corrupted {
                partition: p(3),
                key: Key::new("k").unwrap()
            })
        );
        assert_eq!(decode_hint_record(&[9, b'n'], &h), None, "a malformed key");

        let id = Identity {
            node: NodeId::new("n1").unwrap(),
            partition_count: PartitionCount::new(64).unwrap(),
            incarnation: Incarnation::new(99),
            run: RunState::Running,
        };
        assert_eq!(
            decode_identity_record(&encode_identity(&id)).ok(),
            Some((id.node, id.partition_count, id.incarnation))
        );
        assert!(matches!(
            decode_identity_record(b"\0\0\0\0\x01"),
            Err(OpenError::IdentityCorrupted(_))
        ));
    }

    #[test]
    fn an_identity_written_before_the_run_state_reads_as_running() {
        let (node, q, inc) = (
            NodeId::new("n1").unwrap(),
            PartitionCount::new(64).unwrap(),
            Incarnation::new(99),
        );
        // The three-field record of format 1 before the run state was added.
        let mut bytes = vec![0; CRC_LEN];
        bytes.push(FORMAT_VERSION);
        bytes.extend(rmp_serde::to_vec(&(node.clone(), q, inc)).unwrap());
        seal(IDENTITY.as_bytes(), &mut bytes);
        assert_eq!(
            decode_identity(&bytes),
            Ok(Identity {
                node,
                partition_count: q,
                incarnation: inc,
                run: RunState::Running,
            })
        );
    }

    #[test]
    fn prefix_end_carries_past_0xff() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
