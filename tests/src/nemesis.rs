//! The real-cluster nemesis (DESIGN §12, the "real cluster" tier): `shoal-sim`'s workloads
//! run by concurrent clients of the client crate against three real nodes behind fault
//! proxies, under a seeded, logged schedule of faults; then heal, read every key with R = 3
//! (read repair), compare every replica directly (`get_local`), and judge the recorded history
//! with `shoal-sim`'s checker.
//!
//! Phases of a run:
//! 1. **faults** — the clients run while the [`Schedule`] partitions nodes (both ways and one
//!    way), degrades links (drop, delay with jitter, duplicate), kills nodes with SIGKILL and
//!    restarts them on the same data directory, and freezes them with SIGSTOP / SIGCONT. A
//!    small fraction of writes must fail definitely (an impossible W), to check that definite
//!    failures are applied nowhere (I6).
//! 2. **heal** — every link is cleared, paused nodes resumed, dead nodes restarted.
//! 3. **quiet** — the clients keep running while connections to restarted nodes time out
//!    (a restarted process cannot reset its predecessor's connections).
//! 4. **liveness** — the clients keep running; now every operation must succeed in time (I7).
//! 5. **final reads** — every key read with R = 3, then each node's own replica of it fetched
//!    and compared, re-reading the keys whose replicas still differ until all agree (or a
//!    deadline passes): the time from heal to agreement is the convergence time.
//!
//! Each workload runs on its own key prefix with its own history, so the checker's rules
//! (every write's context comes from a read of the same client) hold for each; the figures are
//! summed. Only the schedule is replayable from the seed: datagram-level faults and the
//! interleaving of real processes depend on real time.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_causality::{CausalContext, Object};
use shoal_client::{Client, ClientError, LocalRead};
use shoal_protocol::{ClientRequest, ClientResponse};
use shoal_sim::checker::{self, CheckOptions, FinalState, Report, Summary};
use shoal_sim::history::{ClientId, History, OpKind, Outcome, Value};
use shoal_sim::workload::{Step, Workload, WorkloadConfig, WorkloadKind};
use shoal_types::{Key, NodeId, RequestOptions};
use tokio::task::JoinSet;

use crate::{Cluster, ClusterConfig, HarnessError, LinkFaults, NetworkStats, NodeState, Peer};

/// The id final reads are recorded under.
const FINAL_READER: ClientId = ClientId(u32::MAX);

/// How a nemesis run is set up. [`NemesisConfig::smoke`] is the CI run; [`NemesisConfig::long`]
/// the long one.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    /// Seeds the schedule, the clients' choices and the proxies' dice.
    pub seed: u64,
    /// The fault schedule (its length is the fault phase).
    pub schedule: Schedule,
    /// Clients per workload.
    pub clients_per_workload: usize,
    /// Which workloads run, concurrently, each on its own keys.
    pub workloads: Vec<(WorkloadKind, usize)>,
    /// Fraction of writes in the fault phase that must fail definitely (W = N + 1).
    pub poison_fraction: f64,
    /// How long the clients run after heal before operations must succeed.
    pub quiet: Duration,
    /// How long operations must succeed (the healthy window).
    pub liveness: Duration,
    /// A healthy-window operation must succeed within this time.
    pub liveness_deadline: Duration,
    /// How long the final reads may take to make every replica agree.
    pub convergence_timeout: Duration,
    /// Each client's call timeout.
    pub client_timeout: Duration,
}

/// One change of the faults.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The nodes split into groups that cannot reach each other (both directions).
    Partition(Vec<Vec<usize>>),
    /// Nothing passes from node `from` to node `to`; the other direction works.
    OneWay {
        /// The node whose datagrams are lost.
        from: usize,
        /// The node they were for.
        to: usize,
    },
    /// Every link drops, delays and duplicates datagrams like this.
    Weather(LinkFaults),
    /// Clears partitions, one-way cuts and weather.
    HealNetwork,
    /// SIGKILL.
    Kill(usize),
    /// Start a killed node again on its data directory.
    Restart(usize),
    /// SIGSTOP.
    Pause(usize),
    /// SIGCONT.
    Resume(usize),
}

/// A fault change at an offset from the start of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledFault {
    /// When.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// A seeded schedule of faults; it ends with everything healed.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// The seed it was made from.
    pub seed: u64,
    /// The changes, in time order.
    pub faults: Vec<ScheduledFault>,
    /// The length of the fault phase: heal comes then.
    pub length: Duration,
}

/// What a nemesis run found.
#[derive(Debug)]
pub struct NemesisResult {
    /// The seed.
    pub seed: u64,
    /// The schedule that ran.
    pub schedule: Schedule,
    /// Each workload's checker report.
    pub reports: Vec<(WorkloadKind, Report)>,
    /// The reports' figures summed.
    pub summary: Summary,
    /// Operations recorded (final reads included).
    pub operations: usize,
    /// Of those: succeeded, failed definitely, indeterminate.
    pub outcomes: (usize, usize, usize),
    /// From heal until every replica of every key agreed; `None`: they did not within the
    /// convergence timeout.
    pub convergence: Option<Duration>,
    /// Of which the final reads and comparisons took this long.
    pub final_reads: Duration,
    /// Keys read in the final phase.
    pub keys: usize,
    /// Of those, keys whose replicas differed right after heal.
    pub differing_at_heal: usize,
    /// When the last of those was first seen with all its replicas equal, while the clients
    /// kept running (their reads read-repair); `None`: not before the clients stopped.
    pub converged_while_running: Option<Duration>,
    /// Of the keys, those whose replicas differed when the clients stopped (before the final
    /// reads).
    pub differing_at_stop: usize,
    /// How long the clients ran after heal (quiet and healthy windows).
    pub after_heal: Duration,
    /// What the proxies did.
    pub network: NetworkStats,
    /// Replicas that could not be read in the final phase (corrupt, or an error).
    pub unreadable_replicas: Vec<String>,
}

impl NemesisConfig {
    /// The CI smoke run: about 70 s of faults — weather throughout, one two-way partition, one
    /// one-way cut, one kill and restart, one pause — then heal, 6 s quiet, 10 s healthy.
    pub fn smoke(seed: u64) -> Self {
        NemesisConfig {
            seed,
            schedule: Schedule::smoke(seed, 3),
            clients_per_workload: 4,
            workloads: vec![
                (WorkloadKind::SetAdd, 10),
                (WorkloadKind::BlindWrites, 60),
                (WorkloadKind::SingleWriter, 12),
                (WorkloadKind::PutDelete, 20),
                (WorkloadKind::PutChains, 12),
            ],
            poison_fraction: 0.02,
            quiet: Duration::from_secs(6),
            liveness: Duration::from_secs(10),
            liveness_deadline: Duration::from_secs(10),
            convergence_timeout: Duration::from_secs(60),
            client_timeout: Duration::from_secs(5),
        }
    }

    /// One round of a long run: `minutes` of random fault episodes (see [`Schedule::random`]).
    /// A long run is several rounds, each on a fresh cluster, so that histories and set-add
    /// values (which grow with every write to a key) stay bounded.
    pub fn long(seed: u64, minutes: u64) -> Self {
        let mut config = NemesisConfig::smoke(seed);
        config.schedule = Schedule::random(seed, 3, Duration::from_secs(minutes * 60));
        // More keys, so blind writers do not run out of room under the sibling cap.
        config.workloads = vec![
            (WorkloadKind::SetAdd, 40),
            (WorkloadKind::BlindWrites, 300 * minutes.max(1) as usize),
            (WorkloadKind::SingleWriter, 24),
            (WorkloadKind::PutDelete, 60),
            (WorkloadKind::PutChains, 40),
        ];
        config
    }
}

impl Schedule {
    /// One of each fault, at seeded times and on seeded nodes: weather (1% drop, 1%
    /// duplicates, 1 ms + up to 3 ms delay) from 2 s to the end; a node cut off from the other
    /// two both ways for 12 s; a one-way cut for 8 s; a SIGKILL with restart 8 s later; a
    /// SIGSTOP resumed 8 s later; heal at 70 s.
    pub fn smoke(seed: u64, nodes: usize) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_5c4e_d01e);
        let mut pick = || rng.random_range(0..nodes);
        let s = Duration::from_secs;
        let (isolated, cut_from, killed, paused) = (pick(), pick(), pick(), pick());
        let cut_to = (cut_from + 1) % nodes;
        let others: Vec<usize> = (0..nodes).filter(|n| *n != isolated).collect();
        let weather = LinkFaults {
            drop: 0.01,
            duplicate: 0.01,
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(3),
        };
        let faults = vec![
            (s(2), Fault::Weather(weather)),
            (s(6), Fault::Partition(vec![vec![isolated], others])),
            (s(18), Fault::HealNetwork),
            (s(18), Fault::Weather(weather)),
            (
                s(22),
                Fault::OneWay {
                    from: cut_from,
                    to: cut_to,
                },
            ),
            (s(30), Fault::HealNetwork),
            (s(30), Fault::Weather(weather)),
            (s(34), Fault::Kill(killed)),
            (s(42), Fault::Restart(killed)),
            (s(50), Fault::Pause(paused)),
            (s(58), Fault::Resume(paused)),
        ];
        Schedule {
            seed,
            faults: faults
                .into_iter()
                .map(|(at, fault)| ScheduledFault { at, fault })
                .collect(),
            length: s(70),
        }
    }

    /// Random episodes for `length`: each picks one or two of partition, one-way cut, bad
    /// weather, kill, pause (at most one node down or paused at a time), holds them 3–15 s,
    /// heals them, and waits 1–4 s before the next.
    pub fn random(seed: u64, nodes: usize, length: Duration) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_1006);
        let mut faults = Vec::new();
        let mut at = Duration::from_secs(2);
        let end = length.saturating_sub(Duration::from_secs(5));
        while at < end {
            let hold = Duration::from_millis(rng.random_range(3_000..15_000));
            let until = (at + hold).min(end);
            let kinds = rng.random_range(1..=2);
            let mut chosen: Vec<u8> = Vec::new();
            while chosen.len() < kinds {
                let kind = rng.random_range(0..5u8);
                // Kill and pause both take a node out; one at a time.
                let process = |k: u8| k == 3 || k == 4;
                let second_process = process(kind) && chosen.iter().any(|k| process(*k));
                if !chosen.contains(&kind) && !second_process {
                    chosen.push(kind);
                }
            }
            let mut network = false;
            for kind in chosen {
                let node = rng.random_range(0..nodes);
                match kind {
                    0 => {
                        let others = (0..nodes).filter(|n| *n != node).collect();
                        faults.push((at, Fault::Partition(vec![vec![node], others])));
                        network = true;
                    }
                    1 => {
                        let to = (node + rng.random_range(1..nodes)) % nodes;
                        faults.push((at, Fault::OneWay { from: node, to }));
                        network = true;
                    }
                    2 => {
                        let weather = LinkFaults {
                            drop: rng.random_range(0.0..0.1),
                            duplicate: rng.random_range(0.0..0.05),
                            delay: Duration::from_millis(rng.random_range(0..10)),
                            jitter: Duration::from_millis(rng.random_range(0..20)),
                        };
                        faults.push((at, Fault::Weather(weather)));
                        network = true;
                    }
                    3 => {
                        faults.push((at, Fault::Kill(node)));
                        faults.push((until, Fault::Restart(node)));
                    }
                    _ => {
                        faults.push((at, Fault::Pause(node)));
                        faults.push((until, Fault::Resume(node)));
                    }
                }
            }
            if network {
                faults.push((until, Fault::HealNetwork));
            }
            at = until + Duration::from_millis(rng.random_range(1_000..4_000));
        }
        faults.sort_by_key(|(at, _)| *at);
        Schedule {
            seed,
            faults: faults
                .into_iter()
                .map(|(at, fault)| ScheduledFault { at, fault })
                .collect(),
            length,
        }
    }

    /// How many scheduled changes are of each kind: (partitions, one-way cuts, weather, kills,
    /// pauses).
    pub fn counts(&self) -> (usize, usize, usize, usize, usize) {
        let count = |f: fn(&Fault) -> bool| self.faults.iter().filter(|s| f(&s.fault)).count();
        (
            count(|f| matches!(f, Fault::Partition(_))),
            count(|f| matches!(f, Fault::OneWay { .. })),
            count(|f| matches!(f, Fault::Weather(_))),
            count(|f| matches!(f, Fault::Kill(_))),
            count(|f| matches!(f, Fault::Pause(_))),
        )
    }
}

impl NemesisResult {
    /// Whether every promise held and the replicas converged.
    pub fn passed(&self) -> bool {
        self.summary.passed() && self.convergence.is_some() && self.unreadable_replicas.is_empty()
    }

    /// The figures, one `name: value of total` line each, then the run's own numbers.
    pub fn figures(&self) -> String {
        let mut out = String::new();
        for figure in &self.summary.figures {
            out.push_str(&format!("{figure}\n"));
        }
        let (ok, failed, indeterminate) = self.outcomes;
        out.push_str(&format!(
            "operations: {} ({ok} ok, {failed} failed definitely, {indeterminate} indeterminate)\n",
            self.operations
        ));
        out.push_str(&format!(
            "keys whose replicas differed at heal: {} of {}\n",
            self.differing_at_heal, self.keys
        ));
        match self.converged_while_running {
            Some(c) => out.push_str(&format!(
                "convergence after heal: {} ms (the last of those keys first seen with equal \
                 replicas, read-repaired by the clients' reads)\n",
                c.as_millis()
            )),
            None => out.push_str(&format!(
                "convergence after heal: not within the {} ms the clients ran\n",
                self.after_heal.as_millis()
            )),
        }
        out.push_str(&format!(
            "keys whose replicas differed when the clients stopped: {} of {}\n",
            self.differing_at_stop, self.keys
        ));
        match self.convergence {
            Some(c) => out.push_str(&format!(
                "final agreement after heal: {} ms (final R=3 reads and replica comparisons of \
                 {} keys: {} ms)\n",
                c.as_millis(),
                self.keys,
                self.final_reads.as_millis()
            )),
            None => out.push_str("final agreement after heal: none within the timeout\n"),
        }
        let n = &self.network;
        out.push_str(&format!(
            "datagrams: {} delivered, {} dropped, {} blocked, {} duplicated, {} delayed\n",
            n.delivered, n.dropped, n.blocked, n.duplicated, n.delayed
        ));
        out
    }

    /// The breaches the reports spelled out.
    pub fn examples(&self) -> String {
        let mut out = String::new();
        for (kind, report) in &self.reports {
            for example in &report.examples {
                out.push_str(&format!("{kind:?}: {example}\n"));
            }
        }
        for replica in &self.unreadable_replicas {
            out.push_str(&format!("unreadable: {replica}\n"));
        }
        out
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: &usize| format!("n{}", i + 1);
        match self {
            Fault::Partition(groups) => {
                let groups: Vec<String> = groups
                    .iter()
                    .map(|g| g.iter().map(n).collect::<Vec<_>>().join(","))
                    .collect();
                write!(f, "partition {}", groups.join(" | "))
            }
            Fault::OneWay { from, to } => write!(f, "cut {} -> {} (one way)", n(from), n(to)),
            Fault::Weather(w) => write!(
                f,
                "weather: drop {:.1}%, duplicate {:.1}%, delay {} ms + up to {} ms",
                w.drop * 100.0,
                w.duplicate * 100.0,
                w.delay.as_millis(),
                w.jitter.as_millis()
            ),
            Fault::HealNetwork => f.write_str("heal the network"),
            Fault::Kill(i) => write!(f, "SIGKILL {}", n(i)),
            Fault::Restart(i) => write!(f, "restart {}", n(i)),
            Fault::Pause(i) => write!(f, "SIGSTOP {}", n(i)),
            Fault::Resume(i) => write!(f, "SIGCONT {}", n(i)),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule (seed {}, {} s of faults):",
            self.seed,
            self.length.as_secs()
        )?;
        for s in &self.faults {
            writeln!(f, "  {:>7.3}s  {}", s.at.as_secs_f64(), s.fault)?;
        }
        write!(f, "  {:>7.3}s  heal everything", self.length.as_secs_f64())
    }
}

/// One workload's shared state: what its clients do and what they saw.
struct Run {
    kind: WorkloadKind,
    prefix: String,
    workload: Mutex<Workload>,
    history: Mutex<History>,
}

/// What every client task reads.
struct Shared {
    start: Instant,
    healthy: AtomicBool,
    stop: AtomicBool,
}

/// Runs the nemesis: see the module docs. Progress and the schedule are printed to stderr.
pub async fn run(config: &NemesisConfig) -> Result<NemesisResult, HarnessError> {
    let cluster_config = ClusterConfig::new(3).proxied(config.seed);
    let mut cluster = Cluster::start(cluster_config).await?;
    eprintln!("nemesis: cluster in {}", cluster.root().display());
    eprintln!("{}", config.schedule);

    let shared = Arc::new(Shared {
        start: Instant::now(),
        healthy: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let runs: Vec<Arc<Run>> = config
        .workloads
        .iter()
        .map(|&(kind, keys)| {
            let mut workload_config = WorkloadConfig::new(kind, keys, config.clients_per_workload);
            workload_config.max_blind_writes_per_key = 48;
            let mut workload = Workload::new(workload_config);
            workload.set_poison_fraction(config.poison_fraction);
            Arc::new(Run {
                kind,
                prefix: format!("{kind:?}/"),
                workload: Mutex::new(workload),
                history: Mutex::new(History::new()),
            })
        })
        .collect();

    let mut clients = JoinSet::new();
    for (w, run) in runs.iter().enumerate() {
        for c in 0..config.clients_per_workload {
            let mut client_config = cluster.client_config();
            client_config.timeout = config.client_timeout;
            let client = Client::connect(client_config).await?;
            let seed = config.seed ^ ((w as u64) << 32) ^ c as u64;
            clients.spawn(client_loop(
                client,
                ClientId(c as u32),
                run.clone(),
                shared.clone(),
                seed,
            ));
        }
    }

    // The fault phase: the schedule, in real time.
    for scheduled in &config.schedule.faults {
        sleep_until(shared.start, scheduled.at).await;
        eprintln!(
            "[{:>8.3}s] nemesis: {} ({} ops so far)",
            shared.start.elapsed().as_secs_f64(),
            scheduled.fault,
            operations(&runs)
        );
        apply(&mut cluster, &scheduled.fault).await?;
    }
    sleep_until(shared.start, config.schedule.length).await;

    // Heal everything, and watch the replicas that differ come together.
    heal(&mut cluster).await?;
    let healed = Instant::now();
    let nodes: Vec<(NodeId, SocketAddr)> = (0..cluster.len())
        .map(|i| (cluster.id(i).clone(), cluster.addr(i)))
        .collect();
    let all_keys: Vec<(String, Key)> = runs
        .iter()
        .flat_map(|run| {
            let keys = lock(&run.workload).keys().to_vec();
            keys.into_iter().map(move |k| (run.prefix.clone(), k))
        })
        .collect();
    let watcher = tokio::spawn(watch_convergence(
        cluster.client().await?,
        nodes.clone(),
        all_keys,
        shared.clone(),
    ));
    for run in &runs {
        lock(&run.workload).set_poison_fraction(0.0);
    }
    eprintln!(
        "[{:>8.3}s] nemesis: healed ({} ops so far)",
        shared.start.elapsed().as_secs_f64(),
        operations(&runs)
    );
    tokio::time::sleep(config.quiet).await;
    shared.healthy.store(true, Ordering::SeqCst);
    eprintln!(
        "[{:>8.3}s] nemesis: healthy window",
        shared.start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(config.liveness).await;
    shared.stop.store(true, Ordering::SeqCst);
    while clients.join_next().await.is_some() {}
    let after_heal = healed.elapsed();
    let (differing_at_heal, converged_while_running) = watcher
        .await
        .map_err(|e| HarnessError::Invalid(format!("the convergence watcher failed: {e}")))?;
    eprintln!(
        "[{:>8.3}s] nemesis: clients stopped ({} ops); final reads",
        shared.start.elapsed().as_secs_f64(),
        operations(&runs)
    );

    // Final reads with R = 3, then direct replica comparison until every replica agrees.
    let final_start = Instant::now();
    let mut reader_config = cluster.client_config();
    reader_config.timeout = Duration::from_secs(10);
    let reader = Client::connect(reader_config).await?;
    let mut pending: Vec<(Arc<Run>, Key)> = runs
        .iter()
        .flat_map(|run| {
            let keys = lock(&run.workload).keys().to_vec();
            keys.into_iter().map(move |k| (run.clone(), k))
        })
        .collect();
    let keys = pending.len();
    // How far apart the replicas were when the clients stopped: what the final reads repair.
    let mut differing_at_stop = 0;
    for (run, key) in &pending {
        let (replicas, errors) = replicas(&reader, &nodes, &run.prefix, key).await;
        if !agree(&replicas, &errors) {
            differing_at_stop += 1;
        }
    }
    let mut finals: Vec<(Arc<Run>, Key, Vec<Option<Object>>)> = Vec::new();
    let mut unreadable = Vec::new();
    let deadline = final_start + config.convergence_timeout;
    let mut convergence = None;
    loop {
        let mut still = Vec::new();
        for (run, key) in pending {
            final_read(&reader, &run, &key, &shared).await;
            let (replicas, errors) = replicas(&reader, &nodes, &run.prefix, &key).await;
            if agree(&replicas, &errors) || Instant::now() >= deadline {
                for e in errors {
                    unreadable.push(format!("{}{key:?}: {e}", run.prefix));
                }
                finals.push((run, key, replicas));
            } else {
                still.push((run, key));
            }
        }
        if still.is_empty() {
            if finals.len() == keys {
                convergence = Some(healed.elapsed());
            }
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        pending = still;
    }
    let final_reads = final_start.elapsed();
    reader.close().await;

    // Judge each workload's history against what its replicas hold.
    let options = CheckOptions {
        liveness_deadline: config.liveness_deadline,
    };
    let mut summary = Summary::new();
    let mut reports = Vec::new();
    let mut operations = 0;
    let mut outcomes = (0, 0, 0);
    for run in &runs {
        let mut state = FinalState::new();
        for (_, key, objects) in finals.iter().filter(|(r, _, _)| Arc::ptr_eq(r, run)) {
            for (i, object) in objects.iter().enumerate() {
                state.add_replica(key.clone(), cluster.id(i).clone(), object.clone());
            }
        }
        let history = lock(&run.history);
        operations += history.len();
        for op in history.ops() {
            match op.outcome {
                Outcome::Ok(_) => outcomes.0 += 1,
                Outcome::Failed(_) => outcomes.1 += 1,
                Outcome::Indeterminate(_) | Outcome::Pending => outcomes.2 += 1,
            }
        }
        let report = checker::check(&history, &state, &options);
        summary.add(&report);
        reports.push((run.kind, report));
    }
    let network = cluster.network().map(|n| n.stats()).unwrap_or_default();
    Ok(NemesisResult {
        seed: config.seed,
        schedule: config.schedule.clone(),
        reports,
        summary,
        operations,
        outcomes,
        convergence,
        final_reads,
        keys,
        differing_at_heal,
        converged_while_running,
        differing_at_stop,
        after_heal,
        network,
        unreadable_replicas: unreadable,
    })
}

/// One client: asks its workload for the next step, records it, runs it, records the outcome,
/// until told to stop.
async fn client_loop(client: Client, id: ClientId, run: Arc<Run>, shared: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !shared.stop.load(Ordering::SeqCst) {
        let mut step = lock(&run.workload).next(id, &mut rng);
        make_poison_definite(&mut step);
        let healthy = shared.healthy.load(Ordering::SeqCst);
        let op = lock(&run.history).invoke(
            id,
            step.key.clone(),
            step.kind.clone(),
            shared.start.elapsed(),
            healthy,
        );
        lock(&run.workload).invoked(id, op, &step);
        let (outcome, answer) = execute(&client, &run.prefix, &step.request).await;
        let failed = !matches!(outcome, Outcome::Ok(_));
        lock(&run.history).complete(op, shared.start.elapsed(), outcome);
        lock(&run.workload).completed(id, op, answer.as_ref());
        if failed {
            // Back off a little, as an application would, instead of spinning on answers
            // that come back at once while a quorum is out of reach.
            let pause = Duration::from_millis(rng.random_range(5..25));
            tokio::time::sleep(pause).await;
        }
    }
    client.close().await;
}

/// The workloads poison writes two ways: an impossible W, or a value over the workload's
/// notion of the limit (16 KiB by default, which a real cluster with the default 8 MiB limit
/// accepts). The second becomes the first here, keeping its atom, so that every poisoned write
/// is one the cluster must refuse definitely.
fn make_poison_definite(step: &mut Step) {
    const WORKLOAD_POISON_BYTES: usize = 16 * 1024;
    let ClientRequest::Put { value, options, .. } = &mut step.request else {
        return;
    };
    if value.len() <= WORKLOAD_POISON_BYTES {
        return;
    }
    let OpKind::Put {
        value: recorded,
        atom,
        ..
    } = &mut step.kind
    else {
        return;
    };
    let small = Value::plain_padded(*atom, 0);
    *value = small.clone();
    *recorded = small;
    options.w = Some(4);
}

/// Runs one workload request through the client crate; the outcome to record, and the answer
/// the workload learns from.
async fn execute(
    client: &Client,
    prefix: &str,
    request: &ClientRequest,
) -> (Outcome, Option<ClientResponse>) {
    let name = |key: &Key| {
        let mut name = prefix.as_bytes().to_vec();
        name.extend_from_slice(key.as_bytes());
        name
    };
    match request {
        ClientRequest::Get { key, options } => match client.get_with(name(key), *options).await {
            Ok(read) => (
                Outcome::Ok(read.values.clone()),
                Some(ClientResponse::Read {
                    values: read.values,
                    context: read.context,
                }),
            ),
            Err(e) => (outcome_of(&e), None),
        },
        ClientRequest::Put {
            key,
            value,
            context,
            options,
        } => match client
            .put_with(name(key), value.clone(), Some(context), *options)
            .await
        {
            Ok(context) => (
                Outcome::Ok(Vec::new()),
                Some(ClientResponse::Written { context }),
            ),
            Err(e) => (outcome_of(&e), None),
        },
        ClientRequest::Delete {
            key,
            context,
            options,
        } => match client.delete_with(name(key), context, *options).await {
            Ok(()) => (
                Outcome::Ok(Vec::new()),
                Some(ClientResponse::Written {
                    context: CausalContext::empty(),
                }),
            ),
            Err(e) => (outcome_of(&e), None),
        },
        other => (
            Outcome::Failed(format!("the harness does not run {}", other.op())),
            None,
        ),
    }
}

/// A client error as an outcome: indeterminate when the write may have been applied.
fn outcome_of(error: &ClientError) -> Outcome {
    if error.is_indeterminate() {
        Outcome::Indeterminate(error.to_string())
    } else {
        Outcome::Failed(error.to_string())
    }
}

/// One final read of `key` with R = 3, recorded in the workload's history.
async fn final_read(reader: &Client, run: &Run, key: &Key, shared: &Shared) {
    let op = lock(&run.history).invoke(
        FINAL_READER,
        key.clone(),
        OpKind::Read,
        shared.start.elapsed(),
        true,
    );
    let request = ClientRequest::Get {
        key: key.clone(),
        options: RequestOptions {
            r: Some(3),
            ..RequestOptions::default()
        },
    };
    let (outcome, _) = execute(reader, &run.prefix, &request).await;
    lock(&run.history).complete(op, shared.start.elapsed(), outcome);
}

/// Every node's own replica of `key` (node order), and the errors of those that could not be
/// read.
async fn replicas(
    reader: &Client,
    nodes: &[(NodeId, SocketAddr)],
    prefix: &str,
    key: &Key,
) -> (Vec<Option<Object>>, Vec<String>) {
    let mut name = prefix.as_bytes().to_vec();
    name.extend_from_slice(key.as_bytes());
    let mut objects = Vec::with_capacity(nodes.len());
    let mut errors = Vec::new();
    for (id, addr) in nodes {
        match reader.get_local(*addr, &name).await {
            Ok(LocalRead::Found(object)) => objects.push(Some(object)),
            Ok(LocalRead::NotFound) => objects.push(None),
            Ok(LocalRead::Corrupted) => {
                errors.push(format!("{id} holds a corrupt record"));
                objects.push(None);
            }
            // The workloads' values are far below the object bound: this would be a bug.
            Ok(LocalRead::TooLarge { size, .. }) => {
                errors.push(format!(
                    "{id} holds an object too large to send ({size} bytes)"
                ));
                objects.push(None);
            }
            Err(e) => {
                errors.push(format!("{id}: {e}"));
                objects.push(None);
            }
        }
    }
    (objects, errors)
}

/// Whether every replica could be read and all are equal.
fn agree(replicas: &[Option<Object>], errors: &[String]) -> bool {
    errors.is_empty() && replicas.windows(2).all(|w| w[0] == w[1])
}

/// Watches the keys whose replicas differ at heal while the clients keep running: returns how
/// many differed, and when the last of them was first seen with all replicas equal (`None`
/// if one was not by the time the clients stopped).
async fn watch_convergence(
    reader: Client,
    nodes: Vec<(NodeId, SocketAddr)>,
    keys: Vec<(String, Key)>,
    shared: Arc<Shared>,
) -> (usize, Option<Duration>) {
    let healed = Instant::now();
    let mut differing = Vec::new();
    for (prefix, key) in keys {
        let (replicas, errors) = replicas(&reader, &nodes, &prefix, &key).await;
        if !agree(&replicas, &errors) {
            differing.push((prefix, key));
        }
    }
    let count = differing.len();
    while !differing.is_empty() && !shared.stop.load(Ordering::SeqCst) {
        let mut still = Vec::new();
        for (prefix, key) in differing {
            let (replicas, errors) = replicas(&reader, &nodes, &prefix, &key).await;
            if !agree(&replicas, &errors) {
                still.push((prefix, key));
            }
        }
        differing = still;
        if !differing.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    reader.close().await;
    (count, differing.is_empty().then(|| healed.elapsed()))
}

/// Carries out one fault change.
async fn apply(cluster: &mut Cluster, fault: &Fault) -> Result<(), HarnessError> {
    let network = || {
        cluster
            .network()
            .ok_or_else(|| HarnessError::Invalid("the nemesis needs a proxied cluster".into()))
    };
    match fault {
        Fault::Partition(groups) => network()?.partition(groups),
        Fault::OneWay { from, to } => network()?.block(Peer::Node(*from), Peer::Node(*to)),
        Fault::Weather(weather) => network()?.set_weather(*weather),
        Fault::HealNetwork => network()?.heal(),
        Fault::Kill(i) => cluster.kill(*i)?,
        Fault::Restart(i) => cluster.restart(*i).await?,
        Fault::Pause(i) => cluster.pause(*i)?,
        Fault::Resume(i) => cluster.resume(*i)?,
    }
    Ok(())
}

/// Clears the network, resumes paused nodes and restarts dead ones.
async fn heal(cluster: &mut Cluster) -> Result<(), HarnessError> {
    if let Some(network) = cluster.network() {
        network.heal();
    }
    for i in 0..cluster.len() {
        match cluster.state(i) {
            NodeState::Paused => cluster.resume(i)?,
            NodeState::Down => cluster.restart(i).await?,
            NodeState::Running => {}
        }
    }
    Ok(())
}

async fn sleep_until(start: Instant, at: Duration) {
    let elapsed = start.elapsed();
    if at > elapsed {
        tokio::time::sleep(at - elapsed).await;
    }
}

fn operations(runs: &[Arc<Run>]) -> usize {
    runs.iter().map(|r| lock(&r.history).len()).sum()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here holds an invariant a panicking holder could break half-way.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_replayable_from_their_seed() {
        assert_eq!(Schedule::smoke(7, 3), Schedule::smoke(7, 3));
        let long = Duration::from_secs(600);
        assert_eq!(Schedule::random(7, 3, long), Schedule::random(7, 3, long));
        assert_ne!(Schedule::random(7, 3, long), Schedule::random(8, 3, long));
    }

    #[test]
    fn the_smoke_schedule_has_one_partition_one_kill_and_one_pause() {
        for seed in 0..20 {
            let schedule = Schedule::smoke(seed, 3);
            let (partitions, one_way, weather, kills, pauses) = schedule.counts();
            assert_eq!((partitions, one_way, kills, pauses), (1, 1, 1, 1));
            assert!(weather > 0);
            assert!(schedule.faults.windows(2).all(|w| w[0].at <= w[1].at));
        }
    }

    #[test]
    fn random_schedules_take_out_at_most_one_node_at_a_time_and_end_healed() {
        for seed in 0..50 {
            let schedule = Schedule::random(seed, 3, Duration::from_secs(1200));
            let mut out = 0i32;
            for s in &schedule.faults {
                match s.fault {
                    Fault::Kill(_) | Fault::Pause(_) => out += 1,
                    Fault::Restart(_) | Fault::Resume(_) => out -= 1,
                    _ => {}
                }
                assert!(out <= 1, "seed {seed}: two nodes out at {:?}", s.at);
                assert!(s.at <= schedule.length);
            }
            assert_eq!(out, 0, "seed {seed}: a node left out");
        }
    }

    #[test]
    fn oversized_poison_becomes_an_impossible_w_with_the_same_atom() {
        let mut workload = Workload::new(WorkloadConfig::new(WorkloadKind::BlindWrites, 4, 1));
        workload.set_poison_fraction(1.0);
        let mut rng = StdRng::seed_from_u64(3);
        let mut converted = 0;
        for _ in 0..100 {
            let mut step = workload.next(ClientId(0), &mut rng);
            let before = step.kind.clone();
            make_poison_definite(&mut step);
            if let (
                ClientRequest::Put { value, options, .. },
                OpKind::Put {
                    value: recorded,
                    atom,
                    ..
                },
            ) = (&step.request, &step.kind)
            {
                assert_eq!(options.w, Some(4));
                assert_eq!(value, recorded);
                assert!(value.len() < 100);
                if let OpKind::Put {
                    value: old,
                    atom: old_atom,
                    ..
                } = before
                {
                    assert_eq!(*atom, old_atom);
                    if old.len() > 1000 {
                        converted += 1;
                    }
                }
            }
        }
        assert!(converted > 0);
    }
}
