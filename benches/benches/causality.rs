//! The DVV hot paths: `update` and `merge` at 1, 8 and 64 siblings, `values` at 64, and an
//! object's encoding. Siblings are concurrent blind writes of 1 KiB values by distinct actors,
//! which is how a key really reaches many siblings. DESIGN's goal: merge at 64 siblings well under
//! 1 µs per sibling.

// Bench setup works on values it made itself: a panic is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_types::{Incarnation, NodeId};

const SIBLINGS: [usize; 3] = [1, 8, 64];
const VALUE_BYTES: usize = 1024;
const NO_CAP: usize = 1 << 20;

fn actor(i: usize) -> Actor {
    let node = NodeId::new(&format!("node-{i:03}.example")).unwrap();
    Actor::new(node, Incarnation::new(0x5eed_0000_0000_0000 | i as u64))
}

/// Write `i`: a blind 1 KiB write coordinated by actor `i`, as the one-sibling object it makes.
fn write(i: usize) -> Object {
    let value = Bytes::from(vec![i as u8; VALUE_BYTES]);
    Object::new()
        .update(
            &CausalContext::empty(),
            Sibling::Value(value),
            &actor(i),
            NO_CAP,
        )
        .unwrap()
}

/// The object holding writes `from..to`, all concurrent.
fn siblings(from: usize, to: usize) -> Object {
    (from..to).fold(Object::new(), |acc, i| acc.merge(&write(i)))
}

fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("causality/update");
    let value = Sibling::Value(Bytes::from(vec![0xaa; VALUE_BYTES]));
    let coordinator = actor(0);
    for n in SIBLINGS {
        let object = siblings(0, n);
        assert_eq!(object.siblings().len(), n);
        // A blind write: every sibling stays, one is added.
        group.bench_with_input(BenchmarkId::new("blind", n), &object, |b, o| {
            b.iter(|| {
                black_box(o)
                    .update(&CausalContext::empty(), value.clone(), &coordinator, NO_CAP)
                    .unwrap()
            })
        });
        // A write with the context of a read: every sibling is resolved.
        let context = object.context();
        group.bench_with_input(BenchmarkId::new("resolving", n), &object, |b, o| {
            b.iter(|| {
                black_box(o)
                    .update(black_box(&context), value.clone(), &coordinator, NO_CAP)
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("causality/merge");
    for n in SIBLINGS {
        // Two replicas that share half their siblings: writes 0..n and n/2..n/2+n.
        let a = siblings(0, n);
        let b = siblings(n / 2, n / 2 + n);
        assert_eq!(a.merge(&b).siblings().len(), n + n / 2);
        group.bench_with_input(
            BenchmarkId::new("half-overlap", n),
            &(a.clone(), b),
            |bench, (a, b)| bench.iter(|| black_box(a).merge(black_box(b))),
        );
        // Equal replicas: what read repair and anti-entropy mostly see.
        group.bench_with_input(BenchmarkId::new("equal", n), &a, |bench, a| {
            bench.iter(|| black_box(a).merge(black_box(a)))
        });
    }
    group.finish();
}

fn values(c: &mut Criterion) {
    let object = siblings(0, 64);
    c.bench_function("causality/values/64", |b| {
        b.iter(|| black_box(&object).values())
    });
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("causality/codec");
    for n in [1, 64] {
        let object = siblings(0, n);
        let bytes = rmp_serde::to_vec(&object).unwrap();
        group.bench_with_input(BenchmarkId::new("encode", n), &object, |b, o| {
            b.iter(|| rmp_serde::to_vec(black_box(o)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("decode", n), &bytes, |b, bytes| {
            b.iter(|| rmp_serde::from_slice::<Object>(black_box(bytes)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, update, merge, values, codec);
criterion_main!(benches);
