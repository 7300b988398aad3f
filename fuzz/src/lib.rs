//! The bodies of Shoal's fuzz targets, one per decoder of bytes that come from the network or
//! the disk. Each takes arbitrary bytes, decodes them, and checks what must hold of whatever
//! decodes; a panic anywhere (in a decoder, or an assertion here) is a bug.
//!
//! `fuzz_targets/*.rs` are one line each, calling these. The workspace replays every file of
//! `fuzz/corpus/<target>/`, and [`seeds`], through the same functions as an ordinary test
//! (`tests/tests/fuzz_corpus.rs` includes this file), so CI checks the corpus without libFuzzer.
//!
//! Beyond decoding, [`admission`] hands whatever decodes to a coordinator `Node` and runs it to
//! the end: admission (request options, contexts, budgets) is fuzzed, not only the decoder.
//!
//! Not here: libFuzzer itself (only the target binaries link it), and decoders of the transport's
//! framing (a length prefix checked before reading; the frame body is [`request`]/[`response`]).
//!
//! After any change to the wire shape, regenerate the corpus ([`regenerate_corpus`]) with one
//! command from the repository root:
//! `cargo test -p shoal-tests --test fuzz_corpus -- --ignored regenerate`
//! (or `cargo run --example seeds` from `fuzz/`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde::Deserialize;
use shoal_causality::{Actor, CausalContext, Object, Sibling, VersionVector};
use shoal_coordinator::{InboundId, Node, NodeConfig, Output, SendError};
use shoal_protocol::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, DecodeLimits, Delta, DigestEntry,
    ExchangeFault, ExchangeMessage, ExchangeResponse, GossipMessage, HandedOff, HintMessage,
    HintResponse, KeyObject, LocalRead, MAX_DECODE_DEPTH, MemberRecord, MemberStatus,
    PROTOCOL_VERSION, PeerError, PeerMessage, PeerRequest, PeerResponse, ReapMessage, ReapResponse,
    RepairRefusal, ReplicaMessage, ReplicaResponse, Request, Response, decode, encode,
};
use shoal_ring::{Member, Ring};
use shoal_storage::{
    HintEntry, MemoryStorage, ReadOutcome, Storage, decode_hint_record, decode_identity_record,
    decode_object_record,
};
use shoal_types::{
    Incarnation, Key, NodeId, PartitionCount, PartitionId, ReplicationFactor, RequestOptions,
    RingEpoch,
};

/// A target's body: any bytes in, a panic only on a bug.
pub type Body = fn(&[u8]);

/// Every target: its name (the directory of its corpus) and its body.
pub const TARGETS: [(&str, Body); 7] = [
    ("request", request),
    ("admission", admission),
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

/// A request as a node admits it. Input: `[fate][frame body]`. Whatever body decodes is handed
/// to [`admit`] as arrived `fate & 0x3f` powers of two of milliseconds ago (0: now), its
/// messages ending as the top bits of `fate` and a running count say.
pub fn admission(data: &[u8]) {
    let Some((&fate, body)) = data.split_first() else {
        return;
    };
    let Ok(request) = decode::<Request>(body, &DecodeLimits::default()) else {
        return;
    };
    let ago = match fate & 0x3f {
        0 => Duration::ZERO,
        e => Duration::from_millis(1u64 << (e - 1)),
    };
    let fates = (0u8..).map(move |sent| (fate >> 6).wrapping_add(sent));
    admit(request, ago, fates, u64::from(fate));
}

/// Hands `request`, which arrived `ago` before now, to node n1 of a four-node ring (in-memory
/// storage) and runs it to the end: each message it sends ends as the next of `fates` says
/// (modulo 4: lost, unreachable, an answer too large, stored), every persist is made durable,
/// and the clock then runs an hour on. Nothing may panic, and the request is answered exactly
/// once. The fuzz target and the property test (`tests/tests/admission.rs`) both drive it.
pub fn admit(request: Request, ago: Duration, mut fates: impl Iterator<Item = u8>, seed: u64) {
    let start = Instant::now() + Duration::from_secs(86_400);
    let ring = sample_ring();
    let storage = MemoryStorage::new(ring.q());
    let config = NodeConfig::new(node("n1"), Incarnation::new(1000));
    let mut n = Node::new(start, config, ring, storage, seed);
    let arrived = start.checked_sub(ago).unwrap_or(start);
    let id = InboundId(1);
    n.handle_request(start, arrived, id, request);
    let mut answers = 0;
    for clock in [start, start + Duration::from_secs(3600)] {
        n.handle_timeout(clock);
        for _ in 0..64 {
            let (mut sends, mut persists) = (Vec::new(), Vec::new());
            while let Some(out) = n.poll_output() {
                match out {
                    Output::Reply { id: r, .. } if r == id => answers += 1,
                    Output::Reply { .. } | Output::Abandon { .. } => {}
                    Output::Send { id, .. } => sends.push(id),
                    Output::Persist { id, batch } => {
                        let _ = n.storage().write(batch);
                        persists.push(id);
                    }
                }
            }
            if sends.is_empty() && persists.is_empty() {
                break;
            }
            for p in persists {
                n.handle_persisted(clock, p, Ok(()));
            }
            for out in sends {
                let result = match fates.next().unwrap_or(0) % 4 {
                    0 => Err(SendError::Lost),
                    1 => Err(SendError::Unreachable),
                    2 => Err(SendError::AnswerTooLarge),
                    _ => Ok(PeerResponse::Replica(ReplicaResponse::Stored)),
                };
                n.handle_response(clock, out, result);
            }
        }
    }
    assert_eq!(answers, 1, "a request is answered exactly once");
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
    let mut requests = vec![
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
        Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: RingEpoch::INITIAL,
            budget: None,
            message: PeerMessage::Gossip(GossipMessage::Syn {
                from: node("n2"),
                digest: vec![DigestEntry {
                    id: node("n1"),
                    generation: 1_765_000_000_000,
                    version: 0,
                    heartbeat: 12,
                }],
            }),
        }),
        Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: RingEpoch::INITIAL,
            budget: Some(std::time::Duration::from_millis(500)),
            message: PeerMessage::Hint(HintMessage::Store {
                primary: node("n3"),
                partition: PartitionId::from_index_unchecked(3),
                key: key.clone(),
                object: a.clone(),
            }),
        }),
        Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: RingEpoch::INITIAL,
            budget: Some(std::time::Duration::from_secs(10)),
            message: PeerMessage::Hint(HintMessage::Handoff {
                objects: vec![HandedOff {
                    partition: PartitionId::from_index_unchecked(3),
                    key: key.clone(),
                    object: b.clone(),
                }],
            }),
        }),
        Request::Admin(AdminRequest::Status),
        Request::Admin(AdminRequest::Repair {
            partition: Some(PartitionId::from_index_unchecked(3)),
            node: Some(node("n2")),
        }),
    ];
    // Anti-entropy: one of each ask, about the key's own partition, from another primary.
    let partition = sample_ring().partition_for_key(&key);
    // Tombstone reaping: a reap ask with a tombstone's vector.
    requests.push(Request::Peer(PeerRequest {
        from: node("n2"),
        epoch: RingEpoch::INITIAL,
        budget: Some(std::time::Duration::from_secs(5)),
        message: PeerMessage::Reap(ReapMessage {
            partition,
            key: key.clone(),
            context: a.context(),
        }),
    }));
    let exchange = |message| {
        Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: RingEpoch::INITIAL,
            budget: Some(std::time::Duration::from_secs(10)),
            message: PeerMessage::Exchange(message),
        })
    };
    requests.extend([
        exchange(ExchangeMessage::Root {
            partition,
            root: [9; 16],
        }),
        exchange(ExchangeMessage::Branches { partition }),
        exchange(ExchangeMessage::Segments {
            partition,
            segments: vec![0, 5, 1023],
        }),
        exchange(ExchangeMessage::Keys {
            partition,
            segments: vec![3, 4],
        }),
        exchange(ExchangeMessage::Fetch {
            partition,
            keys: vec![key.clone()],
        }),
        exchange(ExchangeMessage::Push {
            partition,
            objects: vec![KeyObject {
                key: key.clone(),
                object: c.clone(),
            }],
        }),
    ]);
    let member = MemberRecord {
        generation: 1_765_000_000_000,
        version: 0,
        id: node("n1"),
        incarnation: shoal_types::Incarnation::new(77),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7001)),
        zone: shoal_types::Zone::default_zone(),
        capacity: shoal_types::Capacity::default(),
        status: MemberStatus::Valid,
    };
    let responses = vec![
        Response::Peer(PeerResponse::Gossip(Some(GossipMessage::SynAck {
            from: node("n1"),
            digest: Vec::new(),
            delta: Delta {
                records: vec![member],
                heartbeats: vec![(node("n1"), 1_765_000_000_000, 12)],
            },
        }))),
        Response::Client(ClientResponse::Local(LocalRead::Found(b.clone()))),
        Response::Client(ClientResponse::Ring(sample_ring())),
        Response::Peer(PeerResponse::Replica(ReplicaResponse::Stored)),
        Response::Peer(PeerResponse::Hint(HintResponse::Held(LocalRead::Found(
            a.clone(),
        )))),
        Response::Peer(PeerResponse::Replica(ReplicaResponse::Replica(
            LocalRead::Found(c.clone()),
        ))),
        Response::Peer(PeerResponse::Reap(ReapResponse::Reaped)),
        Response::Peer(PeerResponse::Reap(ReapResponse::Newer)),
        Response::Peer(PeerResponse::Exchange(ExchangeResponse::Branches(vec![
            [1; 16];
            32
        ]))),
        Response::Peer(PeerResponse::Exchange(ExchangeResponse::Segments(vec![
            (3, [2; 16]),
            (4, [0; 16]),
        ]))),
        Response::Peer(PeerResponse::Exchange(ExchangeResponse::Keys {
            answered: 1,
            keys: vec![(key.clone(), [5; 16])],
        })),
        Response::Peer(PeerResponse::Exchange(ExchangeResponse::Fetched(vec![(
            key.clone(),
            LocalRead::Found(a.clone()),
        )]))),
        Response::Peer(PeerResponse::Failed(PeerError::Exchange(
            ExchangeFault::SegmentsOutOfOrder,
        ))),
        Response::Admin(AdminResponse::Repairing { exchanges: 48 }),
        Response::Admin(AdminResponse::RepairRefused(RepairRefusal::NotAPeer(node(
            "n9",
        )))),
    ];
    let mut out = Vec::new();
    for r in &requests {
        out.push(("request", encode(r).expect("encodes").to_vec()));
    }
    // Admission: the same requests, and hostile ones, arriving now and long ago.
    let hostile = hostile_requests(&key);
    for (i, r) in requests.iter().chain(&hostile).enumerate() {
        let mut input = vec![if i % 2 == 0 { 0 } else { 0x4a }];
        input.extend_from_slice(&encode(r).expect("encodes"));
        out.push(("admission", input));
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

/// The targets whose inputs are frame bodies, and where in an input its version byte is.
pub const VERSIONED: [(&str, usize); 3] = [("request", 0), ("response", 0), ("admission", 1)];

/// Regenerates the corpus in `corpus` after a change to the wire shape: writes [`seeds`] as
/// `<target>/seed-<n>` (valid under the current protocol), and moves the inputs libFuzzer kept
/// for the frame-body targets ([`VERSIONED`]) from an older `PROTOCOL_VERSION` to the current
/// one, so that they reach the decoder again instead of stopping at the version byte. Returns
/// what it did, to print.
pub fn regenerate_corpus(corpus: &Path) -> std::io::Result<String> {
    let mut report = String::new();
    let mut counts = std::collections::BTreeMap::new();
    for (target, bytes) in seeds() {
        let n = counts.entry(target).or_insert(0);
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{n}")), bytes)?;
        *n += 1;
    }
    report.push_str(&format!("seeds written: {counts:?}\n"));
    for (target, at) in VERSIONED {
        let mut moved = 0;
        for entry in std::fs::read_dir(corpus.join(target))? {
            let path = entry?.path();
            let mut bytes = std::fs::read(&path)?;
            if let Some(version) = bytes.get_mut(at)
                && (1..PROTOCOL_VERSION).contains(version)
            {
                *version = PROTOCOL_VERSION;
                std::fs::write(&path, &bytes)?;
                moved += 1;
            }
        }
        report.push_str(&format!(
            "{target}: {moved} inputs moved to protocol version {PROTOCOL_VERSION}\n"
        ));
    }
    Ok(report)
}

/// Requests with what a hostile client or peer may send: the longest timeouts and budgets,
/// contexts that claim `u64::MAX` events of the coordinator's own actor, impossible quorums.
fn hostile_requests(key: &Key) -> Vec<Request> {
    let forever = RequestOptions {
        timeout: Some(Duration::MAX),
        ..RequestOptions::default()
    };
    let impossible = RequestOptions {
        r: Some(255),
        w: Some(0),
        pr: Some(9),
        pw: Some(200),
        timeout: Some(Duration::from_nanos(1)),
    };
    let own = Actor::new(node("n1"), Incarnation::new(1000));
    let partition = sample_ring().partition_for_key(key);
    let elsewhere = Key::new("elsewhere").expect("a valid key");
    let saturated = CausalContext::from(
        VersionVector::from_entries(vec![(own.clone(), u64::MAX)]).expect("a valid vector"),
    );
    vec![
        Request::Client(ClientRequest::Get {
            key: key.clone(),
            options: forever,
        }),
        Request::Client(ClientRequest::Put {
            key: key.clone(),
            value: Bytes::from_static(b"v"),
            context: saturated.clone(),
            options: RequestOptions::default(),
        }),
        Request::Client(ClientRequest::Delete {
            key: key.clone(),
            context: saturated.clone(),
            options: impossible,
        }),
        Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: RingEpoch::INITIAL,
            budget: Some(Duration::MAX),
            message: PeerMessage::Coordinate(ClientRequest::Put {
                key: key.clone(),
                value: Bytes::from_static(b"v"),
                context: saturated,
                options: forever,
            }),
        }),
        // Exchanges a receiver must refuse: segments out of order, a push of an object of
        // this node's own actor (a dot it never made) under a key of another partition.
        Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: RingEpoch::INITIAL,
            budget: Some(Duration::MAX),
            message: PeerMessage::Exchange(ExchangeMessage::Keys {
                partition,
                segments: vec![9, 2, 2],
            }),
        }),
        Request::Peer(PeerRequest {
            from: node("n4"),
            epoch: RingEpoch::INITIAL,
            budget: None,
            message: PeerMessage::Exchange(ExchangeMessage::Push {
                partition,
                objects: vec![KeyObject {
                    key: elsewhere,
                    object: Object::new()
                        .update(
                            &CausalContext::empty(),
                            Sibling::Value(Bytes::from_static(b"v")),
                            &own,
                            64,
                        )
                        .expect("under the sibling limit"),
                }],
            }),
        }),
    ]
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
