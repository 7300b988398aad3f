//! Behaviour both implementations share (checked against a `BTreeMap` model, with the database
//! closed and reopened between steps), and what only `RedbStorage` has: damaged records, the
//! identity record, and group commit. Power loss and I/O errors are in [`crash`].

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use redb::backends::InMemoryBackend;
use redb::{ReadableDatabase, StorageBackend, TableDefinition};
use shoal_causality::{Actor, CausalContext, Object, Sibling, VersionVector};
use shoal_types::{Incarnation, Key, NodeId, PartitionCount, PartitionId};
use tempfile::TempDir;

use crate::crash::CrashDisk;
use crate::digest::encode_object;
use crate::record::{
    HINTS, LEGACY_AAE, OBJECTS, encode_object_record, hint_key, object_key, segment_prefix,
};
use crate::trees::{BuildHold, Trees, segment_hash};
use crate::*;

mod crash;

const Q: u32 = 4;
const KEYS: usize = 6;
const TARGETS: [&str; 2] = ["t1", "t2"];

fn q() -> PartitionCount {
    PartitionCount::new(Q).unwrap()
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn key(i: usize) -> Key {
    Key::new(format!("k{i}")).unwrap()
}

fn part(i: u32) -> PartitionId {
    q().partition(i).unwrap()
}

fn actor(i: usize) -> Actor {
    Actor::new(node(&format!("a{i}")), Incarnation::new(i as u64 + 1))
}

/// An object with one value written by actor `a`.
fn value(a: usize, v: &str) -> Object {
    Object::new()
        .update(
            &CausalContext::empty(),
            Sibling::Value(Bytes::copy_from_slice(v.as_bytes())),
            &actor(a),
            64,
        )
        .unwrap()
}

fn put(partition: PartitionId, key: Key, object: Object) -> WriteBatch {
    Write::Object {
        partition,
        key,
        object,
    }
    .into()
}

/// Waits for `cond`, failing the test after a deadline.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

// ---- the model --------------------------------------------------------------------------------

/// What storage should hold: plain maps, with every rule spelled out once more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    objects: BTreeMap<(PartitionId, SegmentId, Key), Object>,
    hints: BTreeMap<(NodeId, PartitionId, Key), (Object, u64)>,
    /// Reaping records: the reaped tombstone's vector and when.
    reaped: BTreeMap<(PartitionId, SegmentId, Key), (VersionVector, u64)>,
}

impl Model {
    fn apply(&mut self, write: &Write) {
        match write.clone() {
            Write::Object {
                partition,
                key,
                object,
            } => {
                self.store((partition, SegmentId::of(&key, q()), key), object);
            }
            Write::MergeObject {
                partition,
                key,
                object,
            } => {
                let slot = (partition, SegmentId::of(&key, q()), key);
                let merged = match self.objects.get(&slot) {
                    Some(old) => old.merge(&object),
                    None => object,
                };
                self.store(slot, merged);
            }
            Write::Reap {
                partition,
                key,
                vv,
                reaped_at_unix_ms,
            } => {
                let slot = (partition, SegmentId::of(&key, q()), key);
                let no_newer = self.objects.get(&slot).is_none_or(|o| {
                    o.siblings().iter().all(|(_, s)| *s == Sibling::Tombstone)
                        && vv.descends(o.version_vector())
                });
                if no_newer {
                    self.objects.remove(&slot);
                    let record = match self.reaped.get(&slot) {
                        Some((held, at)) => (held.join(&vv), (*at).max(reaped_at_unix_ms)),
                        None => (vv, reaped_at_unix_ms),
                    };
                    self.reaped.insert(slot, record);
                }
            }
            Write::ForgetReaped {
                partition,
                key,
                reaped_before_unix_ms,
            } => {
                let slot = (partition, SegmentId::of(&key, q()), key);
                if self
                    .reaped
                    .get(&slot)
                    .is_some_and(|(_, at)| *at < reaped_before_unix_ms)
                {
                    self.reaped.remove(&slot);
                }
            }
            Write::RemoveObject { partition, key } => {
                self.objects
                    .remove(&(partition, SegmentId::of(&key, q()), key));
            }
            Write::Hint {
                target,
                partition,
                key,
                object,
                stored_at_unix_ms,
            } => {
                let slot = (target, partition, key);
                let new = match self.hints.get(&slot) {
                    Some((old, at)) => (old.merge(&object), (*at).max(stored_at_unix_ms)),
                    None => (object, stored_at_unix_ms),
                };
                self.hints.insert(slot, new);
            }
            Write::RemoveHint {
                target,
                partition,
                key,
                if_digest,
            } => {
                let slot = (target, partition, key);
                let remove = match (self.hints.get(&slot), if_digest) {
                    (Some((o, _)), Some(d)) => ObjectDigest::of(o) == d,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if remove {
                    self.hints.remove(&slot);
                }
            }
        }
    }

    /// Stores `object` in `slot`; over a reaping record, only what survives a merge into the
    /// reaped tombstone's vector is stored (and the record goes), else the record takes in the
    /// object's vector.
    fn store(&mut self, slot: (PartitionId, SegmentId, Key), object: Object) {
        if let Some((vv, at)) = self.reaped.get(&slot).cloned() {
            let merged = Object::reaped(vv).merge(&object);
            if merged.siblings().is_empty() {
                self.reaped
                    .insert(slot, (merged.version_vector().clone(), at));
                return;
            }
            self.reaped.remove(&slot);
            self.objects.insert(slot, merged);
            return;
        }
        self.objects.insert(slot, object);
    }

    fn object(&self, partition: PartitionId, key: &Key) -> ReadOutcome {
        let slot = (partition, SegmentId::of(key, q()), key.clone());
        match (self.objects.get(&slot), self.reaped.get(&slot)) {
            (Some(o), _) => ReadOutcome::Found(o.clone()),
            (None, Some((vv, _))) => ReadOutcome::Found(Object::reaped(vv.clone())),
            (None, None) => ReadOutcome::NotFound,
        }
    }

    fn reaped(&self) -> Vec<(PartitionId, Key, Reaped)> {
        self.reaped
            .iter()
            .map(|((p, _, k), (vv, at))| {
                let record = Reaped {
                    vv: vv.clone(),
                    reaped_at_unix_ms: *at,
                };
                (*p, k.clone(), record)
            })
            .collect()
    }

    fn partition(&self, partition: PartitionId) -> Vec<(Key, ReadOutcome)> {
        self.objects
            .iter()
            .filter(|((p, _, _), _)| *p == partition)
            .map(|((_, _, k), o)| (k.clone(), ReadOutcome::Found(o.clone())))
            .collect()
    }

    fn segment_keys(&self, partition: PartitionId, segment: SegmentId) -> Vec<(Key, ObjectDigest)> {
        self.objects
            .iter()
            .filter(|((p, s, _), _)| (*p, *s) == (partition, segment))
            .map(|((_, _, k), o)| (k.clone(), ObjectDigest::of(o)))
            .collect()
    }

    fn hints(&self, target: &NodeId) -> Vec<HintEntry> {
        self.hints
            .iter()
            .filter(|((t, _, _), _)| t == target)
            .map(|((t, p, k), (o, at))| {
                HintEntry::Found(Hint {
                    target: t.clone(),
                    partition: *p,
                    key: k.clone(),
                    object: o.clone(),
                    digest: ObjectDigest::of(o),
                    stored_at_unix_ms: *at,
                })
            })
            .collect()
    }

    /// The tree built from scratch.
    fn tree(&self, partition: PartitionId) -> TictacTree {
        let entries: Vec<(&Key, ObjectDigest)> = self
            .objects
            .iter()
            .filter(|((p, _, _), _)| *p == partition)
            .map(|((_, _, k), o)| (k, ObjectDigest::of(o)))
            .collect();
        TictacTree::build(q(), entries)
    }
}

// ---- harnesses --------------------------------------------------------------------------------

/// A storage under test, which may be closed and reopened.
trait Harness {
    fn storage(&self) -> &dyn Storage;
    fn reopen(&mut self);
}

struct InMemory(MemoryStorage);

impl Harness for InMemory {
    fn storage(&self) -> &dyn Storage {
        &self.0
    }
    fn reopen(&mut self) {}
}

/// A redb database in memory: it cannot be reopened.
struct RedbInMemory(RedbStorage);

impl Harness for RedbInMemory {
    fn storage(&self) -> &dyn Storage {
        &self.0
    }
    fn reopen(&mut self) {}
}

/// A redb database in a temporary directory.
struct OnDisk {
    dir: TempDir,
    storage: Option<RedbStorage>,
}

impl OnDisk {
    const INCARNATION: Incarnation = Incarnation::new(0x5eed);

    fn new() -> OnDisk {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) =
            RedbStorage::open(dir.path(), &node("n1"), q(), OnDisk::INCARNATION).unwrap();
        OnDisk {
            dir,
            storage: Some(storage),
        }
    }
}

impl Harness for OnDisk {
    fn storage(&self) -> &dyn Storage {
        self.storage.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        self.storage.take().unwrap().close_clean().unwrap();
        let (storage, incarnation) =
            RedbStorage::open(self.dir.path(), &node("n1"), q(), Incarnation::new(1)).unwrap();
        wait_for_trees(&storage);
        assert_eq!(
            incarnation,
            OnDisk::INCARNATION,
            "kept across a clean close"
        );
        self.storage = Some(storage);
    }
}

// ---- generated operations ---------------------------------------------------------------------

/// Updates applied to an empty object: (actor, value byte (0 = tombstone), with the context of
/// what came before).
type ObjectSpec = Vec<(usize, u8, bool)>;

#[derive(Clone, Debug)]
enum WriteSpec {
    Object(u32, usize, ObjectSpec),
    Merge(u32, usize, ObjectSpec),
    Remove(u32, usize),
    Hint(usize, u32, usize, ObjectSpec, u64),
    /// Mode 0: unconditional; 1: with the current digest; 2: with a stale digest.
    RemoveHint(usize, u32, usize, u8),
    /// Reap with the vector of what is stored (`None`), or of a built object.
    Reap(u32, usize, Option<ObjectSpec>, u64),
    ForgetReaped(u32, usize, u64),
}

#[derive(Clone, Debug)]
enum Op {
    Write(Vec<WriteSpec>),
    Read(u32, usize),
    List(u32, usize),
    Hints(usize, usize),
    Tree(u32),
    Reopen,
}

fn build(spec: &ObjectSpec) -> Object {
    let mut o = Object::new();
    for (a, v, with_context) in spec {
        let ctx = if *with_context {
            o.context()
        } else {
            CausalContext::empty()
        };
        let sibling = match v {
            0 => Sibling::Tombstone,
            v => Sibling::Value(Bytes::from(vec![*v; usize::from(*v) * 7])),
        };
        o = o.update(&ctx, sibling, &actor(*a), 64).unwrap();
    }
    o
}

impl WriteSpec {
    /// The write this spec stands for, given what the model holds now.
    fn to_write(&self, model: &Model) -> Write {
        match self {
            WriteSpec::Object(p, k, o) => Write::Object {
                partition: part(*p),
                key: key(*k),
                object: build(o),
            },
            WriteSpec::Merge(p, k, o) => Write::MergeObject {
                partition: part(*p),
                key: key(*k),
                object: build(o),
            },
            WriteSpec::Remove(p, k) => Write::RemoveObject {
                partition: part(*p),
                key: key(*k),
            },
            WriteSpec::Hint(t, p, k, o, at) => Write::Hint {
                target: node(TARGETS[*t]),
                partition: part(*p),
                key: key(*k),
                object: build(o),
                stored_at_unix_ms: *at,
            },
            WriteSpec::RemoveHint(t, p, k, mode) => {
                let slot = (node(TARGETS[*t]), part(*p), key(*k));
                let current = model.hints.get(&slot).map(|(o, _)| ObjectDigest::of(o));
                Write::RemoveHint {
                    target: slot.0,
                    partition: slot.1,
                    key: slot.2,
                    if_digest: match mode {
                        0 => None,
                        1 => Some(current.unwrap_or(ObjectDigest::from_bytes([1; 16]))),
                        _ => Some(ObjectDigest::from_bytes([2; 16])),
                    },
                }
            }
            WriteSpec::Reap(p, k, spec, at) => {
                let vv = match spec {
                    Some(o) => build(o).version_vector().clone(),
                    None => match model.object(part(*p), &key(*k)) {
                        ReadOutcome::Found(o) => o.version_vector().clone(),
                        _ => VersionVector::new(),
                    },
                };
                Write::Reap {
                    partition: part(*p),
                    key: key(*k),
                    vv,
                    reaped_at_unix_ms: *at,
                }
            }
            WriteSpec::ForgetReaped(p, k, before) => Write::ForgetReaped {
                partition: part(*p),
                key: key(*k),
                reaped_before_unix_ms: *before,
            },
        }
    }
}

fn object_spec() -> impl Strategy<Value = ObjectSpec> {
    proptest::collection::vec((0..3usize, 0..4u8, any::<bool>()), 1..4)
}

fn write_spec() -> impl Strategy<Value = WriteSpec> {
    let p = 0..Q;
    let k = 0..KEYS;
    let t = 0..TARGETS.len();
    prop_oneof![
        3 => (p.clone(), k.clone(), object_spec()).prop_map(|(p, k, o)| WriteSpec::Object(p, k, o)),
        3 => (p.clone(), k.clone(), object_spec()).prop_map(|(p, k, o)| WriteSpec::Merge(p, k, o)),
        1 => (p.clone(), k.clone()).prop_map(|(p, k)| WriteSpec::Remove(p, k)),
        2 => (t.clone(), p.clone(), k.clone(), object_spec(), 0..1000u64)
            .prop_map(|(t, p, k, o, at)| WriteSpec::Hint(t, p, k, o, at)),
        1 => (t, p.clone(), k.clone(), 0..3u8).prop_map(|(t, p, k, m)| WriteSpec::RemoveHint(t, p, k, m)),
        2 => (p.clone(), k.clone(), proptest::option::of(object_spec()), 0..1000u64)
            .prop_map(|(p, k, o, at)| WriteSpec::Reap(p, k, o, at)),
        1 => (p, k, 0..1000u64).prop_map(|(p, k, b)| WriteSpec::ForgetReaped(p, k, b)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(write_spec(), 0..4).prop_map(Op::Write),
        2 => (0..Q, 0..KEYS).prop_map(|(p, k)| Op::Read(p, k)),
        1 => (0..Q, 1..5usize).prop_map(|(p, n)| Op::List(p, n)),
        1 => (0..TARGETS.len(), 1..4usize).prop_map(|(t, n)| Op::Hints(t, n)),
        1 => (0..Q).prop_map(Op::Tree),
        1 => Just(Op::Reopen),
    ]
}

/// A partition's objects, read a page of `page` at a time.
fn list_all(s: &dyn Storage, p: PartitionId, page: usize) -> Vec<(Key, ReadOutcome)> {
    let mut out: Vec<(Key, ReadOutcome)> = Vec::new();
    loop {
        let after = out.last().map(|(k, _)| k.clone());
        let next = s.partition_objects(p, after.as_ref(), page).unwrap();
        assert!(next.len() <= page);
        if next.is_empty() {
            return out;
        }
        out.extend(next);
    }
}

/// A target's hints, read a page of `page` at a time.
fn hints_all(s: &dyn Storage, target: &NodeId, page: usize) -> Vec<HintEntry> {
    let mut out: Vec<HintEntry> = Vec::new();
    loop {
        let after = out.last().map(|h| match h {
            HintEntry::Found(h) => (h.partition, h.key.clone()),
            HintEntry::Corrupted { partition, key } => (*partition, key.clone()),
        });
        let next = s
            .hints(target, after.as_ref().map(|(p, k)| (*p, k)), page)
            .unwrap();
        assert!(next.len() <= page);
        if next.is_empty() {
            return out;
        }
        out.extend(next);
    }
}

/// Every reaping record, read a page of `page` at a time.
fn reaped_all(s: &dyn Storage, page: usize) -> Vec<(PartitionId, Key, Reaped)> {
    let mut out: Vec<(PartitionId, Key, Reaped)> = Vec::new();
    loop {
        let after = out.last().map(|(p, k, _)| (*p, k.clone()));
        let next = s
            .reaped_records(after.as_ref().map(|(p, k)| (*p, k)), page)
            .unwrap();
        assert!(next.len() <= page);
        if next.is_empty() {
            return out;
        }
        out.extend(next);
    }
}

fn check_partition(s: &dyn Storage, model: &Model, p: PartitionId) -> Result<(), TestCaseError> {
    let tree = s.tree(p).unwrap();
    prop_assert_eq!(&tree, &model.tree(p), "tree of {:?}", p);
    for segment in SegmentId::all() {
        let expected = model.segment_keys(p, segment);
        if !expected.is_empty() || tree.segment(segment) != [0; 16] {
            prop_assert_eq!(s.segment_keys(p, segment).unwrap(), expected);
        }
    }
    Ok(())
}

/// Runs `ops` against storage and the model, comparing every read.
fn run_model(h: &mut dyn Harness, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Write(specs) => {
                let mut batch = WriteBatch::new();
                for spec in specs {
                    let write = spec.to_write(&model);
                    model.apply(&write);
                    batch.push(write);
                }
                h.storage().write(batch).unwrap();
            }
            Op::Read(p, k) => {
                prop_assert_eq!(
                    h.storage().object(part(*p), &key(*k)).unwrap(),
                    model.object(part(*p), &key(*k))
                );
                let slot = (part(*p), SegmentId::of(&key(*k), q()), key(*k));
                let expected = model.reaped.get(&slot).map(|(vv, at)| Reaped {
                    vv: vv.clone(),
                    reaped_at_unix_ms: *at,
                });
                prop_assert_eq!(h.storage().reaped(part(*p), &key(*k)).unwrap(), expected);
            }
            Op::List(p, page) => {
                prop_assert_eq!(
                    list_all(h.storage(), part(*p), *page),
                    model.partition(part(*p))
                );
            }
            Op::Hints(t, page) => {
                let target = node(TARGETS[*t]);
                let expected = model.hints(&target);
                prop_assert_eq!(hints_all(h.storage(), &target, *page), expected.clone());
                // Each hint is found by a point lookup too, and a key with none is `None`.
                for entry in expected {
                    let HintEntry::Found(hint) = &entry else {
                        continue;
                    };
                    let found = h
                        .storage()
                        .hint(&target, hint.partition, &hint.key)
                        .unwrap();
                    prop_assert_eq!(found, Some(entry.clone()));
                }
                let absent = h.storage().hint(&target, part(0), &key(999)).unwrap();
                prop_assert_eq!(absent, None);
            }
            Op::Tree(p) => check_partition(h.storage(), &model, part(*p))?,
            Op::Reopen => h.reopen(),
        }
    }
    h.reopen();
    for p in q().partitions() {
        prop_assert_eq!(list_all(h.storage(), p, 3), model.partition(p));
        check_partition(h.storage(), &model, p)?;
    }
    for t in TARGETS {
        prop_assert_eq!(hints_all(h.storage(), &node(t), 2), model.hints(&node(t)));
    }
    prop_assert_eq!(reaped_all(h.storage(), 2), model.reaped());
    prop_assert_eq!(
        h.storage().reaped_count().unwrap(),
        model.reaped.len() as u64
    );
    prop_assert_eq!(h.storage().stats().corrupt_objects, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn redb_on_disk_matches_the_model_across_reopens(ops in proptest::collection::vec(op(), 1..40)) {
        run_model(&mut OnDisk::new(), &ops)?;
    }

    #[test]
    fn redb_in_memory_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let (s, _) = RedbStorage::open_in_memory(&node("n1"), q(), Incarnation::new(1)).unwrap();
        run_model(&mut RedbInMemory(s), &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn memory_storage_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_model(&mut InMemory(MemoryStorage::new(q())), &ops)?;
    }
}

// ---- behaviour both share ---------------------------------------------------------------------

/// Many threads write and submit at once: every batch is acknowledged exactly once, and every
/// acknowledged write is readable afterwards.
fn concurrent_writers_are_each_acknowledged_once(s: Arc<dyn Storage>) {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    let calls: Arc<Vec<AtomicUsize>> = Arc::new(
        (0..THREADS * PER_THREAD)
            .map(|_| AtomicUsize::new(0))
            .collect(),
    );
    let before = s.stats();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = Arc::clone(&s);
            let calls = Arc::clone(&calls);
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let id = t * PER_THREAD + i;
                    let batch = put(part((id % 4) as u32), key(id), value(t, &format!("v{id}")));
                    if t % 2 == 0 {
                        s.write(batch).unwrap();
                        calls[id].fetch_add(1, Ordering::SeqCst);
                    } else {
                        let (tx, rx) = mpsc::channel();
                        let calls = Arc::clone(&calls);
                        s.submit(
                            batch,
                            Box::new(move |r| {
                                calls[id].fetch_add(1, Ordering::SeqCst);
                                tx.send(r).unwrap();
                            }),
                        );
                        rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for (id, c) in calls.iter().enumerate() {
        assert_eq!(c.load(Ordering::SeqCst), 1, "batch {id}");
        let got = s.object(part((id % 4) as u32), &key(id)).unwrap();
        assert_eq!(
            got,
            ReadOutcome::Found(value(id / PER_THREAD, &format!("v{id}")))
        );
    }
    let after = s.stats();
    assert_eq!(
        after.batches - before.batches,
        (THREADS * PER_THREAD) as u64
    );
    assert_eq!(after.writes - before.writes, (THREADS * PER_THREAD) as u64);
    assert!(after.commits - before.commits <= (THREADS * PER_THREAD) as u64);
    assert_eq!(after.queued_batches, 0);
}

#[test]
fn memory_concurrent_writers_are_each_acknowledged_once() {
    concurrent_writers_are_each_acknowledged_once(Arc::new(MemoryStorage::new(q())));
}

#[test]
fn redb_concurrent_writers_are_each_acknowledged_once() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = RedbStorage::open(dir.path(), &node("n1"), q(), Incarnation::new(3)).unwrap();
    concurrent_writers_are_each_acknowledged_once(Arc::new(s));
}

fn writes_outside_the_ring_are_refused(s: &dyn Storage) {
    let outside = PartitionId::from_index_unchecked(Q);
    let mut batch = put(part(0), key(1), value(0, "ok"));
    batch.push(Write::RemoveObject {
        partition: outside,
        key: key(1),
    });
    assert!(matches!(
        s.write(batch),
        Err(CommitError::PartitionOutOfRange { partition, count })
            if partition == outside && count == q()
    ));
    assert_eq!(s.object(part(0), &key(1)).unwrap(), ReadOutcome::NotFound);
}

#[test]
fn both_refuse_writes_outside_the_ring() {
    writes_outside_the_ring_are_refused(&MemoryStorage::new(q()));
    let (s, _) = RedbStorage::open_in_memory(&node("n1"), q(), Incarnation::new(1)).unwrap();
    writes_outside_the_ring_are_refused(&s);
}

// ---- damaged records --------------------------------------------------------------------------

type RawTable = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn raw_get(s: &RedbStorage, table: RawTable, tk: &[u8]) -> Option<Vec<u8>> {
    let txn = s.database().begin_read().unwrap();
    let t = txn.open_table(table).unwrap();
    t.get(tk).unwrap().map(|g| g.value().to_vec())
}

fn raw_put(s: &RedbStorage, table: RawTable, tk: &[u8], bytes: &[u8]) {
    let txn = s.database().begin_write().unwrap();
    txn.open_table(table).unwrap().insert(tk, bytes).unwrap();
    txn.commit().unwrap();
}

/// Flips one byte of the record stored under `tk`.
fn flip_byte(s: &RedbStorage, table: RawTable, tk: &[u8], at: usize) {
    let mut bytes = raw_get(s, table, tk).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x40;
    raw_put(s, table, tk, &bytes);
}

/// The tree recomputed from the stored records.
fn rebuilt_tree(s: &RedbStorage, p: PartitionId) -> TictacTree {
    let txn = s.database().begin_read().unwrap();
    let objects = txn.open_table(OBJECTS).unwrap();
    let segments = SegmentId::all()
        .map(|seg| segment_hash(&objects, p, seg).unwrap())
        .collect();
    TictacTree::from_segments(segments).unwrap()
}

/// Waits (with a bound) until the trees are built after an open.
fn wait_for_trees(s: &RedbStorage) {
    assert_eq!(
        s.wait_for_trees(Duration::from_secs(20)),
        TreesStatus::Ready,
        "the trees were built"
    );
}

/// Waits until every queued job (such as a segment rebuild) is committed.
fn flush(s: &RedbStorage) {
    s.write(WriteBatch::new()).unwrap();
}

fn object_table_key(p: PartitionId, k: &Key) -> Vec<u8> {
    object_key(p, SegmentId::of(k, q()), k)
}

#[test]
fn a_damaged_object_is_reported_left_out_of_the_tree_and_overwritable() {
    let (s, _) = RedbStorage::open_in_memory(&node("n1"), q(), Incarnation::new(1)).unwrap();
    let p = part(1);
    let mut model = Model::default();
    for i in 0..20 {
        let w = Write::Object {
            partition: p,
            key: key(i),
            object: value(0, &format!("v{i}")),
        };
        model.apply(&w);
        s.write(w.into()).unwrap();
    }
    assert_eq!(s.tree(p).unwrap(), rebuilt_tree(&s, p));

    // Damage k5's record in the middle of the object bytes.
    let damaged = key(5);
    let tk = object_table_key(p, &damaged);
    flip_byte(&s, OBJECTS, &tk, 30);
    // Counted each time the damaged record is met: by this read, the listing, the segment
    // listing, and the write that replaces it.
    assert_eq!(s.object(p, &damaged).unwrap(), ReadOutcome::Corrupted);
    assert_eq!(s.stats().corrupt_objects, 1);

    let listed = list_all(&s, p, 7);
    assert_eq!(listed.len(), 20);
    for (k, outcome) in &listed {
        if *k == damaged {
            assert_eq!(*outcome, ReadOutcome::Corrupted);
        } else {
            assert_eq!(*outcome, model.object(p, k));
        }
    }
    let segment = SegmentId::of(&damaged, q());
    assert!(
        s.segment_keys(p, segment)
            .unwrap()
            .iter()
            .all(|(k, _)| *k != damaged)
    );
    assert_eq!(s.stats().corrupt_objects, 3);

    // The read queued a rebuild of k5's segment: the tree now leaves k5 out, so anti-entropy
    // sees this replica as missing it.
    flush(&s);
    model.objects.remove(&(p, segment, damaged.clone()));
    assert_eq!(s.tree(p).unwrap(), rebuilt_tree(&s, p));
    assert_eq!(s.tree(p).unwrap(), model.tree(p));
    assert!(s.stats().segment_rebuilds >= 1);

    // A repair (a merge from a peer) replaces the damaged record.
    let repaired = Write::MergeObject {
        partition: p,
        key: damaged.clone(),
        object: value(1, "repaired"),
    };
    model.apply(&repaired);
    s.write(repaired.into()).unwrap();
    assert_eq!(s.object(p, &damaged).unwrap(), model.object(p, &damaged));
    assert_eq!(s.stats().corrupt_objects, 4);
    assert_eq!(s.tree(p).unwrap(), rebuilt_tree(&s, p));
    assert_eq!(s.tree(p).unwrap(), model.tree(p));

    // Damage another record and overwrite it without reading it first: the write notices and
    // rebuilds the segment itself.
    let other = key(6);
    flip_byte(&s, OBJECTS, &object_table_key(p, &other), 0);
    let overwrite = Write::Object {
        partition: p,
        key: other.clone(),
        object: value(2, "new"),
    };
    model.apply(&overwrite);
    s.write(overwrite.into()).unwrap();
    assert_eq!(s.object(p, &other).unwrap(), model.object(p, &other));
    assert_eq!(s.tree(p).unwrap(), model.tree(p));
    assert_eq!(s.stats().corrupt_objects, 5);

    // And a damaged record that is removed.
    let gone = key(7);
    flip_byte(&s, OBJECTS, &object_table_key(p, &gone), 10);
    let remove = Write::RemoveObject {
        partition: p,
        key: gone.clone(),
    };
    model.apply(&remove);
    s.write(remove.into()).unwrap();
    assert_eq!(s.object(p, &gone).unwrap(), ReadOutcome::NotFound);
    assert_eq!(s.tree(p).unwrap(), model.tree(p));
    assert_eq!(s.tree(p).unwrap(), rebuilt_tree(&s, p));
}

#[test]
fn garbage_and_undecodable_records_read_as_corrupted() {
    let (s, _) = RedbStorage::open_in_memory(&node("n1"), q(), Incarnation::new(1)).unwrap();
    let p = part(2);
    // Too short to hold a header.
    raw_put(&s, OBJECTS, &object_table_key(p, &key(1)), b"\x01\x02\x03");
    assert_eq!(s.object(p, &key(1)).unwrap(), ReadOutcome::Corrupted);
    // A well-sealed record whose object bytes do not decode.
    let tk = object_table_key(p, &key(2));
    let (record, _) = encode_object_record(&tk, b"\xc1 not an object");
    raw_put(&s, OBJECTS, &tk, &record);
    // Only storage's own writes produce well-sealed records, and those are in the tree: count
    // this one in, as an open would.
    s.rebuild_trees();
    assert_eq!(s.tree(p).unwrap(), rebuilt_tree(&s, p));
    assert_eq!(s.object(p, &key(2)).unwrap(), ReadOutcome::Corrupted);
    // A valid record moved under another key.
    let (moved, _) = encode_object_record(
        &object_table_key(p, &key(9)),
        &encode_object(&value(0, "x")),
    );
    raw_put(&s, OBJECTS, &object_table_key(p, &key(3)), &moved);
    assert_eq!(s.object(p, &key(3)).unwrap(), ReadOutcome::Corrupted);
    assert_eq!(s.stats().corrupt_objects, 3);
    assert_eq!(
        list_all(&s, p, 10)
            .iter()
            .filter(|(_, o)| *o == ReadOutcome::Corrupted)
            .count(),
        3
    );
    // Overwriting each works.
    for i in 1..=3 {
        s.write(put(p, key(i), value(0, "fixed"))).unwrap();
        assert_eq!(
            s.object(p, &key(i)).unwrap(),
            ReadOutcome::Found(value(0, "fixed"))
        );
    }
    assert_eq!(s.tree(p).unwrap(), rebuilt_tree(&s, p));
}

/// A clean-closed database image of `records` objects (key `i` in partition `i mod Q`), and
/// the model of it.
fn image_of(records: usize) -> (Vec<u8>, Model) {
    let disk = CrashDisk::new();
    let (s, _) =
        RedbStorage::open_with_backend(disk.clone(), &node("n1"), q(), Incarnation::new(1))
            .unwrap();
    let mut model = Model::default();
    let writes: Vec<Write> = (0..records)
        .map(|i| Write::Object {
            partition: part(u32::try_from(i).unwrap() % Q),
            key: key(i),
            object: value(i % 3, "initial"),
        })
        .collect();
    for chunk in writes.chunks(1000) {
        for w in chunk {
            model.apply(w);
        }
        s.write(chunk.iter().cloned().collect()).unwrap();
    }
    s.close_clean().unwrap();
    (disk.snapshot().durable, model)
}

/// Opens `image` with the tree build held at `hold_at` records, applies `writes` (and damages
/// one record, if `damage`) while it is held, lets the build finish, and checks the trees
/// against a scan of the records as they are then (and against the model, when nothing was
/// damaged).
/// Releases a build hold when dropped.
struct ReleaseOnDrop(Arc<BuildHold>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

fn build_beside_writes(
    image: Vec<u8>,
    mut model: Model,
    hold_at: u64,
    writes: &[Vec<WriteSpec>],
    damage: Option<usize>,
) -> Result<(), TestCaseError> {
    let hold = BuildHold::at(hold_at);
    let (s, _) = RedbStorage::open_with_backend_holding_build(
        CrashDisk::from_image(image),
        &node("n1"),
        q(),
        Incarnation::new(1),
        Arc::clone(&hold),
    )
    .unwrap();
    // Dropped before `s` on every way out, a failed check included: the store's drop waits
    // for the build thread, which would wait at the hold for ever.
    let _release = ReleaseOnDrop(Arc::clone(&hold));
    prop_assert!(
        hold.wait_held(Duration::from_secs(20)),
        "the build reached its hold"
    );
    // Until the build ends, the trees (and the key lists compared with them) are not ready;
    // objects are.
    let building = matches!(s.trees_status(), TreesStatus::Building { records_done, .. } if records_done == hold_at);
    prop_assert!(building, "building, at the hold");
    let tree = s.tree(part(0));
    prop_assert!(
        matches!(tree, Err(ReadError::TreesNotReady { .. })),
        "tree: {:?}",
        tree
    );
    let keys = s.segment_keys(part(0), SegmentId::FIRST);
    prop_assert!(
        matches!(keys, Err(ReadError::TreesNotReady { .. })),
        "keys: {:?}",
        keys
    );
    prop_assert_eq!(
        s.object(part(1), &key(1)).unwrap(),
        model.object(part(1), &key(1))
    );
    for specs in writes {
        let mut batch = WriteBatch::new();
        for spec in specs {
            let write = spec.to_write(&model);
            model.apply(&write);
            batch.push(write);
        }
        s.write(batch).unwrap();
    }
    // Damage the record, unless a write removed it (found by proptest: flipping a byte of a
    // record that is not there).
    let damage = damage.filter(|&i| {
        let p = part(u32::try_from(i).unwrap() % Q);
        raw_get(&s, OBJECTS, &object_table_key(p, &key(i))).is_some()
    });
    if let Some(i) = damage {
        let p = part(u32::try_from(i).unwrap() % Q);
        flip_byte(&s, OBJECTS, &object_table_key(p, &key(i)), 12);
        // The read finds it and queues its segment's recomputation, kept for the build's end.
        prop_assert_eq!(s.object(p, &key(i)).unwrap(), ReadOutcome::Corrupted);
        flush(&s);
    }
    hold.release();
    prop_assert_eq!(
        s.wait_for_trees(Duration::from_secs(20)),
        TreesStatus::Ready
    );
    for p in q().partitions() {
        let tree = s.tree(p).unwrap();
        prop_assert_eq!(
            &tree,
            &rebuilt_tree(&s, p),
            "tree of {:?} against a scan",
            p
        );
        if damage.is_none() {
            prop_assert_eq!(&tree, &model.tree(p), "tree of {:?} against the model", p);
        }
    }
    // Commits after the build move the ready trees as before.
    s.write(put(part(2), key(KEYS + 1), value(0, "after")))
        .unwrap();
    prop_assert_eq!(s.tree(part(2)).unwrap(), rebuilt_tree(&s, part(2)));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn trees_built_beside_commits_equal_a_scan_of_the_records_after_them(
        records in prop_oneof![1..40usize, 1024..1400usize],
        writes in proptest::collection::vec(proptest::collection::vec(write_spec(), 1..4), 0..12),
        damage in any::<bool>(),
    ) {
        let (image, model) = image_of(records);
        // Mid-scan when there is more than one slice, before it otherwise.
        let hold_at = if records > 1024 { 1024 } else { 0 };
        // A key both the snapshot and the writes may hold.
        let damage = damage.then_some(records.min(KEYS) - 1);
        build_beside_writes(image, model, hold_at, &writes, damage)?;
    }
}

#[test]
fn an_open_of_an_empty_database_has_its_trees_ready_at_once() {
    let (s, _) = RedbStorage::open_in_memory(&node("n1"), q(), Incarnation::new(1)).unwrap();
    assert_eq!(s.trees_status(), TreesStatus::Ready);
    assert_eq!(s.tree(part(0)).unwrap(), TictacTree::empty());
}

#[test]
fn closing_during_a_build_stops_it_and_still_closes_cleanly() {
    let (image, _) = image_of(2000);
    let hold = BuildHold::at(1024);
    let disk = CrashDisk::from_image(image);
    let (s, _) = RedbStorage::open_with_backend_holding_build(
        disk.clone(),
        &node("n1"),
        q(),
        Incarnation::new(1),
        Arc::clone(&hold),
    )
    .unwrap();
    assert!(hold.wait_held(Duration::from_secs(20)));
    let closing = thread::spawn(move || s.close_clean());
    // The close waits for the build thread, which stops at its next slice once released.
    hold.release();
    closing.join().unwrap().unwrap();
    let (s, _) = RedbStorage::open_with_backend(
        CrashDisk::from_image(disk.snapshot().durable),
        &node("n1"),
        q(),
        Incarnation::new(1),
    )
    .unwrap();
    assert_eq!(
        s.run_start(),
        RunStart::Kept,
        "the close was recorded clean"
    );
    wait_for_trees(&s);
    assert_eq!(s.tree(part(1)).unwrap(), rebuilt_tree(&s, part(1)));
}

#[test]
fn an_open_builds_the_trees_from_the_records_leaving_damaged_ones_out() {
    let dir = tempfile::tempdir().unwrap();
    let p = part(0);
    let expected = {
        let (s, _) = RedbStorage::open(dir.path(), &node("n1"), q(), Incarnation::new(1)).unwrap();
        for i in 0..40 {
            s.write(put(p, key(i), value(0, "v"))).unwrap();
        }
        s.write(put(part(2), key(1), value(0, "w"))).unwrap();
        // Damage one record behind the storage's back, and leave a tree table as an older
        // version would have.
        flip_byte(&s, OBJECTS, &object_table_key(p, &key(3)), 12);
        let ak = segment_prefix(p, SegmentId::of(&key(3), q()));
        raw_put(&s, LEGACY_AAE, &ak, &[0; 20]);
        (rebuilt_tree(&s, p), rebuilt_tree(&s, part(2)))
    };
    let (s, _) = RedbStorage::open(dir.path(), &node("n1"), q(), Incarnation::new(1)).unwrap();
    wait_for_trees(&s);
    assert_eq!(s.tree(p).unwrap(), expected.0);
    assert_eq!(s.tree(part(2)).unwrap(), expected.1);
    assert_ne!(expected.1, TictacTree::empty());
    assert_eq!(s.tree(part(1)).unwrap(), TictacTree::empty());
    assert_eq!(
        s.stats().corrupt_objects,
        1,
        "the damaged record is counted"
    );
    let txn = s.database().begin_read().unwrap();
    assert!(
        txn.open_table(LEGACY_AAE).is_err(),
        "the old tree table is dropped"
    );
}

#[test]
fn a_damaged_hint_is_listed_as_corrupted_and_removable() {
    let (s, _) = RedbStorage::open_in_memory(&node("n1"), q(), Incarnation::new(1)).unwrap();
    let target = node("t1");
    let mut batch = WriteBatch::new();
    for i in 0..3 {
        batch.push(Write::Hint {
            target: target.clone(),
            partition: part(1),
            key: key(i),
            object: value(0, "h"),
            stored_at_unix_ms: 10,
        });
    }
    s.write(batch).unwrap();
    flip_byte(&s, HINTS, &hint_key(&target, part(1), &key(1)), 12);
    let listed = hints_all(&s, &target, 10);
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed[1],
        HintEntry::Corrupted {
            partition: part(1),
            key: key(1)
        }
    );
    assert!(matches!(&listed[0], HintEntry::Found(h) if h.key == key(0)));
    assert_eq!(s.stats().corrupt_objects, 1);
    // A conditional removal cannot match a damaged hint; an unconditional one removes it.
    let remove = |if_digest| Write::RemoveHint {
        target: target.clone(),
        partition: part(1),
        key: key(1),
        if_digest,
    };
    s.write(remove(Some(ObjectDigest::of(&value(0, "h")))).into())
        .unwrap();
    assert_eq!(hints_all(&s, &target, 10).len(), 3);
    s.write(remove(None).into()).unwrap();
    assert_eq!(hints_all(&s, &target, 10).len(), 2);
}

// ---- identity ---------------------------------------------------------------------------------

#[test]
fn a_clean_close_keeps_the_incarnation_and_the_identity_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = node("n1");
    let (s, inc) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(7)).unwrap();
    assert_eq!(inc, Incarnation::new(7));
    assert_eq!(s.run_start(), RunStart::Created);
    s.write(put(part(0), key(0), value(0, "kept"))).unwrap();
    // A second handle on an open database is refused.
    assert!(matches!(
        RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(8)),
        Err(OpenError::AlreadyOpen)
    ));
    s.close_clean().unwrap();

    let (s, inc) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(8)).unwrap();
    assert_eq!(inc, Incarnation::new(7));
    assert_eq!(s.incarnation(), Incarnation::new(7));
    assert_eq!(s.run_start(), RunStart::Kept);
    assert_eq!(s.node(), &n1);
    assert_eq!(s.partition_count(), q());
    assert_eq!(
        s.object(part(0), &key(0)).unwrap(),
        ReadOutcome::Found(value(0, "kept"))
    );
    s.close_clean().unwrap();

    assert!(matches!(
        RedbStorage::open(dir.path(), &node("n2"), q(), Incarnation::new(9)),
        Err(OpenError::WrongNode { expected, found }) if expected == node("n2") && found == n1
    ));
    let q8 = PartitionCount::new(8).unwrap();
    assert!(matches!(
        RedbStorage::open(dir.path(), &n1, q8, Incarnation::new(9)),
        Err(OpenError::WrongPartitionCount { expected, found }) if expected == q8 && found == q()
    ));
    // The refused opens changed nothing: the clean stop still counts.
    let (s, inc) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(10)).unwrap();
    assert_eq!(inc, Incarnation::new(7));
    assert_eq!(s.run_start(), RunStart::Kept);
}

#[test]
fn a_run_that_was_not_closed_cleanly_is_recovered_under_its_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = node("n1");
    let (s, _) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(7)).unwrap();
    s.write(put(part(0), key(0), value(0, "kept"))).unwrap();
    // Dropped without a clean close, as a crash or kill -9 leaves it.
    drop(s);
    let (s, inc) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(8)).unwrap();
    assert_eq!(inc, Incarnation::new(7));
    assert_eq!(s.run_start(), RunStart::Recovered);
    assert_eq!(
        s.object(part(0), &key(0)).unwrap(),
        ReadOutcome::Found(value(0, "kept")),
    );
    s.close_clean().unwrap();
    let (s, inc) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(9)).unwrap();
    assert_eq!((inc, s.run_start()), (Incarnation::new(7), RunStart::Kept));
}

#[test]
fn a_batch_that_renews_the_incarnation_records_it_with_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = node("n1");
    let (s, _) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(7)).unwrap();
    let mut batch = put(part(0), key(0), value(0, "replaced"));
    batch.renew_incarnation(Incarnation::new(11));
    s.write(batch).unwrap();
    assert_eq!(s.incarnation(), Incarnation::new(11));
    // What a clean close records, and so what the next run keeps, is the renewed one.
    s.close_clean().unwrap();
    let (s, inc) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(12)).unwrap();
    assert_eq!((inc, s.run_start()), (Incarnation::new(11), RunStart::Kept));
    assert_eq!(
        s.object(part(0), &key(0)).unwrap(),
        ReadOutcome::Found(value(0, "replaced"))
    );
    // And a crash after a renewing batch recovers under the renewed incarnation: the record it
    // replaced and the new incarnation became durable together.
    let mut batch = put(part(0), key(1), value(0, "replaced again"));
    batch.renew_incarnation(Incarnation::new(13));
    s.write(batch).unwrap();
    drop(s);
    let (s, inc) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(14)).unwrap();
    assert_eq!(
        (inc, s.run_start()),
        (Incarnation::new(13), RunStart::Recovered)
    );

    let m = MemoryStorage::new(q());
    m.begin_run(Incarnation::new(1));
    let mut batch = put(part(0), key(0), value(0, "replaced"));
    batch.renew_incarnation(Incarnation::new(5));
    m.write(batch).unwrap();
    m.close_clean();
    assert_eq!(
        m.begin_run(Incarnation::new(6)),
        (Incarnation::new(5), RunStart::Kept)
    );
}

#[test]
fn a_clean_close_is_refused_while_other_handles_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = node("n1");
    let (s, _) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(7)).unwrap();
    let other = s.clone();
    assert!(matches!(s.close_clean(), Err(CloseError::StillInUse)));
    drop(other);
    let (_, inc) = RedbStorage::open(dir.path(), &n1, q(), Incarnation::new(8)).unwrap();
    assert_eq!(inc, Incarnation::new(7), "the incarnation is kept");
}

#[test]
fn a_new_run_on_an_open_database_recovers_like_a_crash_restart() {
    let n1 = node("n1");
    let (s, inc) = RedbStorage::open_in_memory(&n1, q(), Incarnation::new(7)).unwrap();
    assert_eq!(inc, Incarnation::new(7));
    let (inc, start) = s.begin_run(Incarnation::new(8)).unwrap();
    assert_eq!((inc, start), (Incarnation::new(7), RunStart::Recovered));
    assert_eq!(s.incarnation(), Incarnation::new(7));

    let m = MemoryStorage::new(q());
    assert_eq!(
        m.begin_run(Incarnation::new(1)),
        (Incarnation::new(1), RunStart::Created)
    );
    assert_eq!(
        m.begin_run(Incarnation::new(2)),
        (Incarnation::new(1), RunStart::Recovered),
        "a run not closed cleanly is recovered under its incarnation"
    );
    m.close_clean();
    assert_eq!(
        m.begin_run(Incarnation::new(3)),
        (Incarnation::new(1), RunStart::Kept)
    );
}

#[test]
fn a_fresh_directory_takes_the_candidate_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let (_, inc) = RedbStorage::open(&nested, &node("n1"), q(), Incarnation::new(42)).unwrap();
    assert_eq!(inc, Incarnation::new(42));
    assert!(nested.join(DATABASE_FILE).exists());
}

// ---- group commit -----------------------------------------------------------------------------

/// An in-memory backend whose fsyncs can be held (to build up a queue deterministically) or
/// made to fail.
#[derive(Debug)]
struct GatedBackend {
    inner: InMemoryBackend,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    hold: bool,
    /// Syncs waiting at the held gate.
    waiting: usize,
    fail: bool,
    syncs: usize,
}

impl Gate {
    fn set(&self, f: impl FnOnce(&mut GateState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    fn read<T>(&self, f: impl FnOnce(&GateState) -> T) -> T {
        f(&self.state.lock().unwrap())
    }
}

impl StorageBackend for GatedBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = self.gate.state.lock().unwrap();
        state.waiting += 1;
        self.gate.changed.notify_all();
        while state.hold {
            state = self.gate.changed.wait(state).unwrap();
        }
        state.waiting -= 1;
        state.syncs += 1;
        if state.fail {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }
}

fn gated() -> (RedbStorage, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let backend = GatedBackend {
        inner: InMemoryBackend::new(),
        gate: Arc::clone(&gate),
    };
    let (s, _) =
        RedbStorage::open_with_backend(backend, &node("n1"), q(), Incarnation::new(1)).unwrap();
    (s, gate)
}

/// Submits `batch`; the returned receiver gets the result (and would get a second one if `done`
/// were called twice).
fn submit(s: &RedbStorage, batch: WriteBatch) -> mpsc::Receiver<Result<(), CommitError>> {
    let (tx, rx) = mpsc::channel();
    s.submit(
        batch,
        Box::new(move |r| {
            tx.send(r).unwrap();
        }),
    );
    rx
}

fn exactly_one(rx: &mpsc::Receiver<Result<(), CommitError>>) -> Result<(), CommitError> {
    let r = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(20)).is_err(),
        "done called twice"
    );
    r
}

#[test]
fn batches_queued_during_a_commit_share_the_next_one() {
    let (s, gate) = gated();
    let before = s.stats();
    gate.set(|g| g.hold = true);
    let first = submit(&s, put(part(0), key(0), value(0, "first")));
    wait_until("the first commit to reach its fsync", || {
        gate.read(|g| g.waiting == 1)
    });

    // Ten more batches from ten threads while the first commit is in its fsync.
    let queued: Vec<_> = (1..=10)
        .map(|i| {
            let s = s.clone();
            thread::spawn(move || submit(&s, put(part(1), key(i), value(0, "queued"))))
        })
        .map(|h| h.join().unwrap())
        .collect();
    wait_until("ten queued batches", || s.stats().queued_batches == 10);
    // Not durable yet, so not acknowledged.
    assert!(first.try_recv().is_err());
    assert!(queued.iter().all(|rx| rx.try_recv().is_err()));

    gate.set(|g| g.hold = false);
    exactly_one(&first).unwrap();
    for rx in &queued {
        exactly_one(rx).unwrap();
    }
    let after = s.stats();
    assert_eq!(after.commits - before.commits, 2, "{after:?}");
    assert_eq!(after.batches - before.batches, 11);
    assert_eq!(after.max_batches_per_commit, 10);
    assert!(after.batches_per_commit() > 1.0);
    for i in 1..=10 {
        assert!(s.object(part(1), &key(i)).unwrap().object().is_some());
    }
}

#[test]
fn a_failed_commit_fails_every_batch_of_its_group() {
    let (s, gate) = gated();
    s.write(put(part(0), key(0), value(0, "before"))).unwrap();
    let before = s.stats();
    gate.set(|g| {
        g.hold = true;
        g.fail = true;
    });
    let first = submit(&s, put(part(0), key(1), value(0, "lost")));
    wait_until("the first commit to reach its fsync", || {
        gate.read(|g| g.waiting == 1)
    });
    let queued: Vec<_> = (2..6)
        .map(|i| submit(&s, put(part(0), key(i), value(0, "lost"))))
        .collect();
    wait_until("four queued batches", || s.stats().queued_batches == 4);
    gate.set(|g| g.hold = false);

    // The engine's error is kept, down to the backend's I/O error.
    match exactly_one(&first) {
        Err(e @ CommitError::Engine(_)) => {
            assert!(e.to_string().contains("injected fsync failure"), "{e}");
            assert!(std::error::Error::source(&e).is_some());
        }
        other => panic!("{other:?}"),
    }
    for rx in &queued {
        assert!(matches!(exactly_one(rx), Err(CommitError::Engine(_))));
    }
    let after = s.stats();
    assert!(after.failed_commits > before.failed_commits);
    assert_eq!(after.batches, before.batches, "nothing acknowledged");
    assert_eq!(after.commits, before.commits);
    // Reads still answer, with what was committed before the failure.
    assert_eq!(
        s.object(part(0), &key(0)).unwrap(),
        ReadOutcome::Found(value(0, "before"))
    );
    // A run in which a commit failed is never recorded clean.
    assert!(
        matches!(s.close_clean(), Err(CloseError::RunFailed { failed_commits }) if failed_commits > 0)
    );
}

#[test]
fn dropping_the_storage_finishes_queued_batches() {
    let (s, gate) = gated();
    gate.set(|g| g.hold = true);
    let acked = Arc::new(AtomicUsize::new(0));
    for i in 0..50 {
        let acked = Arc::clone(&acked);
        s.submit(
            put(part(2), key(i), value(0, "v")),
            Box::new(move |r| {
                r.unwrap();
                acked.fetch_add(1, Ordering::SeqCst);
            }),
        );
    }
    wait_until("the first commit to reach its fsync", || {
        gate.read(|g| g.waiting == 1)
    });
    let releaser = {
        let gate = Arc::clone(&gate);
        // Let go from another thread: the drop below waits for the commit thread to finish.
        thread::spawn(move || gate.set(|g| g.hold = false))
    };
    drop(s);
    releaser.join().unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), 50);
}

#[test]
fn write_from_a_commit_callback_is_an_error_not_a_deadlock() {
    let (s, _) = RedbStorage::open_in_memory(&node("n1"), q(), Incarnation::new(1)).unwrap();
    let (tx, rx) = mpsc::channel();
    let inner = s.clone();
    s.submit(
        WriteBatch::new(),
        Box::new(move |_| {
            tx.send(inner.write(WriteBatch::new())).unwrap();
        }),
    );
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        Err(CommitError::WriteFromCommitThread)
    ));
}

#[test]
fn one_fsync_per_commit() {
    let (s, gate) = gated();
    let syncs = gate.read(|g| g.syncs);
    let commits = s.stats().commits;
    for i in 0..5 {
        s.write(put(part(0), key(i), value(0, "v"))).unwrap();
    }
    assert_eq!(s.stats().commits - commits, 5);
    assert_eq!(gate.read(|g| g.syncs) - syncs, 5);
}

// ---- start-up time (measured, not asserted; see docs/results/2026-12-08-startup) --------------

/// Start-up of a database of `SHOAL_STARTUP_KEYS` objects (default 1,000,000) of
/// `SHOAL_STARTUP_VALUE_BYTES` (default 100) in `SHOAL_STARTUP_DIR` (made and loaded on the
/// first run): the time an open takes, to the first successful read, and until the trees are
/// built beside serving; then, for comparison, one unpaced full scan as the open used to make
/// before it returned. With `SHOAL_STARTUP_LEAVE_DIRTY=1` the process exits after the open
/// without closing, so the next open finds the database as a crash leaves it (redb repairs it).
/// With `SHOAL_STARTUP_BEFORE=1` it measures what an open did before the trees were built
/// beside serving: the open (its build held before it starts), then one unpaced full scan,
/// then the first read.
#[test]
#[ignore = "a measurement: set SHOAL_STARTUP_DIR (and SHOAL_STARTUP_KEYS), run with --release"]
fn startup_time_with_many_keys() {
    let env = |name: &str| std::env::var(name).ok();
    let dir = std::path::PathBuf::from(env("SHOAL_STARTUP_DIR").expect("SHOAL_STARTUP_DIR"));
    let keys: usize = env("SHOAL_STARTUP_KEYS").map_or(1_000_000, |v| v.parse().unwrap());
    let value_bytes: usize = env("SHOAL_STARTUP_VALUE_BYTES").map_or(100, |v| v.parse().unwrap());
    let q = PartitionCount::new(256).unwrap();
    let n1 = node("n1");
    let partition = |i: usize| q.partition(u32::try_from(i % 256).unwrap()).unwrap();
    if !dir.join(DATABASE_FILE).exists() {
        let started = Instant::now();
        let (s, _) = RedbStorage::open(&dir, &n1, q, Incarnation::new(1)).unwrap();
        let payload = "v".repeat(value_bytes);
        for first in (0..keys).step_by(4096) {
            let batch: WriteBatch = (first..(first + 4096).min(keys))
                .map(|i| Write::Object {
                    partition: partition(i),
                    key: key(i),
                    object: value(i % 3, &payload),
                })
                .collect();
            s.write(batch).unwrap();
        }
        s.close_clean().unwrap();
        println!(
            "loaded {keys} keys of {value_bytes} B in {:?}",
            started.elapsed()
        );
    }
    let bytes = std::fs::metadata(dir.join(DATABASE_FILE)).unwrap().len();

    let probe = keys / 2;
    if env("SHOAL_STARTUP_BEFORE").is_some_and(|v| v == "1") {
        let hold = BuildHold::at(0);
        let started = Instant::now();
        let (s, _) =
            RedbStorage::open_holding_build(&dir, &n1, q, Incarnation::new(1), Arc::clone(&hold))
                .unwrap();
        let opened = started.elapsed();
        let built = Trees::build_now(s.database(), q).unwrap();
        let found = s.object(partition(probe), &key(probe)).unwrap();
        assert!(matches!(found, ReadOutcome::Found(_)), "{found:?}");
        println!(
            "before: {keys} keys of {value_bytes} B, run {}: open {opened:?}, then a full scan \
             ({} records), first read {:?}",
            s.run_start(),
            built.scanned.records,
            started.elapsed()
        );
        hold.release();
        s.close_clean().unwrap();
        return;
    }
    let started = Instant::now();
    let (s, _) = RedbStorage::open(&dir, &n1, q, Incarnation::new(1)).unwrap();
    let opened = started.elapsed();
    let found = s.object(partition(probe), &key(probe)).unwrap();
    assert!(matches!(found, ReadOutcome::Found(_)), "{found:?}");
    let first_read = started.elapsed();
    let run_start = s.run_start();
    if env("SHOAL_STARTUP_LEAVE_DIRTY").is_some_and(|v| v == "1") {
        println!("open {opened:?}, first read {first_read:?} ({run_start}); leaving it dirty");
        std::process::exit(0);
    }
    // Reads go on while the trees are built: the longest one tells whether the build starves
    // them.
    let mut reads = 0u64;
    let mut slowest = Duration::ZERO;
    while !s.trees_status().is_ready() {
        let i = (reads as usize * 7919) % keys;
        let t = Instant::now();
        let _ = s.object(partition(i), &key(i)).unwrap();
        slowest = slowest.max(t.elapsed());
        reads += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the trees were built"
        );
    }
    let ready = started.elapsed();
    let shared = Trees::build_now(s.database(), q).unwrap();
    let scan = started.elapsed() - ready;
    println!(
        "{keys} keys of {value_bytes} B, file {} MiB, run {run_start}: open {opened:?}, first read \
         {first_read:?}, trees ready {ready:?} ({reads} reads meanwhile, slowest {slowest:?}); \
         one unpaced full scan (what the open did before it returned) {scan:?} ({} records)",
        bytes >> 20,
        shared.scanned.records,
    );
    s.close_clean().unwrap();
}

// ---- reaping ----------------------------------------------------------------------------------

/// The reaping rules, on one store: the compare-and-set, the record swallowing what the reaped
/// tombstone covered and giving way to what is newer, and forgetting.
fn reaping_follows_its_rules(s: &dyn Storage) {
    let (p, k) = (part(1), key(1));
    let old = value(0, "old");
    let tombstone = old
        .update(&old.context(), Sibling::Tombstone, &actor(1), 64)
        .unwrap();
    let vv = tombstone.version_vector().clone();
    let reap = |vv: &VersionVector, at: u64| -> WriteBatch {
        Write::Reap {
            partition: p,
            key: k.clone(),
            vv: vv.clone(),
            reaped_at_unix_ms: at,
        }
        .into()
    };

    // A live value is never reaped, whatever the vector says.
    s.write(put(p, k.clone(), old.clone())).unwrap();
    s.write(reap(&vv, 10)).unwrap();
    assert_eq!(s.object(p, &k).unwrap(), ReadOutcome::Found(old.clone()));
    assert_eq!(s.reaped(p, &k).unwrap(), None, "a value is not reaped");

    // A tombstone is not reaped by a vector that has not seen all of it.
    s.write(put(p, k.clone(), tombstone.clone())).unwrap();
    s.write(reap(old.version_vector(), 10)).unwrap();
    assert_eq!(s.reaped(p, &k).unwrap(), None, "a newer tombstone stays");

    // Reaped: the object leaves the tree and the listings, the key reads as its vector.
    s.write(reap(&vv, 10)).unwrap();
    let reaped = Reaped {
        vv: vv.clone(),
        reaped_at_unix_ms: 10,
    };
    assert_eq!(s.reaped(p, &k).unwrap(), Some(reaped.clone()));
    assert_eq!(
        s.object(p, &k).unwrap(),
        ReadOutcome::Found(Object::reaped(vv.clone()))
    );
    assert_eq!(s.tree(p).unwrap(), TictacTree::default(), "out of the tree");
    assert!(s.partition_objects(p, None, 10).unwrap().is_empty());
    assert_eq!(
        s.reaped_records(None, 10).unwrap(),
        vec![(p, k.clone(), reaped)]
    );
    assert_eq!(s.reaped_count().unwrap(), 1);

    // What the tombstone covered comes back through no write: replica, repair, hint, push.
    for write in [
        Write::MergeObject {
            partition: p,
            key: k.clone(),
            object: old.clone(),
        },
        Write::Object {
            partition: p,
            key: k.clone(),
            object: old.clone(),
        },
        Write::MergeObject {
            partition: p,
            key: k.clone(),
            object: tombstone.clone(),
        },
    ] {
        s.write(write.into()).unwrap();
        assert_eq!(
            s.object(p, &k).unwrap(),
            ReadOutcome::Found(Object::reaped(vv.clone())),
            "an older copy is swallowed by the reaping record"
        );
        assert_eq!(s.tree(p).unwrap(), TictacTree::default());
    }

    // A write newer than the reap (built on what the key reads as) is stored; the record goes.
    let ReadOutcome::Found(base) = s.object(p, &k).unwrap() else {
        panic!("a reaped key reads as an object")
    };
    let newer = base
        .update(
            &base.context(),
            Sibling::Value(Bytes::from_static(b"new")),
            &actor(0),
            64,
        )
        .unwrap();
    assert!(
        newer.siblings()[0].0.counter > old.siblings()[0].0.counter,
        "the new dot counts on past the reaped ones"
    );
    s.write(
        Write::MergeObject {
            partition: p,
            key: k.clone(),
            object: newer.clone(),
        }
        .into(),
    )
    .unwrap();
    assert_eq!(s.object(p, &k).unwrap(), ReadOutcome::Found(newer.clone()));
    assert_eq!(s.reaped(p, &k).unwrap(), None);
    assert_ne!(s.tree(p).unwrap(), TictacTree::default());

    // Reaping a key nobody stored (a primary that holds nothing) records the vector; a later
    // reap joins it and keeps the later time; forgetting honours the time.
    let k2 = key(2);
    let reap2 = |vv: &VersionVector, at: u64| -> WriteBatch {
        Write::Reap {
            partition: p,
            key: k2.clone(),
            vv: vv.clone(),
            reaped_at_unix_ms: at,
        }
        .into()
    };
    s.write(reap2(old.version_vector(), 50)).unwrap();
    s.write(reap2(&vv, 40)).unwrap();
    assert_eq!(
        s.reaped(p, &k2).unwrap(),
        Some(Reaped {
            vv: vv.clone(),
            reaped_at_unix_ms: 50
        })
    );
    let forget = |before: u64| -> WriteBatch {
        Write::ForgetReaped {
            partition: p,
            key: k2.clone(),
            reaped_before_unix_ms: before,
        }
        .into()
    };
    s.write(forget(50)).unwrap();
    assert!(s.reaped(p, &k2).unwrap().is_some(), "not before its time");
    s.write(forget(51)).unwrap();
    assert_eq!(s.reaped(p, &k2).unwrap(), None);
    assert_eq!(s.object(p, &k2).unwrap(), ReadOutcome::NotFound);
    assert_eq!(s.reaped_count().unwrap(), 0);
}

#[test]
fn memory_reaping_follows_its_rules() {
    reaping_follows_its_rules(&MemoryStorage::new(q()));
}

#[test]
fn redb_reaping_follows_its_rules_and_survives_a_reopen() {
    let dir = TempDir::new().unwrap();
    let (s, _) = RedbStorage::open(dir.path(), &node("n1"), q(), Incarnation::new(1)).unwrap();
    reaping_follows_its_rules(&s);
    let (p, k) = (part(3), key(3));
    let vv = value(1, "x").version_vector().clone();
    s.write(
        Write::Reap {
            partition: p,
            key: k.clone(),
            vv: vv.clone(),
            reaped_at_unix_ms: 7,
        }
        .into(),
    )
    .unwrap();
    drop(s);
    let (s, _) = RedbStorage::open(dir.path(), &node("n1"), q(), Incarnation::new(1)).unwrap();
    wait_for_trees(&s);
    assert_eq!(
        s.reaped(p, &k).unwrap(),
        Some(Reaped {
            vv,
            reaped_at_unix_ms: 7
        })
    );
    assert_eq!(s.tree(p).unwrap(), TictacTree::default());
}
