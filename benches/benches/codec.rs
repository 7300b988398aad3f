//! The wire codec on the hot path: a `Replicate` replica message (what a coordinator sends to
//! each other replica on every put) and a `Read` reply, encoded and decoded with the real frame
//! body codec, at 1 KiB and 64 KiB values. DESIGN's goal: a 1 KiB replica message under a
//! microsecond.

// Bench setup works on values it made itself: a panic is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_protocol::{
    DecodeLimits, LocalRead, PeerMessage, PeerRequest, PeerResponse, ReplicaMessage,
    ReplicaResponse, Request, Response, decode, encode, encode_sized,
};
use shoal_types::{Incarnation, Key, NodeId, PartitionCount, RingEpoch};

const VALUE_SIZES: [usize; 2] = [1024, 64 * 1024];

/// An object as a steady-state key holds it: one value, a vector of three actors.
fn object(value_bytes: usize) -> Object {
    let mut obj = Object::new();
    for i in 0..3 {
        let actor = Actor::new(
            NodeId::new(&format!("n{i}")).unwrap(),
            Incarnation::new(0x1234_5678_9abc_def0 + i),
        );
        let value = Sibling::Value(Bytes::from(vec![i as u8; value_bytes]));
        obj = obj.update(&obj.context(), value, &actor, 64).unwrap();
    }
    obj
}

fn replicate(value_bytes: usize) -> Request {
    Request::Peer(PeerRequest {
        from: NodeId::new("n1").unwrap(),
        epoch: RingEpoch::INITIAL,
        budget: None,
        message: PeerMessage::Replica(ReplicaMessage::Replicate {
            partition: PartitionCount::DEFAULT.partition(17).unwrap(),
            key: Key::new(&b"user00012345"[..]).unwrap(),
            object: object(value_bytes),
        }),
    })
}

fn codec(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("codec");
    for size in VALUE_SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let request = replicate(size);
        let bytes = encode(&request).unwrap();
        group.bench_with_input(
            BenchmarkId::new("replicate/encode", size),
            &request,
            |b, r| b.iter(|| encode(black_box(r)).unwrap()),
        );
        group.bench_with_input(
            BenchmarkId::new("replicate/encode_sized", size),
            &request,
            |b, r| b.iter(|| encode_sized(black_box(r), size).unwrap()),
        );
        group.bench_with_input(
            BenchmarkId::new("replicate/decode", size),
            &bytes,
            |b, bytes| b.iter(|| decode::<Request>(black_box(bytes), &limits).unwrap()),
        );
        let reply = Response::Peer(PeerResponse::Replica(ReplicaResponse::Replica(
            LocalRead::Found(object(size)),
        )));
        let bytes = encode(&reply).unwrap();
        group.bench_with_input(
            BenchmarkId::new("read_reply/decode", size),
            &bytes,
            |b, bytes| b.iter(|| decode::<Response>(black_box(bytes), &limits).unwrap()),
        );
    }
    let ctx: CausalContext = object(16).context();
    group.throughput(Throughput::Elements(1));
    group.bench_function("context/encode", |b| {
        b.iter(|| encode(black_box(&ctx)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
