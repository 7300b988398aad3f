//! Storage group commit: durable writes of 1 KiB objects by 1, 8 and 64 concurrent writers (each
//! a thread calling `write` in a loop) against `RedbStorage` in a temporary directory, and reads
//! of a stored key. The database is first filled with `KEYS` objects, and every writer count
//! overwrites the same keys (writer w of n takes keys w, w + n, w + 2n, ...), so the runs differ
//! only in concurrency, not in database size.
//!
//! Criterion's time per iteration is the latency of one write as its writer sees it (a writer's
//! elapsed time over its own writes). After each writer count the bench prints, from
//! `stats()`, how many writes shared each fsync and the mean commit latency. DESIGN's goal: with
//! 64 writers, at least 16 writes per fsync. Compare with `cargo run --release -p shoal-benches
//! --bin fsync_floor`, a raw 4 KiB write + fdatasync on the same filesystem.

// Bench setup works on values it made itself: a panic is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_storage::{RedbStorage, Storage, StorageStats, Write, WriteBatch};
use shoal_types::{Incarnation, Key, NodeId, PartitionCount, PartitionId};

const WRITERS: [usize; 3] = [1, 8, 64];
const VALUE_BYTES: usize = 1024;
/// Keys in the database (16 MiB of values), spread over all partitions.
const KEYS: usize = 16 * 1024;
/// Overwrites done before measuring (see `writes`).
const SETTLE_WRITES: u64 = 4 * KEYS as u64;

fn key(i: usize) -> Key {
    Key::new(format!("key-{i:06}")).unwrap()
}

/// Where key `i` lives: any fixed spread over the partitions will do for storage.
fn partition(i: usize, q: PartitionCount) -> PartitionId {
    PartitionId::from_index_unchecked((i % q.get() as usize) as u32)
}

/// A database of `KEYS` objects in a temporary directory.
fn filled_storage(q: PartitionCount) -> (tempfile::TempDir, RedbStorage) {
    let dir = tempfile::tempdir().unwrap();
    let (storage, _) = RedbStorage::open(
        dir.path(),
        &NodeId::new("bench").unwrap(),
        q,
        Incarnation::new(1),
    )
    .unwrap();
    let object = object(0);
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(512) {
        let batch: WriteBatch = chunk
            .iter()
            .map(|&i| Write::Object {
                partition: partition(i, q),
                key: key(i),
                object: object.clone(),
            })
            .collect();
        storage.write(batch).unwrap();
    }
    (dir, storage)
}

fn object(value: u8) -> Object {
    let actor = Actor::new(NodeId::new("bench").unwrap(), Incarnation::new(1));
    Object::new()
        .update(
            &CausalContext::empty(),
            Sibling::Value(Bytes::from(vec![value; VALUE_BYTES])),
            &actor,
            64,
        )
        .unwrap()
}

/// `n` writer threads, each doing as many writes as it is told, then reporting back.
struct Writers {
    orders: Vec<Sender<u64>>,
    finished: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(storage: &RedbStorage, q: PartitionCount, n: usize) -> Writers {
        let (finished_tx, finished) = mpsc::channel();
        let mut orders = Vec::new();
        let mut threads = Vec::new();
        for w in 0..n {
            let (tx, rx) = mpsc::channel::<u64>();
            let storage = storage.clone();
            let finished = finished_tx.clone();
            let object = object(w as u8 + 1);
            threads.push(thread::spawn(move || {
                // This writer's keys: w, w + n, w + 2n, ...
                let mine: Vec<(PartitionId, Key)> = (w..KEYS)
                    .step_by(n)
                    .map(|i| (partition(i, q), key(i)))
                    .collect();
                let mut next = 0usize;
                for count in rx {
                    for _ in 0..count {
                        let (partition, key) = mine[next % mine.len()].clone();
                        next += 1;
                        let write = Write::Object {
                            partition,
                            key,
                            object: object.clone(),
                        };
                        storage.write(write.into()).unwrap();
                    }
                    finished.send(()).unwrap();
                }
            }));
            orders.push(tx);
        }
        Writers {
            orders,
            finished,
            threads,
        }
    }

    /// Has every writer do `each` writes; returns the elapsed time.
    fn run(&self, each: u64) -> Duration {
        let start = Instant::now();
        for o in &self.orders {
            o.send(each).unwrap();
        }
        for _ in &self.orders {
            self.finished.recv().unwrap();
        }
        start.elapsed()
    }

    fn stop(self) {
        drop(self.orders);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

fn writes(c: &mut Criterion) {
    let q = PartitionCount::DEFAULT;
    let (dir, storage) = filled_storage(q);
    println!(
        "database in {} ({})",
        dir.path().display(),
        shoal_bench::Machine::filesystem_of(dir.path())
    );
    // Settle: the first overwrites after a bulk load land in file space never written before,
    // and each such fdatasync also commits the filesystem journal (~4 ms here). A node in
    // service is past that; measure it there.
    let settle = Writers::start(&storage, q, 64);
    settle.run(SETTLE_WRITES / 64);
    settle.stop();
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("storage_write_1KiB");
    for n in WRITERS {
        let writers = Writers::start(&storage, q, n);
        let before = storage.stats();
        group.bench_function(BenchmarkId::new("writers", n), |b| {
            b.iter_custom(|iters| {
                let each = iters.div_ceil(n as u64);
                let elapsed = writers.run(each);
                // Each writer did `each` writes one after another in `elapsed`: one write's
                // latency is elapsed / each; criterion divides what we return by `iters`.
                elapsed.mul_f64(iters as f64 / each as f64)
            })
        });
        let delta = stats_delta(&before, &storage.stats());
        let line = format!(
            "{n} writers: writes per fsync: {:.1} (commits {}, writes {}), mean commit latency {:?}",
            delta.writes_per_commit(),
            delta.commits,
            delta.writes,
            delta.mean_commit_latency(),
        );
        println!("{line}");
        summary.push(line);
        writers.stop();
    }
    group.finish();
    println!("-- storage group commit summary --");
    for line in summary {
        println!("{line}");
    }
}

fn reads(c: &mut Criterion) {
    let q = PartitionCount::DEFAULT;
    let (_dir, storage) = filled_storage(q);
    let i = KEYS / 2;
    let (partition, key) = (partition(i, q), key(i));
    c.bench_function("storage_read_1KiB", |b| {
        b.iter(|| storage.object(partition, black_box(&key)).unwrap())
    });
}

/// What happened between two snapshots of the counters (the max fields are since open).
fn stats_delta(before: &StorageStats, after: &StorageStats) -> StorageStats {
    StorageStats {
        commits: after.commits - before.commits,
        writes: after.writes - before.writes,
        batches: after.batches - before.batches,
        commit_latency_total: after.commit_latency_total - before.commit_latency_total,
        ..*after
    }
}

criterion_group!(benches, writes, reads);
criterion_main!(benches);
