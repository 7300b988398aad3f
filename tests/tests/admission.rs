//! Admission under hostile input, as a property: any request a client or a peer can put on the
//! wire — timeouts of zero or `Duration::MAX`, budgets beyond any clock, contexts with counters
//! of `u64::MAX` or hundreds of entries, quorums that do not fit N, arrivals long ago — handed
//! to a coordinator `Node`, is answered exactly once and never panics, whatever its messages'
//! fates and however far the clock then runs. It drives the node with the fuzz target's own
//! driver (`fuzz/src/lib.rs`, `admit`, included here as a module); the target `admission` feeds
//! the same driver from raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use shoal_causality::{Actor, CausalContext, Object, Sibling, VersionVector};
use shoal_protocol::{ClientRequest, PeerMessage, PeerRequest, ReplicaMessage, Request};
use shoal_types::{Incarnation, Key, NodeId, PartitionId, RequestOptions, RingEpoch};

fn node(n: &str) -> NodeId {
    NodeId::new(n).unwrap()
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX)),
        (0u64..120_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_secs),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn options() -> impl Strategy<Value = RequestOptions> {
    let quorum = prop::option::of(any::<u8>());
    (
        quorum.clone(),
        quorum.clone(),
        quorum.clone(),
        quorum,
        prop::option::of(duration()),
    )
        .prop_map(|(r, w, pr, pw, timeout)| RequestOptions {
            r,
            w,
            pr,
            pw,
            timeout,
        })
}

/// Contexts a hostile client may send: actors of this cluster and others, counters up to
/// `u64::MAX` (this node's own actor included), up to 300 entries.
fn context() -> impl Strategy<Value = CausalContext> {
    let actor = (0u8..6, prop_oneof![Just(1000u64), Just(1001), any::<u64>()])
        .prop_map(|(n, inc)| Actor::new(node(&format!("n{n}")), Incarnation::new(inc)));
    let counter = prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), 1u64..10, any::<u64>()];
    prop::collection::vec((actor, counter), 0..300).prop_map(|mut entries| {
        entries.retain(|(_, c)| *c > 0);
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        CausalContext::from(VersionVector::from_entries(entries).unwrap())
    })
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        Just(Key::new("k").unwrap()),
        prop::collection::vec(any::<u8>(), 1..2048).prop_map(|k| Key::new(k).unwrap()),
    ]
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        (key(), options()).prop_map(|(key, options)| ClientRequest::Get { key, options }),
        (key(), 0usize..64, context(), options()).prop_map(|(key, len, context, options)| {
            ClientRequest::Put {
                key,
                value: Bytes::from(vec![7u8; len]),
                context,
                options,
            }
        }),
        (key(), context(), options()).prop_map(|(key, context, options)| {
            ClientRequest::Delete {
                key,
                context,
                options,
            }
        }),
        key().prop_map(|key| ClientRequest::GetLocal { key }),
        Just(ClientRequest::Ring),
    ]
}

fn object() -> impl Strategy<Value = Object> {
    (context(), 0u8..4).prop_map(|(context, n)| {
        let actor = Actor::new(node("n2"), Incarnation::new(1001));
        let mut o = Object::new();
        for i in 0..n {
            let value = Sibling::Value(Bytes::from(vec![i; 8]));
            if let Ok(next) = o.update(&context, value, &actor, 64) {
                o = next;
            }
        }
        o
    })
}

fn peer_request() -> impl Strategy<Value = Request> {
    let partition = (0u32..20).prop_map(PartitionId::from_index_unchecked);
    let message = prop_oneof![
        client_request().prop_map(PeerMessage::Coordinate),
        (partition.clone(), key(), object()).prop_map(|(partition, key, object)| {
            PeerMessage::Replica(ReplicaMessage::Replicate {
                partition,
                key,
                object,
            })
        }),
        (partition.clone(), key(), object()).prop_map(|(partition, key, object)| {
            PeerMessage::Replica(ReplicaMessage::Repair {
                partition,
                key,
                object,
            })
        }),
        (partition, key()).prop_map(|(partition, key)| PeerMessage::Replica(
            ReplicaMessage::Read { partition, key }
        )),
        Just(PeerMessage::Ping),
    ];
    (0u8..4, any::<u64>(), prop::option::of(duration()), message).prop_map(
        |(from, epoch, budget, message)| {
            Request::Peer(PeerRequest {
                from: node(&format!("n{from}")),
                epoch: RingEpoch::new(epoch),
                budget,
                message,
            })
        },
    )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![client_request().prop_map(Request::Client), peer_request()]
}

/// How each message the node sends ends.
fn fate() -> impl Strategy<Value = u8> {
    0u8..4
}

/// [`targets::admit`], the messages ending as `fates` say, cycled (it asserts the request is
/// answered exactly once).
fn admit(request: Request, ago: Duration, fates: &[u8]) {
    targets::admit(request, ago, fates.iter().copied().cycle(), 7);
}

/// 512 generated requests. The strategies nest deeply, and this crate's tests are built without
/// optimisation, so the runner gets a thread with room for them.
#[test]
fn any_request_is_answered_once_and_never_panics_the_node() {
    let run = || {
        let mut runner = TestRunner::new(ProptestConfig::with_cases(512));
        let ago = prop_oneof![Just(Duration::ZERO), duration()];
        let cases = (request(), ago, prop::collection::vec(fate(), 1..8));
        let result = runner.run(&cases, |(request, ago, fates)| {
            admit(request, ago, &fates);
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    };
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(run)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn the_largest_timeout_and_budget_are_refused_or_bounded_not_added_to_the_clock() {
    let key = Key::new("k").unwrap();
    for timeout in [Duration::MAX, Duration::from_secs(u64::MAX), Duration::ZERO] {
        let options = RequestOptions {
            timeout: Some(timeout),
            ..Default::default()
        };
        let get = ClientRequest::Get {
            key: key.clone(),
            options,
        };
        admit(Request::Client(get.clone()), Duration::ZERO, &[0]);
        let forwarded = Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: RingEpoch::INITIAL,
            budget: Some(Duration::MAX),
            message: PeerMessage::Coordinate(ClientRequest::Put {
                key: key.clone(),
                value: Bytes::from_static(b"v"),
                context: CausalContext::empty(),
                options,
            }),
        });
        admit(forwarded, Duration::MAX, &[3]);
    }
}
