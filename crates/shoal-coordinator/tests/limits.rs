//! Bounds that keep every key usable and every node honest about itself: an object never grows
//! past what a frame carries by a coordinator's hand, one that merges past it is still read as
//! its context (so it can be overwritten or deleted), an answered request holds no in-flight
//! slot, a node whose storage failed says so, and a peer never heard from is tried.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::Duration;

use bytes::Bytes;
use harness::{Cluster, key, values};
use shoal_causality::CausalContext;
use shoal_coordinator::{InboundId, Output};
use shoal_protocol::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, LocalRead, Request, RequestError,
    Response,
};
use shoal_types::{Limits, RequestOptions};

/// Values up to 100 bytes, objects up to 150: one value fits with room, two do not.
fn small_objects() -> Cluster {
    let limits = Limits::new(1024, 100, 64)
        .unwrap()
        .with_max_object_bytes(150)
        .unwrap();
    Cluster::with_config(3, |config| config.limits = limits)
}

fn put(c: &mut Cluster, at: &str, v: &str, context: Option<&CausalContext>) -> ClientResponse {
    c.put(at, "k", &v.repeat(90), context)
}

#[test]
fn a_write_that_would_make_the_object_too_large_is_refused_definitely() {
    let mut c = small_objects();
    let at = c.primaries("k")[0].clone();
    let w = put(&mut c, at.as_str(), "a", None);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    let w = put(&mut c, at.as_str(), "b", None);
    assert_eq!(
        w,
        ClientResponse::Failed(RequestError::ObjectTooLarge {
            size: 180,
            max: 150
        })
    );
    assert_eq!(c.metrics(&at).objects_too_large, 1);
    for p in c.primaries("k") {
        assert_eq!(c.local(p.as_str(), "k").len(), 1, "nothing of b on {p}");
    }
    // A write with the read's context replaces the value, so the object shrinks: accepted.
    let g = c.get(at.as_str(), "k");
    let w = put(&mut c, at.as_str(), "c", Some(&harness::context(&g)));
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    assert_eq!(values(&c.get(at.as_str(), "k")), vec!["c".repeat(90)]);
}

#[test]
fn concurrent_writes_that_merge_past_the_bound_leave_a_key_that_can_still_be_overwritten() {
    let mut c = small_objects();
    let [a, b, third] = <[_; 3]>::try_from(c.primaries("k")).unwrap();
    // a's write misses b, so b accepts a concurrent one of its own: each object is within the
    // bound, their merge on a and on the third replica is not.
    c.silent.insert(b.clone());
    let w = put(&mut c, a.as_str(), "a", None);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    c.silent.clear();
    let w = put(&mut c, b.as_str(), "b", None);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    assert_eq!(
        c.local(third.as_str(), "k").len(),
        2,
        "merged past the bound"
    );

    // The replica's own copy leaves as its context only.
    let local = c.request(&a, ClientRequest::GetLocal { key: key("k") });
    let ClientResponse::Local(LocalRead::TooLarge { size, .. }) = local else {
        panic!("expected a too-large local read, got {local:?}");
    };
    assert_eq!(size, 180);

    // A read answers a typed error with the context of everything read...
    let g = c.get_with(
        third.as_str(),
        "k",
        RequestOptions {
            r: Some(3),
            ..Default::default()
        },
    );
    let ClientResponse::Failed(RequestError::ReadTooLarge { size, max, context }) = g else {
        panic!("expected ReadTooLarge, got {g:?}");
    };
    assert_eq!((size, max), (180, 150));
    assert_eq!(c.metrics(&third).reads_too_large, 1);
    // ...a blind write is still refused...
    let w = put(&mut c, a.as_str(), "x", None);
    assert!(
        matches!(
            w,
            ClientResponse::Failed(RequestError::ObjectTooLarge { .. })
        ),
        "{w:?}"
    );
    // ...and a write with the context replaces both values, wherever it is coordinated.
    let w = put(&mut c, b.as_str(), "c", Some(&context));
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    for at in [&a, &b, &third] {
        assert_eq!(
            values(&c.get(at.as_str(), "k")),
            vec!["c".repeat(90)],
            "{at}"
        );
    }
}

#[test]
fn an_answered_request_holds_no_in_flight_slot_while_a_silent_replica_times_out() {
    let mut c = Cluster::with_config(3, |config| config.max_in_flight = 1);
    let [a, _, silent] = <[_; 3]>::try_from(c.primaries("k")).unwrap();
    c.silent.insert(silent);
    let timeout = RequestOptions {
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    // W=2 and R=2 are met without the silent replica, which runs out each request's timeout.
    let w = c.put_with(a.as_str(), "k", "v1", None, timeout);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    let g = c.get_with(a.as_str(), "k", timeout);
    assert_eq!(values(&g), vec!["v1"]);
    let w = c.put_with(a.as_str(), "k", "v2", Some(&harness::context(&g)), timeout);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    assert_eq!(c.metrics(&a).overloaded, 0);
    // The answered get still waits for the silent replica, to repair it.
    assert_eq!(c.nodes[&a].in_flight(), 1);
}

#[test]
fn a_node_whose_storage_failed_a_commit_reports_itself_unhealthy() {
    let mut c = Cluster::new(3);
    let at = c.primaries("k")[0].clone();
    assert!(status(&mut c, &at).storage_healthy);
    c.hold_persists.insert(at.clone());
    let id = c.submit(
        &at,
        ClientRequest::Put {
            key: key("k"),
            value: Bytes::from_static(b"v"),
            context: CausalContext::empty(),
            options: RequestOptions::default(),
        },
    );
    c.settle();
    c.fail_persists();
    let _ = c.answer(&at, id);
    assert!(!status(&mut c, &at).storage_healthy);
    let other = c.primaries("k")[1].clone();
    assert!(status(&mut c, &other).storage_healthy);
}

#[test]
fn a_peer_not_yet_listening_when_the_node_starts_is_still_tried() {
    let mut c = Cluster::new(3);
    let [a, b, third] = <[_; 3]>::try_from(c.primaries("k")).unwrap();
    // The node's first pings reach its peers before they listen (and before they send).
    c.down.insert(b.clone());
    c.down.insert(third.clone());
    let now = c.now;
    c.nodes.get_mut(&a).unwrap().handle_timeout(now);
    c.settle();
    assert_eq!(c.sent.len(), 2, "only a's pings: {:?}", c.sent);
    c.down.clear();
    let w = c.put(a.as_str(), "k", "v", None);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    assert_eq!(c.metrics(&a).unavailable, 0);
}

fn status(c: &mut Cluster, at: &shoal_types::NodeId) -> shoal_protocol::NodeStatus {
    let now = c.now;
    let id = InboundId(1 << 40);
    let n = c.nodes.get_mut(at).unwrap();
    n.handle_request(now, now, id, Request::Admin(AdminRequest::Status));
    let mut outputs = Vec::new();
    while let Some(out) = n.poll_output() {
        outputs.push(out);
    }
    outputs
        .into_iter()
        .find_map(|out| match out {
            Output::Reply {
                id: r,
                response: Response::Admin(AdminResponse::Status(s)),
            } if r == id => Some(*s),
            _ => None,
        })
        .expect("a status answer")
}
