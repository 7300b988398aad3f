//! Gossip in an in-memory cluster: many `Gossip` instances, a fake network that delays (1–20 ms)
//! and drops messages, and a simulated clock. Members started from one seed converge on one
//! document; a stopped member is convicted by everyone, a paused one and a lossy network by no
//! one. Figures are printed; `SHOAL_GOSSIP_SEEDS` sets how many seeds the convergence runs take
//! (default 5; the figures quoted in `docs/membership.md` are over 100).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_membership::{Gossip, GossipConfig, GossipMessage, MemberRecord, MemberStatus, Verdict};
use shoal_types::{Capacity, Incarnation, NodeId, Zone};

fn id(i: usize) -> NodeId {
    NodeId::new(&format!("n{i}")).unwrap()
}

fn record(i: usize) -> MemberRecord {
    MemberRecord {
        generation: 0,
        version: 0,
        id: id(i),
        incarnation: Incarnation::new(i as u64 + 1),
        addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
        zone: Zone::default_zone(),
        capacity: Capacity::ONE,
        status: MemberStatus::Joining,
    }
}

/// A message in flight: (delivery time, sequence, receiver, encoded message), earliest first.
type InFlight = Reverse<(Duration, u64, usize, Vec<u8>)>;

struct Cluster {
    base: Instant,
    now: Duration,
    nodes: Vec<Gossip>,
    /// Nodes that process nothing (stopped, or paused until the given time).
    stopped: BTreeSet<usize>,
    paused_until: Vec<Option<Duration>>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    net: StdRng,
    loss: f64,
    bytes: u64,
    /// Verdicts seen: (when, judge, peer, verdict).
    verdicts: Vec<(Duration, usize, NodeId, Verdict)>,
}

impl Cluster {
    /// `n` members; each knows itself and `known(i)`.
    fn new(n: usize, loss: f64, seed: u64, known: impl Fn(usize) -> Vec<usize>) -> Cluster {
        #[allow(clippy::disallowed_methods)] // the one base instant; time is simulated from it
        let base = Instant::now();
        let mut net = StdRng::seed_from_u64(seed);
        let config = GossipConfig::default();
        let nodes = (0..n)
            .map(|i| {
                let known: Vec<MemberRecord> = known(i).into_iter().map(record).collect();
                // Rounds start spread over the first interval.
                let start = base + Duration::from_millis(net.random_range(0..1000));
                Gossip::new(start, record(i), &known, config, seed ^ (i as u64 + 1))
            })
            .collect();
        Cluster {
            base,
            now: Duration::ZERO,
            nodes,
            stopped: BTreeSet::new(),
            paused_until: vec![None; n],
            queue: BinaryHeap::new(),
            seq: 0,
            net,
            loss,
            bytes: 0,
            verdicts: Vec::new(),
        }
    }

    fn up(&self, i: usize) -> bool {
        !self.stopped.contains(&i) && self.paused_until[i].is_none_or(|t| t <= self.now)
    }

    /// Runs until `until` (simulated), or until `done` holds after an event.
    fn run(&mut self, until: Duration, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        loop {
            let next_tick = (0..self.nodes.len())
                .filter(|i| self.up(*i))
                .map(|i| {
                    (
                        self.nodes[i]
                            .poll_timeout()
                            .saturating_duration_since(self.base),
                        i,
                    )
                })
                .min();
            let next_message = self.queue.peek().map(|Reverse((t, ..))| *t);
            let (at, tick) = match (next_tick, next_message) {
                (Some((t, i)), Some(m)) if t <= m => (t, Some(i)),
                (_, Some(m)) => (m, None),
                (Some((t, i)), None) => (t, Some(i)),
                (None, None) => return false,
            };
            if at > until {
                return false;
            }
            self.now = self.now.max(at);
            let now = self.base + self.now;
            let node = match tick {
                Some(i) => {
                    for (peer, verdict) in self.nodes[i].tick(now) {
                        self.verdicts.push((self.now, i, peer, verdict));
                    }
                    i
                }
                None => {
                    let Reverse((_, _, to, bytes)) = self.queue.pop().unwrap();
                    if !self.up(to) {
                        continue;
                    }
                    let message: GossipMessage = rmp_serde::from_slice(&bytes).unwrap();
                    self.nodes[to].handle(now, message);
                    to
                }
            };
            while let Some(out) = self.nodes[node].poll_output() {
                let bytes = rmp_serde::to_vec(&out.message).unwrap();
                self.bytes += bytes.len() as u64;
                if self.net.random_bool(self.loss) {
                    continue;
                }
                let to: usize = out.to.as_str()[1..].parse().unwrap();
                let delay = Duration::from_millis(self.net.random_range(1..20));
                self.seq += 1;
                self.queue
                    .push(Reverse((self.now + delay, self.seq, to, bytes)));
            }
            if done(self) {
                return true;
            }
        }
    }

    fn converged(&self) -> bool {
        let n = self.nodes.len();
        let first = self.nodes[0].membership();
        first.len() == n && self.nodes.iter().all(|g| g.membership() == first)
    }
}

fn seeds() -> u64 {
    std::env::var("SHOAL_GOSSIP_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn members_started_from_one_seed_converge_on_one_document() {
    for n in [64, 128] {
        for loss in [0.0, 0.1, 0.5] {
            let mut times = Vec::new();
            let mut rate = Vec::new();
            for seed in 0..seeds() {
                // Everyone knows only the seed member n0.
                let mut c = Cluster::new(n, loss, seed, |_| vec![0]);
                let ok = c.run(Duration::from_secs(120), Cluster::converged);
                assert!(
                    ok,
                    "{n} members, loss {loss}, seed {seed}: no convergence in 120 s"
                );
                times.push(c.now.as_secs_f64());
                rate.push(c.bytes as f64 / n as f64 / c.now.as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            rate.sort_by(f64::total_cmp);
            println!(
                "{n} members, {:.0} % loss: converged in {:.1} s median, {:.1} s max ({} seeds, 1 s rounds); {:.0} B/s per node median",
                loss * 100.0,
                percentile(&times, 0.5),
                times[times.len() - 1],
                times.len(),
                percentile(&rate, 0.5)
            );
        }
    }
}

#[test]
fn a_stopped_member_is_convicted_by_everyone_and_comes_back_alive() {
    let n = 16;
    let mut detections = Vec::new();
    for seed in 0..10 {
        let mut c = Cluster::new(n, 0.0, seed, |_| (0..n).collect());
        c.run(Duration::from_secs(30), |_| false);
        let stopped_at = c.now;
        c.stopped.insert(3);
        let convicted = |c: &Cluster| {
            (0..n)
                .filter(|i| *i != 3)
                .all(|i| c.nodes[i].detector().is_down(&id(3)))
        };
        assert!(
            c.run(stopped_at + Duration::from_secs(60), convicted),
            "seed {seed}"
        );
        for (at, judge, peer, verdict) in &c.verdicts {
            if *peer == id(3) && *verdict == Verdict::Down && *at >= stopped_at && *judge != 3 {
                detections.push((*at - stopped_at).as_secs_f64());
            }
        }
        // Back: everyone hears it again.
        c.stopped.remove(&3);
        let back = c.now;
        let alive = |c: &Cluster| (0..n).all(|i| !c.nodes[i].detector().is_down(&id(3)));
        assert!(
            c.run(back + Duration::from_secs(30), alive),
            "seed {seed}: not heard again"
        );
    }
    detections.sort_by(f64::total_cmp);
    println!(
        "stopped member convicted after {:.1} s median, {:.1} s p99 ({} verdicts, 16 members, 1 s rounds)",
        percentile(&detections, 0.5),
        percentile(&detections, 0.99),
        detections.len()
    );
}

#[test]
fn a_paused_member_and_a_lossy_network_convict_no_one() {
    let n = 16;
    for seed in 0..3 {
        // 50 % loss for 10 simulated minutes, with one member paused for 5 s in the middle.
        let mut c = Cluster::new(n, 0.5, seed, |_| (0..n).collect());
        c.run(Duration::from_secs(300), |_| false);
        c.paused_until[5] = Some(c.now + Duration::from_secs(5));
        c.run(Duration::from_secs(600), |_| false);
        let false_convictions: Vec<_> = c
            .verdicts
            .iter()
            .filter(|(_, _, _, v)| *v == Verdict::Down)
            .collect();
        let late = false_convictions
            .iter()
            .filter(|(at, ..)| *at > Duration::from_secs(60))
            .count();
        println!(
            "seed {seed}: {} false convictions, {late} after 60 s",
            false_convictions.len()
        );
        assert!(
            false_convictions.is_empty(),
            "seed {seed}: {} false convictions, first {:?}",
            false_convictions.len(),
            false_convictions.first()
        );
    }
}
