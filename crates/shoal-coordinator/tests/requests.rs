//! Behaviours of the coordinator, one at a time, on the in-memory harness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::Duration;

use bytes::Bytes;
use harness::{Cluster, context, key, node, values};

use shoal_protocol::{ClientRequest, ClientResponse, RequestError};
use shoal_types::RequestOptions;

fn r(n: u8) -> RequestOptions {
    RequestOptions {
        r: Some(n),
        ..Default::default()
    }
}

#[test]
fn put_then_get_through_different_nodes() {
    let mut c = Cluster::new(3);
    let w = c.put("n1", "k", "v1", None);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    for at in ["n1", "n2", "n3"] {
        assert_eq!(values(&c.get(at, "k")), vec!["v1"]);
    }
}

#[test]
fn get_of_a_missing_key_is_not_found_with_an_empty_context() {
    let mut c = Cluster::new(3);
    let g = c.get("n2", "nothing");
    assert!(values(&g).is_empty());
    assert!(context(&g).is_empty());
}

#[test]
fn two_blind_puts_become_siblings_and_a_put_with_the_context_resolves_them() {
    let mut c = Cluster::new(3);
    c.put("n1", "k", "a", None);
    c.put("n2", "k", "b", None);
    let g = c.get("n3", "k");
    assert_eq!(values(&g), vec!["a", "b"]);
    c.put("n3", "k", "c", Some(&context(&g)));
    assert_eq!(values(&c.get("n1", "k")), vec!["c"]);
}

#[test]
fn a_writer_that_writes_with_its_read_context_never_makes_siblings() {
    let mut c = Cluster::new(3);
    for i in 0..20 {
        let at = ["n1", "n2", "n3"][i % 3];
        let g = c.get(at, "k");
        assert!(values(&g).len() <= 1, "siblings after {i} writes: {g:?}");
        c.put(at, "k", &format!("v{i}"), Some(&context(&g)));
    }
    assert_eq!(values(&c.get("n1", "k")), vec!["v19"]);
}

#[test]
fn a_write_landing_outside_the_preference_list_is_forwarded_to_a_primary() {
    let mut c = Cluster::new(5);
    let outsider = c.non_primary("k");
    let w = c.put(outsider.as_str(), "k", "v", None);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    assert!(
        c.sent
            .iter()
            .any(|(from, _, kind)| *from == outsider && kind == "coordinate")
    );
    assert!(
        c.local(outsider.as_str(), "k").is_empty(),
        "the outsider stores nothing"
    );
    for p in c.primaries("k") {
        assert_eq!(c.local(p.as_str(), "k"), vec![Bytes::from("v")], "on {p}");
    }
}

fn put(k: &str, v: &str, options: RequestOptions) -> ClientRequest {
    ClientRequest::Put {
        key: key(k),
        value: Bytes::from(v.to_owned()),
        context: Default::default(),
        options,
    }
}

#[test]
fn the_coordinator_replicates_only_once_its_own_write_is_durable() {
    // Local first: a dot leaves the coordinator only inside an object durable on it, so a crash
    // can never take back a dot that another replica or a client holds.
    let mut c = Cluster::new(3);
    let at = c.primaries("k")[0].clone();
    c.hold_persists.insert(at.clone());
    let sent_before = c.sent.len();
    let id = c.submit(&at, put("k", "v", RequestOptions::default()));
    c.settle();
    let replicated = |c: &Cluster| {
        c.sent[sent_before..]
            .iter()
            .filter(|(from, _, k)| *from == at && k == "replicate")
            .count()
    };
    assert_eq!(
        replicated(&c),
        0,
        "nothing leaves before the local write is durable"
    );
    assert!(c.answer(&at, id).is_none(), "and nobody is answered");
    c.release_persists();
    c.settle();
    assert_eq!(replicated(&c), 2, "then both other primaries get it");
    let answer = c.answer(&at, id).expect("W=2 met");
    assert!(
        matches!(answer, ClientResponse::Written { .. }),
        "{answer:?}"
    );
    assert_eq!(c.local(at.as_str(), "k"), vec![Bytes::from("v")]);
}

#[test]
fn a_failed_local_commit_fails_the_write_indeterminately_and_sends_nothing() {
    let mut c = Cluster::new(3);
    let at = c.primaries("k")[0].clone();
    c.hold_persists.insert(at.clone());
    let id = c.submit(&at, put("k", "v", RequestOptions::default()));
    c.settle();
    c.fail_persists();
    let Some(ClientResponse::Failed(e)) = c.answer(&at, id) else {
        panic!("expected a failure");
    };
    // Indeterminate: a failed fsync may have reached the disk, and a later write to the key
    // built on it may carry it out.
    assert!(e.is_indeterminate(), "{e}");
    assert!(
        matches!(
            e,
            RequestError::QuorumFailed {
                required: 2,
                answered: 0
            }
        ),
        "{e:?}"
    );
    for other in &c.primaries("k")[1..] {
        assert!(
            c.local(other.as_str(), "k").is_empty(),
            "{other} was sent nothing"
        );
    }
}

#[test]
fn with_one_node_down_w2_and_r2_succeed_and_r3_fails_saying_how_many() {
    let mut c = Cluster::new(3);
    c.put("n1", "k", "v", None);
    c.down.insert(node("n3"));
    let w = c.put("n1", "k2", "w", None);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    assert_eq!(values(&c.get("n1", "k")), vec!["v"]);
    let g = c.get_with("n1", "k", r(3));
    match g {
        ClientResponse::Failed(RequestError::QuorumFailed { required, answered }) => {
            assert_eq!((required, answered), (3, 2));
        }
        ClientResponse::Failed(RequestError::Unavailable { required, alive }) => {
            assert_eq!((required, alive), (3, 2));
        }
        other => panic!("expected a quorum failure, got {other:?}"),
    }
}

#[test]
fn unavailable_is_definite_nothing_is_written() {
    let mut c = Cluster::new(3);
    // Hear from n2 and n3, then learn that they are down (a peer never heard from is tried
    // for a while: it may not have been listening yet).
    c.get("n1", "warmup");
    c.down.insert(node("n2"));
    c.down.insert(node("n3"));
    c.get("n1", "warmup");
    let w = c.put("n1", "k", "v", None);
    assert!(
        matches!(
            w,
            ClientResponse::Failed(RequestError::Unavailable {
                required: 2,
                alive: 1
            })
        ),
        "{w:?}"
    );
    assert!(
        c.local("n1", "k").is_empty(),
        "an Unavailable write was applied"
    );
}

#[test]
fn a_write_that_misses_its_quorum_is_indeterminate() {
    let mut c = Cluster::new(3);
    c.silent.insert(node("n2"));
    c.silent.insert(node("n3"));
    let w = c.put_with(
        "n1",
        "k",
        "v",
        None,
        RequestOptions {
            timeout: Some(Duration::from_millis(200)),
            ..Default::default()
        },
    );
    let ClientResponse::Failed(e) = &w else {
        panic!("expected failure, got {w:?}")
    };
    assert!(e.is_indeterminate(), "{e}");
    assert_eq!(
        c.local("n1", "k"),
        vec![Bytes::from("v")],
        "applied locally"
    );
}

#[test]
fn read_repair_updates_a_stale_replica_even_after_the_answer() {
    let mut c = Cluster::new(3);
    c.down.insert(node("n3"));
    c.put("n1", "k", "v", None);
    assert!(c.local("n3", "k").is_empty());
    c.down.remove(&node("n3"));
    // Let the reachability back-off pass.
    c.advance(Duration::from_secs(6));
    assert_eq!(values(&c.get("n1", "k")), vec!["v"]);
    c.settle();
    assert_eq!(
        c.local("n3", "k"),
        vec![Bytes::from("v")],
        "n3 was not repaired"
    );
}

#[test]
fn values_over_the_limit_are_refused_and_nothing_is_stored() {
    let mut c = Cluster::new(3);
    let big = "x".repeat(8 * 1024 * 1024 + 1);
    let w = c.put("n1", "k", &big, None);
    assert!(
        matches!(
            w,
            ClientResponse::Failed(RequestError::ValueTooLarge { .. })
        ),
        "{w:?}"
    );
    assert!(c.local("n1", "k").is_empty());
}

#[test]
fn too_many_siblings_is_refused_definitely() {
    let mut c = Cluster::new(3);
    for i in 0..64 {
        c.put("n1", "k", &format!("v{i}"), None);
    }
    let w = c.put("n1", "k", "one-too-many", None);
    assert!(
        matches!(
            w,
            ClientResponse::Failed(RequestError::TooManySiblings {
                siblings: 65,
                max: 64
            })
        ),
        "{w:?}"
    );
    assert_eq!(values(&c.get("n2", "k")).len(), 64);
}

#[test]
fn delete_hides_the_value_and_returns_a_context_to_write_over_it() {
    let mut c = Cluster::new(3);
    c.put("n1", "k", "v", None);
    let g = c.get("n2", "k");
    let d = c.request(
        &node("n3"),
        ClientRequest::Delete {
            key: key("k"),
            context: context(&g),
            options: Default::default(),
        },
    );
    assert!(matches!(d, ClientResponse::Written { .. }), "{d:?}");
    let g = c.get("n1", "k");
    assert!(values(&g).is_empty());
    assert!(!context(&g).is_empty(), "a deleted key still has a context");
    c.put("n1", "k", "again", Some(&context(&g)));
    assert_eq!(values(&c.get("n2", "k")), vec!["again"]);
}

#[test]
fn invalid_quorum_options_are_refused() {
    let mut c = Cluster::new(3);
    let g = c.get_with("n1", "k", r(4));
    assert!(
        matches!(g, ClientResponse::Failed(RequestError::InvalidQuorum(_))),
        "{g:?}"
    );
}

#[test]
fn get_local_shows_one_replica_unmerged() {
    let mut c = Cluster::new(3);
    c.put("n1", "k", "v", None);
    let l = c.request(&node("n2"), ClientRequest::GetLocal { key: key("k") });
    match l {
        ClientResponse::Local(shoal_protocol::LocalRead::Found(o)) => {
            assert_eq!(o.values(), vec![Bytes::from("v")])
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_replica_message_naming_the_wrong_partition_is_refused() {
    use shoal_protocol::{
        PeerError, PeerMessage, PeerRequest, PeerResponse, ReplicaMessage, Request, Response,
    };
    let mut c = Cluster::new(3);
    let ring = c.ring();
    let right = ring.partition_for_key(&key("k"));
    let wrong = right.successor(ring.q());
    let now = c.now;
    let n1 = c.nodes.get_mut(&node("n1")).unwrap();
    n1.handle_request(
        now,
        now,
        shoal_coordinator::InboundId(1 << 40),
        Request::Peer(PeerRequest {
            from: node("n2"),
            epoch: ring.epoch(),
            budget: None,
            message: PeerMessage::Replica(ReplicaMessage::Read {
                partition: wrong,
                key: key("k"),
            }),
        }),
    );
    match n1.poll_output() {
        Some(shoal_coordinator::Output::Reply {
            response:
                Response::Peer(PeerResponse::Failed(PeerError::WrongPartition { expected, got })),
            ..
        }) => assert_eq!((expected, got), (right, wrong)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn with_read_repair_off_a_read_leaves_a_stale_replica_stale() {
    let mut c = Cluster::with_config(3, |config| {
        config.read_repair = false;
        // Nothing else repairs either: no hints kept, no anti-entropy.
        config.hints.max_hint_bytes = 0;
        config.anti_entropy.enabled = false;
    });
    c.advance(Duration::from_secs(3));
    c.down.insert(node("n3"));
    c.advance(Duration::from_secs(5));
    c.put("n1", "k", "v", None);
    c.down.clear();
    c.advance(Duration::from_secs(3));
    let read = c.get_with("n1", "k", r(3));
    assert_eq!(values(&read), vec!["v"]);
    c.settle();
    assert!(c.local("n3", "k").is_empty(), "not repaired by the read");
    assert_eq!(c.metrics(&node("n1")).read_repairs, 0);
}
