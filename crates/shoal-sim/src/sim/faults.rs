//! The nemesis: which faults a run injects, and when. A schedule is drawn from the seed before
//! the run starts, so a failing run can print it and a replay injects exactly the same faults.

use std::fmt;
use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Which kinds of faults a run may inject during its safety phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultMix {
    /// Messages dropped, duplicated and delayed (reordered), at rates drawn per run.
    pub lossy_network: bool,
    /// Partitions: isolate a node, majority/minority, a ring of overlapping majorities,
    /// one-way cuts, and swizzles (links cut one by one and healed in another order).
    pub partitions: bool,
    /// Crash-restart: a node loses its memory and every batch not yet durable.
    pub crashes: bool,
    /// Pauses: a node stops processing for a while (a GC pause, SIGSTOP).
    pub pauses: bool,
    /// Clocks that jump forward or run fast or slow.
    pub clock_skew: bool,
    /// Failed fsyncs: a batch is reported failed (and not stored).
    pub disk_errors: bool,
    /// Lost records: a stored record found corrupted (each key at most once a run, so that no
    /// acknowledged write loses every copy), and object reads that fail with an I/O error.
    /// Memory storage only: redb's records cannot be reached from here.
    pub lost_records: bool,
}

/// One fault (or its repair), at a scheduled time. Nodes are numbered from 0 and printed as
/// `n1`, `n2`, ….
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Cut these directed links (from, to): sends fail `Unreachable`, messages in flight are lost.
    Cut {
        /// Which pattern this is (for the printed schedule).
        pattern: &'static str,
        /// The directed links cut.
        links: Vec<(usize, usize)>,
    },
    /// Heal these directed links.
    Heal {
        /// The directed links healed.
        links: Vec<(usize, usize)>,
    },
    /// The node crashes: its memory and its pending disk batches are gone.
    Crash(usize),
    /// The node crashes at its next write, while that batch is on its way to disk (unless
    /// its restart comes first).
    CrashDuringWrite(usize),
    /// The node stops cleanly (SIGTERM): it takes no more requests, its commit queue
    /// finishes, and the stop is recorded clean unless a commit failed.
    Stop(usize),
    /// The node restarts on its disk, under the incarnation the disk records (after a crash
    /// too).
    Restart(usize),
    /// The node stops processing anything.
    Pause(usize),
    /// The node processes what queued up while it was paused.
    Resume(usize),
    /// The node's clock jumps forward.
    ClockJump {
        /// The node.
        node: usize,
        /// How far.
        by: Duration,
    },
    /// The node's clock runs at this rate (parts per thousand of real time).
    ClockRate {
        /// The node.
        node: usize,
        /// The rate; 1000 is correct.
        permille: u32,
    },
    /// The node's next fsync fails: the batch is reported failed and not stored.
    DiskError(usize),
    /// One of the node's stored records (a workload key it is a primary of, never corrupted
    /// before in the run) reads as corrupted from now on, until a write replaces it.
    CorruptRecord(usize),
    /// The node's next `reads` object reads fail with an I/O error.
    ReadErrors {
        /// The node.
        node: usize,
        /// How many reads fail.
        reads: u64,
    },
    /// End of the safety phase: heal every link, resume and restart every node, correct the
    /// clocks' rates, calm the network.
    HealAll,
}

/// The faults of one run: message fault rates for the whole safety phase, and actions in time
/// order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSchedule {
    /// Message fault rates until the heal.
    pub network: NetworkFaults,
    /// (when, what), sorted by time.
    pub actions: Vec<(Duration, FaultAction)>,
}

/// Message fault rates of a safety phase, as probabilities per message.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetworkFaults {
    /// A message between nodes is dropped.
    pub drop: f64,
    /// A message between nodes is delivered twice (forwarded writes never are).
    pub duplicate: f64,
    /// A message is delayed by 10–300 ms more (so it is reordered).
    pub delay: f64,
    /// A message between a client and a node is dropped.
    pub client_drop: f64,
}

impl FaultMix {
    /// No faults at all.
    pub const NONE: FaultMix = FaultMix {
        lossy_network: false,
        partitions: false,
        crashes: false,
        pauses: false,
        clock_skew: false,
        disk_errors: false,
        lost_records: false,
    };

    /// Every kind of fault under which the cluster keeps all its promises. Not lost records:
    /// a lost copy breaks the quorum intersection (R + W > N) that fresh reads stand on, so a
    /// read may miss a write until repair (and a single writer then sees a sibling). They run
    /// in their own campaign, which checks what must still hold.
    pub const ALL: FaultMix = FaultMix {
        lossy_network: true,
        partitions: true,
        crashes: true,
        pauses: true,
        clock_skew: true,
        disk_errors: true,
        lost_records: false,
    };

    /// Whether any fault is enabled.
    pub fn any(&self) -> bool {
        *self != FaultMix::NONE
    }
}

impl FaultAction {
    /// The nodes the action names.
    pub fn nodes(&self) -> Vec<usize> {
        match self {
            FaultAction::Cut { links, .. } | FaultAction::Heal { links } => {
                links.iter().flat_map(|(a, b)| [*a, *b]).collect()
            }
            FaultAction::Crash(n)
            | FaultAction::CrashDuringWrite(n)
            | FaultAction::Stop(n)
            | FaultAction::Restart(n)
            | FaultAction::Pause(n)
            | FaultAction::Resume(n)
            | FaultAction::DiskError(n)
            | FaultAction::CorruptRecord(n)
            | FaultAction::ClockJump { node: n, .. }
            | FaultAction::ClockRate { node: n, .. }
            | FaultAction::ReadErrors { node: n, .. } => vec![*n],
            FaultAction::HealAll => Vec::new(),
        }
    }
}

impl FaultSchedule {
    /// Draws the schedule of a run with `nodes` nodes whose safety phase lasts `safety`.
    pub fn generate(mix: &FaultMix, nodes: usize, safety: Duration, rng: &mut StdRng) -> Self {
        let network = if mix.lossy_network {
            NetworkFaults {
                drop: rng.random_range(0.0..0.05),
                duplicate: rng.random_range(0.0..0.05),
                delay: rng.random_range(0.0..0.1),
                client_drop: rng.random_range(0.0..0.01),
            }
        } else {
            NetworkFaults::default()
        };
        let mut kinds = Vec::new();
        if mix.partitions {
            kinds.push(Kind::Partition);
        }
        if mix.crashes {
            kinds.push(Kind::Crash);
        }
        if mix.pauses {
            kinds.push(Kind::Pause);
        }
        if mix.clock_skew {
            kinds.push(Kind::Clock);
        }
        if mix.disk_errors {
            kinds.push(Kind::Disk);
        }
        if mix.lost_records {
            kinds.push(Kind::Record);
        }
        let mut actions = Vec::new();
        // Per node: until when it is crashed or paused.
        let mut down_until = vec![Duration::ZERO; nodes];
        let mut t = ms(rng.random_range(50..800));
        while t < safety && !kinds.is_empty() {
            let span = ms(rng.random_range(200..4000));
            match kinds[rng.random_range(0..kinds.len())] {
                Kind::Partition => partition(nodes, t, span, rng, &mut actions),
                kind @ (Kind::Crash | Kind::Pause) => {
                    let up: Vec<usize> = (0..nodes).filter(|n| down_until[*n] <= t).collect();
                    // Keep one node running, so that the run does something.
                    if up.len() > 1 {
                        let node = up[rng.random_range(0..up.len())];
                        let span = if kind == Kind::Pause { span / 2 } else { span };
                        down_until[node] = t + span;
                        let (stop, start) = if kind == Kind::Crash {
                            // Half the crashes strike while a write is on its way to disk; one
                            // stop in five is clean.
                            let crash = if rng.random_bool(0.2) {
                                FaultAction::Stop(node)
                            } else if rng.random_bool(0.5) {
                                FaultAction::CrashDuringWrite(node)
                            } else {
                                FaultAction::Crash(node)
                            };
                            (crash, FaultAction::Restart(node))
                        } else {
                            (FaultAction::Pause(node), FaultAction::Resume(node))
                        };
                        actions.push((t, stop));
                        actions.push((t + span, start));
                    }
                }
                Kind::Clock => {
                    let node = rng.random_range(0..nodes);
                    if rng.random_bool(0.5) {
                        let by = ms(rng.random_range(1..3000));
                        actions.push((t, FaultAction::ClockJump { node, by }));
                    } else {
                        let permille = [250, 500, 800, 1200, 2000, 4000][rng.random_range(0..6)];
                        actions.push((t, FaultAction::ClockRate { node, permille }));
                        actions.push((
                            t + span,
                            FaultAction::ClockRate {
                                node,
                                permille: 1000,
                            },
                        ));
                    }
                }
                Kind::Disk => actions.push((t, FaultAction::DiskError(rng.random_range(0..nodes)))),
                Kind::Record => {
                    let node = rng.random_range(0..nodes);
                    let action = if rng.random_bool(0.5) {
                        FaultAction::CorruptRecord(node)
                    } else {
                        let reads = rng.random_range(1..20);
                        FaultAction::ReadErrors { node, reads }
                    };
                    actions.push((t, action));
                }
            }
            t += ms(rng.random_range(100..1500));
        }
        // Whatever would end after the safety phase ends with it, in HealAll.
        actions.retain(|(at, _)| *at < safety);
        actions.sort_by_key(|(at, _)| *at);
        actions.push((safety, FaultAction::HealAll));
        FaultSchedule { network, actions }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Partition,
    Crash,
    Pause,
    Clock,
    Disk,
    Record,
}

/// Schedules one partition of a random pattern at `t`, healed after `span`.
fn partition(
    nodes: usize,
    t: Duration,
    span: Duration,
    rng: &mut StdRng,
    actions: &mut Vec<(Duration, FaultAction)>,
) {
    let both = |a: &[usize], b: &[usize]| -> Vec<(usize, usize)> {
        let mut links = Vec::new();
        for &x in a {
            for &y in b {
                links.push((x, y));
                links.push((y, x));
            }
        }
        links
    };
    let mut order: Vec<usize> = (0..nodes).collect();
    order.shuffle(rng);
    let (pattern, links) = match rng.random_range(0..5) {
        0 => ("isolate", both(&order[..1], &order[1..])),
        1 => {
            let minority = (nodes - 1) / 2;
            (
                "majority/minority",
                both(&order[..minority.max(1)], &order[minority.max(1)..]),
            )
        }
        2 => {
            // Node order[i] reaches the next ⌊n/2⌋ nodes of the ring (and itself): a majority,
            // a different one for each node.
            let reach = nodes / 2;
            let mut links = Vec::new();
            for i in 0..nodes {
                for j in (reach + 1)..nodes {
                    links.push((order[i], order[(i + j) % nodes]));
                }
            }
            ("ring of majorities", links)
        }
        3 => ("one-way", vec![(order[0], order[1])]),
        _ => {
            // Swizzle: cut the links one by one, heal them one by one in another order.
            let mut cuts = both(&order[..1], &order[1..]);
            for i in 1..nodes {
                for j in (i + 1)..nodes {
                    cuts.push((order[i], order[j]));
                    cuts.push((order[j], order[i]));
                }
            }
            cuts.shuffle(rng);
            cuts.truncate(rng.random_range(1..=cuts.len()));
            let step = span / (2 * cuts.len() as u32).max(1);
            let mut heals = cuts.clone();
            heals.shuffle(rng);
            for (i, link) in cuts.into_iter().enumerate() {
                let links = vec![link];
                actions.push((
                    t + step * i as u32,
                    FaultAction::Cut {
                        pattern: "swizzle",
                        links,
                    },
                ));
            }
            for (i, link) in heals.into_iter().enumerate() {
                let at = t + span / 2 + step * i as u32;
                actions.push((at, FaultAction::Heal { links: vec![link] }));
            }
            return;
        }
    };
    actions.push((
        t,
        FaultAction::Cut {
            pattern,
            links: links.clone(),
        },
    ));
    actions.push((t + span, FaultAction::Heal { links }));
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let links = |f: &mut fmt::Formatter<'_>, links: &[(usize, usize)]| {
            for (i, (a, b)) in links.iter().enumerate() {
                let sep = if i == 0 { "" } else { " " };
                write!(f, "{sep}n{}->n{}", a + 1, b + 1)?;
            }
            Ok(())
        };
        match self {
            FaultAction::Cut { pattern, links: l } => {
                write!(f, "cut ({pattern}) ")?;
                links(f, l)
            }
            FaultAction::Heal { links: l } => {
                write!(f, "heal ")?;
                links(f, l)
            }
            FaultAction::Crash(n) => write!(f, "crash n{}", n + 1),
            FaultAction::CrashDuringWrite(n) => write!(f, "crash n{} during its next write", n + 1),
            FaultAction::Stop(n) => write!(f, "stop n{} cleanly", n + 1),
            FaultAction::Restart(n) => write!(f, "restart n{}", n + 1),
            FaultAction::Pause(n) => write!(f, "pause n{}", n + 1),
            FaultAction::Resume(n) => write!(f, "resume n{}", n + 1),
            FaultAction::ClockJump { node, by } => {
                write!(f, "clock of n{} jumps {by:?} forward", node + 1)
            }
            FaultAction::ClockRate { node, permille } => {
                write!(f, "clock of n{} runs at {permille}‰", node + 1)
            }
            FaultAction::DiskError(n) => write!(f, "next fsync of n{} fails", n + 1),
            FaultAction::CorruptRecord(n) => write!(f, "a record of n{} is corrupted", n + 1),
            FaultAction::ReadErrors { node, reads } => {
                write!(f, "the next {reads} reads of n{} fail", node + 1)
            }
            FaultAction::HealAll => write!(f, "heal everything"),
        }
    }
}

impl fmt::Display for FaultSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &self.network;
        writeln!(
            f,
            "  until the heal: drop {:.2}%, duplicate {:.2}%, delay {:.2}%, client drop {:.2}%",
            n.drop * 100.0,
            n.duplicate * 100.0,
            n.delay * 100.0,
            n.client_drop * 100.0
        )?;
        for (at, action) in &self.actions {
            writeln!(f, "  {:>10.3?} {action}", at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn schedules_are_a_function_of_the_seed_and_end_with_heal_all() {
        let safety = Duration::from_secs(10);
        let a = FaultSchedule::generate(&FaultMix::ALL, 5, safety, &mut StdRng::seed_from_u64(9));
        let b = FaultSchedule::generate(&FaultMix::ALL, 5, safety, &mut StdRng::seed_from_u64(9));
        assert_eq!(a, b);
        assert!(a.actions.len() > 5, "{a}");
        assert_eq!(a.actions.last(), Some(&(safety, FaultAction::HealAll)));
        assert!(a.actions.windows(2).all(|w| w[0].0 <= w[1].0));
        let none =
            FaultSchedule::generate(&FaultMix::NONE, 5, safety, &mut StdRng::seed_from_u64(9));
        assert_eq!(none.actions, vec![(safety, FaultAction::HealAll)]);
    }

    #[test]
    fn a_ring_of_majorities_gives_each_node_a_different_majority() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut actions = Vec::new();
            partition(
                5,
                Duration::ZERO,
                Duration::from_secs(1),
                &mut rng,
                &mut actions,
            );
            if let Some((
                _,
                FaultAction::Cut {
                    pattern: "ring of majorities",
                    links,
                },
            )) = actions.first()
            {
                let mut seen = std::collections::BTreeSet::new();
                for n in 0..5 {
                    let reach: Vec<usize> = (0..5).filter(|m| !links.contains(&(n, *m))).collect();
                    assert_eq!(reach.len(), 3, "{n} reaches {reach:?}");
                    assert!(seen.insert(reach));
                }
                return;
            }
        }
        panic!("no ring of majorities in 200 draws");
    }
}
