//! The codec round-trips every message and refuses hostile bytes with a clear error, never a
//! panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use proptest::prelude::*;
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_protocol::{
    ClientRequest, ClientResponse, CodecError, DecodeLimits, LocalRead, PeerError, PeerMessage,
    PeerRequest, PeerResponse, ReplicaMessage, ReplicaResponse, Request, RequestError, Response,
    decode, encode,
};
use shoal_ring::{Member, Ring};
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
