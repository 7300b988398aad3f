//! The tictac tree: the O(1) update every write pays (XOR an entry out and in), and the diff
//! anti-entropy runs between two replicas' trees (root, then branches, then segments).

// Bench setup works on values it made itself: a panic is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_storage::{ObjectDigest, SegmentId, TictacTree};
use shoal_types::{Incarnation, Key, NodeId, PartitionCount};

fn digest(i: u64) -> ObjectDigest {
    let actor = Actor::new(NodeId::new("n1").unwrap(), Incarnation::new(1));
    let obj = Object::new()
        .update(
            &CausalContext::empty(),
            Sibling::Value(Bytes::from(i.to_be_bytes().to_vec())),
            &actor,
            64,
        )
        .unwrap();
    ObjectDigest::of(&obj)
}

fn key(i: u64) -> Key {
    Key::new(Bytes::from(format!("user{i:08}"))).unwrap()
}

/// A tree of `keys` keys, and the same tree with `changed` of them rewritten.
fn trees(keys: u64, changed: u64) -> (TictacTree, TictacTree) {
    let q = PartitionCount::DEFAULT;
    let mut a = TictacTree::empty();
    let mut b = TictacTree::empty();
    for i in 0..keys {
        let (k, d) = (key(i), digest(i));
        a.toggle(SegmentId::of(&k, q), &k, d);
        let d = if i < changed {
            digest(i + 1_000_000)
        } else {
            d
        };
        b.toggle(SegmentId::of(&k, q), &k, d);
    }
    (a, b)
}

fn tree(c: &mut Criterion) {
    let q = PartitionCount::DEFAULT;
    let mut group = c.benchmark_group("tree");
    let (k, old, new) = (key(7), digest(7), digest(8));
    let segment = SegmentId::of(&k, q);
    let (mut t, _) = trees(1000, 0);
    group.bench_function("update", |b| {
        b.iter(|| {
            // One write: the old entry out, the new one in. (XOR does not care that the
            // next iteration "rewrites" the same key: the cost is the same.)
            t.toggle(segment, black_box(&k), old);
            t.toggle(segment, black_box(&k), new);
        })
    });
    for changed in [0, 1, 32] {
        let (a, b2) = trees(4000, changed);
        group.bench_with_input(BenchmarkId::new("diff", changed), &(a, b2), |b, (x, y)| {
            b.iter(|| black_box(x).diff(black_box(y)))
        });
    }
    group.finish();
}

criterion_group!(benches, tree);
criterion_main!(benches);
