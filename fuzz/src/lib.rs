//! The bodies of Shoal's fuzz targets, one per decoder of bytes that come from the network or
//! the disk. Each takes arbitrary bytes, decodes them, and checks what must hold of whatever
//! decodes; a panic anywhere (in a decoder, or an assertion here) is a bug.
//!
//! `fuzz_targets/*.rs` are one line each, calling these. The workspace replays every file of
//! `fuzz/corpus/<target>/`, and [`seeds`], through the same functions as an ordinary test
//! (`tests/tests/fuzz_corpus.rs` includes this file), so CI checks the corpus without libFuzzer.
//!
//! Not here: libFuzzer itself (only the target binaries link it), and decoders of the transport's
//! framing (a length prefix checked before reading; the frame body is [`request`]/[`response`]).

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde::Deserialize;
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_protocol::{
    AdminRequest, ClientRequest, ClientResponse, DecodeLimits, LocalRead, MAX_DECODE_DEPTH,
    PeerMessage, PeerRequest, PeerResponse, ReplicaMessage, ReplicaResponse, Request, Response,
    decode, encode,
};
use shoal_ring::{Member, Ring};
use shoal_storage::{
    HintEntry, ReadOutcome, decode_hint_record, decode_identity_record, decode_object_record,
};
use shoal_types::{
    Incarnation, Key, NodeId, PartitionCount, PartitionId, ReplicationFactor, RequestOptions,
    RingEpoch,
};

/// A target's body: any bytes in, a panic only on a bug.
pub type Body = fn(&[u8]);

/// Every target: its name (the directory of its corpus) and its body.
pub const TARGETS: [(&str, Body); 6] = [
    ("request", request),
    ("response", response),
    ("storage_records", storage_records),
    ("object_merge", object_merge),
    ("ring", ring),
    ("context_token", context_token),
];

/// A frame body as a node decodes a request: anything that decodes re-encodes to a body that
/// decodes to the same request.
pub fn request(data: &[u8]) {
    let limits = DecodeLimits::default();
    if let Ok(message) = decode::<Request>(data, &limits) {
        let body = encode(&message).expect("a decoded request encodes");
        let again = decode::<Request>(&body, &limits).expect("a re-encoded request decodes");
        assert_eq!(again, message, "a request survives a round trip");
    }
}

/// A frame body as a client or node decodes a response, with the same round trip.
pub fn response(data: &[u8]) {
    let limits = DecodeLimits::default();
    if let Ok(message) = decode::<Response>(data, &limits) {
        let body = encode(&message).expect("a decoded response encodes");
        let again = decode::<Response>(&body, &limits).expect("a re-encoded response decodes");
        assert_eq!(again, message, "a response survives a round trip");
    }
}

/// Stored records, read as storage reads them. Input: `[selector][key length][table key][record]`.
/// The selector's low bit reseals the record (recomputes its CRC32, as `docs/storage-format.md`
/// defines it) so that the fuzzer gets past the checksum to the decoders behind it; the rest
/// picks the object, hint or identity record decoder.
pub fn storage_records(data: &[u8]) {
    let [selector, key_len, rest @ ..] = data else {
        return;
    };
    let (table_key, record) = rest.split_at(usize::from(*key_len).min(rest.len()));
    let mut record = record.to_vec();
    match (selector >> 1) % 3 {
        0 => {
            if selector & 1 == 1 {
                reseal(table_key, &mut record);
            }
            if let ReadOutcome::Found(object) = decode_object_record(table_key, &record) {
                check_object(&object);
            }
        }
        1 => {
            if selector & 1 == 1 {
                reseal(table_key, &mut record);
            }
            if let Some(HintEntry::Found(hint)) = decode_hint_record(table_key, &record) {
                check_object(&hint.object);
            }
        }
        _ => {
            if selector & 1 == 1 {
                reseal(b"identity", &mut record);
            }
            let _ = decode_identity_record(&record);
        }
    }
}

/// Two or three objects, concatenated rmp-serde values, decoded with the nesting bound that
/// storage and the protocol use; merge must be commutative, idempotent and associative, and its
/// result a valid object.
pub fn object_merge(data: &[u8]) {
    // Stop at the first value that fails: rmp-serde 1.3.1 does not restore its depth budget when
    // a nested value fails, so a deserializer reused after an error underflows it (a panic with
    // overflow checks). Shoal's decoders never reuse one after an error.
    let mut de = rmp_serde::Deserializer::from_read_ref(data);
    de.set_max_depth(MAX_DECODE_DEPTH);
    let Ok(a) = Object::deserialize(&mut de) else {
        return;
    };
    let Ok(b) = Object::deserialize(&mut de) else {
        return;
    };
    let ab = a.merge(&b);
    assert_eq!(ab, b.merge(&a), "merge is commutative");
    assert_eq!(a.merge(&a), a, "merge is idempotent");
    assert_eq!(
        a.merge(&ab),
        ab,
        "merging what is already merged changes nothing"
    );
    check_object(&ab);
    if let Ok(c) = Object::deserialize(&mut de) {
        assert_eq!(ab.merge(&c), a.merge(&b.merge(&c)), "merge is associative");
    }
}

/// A ring document, decoded with the protocol's nesting bound (rings arrive in messages): one
/// that decodes is valid, so every lookup on it must work, and it survives a round trip.
pub fn ring(data: &[u8]) {
    let mut de = rmp_serde::Deserializer::from_read_ref(data);
    de.set_max_depth(MAX_DECODE_DEPTH);
    let Ok(ring) = Ring::deserialize(&mut de) else {
        return;
    };
    for partition in ring.q().partitions().take(64) {
        let list = ring.preference_list(partition);
        assert!(!ring.primaries(partition).is_empty());
        let _ = list;
        let _ = ring.owner(partition);
        let _ = ring.walk(partition).take(2 * ring.members().len()).count();
    }
    let _ = ring.partition_for_key(&Key::new("k").expect("a valid key"));
    let bytes = rmp_serde::to_vec(&ring).expect("a ring encodes");
    let again = rmp_serde::from_slice::<Ring>(&bytes).expect("a re-encoded ring decodes");
    assert!(again == ring, "a ring survives a round trip");
}

/// A client context token. Input starting with 0: the rest is the token's decoded bytes (so the
/// fuzzer works on what is inside the base64); otherwise the input is the token text.
pub fn context_token(data: &[u8]) {
    let token = match data.split_first() {
        Some((0, rest)) => URL_SAFE_NO_PAD.encode(rest),
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    if let Ok(context) = shoal_client::context_from_token(&token) {
        let again = shoal_client::context_from_token(&shoal_client::context_to_token(&context))
            .expect("a re-encoded token decodes");
        assert_eq!(again, context, "a context survives a round trip");
    }
}

/// Inputs that decode, one or more per target: the start of each corpus, and part of the
/// replay test even when a corpus directory is empty.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let a = object(&[(1, Some("v1")), (2, None)]);
    let b = object(&[(1, Some("v1")), (3, Some("other"))]);
    let c = object(&[(2, Some("later"))]);
    let key = Key::new("user/42").expect("a valid key");
    let options = RequestOptions {
        w: Some(2),
        ..RequestOptions::default()
    };
    let requests = vec![
        Request::Client(ClientRequest::Get {
            key: key.clone(),
            options: RequestOptions::default(),
        }),
        Request::Client(ClientRequest::Put {
            key: key.clone(),
            value: Bytes::from_static(b"hello"),
            context: a.context(),
            options,
        }),
        Request::Client(ClientRequest::Delete {
            key: key.clone(),
            context: b.context(),
            options,
        }),
        Request::Client(ClientRequest::Ring),
        Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: RingEpoch::INITIAL,
            budget: Some(std::time::Duration::from_millis(750)),
            message: PeerMessage::Replica(ReplicaMessage::Replicate {
                partition: PartitionId::from_index_unchecked(3),
                key: key.clone(),
                object: a.clone(),
            }),
        }),
        Request::Peer(PeerRequest {
            from: node("n3"),
            epoch: RingEpoch::new(7),
            budget: None,
            message: PeerMessage::Replica(ReplicaMessage::Read {
                partition: PartitionId::from_index_unchecked(3),
                key: key.clone(),
            }),
        }),
        Request::Admin(AdminRequest::Status),
    ];
    let responses = vec![
        Response::Client(ClientResponse::Local(LocalRead::Found(b.clone()))),
        Response::Client(ClientResponse::Ring(sample_ring())),
        Response::Peer(PeerResponse::Replica(ReplicaResponse::Stored)),
        Response::Peer(PeerResponse::Replica(ReplicaResponse::Replica(
            LocalRead::Found(c.clone()),
        ))),
    ];
    let mut out = Vec::new();
    for r in &requests {
        out.push(("request", encode(r).expect("encodes").to_vec()));
    }
    for r in &responses {
        out.push(("response", encode(r).expect("encodes").to_vec()));
    }
    let mut pair = rmp_serde::to_vec(&a).expect("encodes");
    pair.extend(rmp_serde::to_vec(&b).expect("encodes"));
    out.push(("object_merge", pair.clone()));
    pair.extend(rmp_serde::to_vec(&c).expect("encodes"));
    out.push(("object_merge", pair));
    out.push(("ring", rmp_serde::to_vec(&sample_ring()).expect("encodes")));
    let mut token = vec![0, 1];
    token.extend(rmp_serde::to_vec(&b.context()).expect("encodes"));
    out.push(("context_token", token));
    out.push((
        "context_token",
        shoal_client::context_to_token(&a.context()).into_bytes(),
    ));
    // Records as storage writes them, left for the target to reseal: the object table key is
    // [partition u32][segment u16][key], the hint key [len][target][partition u32][key].
    let mut object_key = vec![0, 0, 0, 3, 0, 9];
    object_key.extend_from_slice(b"user/42");
    let mut hint_key = vec![2];
    hint_key.extend_from_slice(b"n2");
    hint_key.extend_from_slice(&[0, 0, 0, 3]);
    hint_key.extend_from_slice(b"user/42");
    let encoded = rmp_serde::to_vec(&a).expect("encodes");
    for (selector, key, header) in [
        (1u8, object_key, vec![0; 4 + 1 + 16]),
        (3, hint_key, vec![0; 4 + 1 + 16 + 8]),
    ] {
        let mut input = vec![selector, key.len() as u8];
        input.extend(&key);
        let mut record = header;
        record[4] = 1;
        record.extend(&encoded);
        input.extend(record);
        out.push(("storage_records", input));
    }
    let mut identity = vec![5, 0, 0, 0, 0, 0, 1];
    identity.extend(
        rmp_serde::to_vec(&(node("n1"), PartitionCount::DEFAULT, Incarnation::new(7)))
            .expect("encodes"),
    );
    out.push(("storage_records", identity));
    out
}

/// Properties of any object that was accepted from bytes: it reads without panicking and
/// survives a round trip.
fn check_object(object: &Object) {
    let _ = object.values();
    let _ = object.context();
    assert_eq!(&object.merge(object), object, "merge is idempotent");
    let bytes = rmp_serde::to_vec(object).expect("an object encodes");
    let again = rmp_serde::from_slice::<Object>(&bytes).expect("a re-encoded object decodes");
    assert_eq!(&again, object, "an object survives a round trip");
}

/// Rewrites the record's first four bytes with the CRC32 of the table key and the rest.
fn reseal(table_key: &[u8], record: &mut [u8]) {
    if record.len() < 4 {
        return;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(table_key);
    h.update(&record[4..]);
    record[..4].copy_from_slice(&h.finalize().to_be_bytes());
}

fn node(id: &str) -> NodeId {
    NodeId::new(id).expect("a valid node id")
}

/// An object written by actors `a1`, `a2`, ...: each entry a value or a tombstone, each update
/// blind (so they are concurrent siblings).
fn object(updates: &[(u8, Option<&str>)]) -> Object {
    let mut o = Object::new();
    for (actor, value) in updates {
        let actor = Actor::new(
            node(&format!("a{actor}")),
            Incarnation::new(u64::from(*actor)),
        );
        let sibling = match value {
            Some(v) => Sibling::Value(Bytes::copy_from_slice(v.as_bytes())),
            None => Sibling::Tombstone,
        };
        o = o
            .update(&CausalContext::empty(), sibling, &actor, 64)
            .expect("under the sibling limit");
    }
    o
}

fn sample_ring() -> Ring {
    let members = (1..=4)
        .map(|i| {
            let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + i)
                .parse()
                .expect("an address");
            Member::new(node(&format!("n{i}")), addr)
        })
        .collect();
    Ring::new(
        members,
        PartitionCount::new(16).expect("a power of two"),
        ReplicationFactor::new(3).expect("a valid N"),
    )
    .expect("a valid ring")
}
