//! What a node does when it cannot keep up: work whose deadline passed while it waited is
//! dropped unworked, a full commit queue refuses new client writes before it refuses the
//! replica writes other nodes' quorums wait for, a client that gives up stops costing the node
//! anything, and every refusal is definite — nothing was applied — so a client may retry it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::Duration;

use bytes::Bytes;
use harness::{Cluster, key, node};
use shoal_causality::{Actor, CausalContext, Object, Sibling};
use shoal_protocol::{
    ClientRequest, ClientResponse, PeerError, PeerMessage, PeerResponse, ReplicaMessage,
    ReplicaResponse, RequestError, Response,
};
use shoal_types::{Incarnation, RequestOptions};

fn put(k: &str, v: &str, timeout: Option<Duration>) -> ClientRequest {
    ClientRequest::Put {
        key: key(k),
        value: Bytes::from(v.to_owned()),
        context: CausalContext::empty(),
        options: RequestOptions {
            timeout,
            ..Default::default()
        },
    }
}

fn get(k: &str, options: RequestOptions) -> ClientRequest {
    ClientRequest::Get {
        key: key(k),
        options,
    }
}

fn object(v: &str) -> Object {
    let actor = Actor::new(node("n9"), Incarnation::new(9));
    Object::new()
        .update(
            &CausalContext::empty(),
            Sibling::Value(Bytes::from(v.to_owned())),
            &actor,
            64,
        )
        .unwrap()
}

#[test]
fn a_request_that_waited_past_its_deadline_is_refused_unworked() {
    let mut c = Cluster::new(3);
    let at = c.primaries("k")[0].clone();
    let arrived = c.now;
    c.now += Duration::from_secs(2);
    let sent_before = c.sent.len();
    let id = c.submit_arrived(&at, put("k", "v", Some(Duration::from_secs(1))), arrived);
    c.settle();
    match c.answer(&at, id) {
        Some(ClientResponse::Failed(e @ RequestError::Overloaded)) => {
            assert!(
                !e.is_indeterminate(),
                "nothing was applied: a definite refusal"
            )
        }
        other => panic!("an expired put: {other:?}"),
    }
    assert_eq!(c.sent.len(), sent_before, "nothing was sent to replicas");
    assert!(c.local(at.as_str(), "k").is_empty(), "nothing was written");
    assert_eq!(c.metrics(&at).expired_client, 1);
    // The same request, fresh, is served: its deadline counts from its arrival.
    let arrived = c.now - Duration::from_millis(900);
    let id = c.submit_arrived(&at, put("k", "v", Some(Duration::from_secs(1))), arrived);
    c.settle();
    assert!(matches!(
        c.answer(&at, id),
        Some(ClientResponse::Written { .. })
    ));
}

#[test]
fn a_peer_message_whose_sender_gave_up_is_dropped_unworked() {
    let mut c = Cluster::new(3);
    let [a, b, _] = <[_; 3]>::try_from(c.primaries("k")).unwrap();
    let partition = c.ring().partition_for_key(&key("k"));
    let replicate = PeerMessage::Replica(ReplicaMessage::Replicate {
        partition,
        key: key("k"),
        object: object("late"),
    });
    let arrived = c.now;
    c.now += Duration::from_millis(300);
    let budget = Some(Duration::from_millis(200));
    let answer = c.peer_message(&a, &b, replicate.clone(), arrived, budget);
    assert_eq!(
        answer,
        Some(Response::Peer(PeerResponse::Failed(PeerError::Expired)))
    );
    c.settle();
    assert!(
        c.local(a.as_str(), "k").is_empty(),
        "the replica wrote nothing"
    );
    assert_eq!(c.metrics(&a).expired_peer, 1);
    // With time left it is stored, and answered once durable (at once: this disk is quick).
    let now = c.now;
    assert_eq!(
        c.peer_message(&a, &b, replicate, now, budget),
        Some(Response::Peer(PeerResponse::Replica(
            ReplicaResponse::Stored
        )))
    );
    assert_eq!(c.local(a.as_str(), "k"), vec![Bytes::from("late")]);
}

#[test]
fn a_stalled_disk_sheds_client_writes_before_the_replica_writes_of_other_nodes() {
    let limit = 4;
    let mut c = Cluster::with_config(3, |config| config.max_pending_persists = limit);
    let at = c.primaries("k")[0].clone();
    let peer = c.primaries("k")[1].clone();
    c.hold_persists.insert(at.clone());
    // Client writes fill the commit queue up to the limit, then are refused.
    let mut ids = Vec::new();
    for i in 0..limit + 3 {
        ids.push(c.submit(&at, put(&format!("k{i}"), "v", None)));
    }
    c.settle();
    let refused = ids
        .iter()
        .filter(|id| {
            matches!(
                c.answer(&at, **id),
                Some(ClientResponse::Failed(RequestError::Overloaded))
            )
        })
        .count();
    assert_eq!(
        refused, 3,
        "writes beyond the commit queue's client limit are refused"
    );
    // Replica writes from another coordinator still go in: they have twice the room.
    let mut stored = 0;
    let mut shed = 0;
    for i in 0..limit + 2 {
        let k = format!("r{i}");
        let partition = c.ring().partition_for_key(&key(&k));
        let message = PeerMessage::Replica(ReplicaMessage::Replicate {
            partition,
            key: key(&k),
            object: object("replica"),
        });
        let now = c.now;
        match c.peer_message(&at, &peer, message, now, Some(Duration::from_secs(5))) {
            None => stored += 1,
            Some(Response::Peer(PeerResponse::Failed(PeerError::Overloaded))) => shed += 1,
            other => panic!("a replica write: {other:?}"),
        }
    }
    assert_eq!(
        (stored, shed),
        (limit, 2),
        "replica writes are refused only at twice the limit"
    );
    assert_eq!(c.metrics(&at).shed_peer, 2);
    // Once the disk catches up, everything accepted is durable and acknowledged.
    c.release_persists();
    assert_eq!(c.local(at.as_str(), "r0"), vec![Bytes::from("replica")]);
}

#[test]
fn a_timeout_beyond_the_nodes_maximum_is_refused_before_any_clock_arithmetic() {
    let mut c = Cluster::new(3);
    let at = c.primaries("k")[0].clone();
    for timeout in [Duration::MAX, Duration::from_secs(3600), Duration::ZERO] {
        let answer = c.request(&at, put("k", "v", Some(timeout)));
        match answer {
            ClientResponse::Failed(RequestError::InvalidTimeout { asked, max }) => {
                assert_eq!(asked, timeout);
                assert_eq!(max, Duration::from_secs(60));
            }
            other => panic!("timeout {timeout:?}: {other:?}"),
        }
    }
    assert!(c.local(at.as_str(), "k").is_empty());
}

#[test]
fn a_cancelled_get_stops_waiting_abandons_its_reads_and_answers_nothing() {
    let mut c = Cluster::new(3);
    let [a, b, s] = <[_; 3]>::try_from(c.primaries("k")).unwrap();
    c.silent.insert(b.clone());
    c.silent.insert(s.clone());
    let options = RequestOptions {
        r: Some(3),
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    let id = c.submit(&a, get("k", options));
    c.settle();
    assert_eq!(
        c.nodes[&a].in_flight(),
        1,
        "waiting for the silent replicas"
    );
    c.cancel(&a, id);
    c.settle();
    assert_eq!(
        c.nodes[&a].in_flight(),
        0,
        "the get is no longer coordinated"
    );
    assert_eq!(c.metrics(&a).cancelled, 1);
    let abandoned: Vec<_> = c.abandoned.iter().filter(|(n, _)| *n == a).collect();
    assert_eq!(abandoned.len(), 2, "both reads still out are abandoned");
    c.advance(Duration::from_secs(11));
    assert_eq!(
        c.answer(&a, id),
        None,
        "nothing is answered, not even at the deadline"
    );
    // Cancelling again, or an id the node never saw, changes nothing.
    c.cancel(&a, id);
    c.cancel(&a, shoal_coordinator::InboundId(1 << 50));
    assert_eq!(c.metrics(&a).cancelled, 1);
}

#[test]
fn a_forwarded_write_carries_what_is_left_of_its_deadline() {
    let mut c = Cluster::new(5);
    let outsider = c.non_primary("k");
    let arrived = c.now;
    c.now += Duration::from_millis(400);
    let id = c.submit_arrived(
        &outsider,
        put("k", "v", Some(Duration::from_secs(1))),
        arrived,
    );
    c.settle();
    assert!(matches!(
        c.answer(&outsider, id),
        Some(ClientResponse::Written { .. })
    ));
    let forwarded = c
        .sent_messages
        .iter()
        .find_map(
            |(from, request)| match (&request.message, from == &outsider) {
                (PeerMessage::Coordinate(ClientRequest::Put { options, .. }), true) => {
                    Some((options.timeout, request.budget))
                }
                _ => None,
            },
        )
        .expect("the write was forwarded");
    let left = Some(Duration::from_millis(600));
    assert_eq!(
        forwarded,
        (left, left),
        "the primary gets 600 ms, not the whole second"
    );
}

#[test]
fn replica_answers_are_not_shed_by_a_busy_client_side() {
    // A node refusing clients for its in-flight limit still serves its peers' reads.
    let mut c = Cluster::with_config(3, |config| config.max_in_flight = 0);
    let [a, b, _] = <[_; 3]>::try_from(c.primaries("k")).unwrap();
    assert!(matches!(
        c.get(a.as_str(), "k"),
        ClientResponse::Failed(RequestError::Overloaded)
    ));
    let partition = c.ring().partition_for_key(&key("k"));
    let read = PeerMessage::Replica(ReplicaMessage::Read {
        partition,
        key: key("k"),
    });
    let now = c.now;
    match c.peer_message(&a, &b, read, now, Some(Duration::from_secs(1))) {
        Some(Response::Peer(PeerResponse::Replica(ReplicaResponse::Replica(_)))) => {}
        other => panic!("a peer's read of a busy node: {other:?}"),
    }
}
