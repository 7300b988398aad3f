//! The exchange against two in-memory replicas: each a map of key → object digest, answering
//! asks the way storage does (trees from `TictacTree::build`, key lists by `SegmentId::of`).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use shoal_storage::{ObjectDigest, SegmentId, TictacTree};
use shoal_types::{Key, PartitionCount, PartitionId};

use super::exchange::*;

/// One replica of the partition: key → digest of its object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Replica(BTreeMap<Key, ObjectDigest>);

impl Replica {
    fn of(entries: impl IntoIterator<Item = (Key, ObjectDigest)>) -> Self {
        Replica(entries.into_iter().collect())
    }

    /// What storage would answer.
    fn answer(&self, ask: &Ask) -> Reply {
        let tree = TictacTree::build(q(), self.0.iter().map(|(k, d)| (k, *d)));
        match ask {
            Ask::Root => Reply::Root(tree.root()),
            Ask::Branches => Reply::Branches(tree.branches()),
            Ask::Segments(segments) => {
                Reply::Segments(segments.iter().map(|s| (*s, tree.segment(*s))).collect())
            }
            Ask::Keys(segments) => {
                let mut keys: Vec<(SegmentId, Key, ObjectDigest)> = self
                    .0
                    .iter()
                    .map(|(k, d)| (SegmentId::of(k, q()), k.clone(), *d))
                    .filter(|(s, _, _)| segments.contains(s))
                    .collect();
                keys.sort();
                Reply::Keys(keys.into_iter().map(|(_, k, d)| (k, d)).collect())
            }
        }
    }

    /// Merges in `digest` for `key` the way a repair would: a join (here the larger digest),
    /// commutative and idempotent like the DVV merge.
    fn merge(&mut self, key: &Key, digest: ObjectDigest) {
        let merged = self.0.get(key).map_or(digest, |d| (*d).max(digest));
        self.0.insert(key.clone(), merged);
    }
}

/// Everything an exchange run produced.
#[derive(Debug)]
struct Run {
    repair: Option<Repair>,
    outcome: Outcome,
    asks: Vec<(Side, Ask)>,
}

impl Run {
    fn divergence(&self) -> Divergence {
        match self.outcome {
            Outcome::Compared(d) => d,
            Outcome::Matched => panic!("expected a comparison, got {:?}", self.outcome),
        }
    }

    /// The segments whose keys were asked (the same of both sides).
    fn key_segments(&self) -> Vec<SegmentId> {
        let asked: Vec<&Vec<SegmentId>> = self
            .asks
            .iter()
            .filter_map(|(_, a)| match a {
                Ask::Keys(s) => Some(s),
                _ => None,
            })
            .collect();
        match asked.as_slice() {
            [] => Vec::new(),
            [a, b] => {
                assert_eq!(a, b, "both sides are asked for the same segments");
                (*a).clone()
            }
            more => panic!("keys asked {} times", more.len()),
        }
    }

    fn push(&self) -> Vec<Key> {
        self.repair.as_ref().map_or(Vec::new(), |r| r.push.clone())
    }

    fn pull(&self) -> Vec<Key> {
        self.repair.as_ref().map_or(Vec::new(), |r| r.pull.clone())
    }
}

/// Drives an exchange against two replicas, answering every ask at once and delivering the
/// answers when the exchange has nothing more to do.
struct Harness {
    exchange: Exchange,
    local: Replica,
    remote: Replica,
    now: Instant,
    pending: Vec<(Side, Reply)>,
    asks: Vec<(Side, Ask)>,
    repair: Option<Repair>,
    outcome: Option<Outcome>,
}

type Hook<'a> = &'a mut dyn FnMut(&mut Replica, &mut Replica);

impl Harness {
    fn new(config: ExchangeConfig, local: Replica, remote: Replica) -> Self {
        Harness {
            exchange: Exchange::new(partition(), q(), config),
            local,
            remote,
            now: Instant::now(),
            pending: Vec::new(),
            asks: Vec::new(),
            repair: None,
            outcome: None,
        }
    }

    /// Runs until `side` is asked a `kind` question, and hands it back unanswered.
    fn until_ask(&mut self, side: Side, kind: ReplyKind) -> Ask {
        for _ in 0..100 {
            match self.exchange.poll(self.now) {
                Some(Step::Ask { side: s, ask }) if s == side && ask.kind() == kind => {
                    self.asks.push((s, ask.clone()));
                    return ask;
                }
                Some(step) => self.carry(step, &mut |_, _| {}),
                None => self.deliver(),
            }
        }
        panic!("{side} was never asked a {kind:?} question");
    }

    /// Runs the exchange to its end, calling `during_pause` once the pause has begun.
    fn finish_with(&mut self, during_pause: Hook<'_>) -> Run {
        for _ in 0..100 {
            if let Some(outcome) = self.outcome {
                assert_eq!(self.exchange.poll(self.now), None, "nothing after Done");
                return Run {
                    repair: self.repair.take(),
                    outcome,
                    asks: std::mem::take(&mut self.asks),
                };
            }
            match self.exchange.poll(self.now) {
                Some(step) => self.carry(step, during_pause),
                None => self.deliver(),
            }
        }
        panic!("the exchange did not end");
    }

    fn finish(&mut self) -> Run {
        self.finish_with(&mut |_, _| {})
    }

    fn carry(&mut self, step: Step, during_pause: Hook<'_>) {
        match step {
            Step::Ask { side, ask } => {
                let reply = match side {
                    Side::Local => self.local.answer(&ask),
                    Side::Remote => self.remote.answer(&ask),
                };
                self.pending.push((side, reply));
                self.asks.push((side, ask));
            }
            Step::WaitUntil(t) => {
                assert!(t > self.now, "a wait is for later");
                assert!(
                    self.pending.is_empty(),
                    "nothing is outstanding during a pause"
                );
                during_pause(&mut self.local, &mut self.remote);
                self.now = t;
            }
            Step::Repair(r) => {
                assert!(self.repair.is_none(), "one repair per exchange");
                assert_eq!(r.partition, partition());
                self.repair = Some(r);
            }
            Step::Done(o) => self.outcome = Some(o),
        }
    }

    fn deliver(&mut self) {
        assert!(!self.pending.is_empty(), "the exchange waits for nothing");
        for (side, reply) in std::mem::take(&mut self.pending) {
            self.exchange.handle(side, reply, self.now).unwrap();
        }
    }
}

fn q() -> PartitionCount {
    PartitionCount::new(4).unwrap()
}

fn partition() -> PartitionId {
    q().partition(2).unwrap()
}

fn digest(v: u8) -> ObjectDigest {
    ObjectDigest::from_bytes([v; 16])
}

/// The first `n` keys (`key0`, `key1`, …) of the exchange's partition.
fn keys(n: usize) -> Vec<Key> {
    (0..)
        .map(|i| Key::new(format!("key{i}")).unwrap())
        .filter(|k| shoal_ring::partition_for(k.as_bytes(), q()) == partition())
        .take(n)
        .collect()
}

/// A key of another partition.
fn foreign_key() -> Key {
    (0..)
        .map(|i| Key::new(format!("key{i}")).unwrap())
        .find(|k| shoal_ring::partition_for(k.as_bytes(), q()) != partition())
        .unwrap()
}

fn segment(key: &Key) -> SegmentId {
    SegmentId::of(key, q())
}

/// `n` keys of the partition outside `same`'s, each in a segment of its own.
fn keys_in_distinct_segments(n: usize) -> Vec<Key> {
    let mut used = BTreeSet::new();
    let out: Vec<Key> = keys(6_000)
        .into_iter()
        .skip(3_000)
        .filter(|k| used.insert(segment(k)))
        .take(n)
        .collect();
    assert_eq!(out.len(), n);
    out
}

/// Both replicas holding `n` keys, all with digest 1.
fn same(n: usize) -> (Replica, Replica) {
    let r = Replica::of(keys(n).into_iter().map(|k| (k, digest(1))));
    (r.clone(), r)
}

fn config() -> ExchangeConfig {
    ExchangeConfig::default()
}

fn sorted(mut keys: Vec<Key>) -> Vec<Key> {
    keys.sort();
    keys
}

#[test]
fn identical_replicas_match_after_one_root_round() {
    for n in [0, 1, 3_000] {
        let (local, remote) = same(n);
        let run = Harness::new(config(), local, remote).finish();
        assert_eq!(run.outcome, Outcome::Matched, "{n} keys");
        assert_eq!(run.repair, None);
        assert_eq!(
            run.asks,
            vec![(Side::Remote, Ask::Root), (Side::Local, Ask::Root)]
        );
    }
}

#[test]
fn planted_differences_are_found_and_nothing_else() {
    // 3,000 keys: about three a segment, so each differing key shares its segment with keys
    // that do not differ (and must not be shipped).
    let (mut local, mut remote) = same(3_000);
    let base = keys(3_000);
    let mut per_segment: BTreeMap<SegmentId, usize> = BTreeMap::new();
    for k in &base {
        *per_segment.entry(segment(k)).or_default() += 1;
    }
    let crowded: Vec<&Key> = base
        .iter()
        .filter(|k| per_segment[&segment(k)] >= 3)
        .collect();
    let (only_remote, only_local, both) = (crowded[0], crowded[100], crowded[200]);
    local.0.remove(only_remote);
    remote.0.remove(only_local);
    remote.0.insert(both.clone(), digest(2));

    let run = Harness::new(config(), local, remote).finish();
    assert_eq!(run.push(), sorted(vec![only_local.clone(), both.clone()]));
    assert_eq!(run.pull(), sorted(vec![only_remote.clone(), both.clone()]));
    let segments: BTreeSet<SegmentId> = [only_remote, only_local, both]
        .into_iter()
        .map(segment)
        .collect();
    assert_eq!(
        run.key_segments(),
        segments.iter().copied().collect::<Vec<_>>()
    );
    assert_eq!(
        run.divergence(),
        Divergence {
            segments_differing: segments.len(),
            segments_confirmed: segments.len(),
            segments_deferred: 0,
            keys_differing: 3,
            keys_to_push: 2,
            keys_to_pull: 2,
        }
    );
}

#[test]
fn a_round_waits_for_both_sides() {
    let (local, mut remote) = same(10);
    remote.0.insert(keys(11)[10].clone(), digest(1));
    let mut ex = Exchange::new(partition(), q(), config());
    let now = Instant::now();
    assert_eq!(
        ex.poll(now),
        Some(Step::Ask {
            side: Side::Remote,
            ask: Ask::Root
        })
    );
    assert_eq!(
        ex.poll(now),
        Some(Step::Ask {
            side: Side::Local,
            ask: Ask::Root
        })
    );
    assert_eq!(ex.poll(now), None, "each side is asked once");
    ex.handle(Side::Remote, remote.answer(&Ask::Root), now)
        .unwrap();
    assert_eq!(ex.poll(now), None, "the local root is still awaited");
    ex.handle(Side::Local, local.answer(&Ask::Root), now)
        .unwrap();
    assert_eq!(
        ex.poll(now),
        Some(Step::Ask {
            side: Side::Remote,
            ask: Ask::Branches
        })
    );
}

#[test]
fn the_confirm_waits_out_the_pause() {
    let (local, mut remote) = same(10);
    let late = keys(11)[10].clone();
    remote.0.insert(late.clone(), digest(1));
    let pause = Duration::from_millis(1500);
    let mut h = Harness::new(
        ExchangeConfig {
            confirm_pause: pause,
            ..config()
        },
        local,
        remote,
    );
    let looked = h.now;
    let until = loop {
        match h.exchange.poll(h.now) {
            Some(Step::WaitUntil(t)) => break t,
            Some(step) => h.carry(step, &mut |_, _| {}),
            None => h.deliver(),
        }
    };
    assert_eq!(until, looked + pause);
    assert_eq!(
        h.exchange.poll(until - Duration::from_millis(1)),
        Some(Step::WaitUntil(until)),
        "still pausing just before the end"
    );
    assert_eq!(
        h.exchange.poll(until),
        Some(Step::Ask {
            side: Side::Remote,
            ask: Ask::Segments(vec![segment(&late)]),
        }),
        "the confirm asks again for exactly the segment that differed"
    );
}

#[test]
fn a_difference_that_resolves_during_the_pause_is_ignored() {
    let (mut local, remote) = same(3_000);
    let in_flight = keys_in_distinct_segments(1).remove(0);
    local.0.insert(in_flight.clone(), digest(7));
    let run = Harness::new(config(), local.clone(), remote.clone()).finish_with(&mut |l, r| {
        // The write reaches the remote replica too.
        r.0.insert(in_flight.clone(), l.0[&in_flight]);
    });
    assert_eq!(run.repair, None);
    assert_eq!(run.key_segments(), Vec::<SegmentId>::new(), "no keys asked");
    assert_eq!(
        run.divergence(),
        Divergence {
            segments_differing: 1,
            segments_confirmed: 0,
            ..Divergence::default()
        }
    );
    // Without the write arriving, the same difference is repaired.
    let run = Harness::new(config(), local, remote).finish();
    assert_eq!(run.push(), vec![in_flight]);
}

#[test]
fn only_differences_seen_at_both_looks_are_repaired() {
    let (mut local, mut remote) = same(3_000);
    let picked = keys_in_distinct_segments(3);
    let (real, resolves, appears) = (&picked[0], &picked[1], &picked[2]);
    local.0.insert(real.clone(), digest(5));
    remote.0.insert(resolves.clone(), digest(5));
    let run = Harness::new(config(), local, remote).finish_with(&mut |l, r| {
        l.0.insert(resolves.clone(), digest(5));
        // A new write in flight during the pause, in a segment that matched at the first look:
        // not confirmed, so left for the next exchange.
        r.0.insert(appears.clone(), digest(5));
    });
    assert_eq!(run.push(), vec![real.clone()]);
    assert_eq!(run.pull(), Vec::<Key>::new());
    assert_eq!(run.key_segments(), vec![segment(real)]);
    let d = run.divergence();
    assert_eq!((d.segments_differing, d.segments_confirmed), (2, 1));
}

#[test]
fn a_confirmed_segment_whose_keys_agree_ships_nothing() {
    let (mut local, remote) = same(3_000);
    let late = keys_in_distinct_segments(1).remove(0);
    local.0.insert(late.clone(), digest(6));
    let mut h = Harness::new(config(), local, remote);
    let ask = h.until_ask(Side::Remote, ReplyKind::Keys);
    // The write reaches the remote replica after the confirm, before its keys are read.
    h.remote.0.insert(late, digest(6));
    let reply = h.remote.answer(&ask);
    h.pending.push((Side::Remote, reply));
    let run = h.finish();
    assert_eq!(run.repair, None, "no repair is handed out for nothing");
    assert_eq!(
        run.divergence(),
        Divergence {
            segments_differing: 1,
            segments_confirmed: 1,
            ..Divergence::default()
        }
    );
}

#[test]
fn the_segment_cap_is_honoured_and_later_exchanges_finish_the_work() {
    let (mut local, mut remote) = same(3_000);
    let extra = keys_in_distinct_segments(10);
    for k in &extra {
        local.0.insert(k.clone(), digest(9));
    }
    let cap = 3;
    let capped = ExchangeConfig {
        max_segments: NonZeroUsize::new(cap).unwrap(),
        ..config()
    };
    let mut by_segment: Vec<&Key> = extra.iter().collect();
    by_segment.sort_by_key(|k| segment(k));

    let mut exchanges = 0;
    loop {
        exchanges += 1;
        assert!(exchanges <= 10, "the replicas never matched");
        let run = Harness::new(capped, local.clone(), remote.clone()).finish();
        let Outcome::Compared(d) = run.outcome else {
            break;
        };
        let left = extra.iter().filter(|k| !remote.0.contains_key(*k)).count();
        let compared = left.min(cap);
        assert_eq!(run.key_segments().len(), compared);
        assert_eq!(
            (d.segments_confirmed, d.segments_deferred),
            (left, left - compared)
        );
        // The lowest confirmed segments go first.
        let expected: Vec<Key> = by_segment[extra.len() - left..][..compared]
            .iter()
            .map(|k| (*k).clone())
            .collect();
        assert_eq!(run.push(), sorted(expected));
        for k in run.push() {
            remote.merge(&k, local.0[&k]);
        }
    }
    // ⌈10 / 3⌉ exchanges with a repair, then one that matches.
    assert_eq!(exchanges, 5);
    assert_eq!(local, remote);
}

/// Drives an exchange of replicas that differ in two segments until the remote side is asked a
/// `kind` question; the local side's answer is in already.
fn asked(kind: ReplyKind, config: ExchangeConfig) -> (Harness, Ask) {
    let (mut local, remote) = same(3_000);
    for k in keys_in_distinct_segments(2) {
        local.0.insert(k, digest(4));
    }
    let mut h = Harness::new(config, local, remote);
    let ask = h.until_ask(Side::Remote, kind);
    // Answer the local side of this round now, so only the remote one is outstanding.
    let Some(Step::Ask {
        side,
        ask: local_ask,
    }) = h.exchange.poll(h.now)
    else {
        panic!("the local side is asked next");
    };
    assert_eq!(side, Side::Local);
    let reply = h.local.answer(&local_ask);
    h.exchange.handle(Side::Local, reply, h.now).unwrap();
    (h, ask)
}

/// `bad` is refused with `expected`, changes nothing, and the right answer then finishes the
/// exchange as if `bad` had never come.
fn refused(
    kind: ReplyKind,
    config: ExchangeConfig,
    bad: impl FnOnce(Reply) -> Reply,
    expected: ExchangeError,
) {
    let (mut h, ask) = asked(kind, config);
    let good = h.remote.answer(&ask);
    assert_eq!(
        h.exchange.handle(Side::Remote, bad(good.clone()), h.now),
        Err(expected)
    );
    assert_eq!(h.exchange.poll(h.now), None, "still waiting for the remote");
    h.exchange.handle(Side::Remote, good, h.now).unwrap();
    let run = h.finish();
    assert_eq!(run.push().len(), 2, "the exchange went on unharmed");
}

#[test]
fn a_reply_of_the_wrong_kind_is_refused() {
    let branches = vec![[0; 16]; TictacTree::BRANCHES];
    refused(
        ReplyKind::Root,
        config(),
        |_| Reply::Branches(branches),
        ExchangeError::WrongKind {
            side: Side::Remote,
            asked: ReplyKind::Root,
            got: ReplyKind::Branches,
        },
    );
    refused(
        ReplyKind::Keys,
        config(),
        |_| Reply::Root([0; 16]),
        ExchangeError::WrongKind {
            side: Side::Remote,
            asked: ReplyKind::Keys,
            got: ReplyKind::Root,
        },
    );
}

#[test]
fn a_reply_from_a_side_not_asked_is_refused() {
    let (local, remote) = same(10);
    let mut ex = Exchange::new(partition(), q(), config());
    let now = Instant::now();
    let root = local.answer(&Ask::Root);
    let not_asked = |side| Err(ExchangeError::NotAsked { side });
    assert_eq!(
        ex.handle(Side::Remote, root.clone(), now),
        not_asked(Side::Remote),
        "before any ask"
    );
    ex.poll(now); // asks the remote side
    assert_eq!(
        ex.handle(Side::Local, root.clone(), now),
        not_asked(Side::Local),
        "local not asked yet"
    );
    ex.handle(Side::Remote, remote.answer(&Ask::Root), now)
        .unwrap();
    assert_eq!(
        ex.handle(Side::Remote, root.clone(), now),
        not_asked(Side::Remote),
        "answered already"
    );
    ex.poll(now); // asks the local side
    ex.handle(Side::Local, root.clone(), now).unwrap();
    assert_eq!(ex.poll(now), Some(Step::Done(Outcome::Matched)));
    assert_eq!(
        ex.handle(Side::Local, root, now),
        not_asked(Side::Local),
        "the exchange is over"
    );

    // During the pause, nobody is asked anything.
    let (mut h, ask) = asked(ReplyKind::Segments, config());
    let reply = h.remote.answer(&ask);
    h.exchange
        .handle(Side::Remote, reply.clone(), h.now)
        .unwrap();
    assert!(matches!(h.exchange.poll(h.now), Some(Step::WaitUntil(_))));
    assert_eq!(
        h.exchange.handle(Side::Remote, reply, h.now),
        not_asked(Side::Remote)
    );
}

#[test]
fn a_branches_reply_of_the_wrong_length_is_refused() {
    for n in [0, TictacTree::BRANCHES - 1, TictacTree::BRANCHES + 1] {
        refused(
            ReplyKind::Branches,
            config(),
            |_| Reply::Branches(vec![[0; 16]; n]),
            ExchangeError::BranchCount {
                side: Side::Remote,
                got: n,
            },
        );
    }
}

#[test]
fn malformed_segment_replies_are_refused() {
    let segments = |reply: Reply| match reply {
        Reply::Segments(s) => s,
        other => panic!("not segments: {other:?}"),
    };
    let (_, ask) = asked(ReplyKind::Segments, config());
    let Ask::Segments(asked_segments) = ask else {
        unreachable!()
    };
    let n = asked_segments.len();
    assert!(n >= 2, "two differing branches: {n} segments asked");
    refused(
        ReplyKind::Segments,
        config(),
        |r| Reply::Segments(segments(r)[1..].to_vec()),
        ExchangeError::SegmentCount {
            side: Side::Remote,
            expected: n,
            got: n - 1,
        },
    );
    let stranger = SegmentId::all()
        .find(|s| !asked_segments.contains(s))
        .unwrap();
    refused(
        ReplyKind::Segments,
        config(),
        |r| {
            let mut s = segments(r);
            s[0].0 = stranger;
            Reply::Segments(s)
        },
        ExchangeError::SegmentNotAsked {
            side: Side::Remote,
            segment: stranger,
        },
    );
    refused(
        ReplyKind::Segments,
        config(),
        |r| {
            let mut s = segments(r);
            s.swap(0, 1);
            Reply::Segments(s)
        },
        ExchangeError::SegmentsOutOfOrder { side: Side::Remote },
    );
}

#[test]
fn malformed_key_replies_are_refused() {
    let keys_of = |reply: Reply| match reply {
        Reply::Keys(k) => k,
        other => panic!("not keys: {other:?}"),
    };
    let (mut h, ask) = asked(ReplyKind::Keys, config());
    let Ask::Keys(asked_segments) = ask.clone() else {
        unreachable!()
    };
    let good = keys_of(h.remote.answer(&ask));
    assert!(good.len() >= 2, "the asked segments hold keys");
    // Cleanly finish this one so its harness is not left half way.
    h.exchange
        .handle(Side::Remote, Reply::Keys(good.clone()), h.now)
        .unwrap();
    h.finish();

    // The local side holds the two keys the remote lacks: the most any side here sends.
    let max = good.len() + 2;
    refused(
        ReplyKind::Keys,
        ExchangeConfig {
            max_keys: NonZeroUsize::new(max).unwrap(),
            ..config()
        },
        |_| Reply::Keys(vec![good[0].clone(); max + 1]),
        ExchangeError::TooManyKeys {
            side: Side::Remote,
            max,
            got: max + 1,
        },
    );

    let foreign = foreign_key();
    refused(
        ReplyKind::Keys,
        config(),
        |r| {
            let mut k = keys_of(r);
            k.insert(0, (foreign.clone(), digest(1)));
            Reply::Keys(k)
        },
        ExchangeError::KeyOutsidePartition {
            side: Side::Remote,
            key: foreign.clone(),
        },
    );

    let unasked = keys(3_000)
        .into_iter()
        .find(|k| !asked_segments.contains(&segment(k)))
        .unwrap();
    refused(
        ReplyKind::Keys,
        config(),
        |r| {
            let mut k = keys_of(r);
            k.push((unasked.clone(), digest(1)));
            Reply::Keys(k)
        },
        ExchangeError::KeyNotAsked {
            side: Side::Remote,
            key: unasked.clone(),
            segment: segment(&unasked),
        },
    );

    refused(
        ReplyKind::Keys,
        config(),
        |r| {
            let mut k = keys_of(r);
            k.swap(0, 1);
            Reply::Keys(k)
        },
        ExchangeError::KeysOutOfOrder {
            side: Side::Remote,
            key: good[0].0.clone(),
        },
    );
    refused(
        ReplyKind::Keys,
        config(),
        |r| {
            let mut k = keys_of(r);
            let first = k[0].clone();
            k.insert(1, (first.0, digest(3)));
            Reply::Keys(k)
        },
        ExchangeError::KeysOutOfOrder {
            side: Side::Remote,
            key: good[0].0.clone(),
        },
    );
}

/// The seed of the random cases: `SHOAL_SEED` if set, else a fixed one.
fn seed() -> u64 {
    std::env::var("SHOAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_260_515)
}

/// Two replicas of up to 64 keys, each a random edit (removals, other digests, additions) of a
/// shared base, so they overlap as real replicas do.
fn replica_pair() -> impl Strategy<Value = (Replica, Replica)> {
    let pool = keys(64);
    let edits = || proptest::collection::btree_map(0..64usize, proptest::option::of(0..4u8), 0..12);
    (
        proptest::collection::btree_map(0..64usize, 0..4u8, 0..48),
        edits(),
        edits(),
    )
        .prop_map(move |(base, local_edits, remote_edits)| {
            let apply = |edits: &BTreeMap<usize, Option<u8>>| {
                let mut r: BTreeMap<usize, u8> = base.clone();
                for (i, d) in edits {
                    match d {
                        Some(d) => r.insert(*i, *d),
                        None => r.remove(i),
                    };
                }
                Replica::of(r.into_iter().map(|(i, d)| (pool[i].clone(), digest(d))))
            };
            (apply(&local_edits), apply(&remote_edits))
        })
}

#[test]
fn under_the_cap_push_and_pull_are_exactly_the_symmetric_difference() {
    let seed = seed();
    println!("anti-entropy test seed: {seed} (rerun with SHOAL_SEED={seed})");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    });
    let uncapped = ExchangeConfig {
        max_segments: NonZeroUsize::new(TictacTree::SEGMENTS).unwrap(),
        ..config()
    };
    runner
        .run(&replica_pair(), |(local, remote)| {
            let run = Harness::new(uncapped, local.clone(), remote.clone()).finish();
            let differs = |a: &Replica, b: &Replica| -> Vec<Key> {
                a.0.iter()
                    .filter(|(k, d)| b.0.get(*k) != Some(*d))
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            let (push, pull) = (differs(&local, &remote), differs(&remote, &local));
            if local == remote {
                prop_assert_eq!(run.outcome, Outcome::Matched);
                return Ok(());
            }
            prop_assert_eq!(&run.push(), &push);
            prop_assert_eq!(&run.pull(), &pull);
            let union: BTreeSet<&Key> = push.iter().chain(&pull).collect();
            let segments: BTreeSet<SegmentId> = union.iter().map(|k| segment(k)).collect();
            prop_assert_eq!(
                run.divergence(),
                Divergence {
                    segments_differing: segments.len(),
                    segments_confirmed: segments.len(),
                    segments_deferred: 0,
                    keys_differing: union.len(),
                    keys_to_push: push.len(),
                    keys_to_pull: pull.len(),
                }
            );
            // The repair, carried out by a join, brings the replicas to the same data.
            let (mut l, mut r) = (local.clone(), remote.clone());
            for k in &push {
                r.merge(k, local.0[k]);
            }
            for k in &pull {
                l.merge(k, remote.0[k]);
            }
            prop_assert_eq!(&l, &r);
            let again = Harness::new(uncapped, l, r).finish();
            prop_assert_eq!(again.outcome, Outcome::Matched);
            Ok(())
        })
        .unwrap();
}
