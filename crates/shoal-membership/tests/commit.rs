//! The ring commit (`Proposer`, `Acceptor`) checked over random interleavings: two or three
//! admins commit different plans for the same parent epoch at once, through a network that
//! reorders, drops and duplicates every message, with proposers retrying when nothing is in
//! flight (their timeout) and members learning a chosen ring by gossip at random moments.
//!
//! In every run: at most one plan is ever chosen (accepted by a majority at one ballot); an
//! admin told `Committed` has the chosen plan, one told `Lost` names it; no two admins of
//! different plans are both told `Committed`. Over all runs, how many ended decided is
//! printed, and most runs must (the commit is live when messages get through).
//!
//! `SHOAL_COMMIT_RUNS` sets the number of runs (default 20,000; each is a few hundred steps).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_membership::{
    Acceptor, Ballot, CommitMessage, CommitReply, Outcome, PlanId, Proposal, Proposer,
};
use shoal_ring::{Member, Ring};
use shoal_types::{NodeId, PartitionCount, ReplicationFactor, RingEpoch};

fn id(n: usize) -> NodeId {
    NodeId::new(&format!("n{n}")).unwrap()
}

fn ring(nodes: usize) -> Ring {
    let members = (1..=nodes)
        .map(|i| {
            let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + i).parse().unwrap();
            Member::new(id(i), addr)
        })
        .collect();
    Ring::new(
        members,
        PartitionCount::new(16).unwrap(),
        ReplicationFactor::new(3).unwrap(),
    )
    .unwrap()
}

enum Packet {
    Message(CommitMessage),
    Reply(CommitReply),
    /// Gossip telling a member the ring after the parent, made by this plan.
    Learn(PlanId),
}

struct Run {
    outcomes: Vec<Option<Outcome>>,
    chosen: BTreeSet<PlanId>,
    own: Vec<PlanId>,
}

fn run(seed: u64, voters: usize, proposers: usize, loss: f64) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let parent = RingEpoch::INITIAL;
    let base = ring(voters);
    let voter_ids: BTreeSet<NodeId> = (1..=voters).map(id).collect();
    let mut acceptors: BTreeMap<NodeId, Acceptor> = voter_ids
        .iter()
        .map(|v| (v.clone(), Acceptor::new(parent)))
        .collect();
    // (from, to, packet); proposers live on n1, n2, n3.
    let mut net: Vec<(NodeId, NodeId, Packet)> = Vec::new();
    let mut props = Vec::new();
    let mut own = Vec::new();
    for p in 0..proposers {
        let plan = PlanId(1000 + p as u64);
        own.push(plan);
        let proposal = Proposal {
            plan,
            ring: base.clone(),
        };
        let (proposer, out) = Proposer::start(id(p + 1), parent, voter_ids.clone(), proposal, 8);
        for (to, m) in out {
            net.push((id(p + 1), to, Packet::Message(m)));
        }
        props.push(proposer);
    }
    // Accepts per (ballot, plan), to find what a majority accepted.
    let mut accepted: BTreeMap<(Ballot, PlanId), BTreeSet<NodeId>> = BTreeMap::new();
    let mut chosen = BTreeSet::new();
    let mut learnt_sent = vec![false; proposers];
    for _step in 0..5_000 {
        if net.is_empty() {
            // Timeouts: every proposer without an outcome tries again.
            let mut any = false;
            for (p, proposer) in props.iter_mut().enumerate() {
                for (to, m) in proposer.retry() {
                    any = true;
                    net.push((id(p + 1), to, Packet::Message(m)));
                }
            }
            if !any {
                break;
            }
            continue;
        }
        let i = rng.random_range(0..net.len());
        let duplicate = rng.random_bool(0.05);
        let (from, to, packet) = if duplicate {
            let (f, t, p) = &net[i];
            let copy = match p {
                Packet::Message(m) => Packet::Message(m.clone()),
                Packet::Reply(r) => Packet::Reply(r.clone()),
                Packet::Learn(plan) => Packet::Learn(*plan),
            };
            (f.clone(), t.clone(), copy)
        } else {
            net.swap_remove(i)
        };
        if rng.random_bool(loss) {
            continue;
        }
        match packet {
            Packet::Message(m) => {
                let acceptor = acceptors.get_mut(&to).unwrap();
                let (reply, _changed) = acceptor.handle(&m);
                if let (
                    CommitMessage::Accept {
                        ballot, proposal, ..
                    },
                    CommitReply::Accepted { .. },
                ) = (&m, &reply)
                {
                    let set = accepted.entry((ballot.clone(), proposal.plan)).or_default();
                    set.insert(to.clone());
                    if set.len() > voters / 2 {
                        chosen.insert(proposal.plan);
                    }
                }
                net.push((to, from, Packet::Reply(reply)));
            }
            Packet::Reply(r) => {
                let p = (1..=proposers).position(|k| id(k) == to).unwrap();
                for (dest, m) in props[p].handle(&from, r) {
                    net.push((to.clone(), dest, Packet::Message(m)));
                }
                // A proposer that decided gossips the ring, sometimes, to every member.
                if let Some(Outcome::Committed) = props[p].outcome()
                    && !learnt_sent[p]
                    && rng.random_bool(0.5)
                {
                    learnt_sent[p] = true;
                    for v in &voter_ids {
                        net.push((to.clone(), v.clone(), Packet::Learn(own[p])));
                    }
                }
            }
            Packet::Learn(plan) => {
                acceptors
                    .get_mut(&to)
                    .unwrap()
                    .moved_to(parent.next(), Some(plan));
            }
        }
    }
    Run {
        outcomes: props.iter().map(|p| p.outcome().cloned()).collect(),
        chosen,
        own,
    }
}

fn check(seed: u64, r: &Run) {
    assert!(
        r.chosen.len() <= 1,
        "seed {seed}: two plans chosen for one epoch: {:?}",
        r.chosen
    );
    let chosen = r.chosen.iter().next().copied();
    let mut committed = BTreeSet::new();
    for (p, outcome) in r.outcomes.iter().enumerate() {
        match outcome {
            Some(Outcome::Committed) => {
                assert_eq!(
                    chosen,
                    Some(r.own[p]),
                    "seed {seed}: proposer {p} told committed, chosen {chosen:?}"
                );
                committed.insert(r.own[p]);
            }
            Some(Outcome::Lost { winner }) => {
                assert_eq!(
                    chosen,
                    Some(*winner),
                    "seed {seed}: proposer {p} lost to {winner:?}"
                );
                assert_ne!(*winner, r.own[p], "seed {seed}");
            }
            Some(Outcome::Stale { .. }) | Some(Outcome::Undecided) => {}
            None => panic!("seed {seed}: proposer {p} never ended"),
        }
    }
    assert!(
        committed.len() <= 1,
        "seed {seed}: {committed:?} all committed"
    );
}

fn runs() -> u64 {
    std::env::var("SHOAL_COMMIT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn concurrent_commits_choose_at_most_one_plan_and_tell_every_admin_the_truth() {
    let mut decided = 0;
    let mut total = 0;
    for seed in 0..runs() {
        let voters = [3, 4, 5][(seed % 3) as usize];
        let proposers = 2 + (seed % 2) as usize;
        let loss = [0.0, 0.1, 0.3][(seed / 3 % 3) as usize];
        let r = run(seed, voters, proposers, loss);
        check(seed, &r);
        total += 1;
        if !r.chosen.is_empty() {
            decided += 1;
        }
    }
    println!("commit: {decided} of {total} runs chose a plan");
    assert!(
        decided * 10 >= total * 9,
        "only {decided} of {total} runs chose a plan"
    );
}

#[test]
fn with_every_message_delivered_one_admin_commits_and_the_other_learns_it_lost() {
    let mut both_told = 0;
    for seed in 0..2_000 {
        let r = run(seed, 5, 2, 0.0);
        check(seed, &r);
        if r.chosen.is_empty() {
            continue;
        }
        let told: Vec<bool> = r
            .outcomes
            .iter()
            .map(|o| matches!(o, Some(Outcome::Committed) | Some(Outcome::Lost { .. })))
            .collect();
        if told.iter().all(|t| *t) {
            both_told += 1;
        }
    }
    println!("commit: both admins told the outcome in {both_told} of 2000 lossless runs");
    assert!(both_told > 0);
}

#[test]
fn a_member_past_the_parent_makes_the_commit_stale_or_names_the_winner() {
    let voters: BTreeSet<NodeId> = (1..=3).map(id).collect();
    let proposal = Proposal {
        plan: PlanId(7),
        ring: ring(3),
    };
    let mut a = Acceptor::new(RingEpoch::new(3));
    let (mut p, out) = Proposer::start(
        id(1),
        RingEpoch::INITIAL,
        voters.clone(),
        proposal.clone(),
        3,
    );
    let (_, m) = &out[0];
    let (reply, changed) = a.handle(m);
    assert!(!changed);
    p.handle(&id(1), reply);
    assert_eq!(
        p.outcome(),
        Some(&Outcome::Stale {
            epoch: RingEpoch::new(3)
        })
    );

    // A member one epoch ahead that knows the plan that made it: ours won.
    let mut a = Acceptor::new(RingEpoch::INITIAL);
    a.moved_to(RingEpoch::INITIAL.next(), Some(PlanId(7)));
    let (mut p, out) = Proposer::start(id(1), RingEpoch::INITIAL, voters, proposal, 3);
    let (reply, _) = a.handle(&out[0].1);
    p.handle(&id(2), reply);
    assert_eq!(p.outcome(), Some(&Outcome::Committed));
}
