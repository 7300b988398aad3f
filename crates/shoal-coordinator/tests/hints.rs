//! Sloppy quorums and hinted handoff, one behaviour at a time, on the in-memory cluster: with
//! primaries judged down, fallbacks stand in and hold hints; the hints go home as soon as the
//! primaries are reachable, carrying the coordinator's dots unchanged; the bounds drop what
//! they must, with the metric, and never fail a write that has its quorum without them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::Duration;

use harness::{Cluster, values};
use shoal_coordinator::HintsConfig;
use shoal_protocol::{ClientResponse, RequestError};
use shoal_types::{NodeId, RequestOptions};

/// A 5-node cluster (N=3) that has gossiped long enough for every node to know every other.
fn cluster(configure: impl Fn(&mut shoal_coordinator::NodeConfig)) -> Cluster {
    let mut c = Cluster::with_config(5, configure);
    c.advance(Duration::from_secs(3));
    c
}

/// Takes `down` out of the cluster and lets the others notice.
fn take_down(c: &mut Cluster, down: &[&NodeId]) {
    for n in down {
        c.down.insert((*n).clone());
    }
    c.advance(Duration::from_secs(5));
    let up: Vec<NodeId> = c
        .nodes
        .keys()
        .filter(|id| !down.contains(id))
        .cloned()
        .collect();
    for id in up {
        let status = c.status(&id);
        for n in down {
            let peer = status.peers.iter().find(|p| p.node == **n).unwrap();
            assert!(!peer.reachable, "{id} still judges {n} reachable");
        }
    }
}

/// The fallbacks that stand in for `down` primaries of key `k`, by the ring's walk.
fn fallbacks_for(c: &Cluster, k: &str, down: &[&NodeId]) -> Vec<(NodeId, NodeId)> {
    let ring = c.ring();
    let partition = ring.partition_for_key(&harness::key(k));
    ring.sloppy_preference_list(partition, |n| down.contains(&n))
        .into_iter()
        .filter_map(|t| t.stands_in_for.map(|p| (t.node, p)))
        .collect()
}

fn opts(w: u8, pw: u8) -> RequestOptions {
    RequestOptions {
        w: Some(w),
        pw: Some(pw),
        ..Default::default()
    }
}

#[test]
fn with_two_primaries_down_a_write_succeeds_on_fallbacks_and_the_hints_go_home() {
    let mut c = cluster(|_| {});
    let p = c.primaries("k");
    take_down(&mut c, &[&p[1], &p[2]]);

    let w = c.put(p[0].as_str(), "k", "v", None);
    assert!(matches!(w, ClientResponse::Written { .. }), "{w:?}");
    let stand_ins = fallbacks_for(&c, "k", &[&p[1], &p[2]]);
    assert_eq!(stand_ins.len(), 2, "a fallback for each primary down");
    for (fallback, primary) in &stand_ins {
        assert_eq!(
            c.hint(fallback.as_str(), primary.as_str(), "k"),
            vec!["v"],
            "{fallback} holds the write for {primary}"
        );
        assert!(
            c.local(fallback.as_str(), "k").is_empty(),
            "a hint is not the fallback's own replica"
        );
        let status = c.status(fallback);
        assert_eq!(status.hints.len(), 1, "{:?}", status.hints);
        assert_eq!(
            (&status.hints[0].target, status.hints[0].keys),
            (primary, 1)
        );
    }
    assert!(c.local(p[1].as_str(), "k").is_empty());

    // A read with R=2 is answered by the one primary and a fallback's hint.
    assert_eq!(values(&c.get(p[0].as_str(), "k")), vec!["v"]);

    c.down.clear();
    c.advance(Duration::from_secs(3));
    let written = c
        .object(p[0].as_str(), "k")
        .expect("the coordinator's replica");
    for primary in &p[1..] {
        assert_eq!(
            c.object(primary.as_str(), "k").as_ref(),
            Some(&written),
            "{primary} got the coordinator's object, dots unchanged"
        );
    }
    for (fallback, primary) in &stand_ins {
        assert!(
            c.hint(fallback.as_str(), primary.as_str(), "k").is_empty(),
            "{fallback} removed the hint once {primary} had it"
        );
        assert!(c.status(fallback).hints.is_empty());
        assert_eq!(c.metrics(fallback).hints_replayed, 1);
    }
}

#[test]
fn pw_counts_only_primaries_and_names_the_missing_ones() {
    let mut c = cluster(|_| {});
    let p = c.primaries("k");
    take_down(&mut c, &[&p[2]]);

    let w = c.put_with(p[0].as_str(), "k", "v", None, opts(3, 3));
    match w {
        ClientResponse::Failed(RequestError::PrimariesUnavailable { required, missing }) => {
            assert_eq!((required, missing), (3, vec![p[2].clone()]));
        }
        other => panic!("expected PrimariesUnavailable, got {other:?}"),
    }
    assert!(
        c.local(p[0].as_str(), "k").is_empty(),
        "a definite refusal applied nothing"
    );
    let w = c.put_with(p[0].as_str(), "k", "v", None, opts(3, 0));
    assert!(
        matches!(w, ClientResponse::Written { .. }),
        "W=3 with a fallback's ack, PW=0: {w:?}"
    );
    let w = c.put_with(p[0].as_str(), "k", "v2", None, opts(3, 2));
    assert!(
        matches!(w, ClientResponse::Written { .. }),
        "PW=2 from the two primaries up: {w:?}"
    );
}

#[test]
fn writes_to_one_key_while_its_primary_is_down_stay_one_hint() {
    let mut c = cluster(|_| {});
    let p = c.primaries("k");
    take_down(&mut c, &[&p[2]]);
    let mut ctx = None;
    for i in 0..5 {
        let w = c.put(p[0].as_str(), "k", &format!("v{i}"), ctx.as_ref());
        ctx = Some(harness::context(&w));
    }
    let (fallback, primary) = fallbacks_for(&c, "k", &[&p[2]]).remove(0);
    assert_eq!(c.hint(fallback.as_str(), primary.as_str(), "k"), vec!["v4"]);
    assert_eq!(c.status(&fallback).hints[0].keys, 1);
    assert_eq!(c.metrics(&fallback).hints_stored, 5);
}

#[test]
fn a_hint_store_at_its_bound_refuses_with_the_metric_and_the_write_still_succeeds() {
    // Room for about one 1 KiB hint per target.
    let mut c = cluster(|config| {
        config.hints = HintsConfig {
            max_hint_bytes: 1500,
            ..HintsConfig::default()
        }
    });
    let p = c.primaries("k");
    take_down(&mut c, &[&p[2]]);
    let (fallback, _) = fallbacks_for(&c, "k", &[&p[2]]).remove(0);
    let big = "x".repeat(1024);
    // Keys with the same primaries and fallback as "k", so they all go to the one store.
    let ring = c.ring();
    let same: Vec<String> = (0..1000)
        .map(|i| format!("k{i}"))
        .filter(|k| {
            let part = ring.partition_for_key(&harness::key(k));
            ring.primaries(part) == p.as_slice()
        })
        .take(3)
        .collect();
    assert_eq!(same.len(), 3);
    for k in &same {
        let w = c.put(p[0].as_str(), k, &big, None);
        assert!(
            matches!(w, ClientResponse::Written { .. }),
            "W=2 from the two primaries up: {w:?}"
        );
    }
    let m = c.metrics(&fallback);
    assert_eq!(m.hints_stored, 1, "one hint fits");
    assert_eq!(m.hints_dropped, 2, "the others were refused and counted");
}

#[test]
fn hints_older_than_the_window_are_dropped_even_while_the_target_is_down() {
    let mut c = cluster(|config| {
        config.hints = HintsConfig {
            max_hint_window: Duration::from_secs(30),
            ..HintsConfig::default()
        }
    });
    let p = c.primaries("k");
    take_down(&mut c, &[&p[2]]);
    c.put(p[0].as_str(), "k", "v", None);
    let (fallback, primary) = fallbacks_for(&c, "k", &[&p[2]]).remove(0);
    assert_eq!(c.hint(fallback.as_str(), primary.as_str(), "k"), vec!["v"]);

    c.advance(Duration::from_secs(20));
    assert_eq!(
        c.hint(fallback.as_str(), primary.as_str(), "k"),
        vec!["v"],
        "within the window"
    );
    c.advance(Duration::from_secs(15));
    assert!(c.hint(fallback.as_str(), primary.as_str(), "k").is_empty());
    assert_eq!(c.metrics(&fallback).hints_dropped, 1);
    assert!(
        c.status(&fallback).hints.is_empty(),
        "nothing is counted as held"
    );
}

#[test]
fn a_replay_cut_off_by_the_target_going_silent_resumes_and_finishes() {
    let mut c = cluster(|config| {
        // One object per batch, a batch a second (the values are one byte), so the replay
        // takes many batches and a while.
        config.hints.replay_batch_bytes = 1;
        config.hints.replay_rate = 1;
    });
    let p = c.primaries("k");
    take_down(&mut c, &[&p[2]]);
    let ring = c.ring();
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("k{i}"))
        .filter(|k| {
            let part = ring.partition_for_key(&harness::key(k));
            ring.primaries(part) == p.as_slice()
        })
        .take(20)
        .collect();
    for k in &keys {
        c.put(p[0].as_str(), k, "v", None);
    }
    let (fallback, primary) = fallbacks_for(&c, "k", &[&p[2]]).remove(0);
    assert_eq!(c.status(&fallback).hints[0].keys, 20);

    // The target comes back, then stops answering mid-replay.
    c.down.clear();
    c.advance(Duration::from_secs(5));
    let replayed = c.metrics(&fallback).hints_replayed;
    assert!(
        replayed > 0 && replayed < 20,
        "replay under way: {replayed}"
    );
    c.silent.insert(primary.clone());
    c.advance(Duration::from_secs(25));
    assert!(
        c.metrics(&fallback).hint_replay_failures > 0,
        "the batch out was given up"
    );
    let cut_at = c.metrics(&fallback).hints_replayed;
    assert!(cut_at < 20, "the replay was cut off: {cut_at}");
    c.silent.clear();
    c.advance(Duration::from_secs(40));
    for k in &keys {
        assert_eq!(
            c.local(primary.as_str(), k),
            vec!["v"],
            "{k} reached {primary}"
        );
        assert!(c.hint(fallback.as_str(), primary.as_str(), k).is_empty());
    }
    assert!(c.status(&fallback).hints.is_empty());
}

#[test]
fn a_write_whose_primaries_are_all_down_is_unavailable() {
    let mut c = cluster(|_| {});
    let p = c.primaries("k");
    let others: Vec<NodeId> = c.nodes.keys().filter(|n| !p.contains(n)).cloned().collect();
    take_down(&mut c, &[&p[0], &p[1], &p[2]]);
    let w = c.put(others[0].as_str(), "k", "v", None);
    assert!(
        matches!(w, ClientResponse::Failed(RequestError::Unavailable { .. })),
        "only a primary makes a dot: {w:?}"
    );
}

#[test]
fn a_primary_found_unreachable_during_a_write_is_stood_in_for_at_once() {
    let mut c = cluster(|_| {});
    let p = c.primaries("k");
    // p[1] and p[2] die now; nobody has noticed yet, so the write is sent to them.
    c.down.insert(p[1].clone());
    c.down.insert(p[2].clone());
    let w = c.put(p[0].as_str(), "k", "v", None);
    assert!(
        matches!(w, ClientResponse::Written { .. }),
        "fallbacks took the writes the dead primaries could not: {w:?}"
    );
    let stand_ins = fallbacks_for(&c, "k", &[&p[1], &p[2]]);
    for (fallback, primary) in &stand_ins {
        assert_eq!(c.hint(fallback.as_str(), primary.as_str(), "k"), vec!["v"]);
    }
    // A read asks the dead primaries too, then their fallbacks, and is answered.
    let mut c2 = cluster(|_| {});
    c2.put(p[0].as_str(), "k", "v", None);
    c2.down.insert(p[1].clone());
    c2.down.insert(p[2].clone());
    assert_eq!(values(&c2.get(p[0].as_str(), "k")), vec!["v"]);
}
