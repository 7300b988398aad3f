//! The codec round-trips every message and refuses hostile bytes with a clear error, never a
//! panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use proptest::prelude::*;
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_protocol::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, CodecError, DecodeLimits,
    ExchangeFault, ExchangeMessage, ExchangeResponse, KeyObject, LocalRead, MAX_EXCHANGE_BYTES,
    MAX_EXCHANGE_KEYS, MAX_EXCHANGE_OBJECTS, MAX_EXCHANGE_SEGMENTS, PeerError, PeerMessage,
    PeerRequest, PeerResponse, ReapMessage, ReapResponse, RepairRefusal, ReplicaMessage,
    ReplicaResponse, Request, RequestError, Response, TREE_SEGMENTS, decode, encode,
};
use shoal_ring::{Member, Ring};
use shoal_types::PartitionId;
use shoal_types::{
    Incarnation, Key, NodeId, PartitionCount, ReplicationFactor, RequestOptions, RingEpoch,
};

fn node(n: &str) -> NodeId {
    NodeId::new(n).unwrap()
}

fn object_with(values: &[&str]) -> Object {
    let mut obj = Object::new();
    for (i, v) in values.iter().enumerate() {
        let actor = Actor::new(node(&format!("n{i}")), Incarnation::new(i as u64));
        obj = obj
            .update(
                &CausalContext::empty(),
                Sibling::Value(Bytes::from(v.to_string())),
                &actor,
                1024,
            )
            .unwrap();
    }
    obj
}

fn ring() -> Ring {
    let members = (1..=3)
        .map(|i| {
            let addr: SocketAddr = format!("127.0.0.1:{}", 7100 + i).parse().unwrap();
            Member::new(node(&format!("n{i}")), addr)
        })
        .collect();
    Ring::new(
        members,
        PartitionCount::new(64).unwrap(),
        ReplicationFactor::new(3).unwrap(),
    )
    .unwrap()
}

fn roundtrip_request(r: Request) {
    let bytes = encode(&r).unwrap();
    let back: Request = decode(&bytes, &DecodeLimits::default()).unwrap();
    assert_eq!(back, r);
}

fn roundtrip_response(r: Response) {
    let bytes = encode(&r).unwrap();
    let back: Response = decode(&bytes, &DecodeLimits::default()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn every_message_kind_round_trips() {
    let key = Key::new(&b"user00000001"[..]).unwrap();
    let obj = object_with(&["a", "b"]);
    roundtrip_request(Request::Client(ClientRequest::Get {
        key: key.clone(),
        options: RequestOptions {
            r: Some(3),
            ..Default::default()
        },
    }));
    roundtrip_request(Request::Client(ClientRequest::Put {
        key: key.clone(),
        value: Bytes::from_static(b"v"),
        context: obj.context(),
        options: RequestOptions::default(),
    }));
    roundtrip_request(Request::Client(ClientRequest::Ring));
    roundtrip_request(Request::Peer(PeerRequest {
        from: node("n1"),
        epoch: RingEpoch::INITIAL,
        budget: Some(std::time::Duration::from_millis(1500)),
        message: PeerMessage::Replica(ReplicaMessage::Replicate {
            partition: PartitionCount::new(64).unwrap().partition(3).unwrap(),
            key: key.clone(),
            object: obj.clone(),
        }),
    }));
    roundtrip_response(Response::Client(ClientResponse::Read {
        values: obj.values(),
        context: obj.context(),
    }));
    roundtrip_response(Response::Client(ClientResponse::Ring(ring())));
    roundtrip_response(Response::Client(ClientResponse::Failed(
        RequestError::QuorumFailed {
            required: 3,
            answered: 2,
        },
    )));
    roundtrip_response(Response::Peer(PeerResponse::Replica(
        ReplicaResponse::Replica(LocalRead::Found(obj)),
    )));
    roundtrip_response(Response::Peer(PeerResponse::Failed(PeerError::Overloaded)));
    roundtrip_request(Request::Peer(PeerRequest {
        from: node("n2"),
        epoch: RingEpoch::new(3),
        budget: None,
        message: PeerMessage::Ping,
    }));
}

#[test]
fn repair_asks_and_answers_round_trip() {
    let p = PartitionId::from_index_unchecked(7);
    roundtrip_request(Request::Admin(AdminRequest::Repair {
        partition: None,
        node: None,
    }));
    roundtrip_request(Request::Admin(AdminRequest::Repair {
        partition: Some(p),
        node: Some(node("n3")),
    }));
    roundtrip_response(Response::Admin(AdminResponse::Repairing { exchanges: 512 }));
    for refusal in [
        RepairRefusal::UnknownPartition(p),
        RepairRefusal::NotPrimary(p),
        RepairRefusal::NotAPeer(node("n9")),
    ] {
        roundtrip_response(Response::Admin(AdminResponse::RepairRefused(refusal)));
    }
}

fn exchange(message: ExchangeMessage) -> Request {
    Request::Peer(PeerRequest {
        from: node("n2"),
        epoch: RingEpoch::INITIAL,
        budget: None,
        message: PeerMessage::Exchange(message),
    })
}

#[test]
fn every_exchange_message_round_trips() {
    let partition = PartitionId::from_index_unchecked(5);
    let key = Key::new(&b"user00000001"[..]).unwrap();
    let obj = object_with(&["a", "b"]);
    for message in [
        ExchangeMessage::Root {
            partition,
            root: [3; 16],
        },
        ExchangeMessage::Branches { partition },
        ExchangeMessage::Segments {
            partition,
            segments: vec![0, 1023],
        },
        ExchangeMessage::Keys {
            partition,
            segments: vec![7],
        },
        ExchangeMessage::Fetch {
            partition,
            keys: vec![key.clone()],
        },
        ExchangeMessage::Push {
            partition,
            objects: vec![KeyObject {
                key: key.clone(),
                object: obj.clone(),
            }],
        },
    ] {
        roundtrip_request(exchange(message));
    }
    for response in [
        ExchangeResponse::Root([1; 16]),
        ExchangeResponse::Branches(vec![[2; 16]; 32]),
        ExchangeResponse::Segments(vec![(4, [3; 16])]),
        ExchangeResponse::Keys {
            answered: 1,
            keys: vec![(key.clone(), [4; 16])],
        },
        ExchangeResponse::Fetched(vec![
            (key.clone(), LocalRead::Found(obj)),
            (key.clone(), LocalRead::NotFound),
        ]),
        ExchangeResponse::Pushed,
    ] {
        roundtrip_response(Response::Peer(PeerResponse::Exchange(response)));
    }
    roundtrip_response(Response::Peer(PeerResponse::Failed(PeerError::Exchange(
        ExchangeFault::SegmentTooLarge {
            segment: 9,
            keys: 70_000,
        },
    ))));
}

/// Decodes `body` and expects a cap's refusal naming `what`.
fn refused_over<T: serde::de::DeserializeOwned + shoal_protocol::Checked + std::fmt::Debug>(
    body: &[u8],
    what: &str,
) {
    match decode::<T>(body, &DecodeLimits::default()) {
        Err(CodecError::OverLimit(m)) => assert!(m.contains(what), "{m}"),
        other => panic!("expected a refusal over {what}, got {other:?}"),
    }
}

#[test]
fn exchange_lists_over_their_caps_are_refused_after_decoding() {
    let partition = PartitionId::from_index_unchecked(0);
    let key = |i: usize| Key::new(format!("k{i}").into_bytes()).unwrap();
    let too_many_segments: Vec<u16> = (0..=MAX_EXCHANGE_SEGMENTS as u16).collect();
    let body = encode(&exchange(ExchangeMessage::Keys {
        partition,
        segments: too_many_segments,
    }))
    .unwrap();
    refused_over::<Request>(&body, "segments asked");
    let body = encode(&exchange(ExchangeMessage::Segments {
        partition,
        segments: vec![TREE_SEGMENTS as u16],
    }))
    .unwrap();
    refused_over::<Request>(&body, "segment 1024");
    let body = encode(&exchange(ExchangeMessage::Fetch {
        partition,
        keys: (0..=MAX_EXCHANGE_OBJECTS).map(key).collect(),
    }))
    .unwrap();
    refused_over::<Request>(&body, "keys fetched");
    let small = object_with(&["v"]);
    let body = encode(&exchange(ExchangeMessage::Push {
        partition,
        objects: (0..=MAX_EXCHANGE_OBJECTS)
            .map(|i| KeyObject {
                key: key(i),
                object: small.clone(),
            })
            .collect(),
    }))
    .unwrap();
    refused_over::<Request>(&body, "objects pushed");
    let half = "x".repeat(MAX_EXCHANGE_BYTES / 2 + 1);
    let big = object_with(&[half.as_str()]);
    let body = encode(&exchange(ExchangeMessage::Push {
        partition,
        objects: vec![
            KeyObject {
                key: key(1),
                object: big.clone(),
            },
            KeyObject {
                key: key(2),
                object: big,
            },
        ],
    }))
    .unwrap();
    refused_over::<Request>(&body, "value bytes pushed");

    let keys = ExchangeResponse::Keys {
        answered: 1,
        keys: (0..=MAX_EXCHANGE_KEYS).map(|i| (key(i), [0; 16])).collect(),
    };
    let body = encode(&Response::Peer(PeerResponse::Exchange(keys))).unwrap();
    refused_over::<Response>(&body, "keys listed");
    let hashes = ExchangeResponse::Segments(vec![(2000, [0; 16])]);
    let body = encode(&Response::Peer(PeerResponse::Exchange(hashes))).unwrap();
    refused_over::<Response>(&body, "segment 2000");
    let fetched = ExchangeResponse::Fetched(
        (0..=MAX_EXCHANGE_OBJECTS)
            .map(|i| (key(i), LocalRead::NotFound))
            .collect(),
    );
    let body = encode(&Response::Peer(PeerResponse::Exchange(fetched))).unwrap();
    refused_over::<Response>(&body, "objects fetched");
}

#[test]
fn unknown_version_and_empty_bodies_are_refused() {
    let mut bytes = encode(&Request::Client(ClientRequest::Ring))
        .unwrap()
        .to_vec();
    bytes[0] = 99;
    let err = decode::<Request>(&bytes, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, CodecError::UnsupportedVersion(99)), "{err}");
    let err = decode::<Request>(&[], &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, CodecError::Empty), "{err}");
}

#[test]
fn trailing_values_are_refused() {
    let mut bytes = encode(&Request::Client(ClientRequest::Ring))
        .unwrap()
        .to_vec();
    bytes.extend_from_slice(&encode(&1u8).unwrap()[1..]);
    let err = decode::<Request>(&bytes, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, CodecError::TrailingBytes), "{err}");
}

#[test]
fn oversized_values_and_too_many_siblings_are_refused_after_decoding() {
    let limits = DecodeLimits {
        max_value_bytes: 16,
        max_siblings: 2,
        ..DecodeLimits::default()
    };
    let big = Request::Client(ClientRequest::Put {
        key: Key::new(&b"k"[..]).unwrap(),
        value: Bytes::from(vec![0u8; 17]),
        context: CausalContext::empty(),
        options: RequestOptions::default(),
    });
    let err = decode::<Request>(&encode(&big).unwrap(), &limits).unwrap_err();
    assert!(matches!(err, CodecError::OverLimit(_)), "{err}");
    let many = Request::Peer(PeerRequest {
        from: node("n1"),
        epoch: RingEpoch::INITIAL,
        budget: None,
        message: PeerMessage::Replica(ReplicaMessage::Repair {
            partition: PartitionCount::new(64).unwrap().partition(0).unwrap(),
            key: Key::new(&b"k"[..]).unwrap(),
            object: object_with(&["a", "b", "c"]),
        }),
    });
    let err = decode::<Request>(&encode(&many).unwrap(), &limits).unwrap_err();
    assert!(err.to_string().contains("3 siblings"), "{err}");
}

#[test]
fn deeply_nested_input_is_refused_not_a_stack_overflow() {
    // 100,000 nested one-element arrays: far past the depth limit.
    let mut bytes = vec![shoal_protocol::PROTOCOL_VERSION];
    bytes.extend(std::iter::repeat_n(0x91u8, 100_000));
    bytes.push(0xc0);
    assert!(decode::<Request>(&bytes, &DecodeLimits::default()).is_err());
}

#[test]
fn a_huge_claimed_length_does_not_allocate_it() {
    // bin32 claiming 4 GiB with 3 bytes behind it.
    let mut bytes = vec![
        shoal_protocol::PROTOCOL_VERSION,
        0xc6,
        0xff,
        0xff,
        0xff,
        0xff,
    ];
    bytes.extend_from_slice(b"abc");
    assert!(decode::<Request>(&bytes, &DecodeLimits::default()).is_err());
    // array32 claiming 4 billion elements.
    let bytes = vec![
        shoal_protocol::PROTOCOL_VERSION,
        0xdd,
        0xff,
        0xff,
        0xff,
        0xff,
    ];
    assert!(decode::<Response>(&bytes, &DecodeLimits::default()).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut body = vec![shoal_protocol::PROTOCOL_VERSION];
        body.extend_from_slice(&bytes);
        let _ = decode::<Request>(&body, &DecodeLimits::default());
        let _ = decode::<Response>(&body, &DecodeLimits::default());
    }

    #[test]
    fn mutated_valid_messages_never_panic_the_decoder(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let msg = Request::Peer(PeerRequest {
            from: node("n1"),
            epoch: RingEpoch::INITIAL,
            budget: None,
            message: PeerMessage::Replica(ReplicaMessage::Replicate {
                partition: PartitionCount::new(64).unwrap().partition(5).unwrap(),
                key: Key::new(&b"key"[..]).unwrap(),
                object: object_with(&["x", "y", "z"]),
            }),
        });
        let mut bytes = encode(&msg).unwrap().to_vec();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = decode::<Request>(&bytes, &DecodeLimits::default());
    }
}

/// The worst case `OBJECT_OVERHEAD_BYTES` must cover: the longest key, the most siblings the
/// decoders accept, each under a dot of a longest-named actor, and the longest version vector,
/// in a `Replicate` and in a `Read` answer. Values are small here; the overhead does not depend
/// on their size beyond a length prefix each, counted too.
#[test]
fn a_frame_of_the_object_bound_plus_the_overhead_carries_any_object() {
    let limits = DecodeLimits::default();
    let actors = limits.max_vector_entries;
    let per_actor = limits.max_siblings / actors;
    let mut obj = Object::new();
    for a in 0..actors {
        let name = format!("{a:0>width$}", width = NodeId::MAX_LEN);
        let actor = Actor::new(node(&name), Incarnation::new(u64::MAX - a as u64));
        for _ in 0..per_actor {
            obj = obj
                .update(
                    &CausalContext::empty(),
                    Sibling::Value(Bytes::from_static(b"v")),
                    &actor,
                    limits.max_siblings,
                )
                .unwrap();
        }
    }
    assert_eq!(obj.siblings().len(), limits.max_siblings);
    let key = Key::new(vec![b'k'; Key::MAX_LEN]).unwrap();
    let messages = [
        Request::Peer(PeerRequest {
            from: node(&"n".repeat(NodeId::MAX_LEN)),
            epoch: RingEpoch::new(u64::MAX),
            budget: Some(std::time::Duration::MAX),
            message: PeerMessage::Replica(ReplicaMessage::Replicate {
                partition: shoal_types::PartitionId::from_index_unchecked(u32::MAX),
                key: key.clone(),
                object: obj.clone(),
            }),
        }),
        Request::Client(ClientRequest::Put {
            key,
            value: Bytes::from_static(b"v"),
            context: obj.context(),
            options: RequestOptions::default(),
        }),
    ];
    for message in &messages {
        let len = encode(message).unwrap().len();
        assert!(
            len <= obj.value_bytes() + shoal_protocol::OBJECT_OVERHEAD_BYTES,
            "{len} bytes for {} value bytes",
            obj.value_bytes()
        );
    }
    let answer = Response::Peer(PeerResponse::Replica(ReplicaResponse::Replica(
        LocalRead::Found(obj.clone()),
    )));
    let len = encode(&answer).unwrap().len();
    assert!(len <= obj.value_bytes() + shoal_protocol::OBJECT_OVERHEAD_BYTES);
}

#[test]
fn reap_messages_round_trip_and_their_vector_is_capped_after_decoding() {
    let obj = object_with(&["a", "b", "c"]);
    let reap = |context: CausalContext| {
        Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: RingEpoch::INITIAL,
            budget: None,
            message: PeerMessage::Reap(ReapMessage {
                partition: PartitionId::from_index_unchecked(3),
                key: Key::new(&b"k"[..]).unwrap(),
                context,
            }),
        })
    };
    let body = encode(&reap(obj.context())).unwrap();
    assert_eq!(
        decode::<Request>(&body, &DecodeLimits::default()).unwrap(),
        reap(obj.context())
    );
    for answer in [ReapResponse::Reaped, ReapResponse::Newer] {
        roundtrip_response(Response::Peer(PeerResponse::Reap(answer)));
    }
    let limits = DecodeLimits {
        max_vector_entries: 2,
        ..DecodeLimits::default()
    };
    match decode::<Request>(&body, &limits) {
        Err(CodecError::OverLimit(m)) => assert!(m.contains("causal context"), "{m}"),
        other => panic!("a reap's vector over the cap was not refused: {other:?}"),
    }
}
