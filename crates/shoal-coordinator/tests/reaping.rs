//! Tombstone reaping on the in-memory cluster: a delete every primary acked is reaped on all of
//! them; one a primary missed is not, until anti-entropy brought the tombstone there; an older
//! copy arriving after the reap (a hint, a read repair, a push) does not bring the value back;
//! a write racing the reap survives; reaping records are forgotten after their retention.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::Duration;

use harness::{Cluster, context, key, node};
use shoal_causality::{CausalContext, Object};
use shoal_coordinator::NodeConfig;
use shoal_protocol::{
    ClientRequest, ClientResponse, HandedOff, HintMessage, PeerMessage, ReapMessage, ReplicaMessage,
};
use shoal_storage::Storage;
use shoal_types::{NodeId, RequestOptions};

/// Read repair and hints off: what converges, anti-entropy and the reaper converged.
fn no_read_repair_no_hints(config: &mut NodeConfig) {
    config.read_repair = false;
    config.hints.enabled = false;
}

fn delete(c: &mut Cluster, at: &str, k: &str, ctx: &CausalContext) -> ClientResponse {
    c.request(
        &node(at),
        ClientRequest::Delete {
            key: key(k),
            context: ctx.clone(),
            options: RequestOptions::default(),
        },
    )
}

/// Node `at`'s reaping record of `k`, if it holds one.
fn reaped(c: &Cluster, at: &NodeId, k: &str) -> Option<shoal_storage::Reaped> {
    let n = &c.nodes[at];
    let p = n.ring().partition_for_key(&key(k));
    n.storage().reaped(p, &key(k)).unwrap()
}

fn reaped_everywhere(c: &Cluster, k: &str) -> bool {
    c.primaries(k).iter().all(|p| reaped(c, p, k).is_some())
}

/// Takes `n` down and waits until every other node judges it so.
fn take_down(c: &mut Cluster, n: &NodeId) {
    c.down.insert(n.clone());
    c.advance(Duration::from_secs(10));
}

fn not_found(r: &ClientResponse) -> bool {
    matches!(r, ClientResponse::Read { values, .. } if values.is_empty())
}

fn written(r: &ClientResponse) -> CausalContext {
    assert!(matches!(r, ClientResponse::Written { .. }), "{r:?}");
    context(r)
}

#[test]
fn a_delete_every_primary_acked_is_reaped_on_all_of_them() {
    let mut c = Cluster::new(3);
    let ctx = written(&c.put("n1", "k", "v1", None));
    written(&delete(&mut c, "n1", "k", &ctx));
    c.advance(Duration::from_secs(1));
    for p in c.primaries("k") {
        let record = reaped(&c, &p, "k").unwrap_or_else(|| panic!("{p} did not reap"));
        assert!(record.vv.descends(ctx.vector()), "{p}: {record:?}");
        let n = &c.nodes[&p];
        let partition = n.ring().partition_for_key(&key("k"));
        assert!(
            n.storage()
                .segment_keys(
                    partition,
                    shoal_storage::SegmentId::of(&key("k"), n.ring().q())
                )
                .unwrap()
                .is_empty(),
            "{p}: the reaped key left the tree's segment"
        );
        assert_eq!(c.object(p.as_str(), "k"), Some(Object::reaped(record.vv)));
    }
    let m = c.metrics(&node("n1"));
    assert_eq!(m.tombstones_reaped, 1, "{m:?}");
    assert_eq!(m.tombstone_lifetime_buckets.iter().sum::<u64>(), 1);
    let r = c.get("n2", "k");
    assert!(not_found(&r), "{r:?}");

    // A new write after the reap counts on past the reaped dots and is read everywhere.
    let ctx = context(&r);
    written(&c.put("n2", "k", "v2", Some(&ctx)));
    assert_eq!(harness::values(&c.get("n3", "k")), vec!["v2".to_owned()]);
    for p in c.primaries("k") {
        assert!(reaped(&c, &p, "k").is_none(), "{p}: the record gave way");
        assert_eq!(c.local(p.as_str(), "k"), vec![bytes::Bytes::from("v2")]);
    }
}

#[test]
fn a_delete_a_primary_missed_is_reaped_only_after_anti_entropy_brought_it() {
    let mut c = Cluster::with_config(3, no_read_repair_no_hints);
    let keys: Vec<String> = (0..20).map(|i| format!("key{i:03}")).collect();
    let mut contexts = Vec::new();
    for k in &keys {
        contexts.push(written(&c.put("n1", k, "old", None)));
    }
    let n3 = node("n3");
    take_down(&mut c, &n3);
    for (k, ctx) in keys.iter().zip(&contexts) {
        written(&delete(&mut c, "n1", k, ctx));
    }
    c.advance(Duration::from_secs(30));
    for k in &keys {
        assert!(
            !reaped_everywhere(&c, k),
            "{k} reaped while n3 holds the old value"
        );
        assert!(
            reaped(&c, &node("n1"), k).is_none(),
            "{k}: no primary reaps alone"
        );
        assert!(
            c.object("n1", k).unwrap().is_deleted(),
            "{k}: the tombstone stays"
        );
    }
    // n3 comes back with the old values; with no read repair and no hints, only
    // anti-entropy brings the tombstones, and then the reaper reaps them.
    c.down.remove(&n3);
    let took = c.run_until(Duration::from_secs(1800), |c| {
        keys.iter().all(|k| reaped_everywhere(c, k))
    });
    assert!(
        took.is_some(),
        "not every tombstone was reaped in 30 simulated minutes"
    );
    for k in &keys {
        for n in ["n1", "n2", "n3"] {
            assert!(
                c.local(n, k).is_empty(),
                "{n} reads {k}: {:?}",
                c.local(n, k)
            );
        }
        let r = c.get("n3", k);
        assert!(not_found(&r), "{k}: {r:?}");
    }
    let reaped_total: u64 = c.nodes.keys().map(|n| c.metrics(n).tombstones_reaped).sum();
    assert!(reaped_total >= keys.len() as u64, "{reaped_total}");
}

#[test]
fn an_older_copy_arriving_after_the_reap_does_not_bring_the_value_back() {
    let mut c = Cluster::new(3);
    let ctx = written(&c.put("n1", "k", "old", None));
    let old = c.object("n1", "k").unwrap();
    written(&delete(&mut c, "n1", "k", &ctx));
    c.advance(Duration::from_secs(1));
    assert!(reaped_everywhere(&c, "k"));
    let partition = c.ring().partition_for_key(&key("k"));
    let now = c.now;
    // A hint of the old value handed off late, a read repair, and a replica write.
    let messages = [
        PeerMessage::Hint(HintMessage::Handoff {
            objects: vec![HandedOff {
                partition,
                key: key("k"),
                object: old.clone(),
            }],
        }),
        PeerMessage::Replica(ReplicaMessage::Repair {
            partition,
            key: key("k"),
            object: old.clone(),
        }),
        PeerMessage::Replica(ReplicaMessage::Replicate {
            partition,
            key: key("k"),
            object: old.clone(),
        }),
    ];
    for message in messages {
        let answer = c.peer_message(&node("n2"), &node("n1"), message, now, None);
        assert!(
            answer.is_some(),
            "the old copy is answered as stored at once"
        );
        c.settle();
        assert!(c.local("n2", "k").is_empty(), "the old value came back");
        assert!(reaped(&c, &node("n2"), "k").is_some(), "the record stays");
    }
    c.advance(Duration::from_secs(600));
    for n in ["n1", "n2", "n3"] {
        assert!(c.local(n, "k").is_empty(), "{n}");
    }
    let r = c.get("n3", "k");
    assert!(not_found(&r), "{r:?}");
}

#[test]
fn a_write_racing_the_reap_survives_and_spreads() {
    let mut c = Cluster::with_config(3, no_read_repair_no_hints);
    let ctx = written(&c.put("n1", "k", "old", None));
    let tombstone_ctx = {
        // The delete is written on n1 and n2 only: n3 is down, so it is not reaped yet.
        take_down(&mut c, &node("n3"));
        let r = written(&delete(&mut c, "n1", "k", &ctx));
        c.down.remove(&node("n3"));
        r
    };
    let tombstone = c.object("n1", "k").unwrap();
    // A write that saw the delete lands on n2 before any reap: the reap must leave it.
    let newer = written(&c.put("n2", "k", "new", Some(&tombstone_ctx)));
    let partition = c.ring().partition_for_key(&key("k"));
    let now = c.now;
    let reap = PeerMessage::Reap(ReapMessage {
        partition,
        key: key("k"),
        context: CausalContext::from(tombstone.version_vector().clone()),
    });
    c.peer_message(&node("n2"), &node("n1"), reap, now, None);
    c.settle();
    assert_eq!(c.local("n2", "k"), vec![bytes::Bytes::from("new")]);
    assert!(reaped(&c, &node("n2"), "k").is_none());
    // And the whole cluster converges on the new value, never on the reaped state.
    c.run_until(Duration::from_secs(1800), |c| {
        ["n1", "n2", "n3"]
            .iter()
            .all(|n| c.local(n, "k") == vec![bytes::Bytes::from("new")])
    })
    .expect("the new value reached every primary");
    assert!(!newer.vector().is_empty());
    for n in ["n1", "n2", "n3"] {
        assert!(reaped(&c, &node(n), "k").is_none(), "{n} reaped a live key");
    }
}

#[test]
fn reaping_records_are_forgotten_after_their_retention() {
    let mut c = Cluster::with_config(3, |config| {
        config.reaper.retention = Duration::from_secs(60);
    });
    let ctx = written(&c.put("n1", "k", "v1", None));
    written(&delete(&mut c, "n1", "k", &ctx));
    c.advance(Duration::from_secs(1));
    assert!(reaped_everywhere(&c, "k"));
    c.advance(Duration::from_secs(30));
    assert!(reaped_everywhere(&c, "k"), "kept within the retention");
    c.advance(Duration::from_secs(60));
    for p in c.primaries("k") {
        assert!(reaped(&c, &p, "k").is_none(), "{p} still holds the record");
        assert!(c.metrics(&p).reaping_records_forgotten >= 1);
    }
}
