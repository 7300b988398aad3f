//! The simulator: real [`Node`]s over a simulated network, clock and disk, driven by one seed.
//!
//! Everything happens in one thread, in an event queue ordered by (simulated time, sequence
//! number). Every message between nodes, and between clients and nodes, goes through the real
//! codec; the network drops, duplicates, delays and partitions; disks complete batches in order
//! after a random fsync latency and lose what was pending when their node crashes; clocks jump
//! and drift. A run is a safety phase (faults and operations), then a heal, a settling time, a
//! liveness phase (no faults; every operation must succeed in time), a quiet time for
//! anti-entropy (`SimConfig::converge`, none by default), a final read of every key with R = N
//! from one node (read repair converges what anti-entropy and hints did not — unless
//! `SimConfig::read_repair` is off: then they alone must), and a direct comparison of every
//! replica in storage. The [checker](crate::checker)
//! judges the recorded history against that final state.
//!
//! A run is a pure function of its [`SimConfig`] and seed: the trace hash (xxh3 over every event
//! processed) is equal for equal seeds, which the tests check.

mod clock;
mod faults;
mod queue;
mod storage;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use shoal_causality::{Dot, Object, Sibling};
use shoal_coordinator::{
    AntiEntropyConfig, HintsConfig, InboundId, Node, NodeConfig, OutboundId, Output, PersistId,
    Priority, SendError,
};
use shoal_protocol::{
    ClientRequest, ClientResponse, DecodeLimits, PeerMessage, Request, Response, decode, encode,
};
use shoal_ring::{Member, Ring, RingError};
use shoal_storage::{
    CommitError, EngineError, MemoryStorage, OpenError, ReadOutcome, RedbStorage, Storage, Write,
    WriteBatch,
};
use shoal_types::{
    Incarnation, Key, Limits, NodeId, PartitionCount, ReplicationFactor, RequestOptions, TypesError,
};
use xxhash_rust::xxh3::Xxh3;

use crate::checker::{self, CheckOptions, FinalState, Report};
use crate::history::{ClientId, History, OpId, OpKind, Outcome};
use crate::workload::{Workload, WorkloadConfig, WorkloadKind};
use clock::{NORMAL_RATE_PERMILLE, NodeClock};
pub use faults::{FaultAction, FaultMix, FaultSchedule, NetworkFaults};
use queue::EventQueue;
use storage::SimStorage;

/// Which storage the simulated nodes run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// `MemoryStorage`: ordered maps (fast; the default).
    Memory,
    /// `RedbStorage` on redb's in-memory backend: the real storage engine.
    Redb,
}

/// How a run is set up. Every field has a default; see [`SimConfig::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// What clients do.
    pub workload: WorkloadKind,
    /// Which faults the safety phase injects.
    pub faults: FaultMix,
    /// Which storage the nodes run on.
    pub storage: StorageKind,
    /// Fewest nodes; each run draws its node count from `min_nodes..=max_nodes`.
    pub min_nodes: usize,
    /// Most nodes.
    pub max_nodes: usize,
    /// Ring sizes to draw from (small, so that keys share partitions).
    pub partition_counts: Vec<u32>,
    /// Keys the workload spreads over.
    pub keys: usize,
    /// Concurrent clients, each one operation at a time.
    pub clients: usize,
    /// Length of the safety phase (faults and operations).
    pub safety: Duration,
    /// Quiet time after the heal before the liveness phase (failure detectors catch up).
    pub settle: Duration,
    /// Length of the liveness phase, in which every operation must succeed.
    pub liveness: Duration,
    /// A client waits between operations for a time drawn from this range.
    pub think_time: (Duration, Duration),
    /// The nodes' request timeout.
    pub request_timeout: Duration,
    /// How long a node's transport waits for an answer before reporting `Lost`.
    pub transport_timeout: Duration,
    /// How long a client waits for an answer before recording the operation indeterminate.
    pub client_timeout: Duration,
    /// A healthy-window operation must succeed within this time (I7).
    pub liveness_deadline: Duration,
    /// Fraction of safety-phase writes made to fail definitely (impossible W, value too large).
    pub poison_fraction: f64,
    /// A run that processes more events than this is stopped and fails (a livelock).
    pub max_events: u64,
    /// Nodes kept down from the heal through the liveness phase (restarted when it ends), to
    /// check I7 with part of every preference list down. Promised up to N − max(R, W) = 1.
    pub down_in_liveness: usize,
    /// Overrides the workload's choice of majority PR/PW (`WorkloadConfig::primary_quorums`:
    /// on for single writers): `Some(false)` runs single writers on sloppy quorums.
    pub primary_quorums: Option<bool>,
    /// Sabotage, to prove the checker catches lost writes: disks acknowledge every tenth batch
    /// without storing it (a disk that lies about fsync, which no replication survives).
    pub lying_disks: bool,
    /// Faults scheduled on top of the drawn ones, at their times in the safety phase (a test
    /// that needs a particular storm, such as hundreds of crashes of one node).
    pub extra_faults: Vec<(Duration, FaultAction)>,
    /// Whether reads repair the replicas they find stale (`NodeConfig::read_repair`). Off,
    /// the replicas converge through anti-entropy alone — hints still go home — and the final
    /// reads repair nothing, so I5 measures anti-entropy.
    pub read_repair: bool,
    /// Quiet time after the drain, before the final reads, for anti-entropy to converge the
    /// replicas (no operations, no faults). Zero by default; the bound within which
    /// anti-entropy alone must converge them when `read_repair` is off.
    pub converge: Duration,
    /// The nodes' anti-entropy settings (`NodeConfig::anti_entropy`).
    pub anti_entropy: AntiEntropyConfig,
    /// The nodes' hint settings (`NodeConfig::hints`); `max_hint_bytes` 0 turns hinted
    /// handoff off (no node stands in for a primary).
    pub hints: HintsConfig,
}

/// What one run did and found.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The seed.
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Partitions in the ring.
    pub partitions: u32,
    /// The checker's figures.
    pub report: Report,
    /// xxh3 over every event processed: equal for equal seeds.
    pub trace_hash: u64,
    /// The faults injected.
    pub schedule: FaultSchedule,
    /// Counters of the run.
    pub stats: SimStats,
    /// Every operation the clients ran.
    pub history: History,
    /// What every replica of every key held at the end.
    pub final_state: FinalState,
    /// Things that must never happen in the simulator itself (a message that does not decode,
    /// a reply to nobody, a livelock). Any fails the run.
    pub anomalies: Vec<String>,
    /// Dots that named two different values (a node made a dot it had made before: Riak's
    /// kv679), seen in the objects that became durable on any node. Any fails the run: merging
    /// the two loses one of them. (A dot made for a write that a crash took back before it was
    /// durable anywhere may be made again: nobody ever held the first.)
    pub reused_dots: Vec<String>,
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub simulated: Duration,
    /// Operations invoked (final reads included).
    pub operations: u64,
    /// Node-to-node messages sent (requests and responses).
    pub messages: u64,
    /// Of the node-to-node requests, those sent at [`Priority::Bulk`] (background transfers).
    pub bulk_requests: u64,
    /// Messages dropped by the network, cut links or dead receivers.
    pub dropped: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Sends refused as unreachable.
    pub unreachable: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Clean stops (recorded clean, the commit queue finished first).
    pub clean_stops: u64,
    /// Batches lost in crashes (handed to the disk, not yet durable).
    pub batches_lost: u64,
    /// Read repairs the nodes made.
    pub read_repairs: u64,
    /// Keys anti-entropy exchanges repaired (pushed to a peer or fetched from one).
    pub exchange_repairs: u64,
    /// Writes the nodes forwarded to a primary.
    pub forwarded: u64,
    /// Requests and peer messages the nodes dropped unworked because their deadline passed
    /// while they waited (for a paused node to resume).
    pub expired: u64,
    /// Records corrupted by the nemesis (each a different key).
    pub corrupted_records: u64,
    /// Object reads the nemesis made fail.
    pub failed_reads: u64,
    /// Times a node took a new incarnation mid-run because it lost a record (as reported by
    /// the nodes running at the end).
    pub incarnation_renewals: u64,
    /// The longest version vector of any object that became durable on a node: entries, a
    /// bound the design keeps (`docs/reliability.md`).
    pub longest_vector: usize,
    /// Tombstones reaped on every primary, by the nodes running at the end (their metrics).
    pub tombstones_reaped: u64,
    /// Reaping records held at the end, over every node's storage.
    pub reaping_records: u64,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A node id, partition count or limit was refused.
    #[error("invalid setting: {0}")]
    Settings(#[from] TypesError),
    /// The ring could not be built.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// A node's storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] OpenError),
}

impl SimConfig {
    /// Defaults: 3–7 nodes, Q of 16 or 32, N=3 R=2 W=2, 24 keys, 5 clients, 8 s of faults,
    /// 5 s of settling, 2 s of liveness, `MemoryStorage`.
    pub fn new(workload: WorkloadKind, faults: FaultMix) -> Self {
        let ms = Duration::from_millis;
        SimConfig {
            workload,
            faults,
            storage: StorageKind::Memory,
            min_nodes: 3,
            max_nodes: 7,
            partition_counts: vec![16, 32],
            keys: 24,
            clients: 5,
            safety: ms(8000),
            settle: ms(5000),
            liveness: ms(2000),
            think_time: (ms(5), ms(60)),
            request_timeout: ms(2000),
            transport_timeout: ms(1000),
            client_timeout: ms(3000),
            liveness_deadline: ms(1000),
            poison_fraction: 0.02,
            max_events: 5_000_000,
            down_in_liveness: 0,
            primary_quorums: None,
            lying_disks: false,
            extra_faults: Vec::new(),
            read_repair: true,
            converge: Duration::ZERO,
            anti_entropy: AntiEntropyConfig::default(),
            hints: HintsConfig::default(),
        }
    }
}

impl RunResult {
    /// Whether every promise held and the simulator saw nothing impossible.
    pub fn passed(&self) -> bool {
        self.report.passed() && self.anomalies.is_empty() && self.reused_dots.is_empty()
    }
}

impl fmt::Display for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} nodes, Q={}, trace {:016x}, {} events, {} operations, {:?} simulated",
            self.seed,
            self.nodes,
            self.partitions,
            self.trace_hash,
            self.stats.events,
            self.stats.operations,
            self.stats.simulated
        )?;
        writeln!(f, "fault schedule:")?;
        write!(f, "{}", self.schedule)?;
        write!(f, "{}", self.report)?;
        for anomaly in &self.anomalies {
            writeln!(f, "anomaly: {anomaly}")?;
        }
        for reuse in &self.reused_dots {
            writeln!(f, "reused dot: {reuse}")?;
        }
        Ok(())
    }
}

/// Runs one simulation.
pub fn run(config: &SimConfig, seed: u64) -> Result<RunResult, SimError> {
    let mut sim = Simulation::new(config, seed)?;
    sim.run();
    Ok(sim.finish())
}

/// The phases of a run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Faults and operations.
    Safety,
    /// Healed; failure detectors catch up. Operations go on but need not succeed.
    Settle,
    /// Healed and settled: every operation must succeed in time.
    Liveness,
    /// No new operations; those in flight finish.
    Drain,
    /// Every key is read with R = N.
    FinalReads,
    /// The run stops.
    End,
}

/// Who waits for a node's reply to an inbound request.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// A peer's outbound message `out`, sent in its life `life`.
    Peer {
        node: usize,
        life: u32,
        out: OutboundId,
    },
    /// A client operation.
    Client { op: OpId },
}

#[derive(Debug)]
enum Event {
    /// A request arrives at node `to` (if it is still in life `life`).
    Deliver {
        to: usize,
        life: u32,
        bytes: Bytes,
        route: Route,
        /// When it reached the node, if earlier than its delivery: a paused node's requests
        /// wait in its socket until it resumes, and their deadlines count from their arrival.
        arrived: Option<Duration>,
    },
    /// A response arrives at node `to` for its outbound message `out`.
    Respond {
        to: usize,
        life: u32,
        from: usize,
        out: OutboundId,
        bytes: Bytes,
    },
    /// Node `to`'s transport gives up on its outbound message `out`.
    SendFailed {
        to: usize,
        life: u32,
        out: OutboundId,
        error: SendError,
    },
    /// Node `node`'s disk may have completed batches.
    DiskDone { node: usize, life: u32 },
    /// Node `node`'s timer, if `generation` is still current.
    Timer { node: usize, generation: u64 },
    /// A client starts its next operation.
    ClientStart { client: usize },
    /// A node's answer reaches the client of `op`.
    ClientReply { op: OpId, bytes: Bytes },
    /// The client of `op` gives up waiting.
    ClientTimeout { op: OpId },
    /// A scheduled fault.
    Fault(FaultAction),
    /// Node `node` crashes while a batch is on its way to disk (unless it already crashed, or
    /// the faults were healed meanwhile).
    CrashMidWrite { node: usize, life: u32 },
    /// The run moves to the next phase.
    Phase(Phase),
}

/// One simulated machine: the node process (if running), its disk and its clock.
#[derive(Debug)]
struct SimNode {
    config: NodeConfig,
    storage: SimStorage,
    node: Option<Node<SimStorage>>,
    /// Bumped at every crash: messages, timers and disk completions of an earlier life are void.
    life: u32,
    clock: NodeClock,
    paused: bool,
    /// Events that arrived while paused, processed in order on resume.
    held: Vec<Event>,
    /// Batches handed to the disk and not yet durable, in completion order.
    disk: VecDeque<PendingBatch>,
    disk_busy_until: Duration,
    fail_next_fsync: bool,
    crash_on_next_write: bool,
    disk_failed: bool,
    /// Batches completed, for the lying disk.
    fsyncs: u64,
    timer_at: Option<Duration>,
    timer_generation: u64,
}

#[derive(Debug)]
struct PendingBatch {
    id: PersistId,
    batch: WriteBatch,
    done_at: Duration,
    fail: bool,
}

/// Whose operation is in flight: a workload client, or the final reader.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Client(usize),
    FinalRead,
}

struct Simulation<'a> {
    config: &'a SimConfig,
    seed: u64,
    base: Instant,
    now: Duration,
    phase: Phase,
    queue: EventQueue<Event>,
    net_rng: StdRng,
    client_rng: StdRng,
    ring: Ring,
    q: u32,
    nodes: Vec<SimNode>,
    index: BTreeMap<NodeId, usize>,
    cut: BTreeSet<(usize, usize)>,
    weather: NetworkFaults,
    workload: Workload,
    history: History,
    /// The primaries' objects when the final reads began, before they repaired anything.
    before_repair: FinalState,
    routes: BTreeMap<(usize, InboundId), Route>,
    pending_out: BTreeSet<(usize, u32, OutboundId)>,
    inflight: BTreeMap<OpId, Caller>,
    next_inbound: u64,
    limits: DecodeLimits,
    trace: Xxh3,
    stats: SimStats,
    anomalies: Vec<String>,
    schedule: FaultSchedule,
    /// Nodes kept down through the liveness phase.
    kept_down: Vec<usize>,
    /// Every (key, dot) durable on any node, with the value it named first (counters are per
    /// key: a dot names one write to one key).
    dots: BTreeMap<(Key, Dot), Sibling>,
    reused_dots: Vec<String>,
    /// Keys the nemesis corrupted a record of (once each).
    corrupted: BTreeSet<Key>,
}

/// The client id final reads are recorded under.
const FINAL_READER: ClientId = ClientId(u32::MAX);

impl<'a> Simulation<'a> {
    fn new(config: &'a SimConfig, seed: u64) -> Result<Self, SimError> {
        let mut master = StdRng::seed_from_u64(seed);
        let mut fault_rng = StdRng::seed_from_u64(master.random());
        let mut net_rng = StdRng::seed_from_u64(master.random());
        let client_rng = StdRng::seed_from_u64(master.random());
        let count = master.random_range(config.min_nodes..=config.max_nodes.max(config.min_nodes));
        let q = match config.partition_counts.len() {
            0 => 16,
            n => config.partition_counts[master.random_range(0..n)],
        };
        let partitions = PartitionCount::new(q)?;
        let mut members = Vec::with_capacity(count);
        for i in 0..count {
            let id = NodeId::new(&format!("n{}", i + 1))?;
            let port = 7001 + u16::try_from(i).unwrap_or(0);
            members.push(Member::new(id, SocketAddr::from(([127, 0, 0, 1], port))));
        }
        let ring = Ring::new(members.clone(), partitions, ReplicationFactor::new(3)?)?;
        let limits = Limits::new(1024, 16 * 1024, 64)?;
        // The one real instant the simulated clock counts from (an `Instant` cannot be made
        // otherwise); nothing depends on its value, and the clock is never read again.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let mut nodes = Vec::with_capacity(count);
        let mut index = BTreeMap::new();
        for (i, member) in members.iter().enumerate() {
            let candidate = Incarnation::new(master.random());
            let (storage, incarnation) = match config.storage {
                StorageKind::Memory => {
                    let s = MemoryStorage::new(partitions);
                    let (incarnation, _) = s.begin_run(candidate);
                    (SimStorage::Memory(s), incarnation)
                }
                StorageKind::Redb => {
                    let (s, incarnation) =
                        RedbStorage::open_in_memory(&member.id, partitions, candidate)?;
                    (SimStorage::Redb(s), incarnation)
                }
            };
            let mut node_config = NodeConfig::new(member.id.clone(), incarnation);
            node_config.limits = limits;
            node_config.request_timeout = config.request_timeout;
            node_config.read_repair = config.read_repair;
            node_config.anti_entropy = config.anti_entropy;
            node_config.hints = config.hints;
            let clock = NodeClock::new(Duration::from_millis(master.random_range(0..10_000)));
            let node = Node::new(
                base + clock.local(Duration::ZERO),
                node_config.clone(),
                ring.clone(),
                storage.clone(),
                net_rng.random(),
            );
            index.insert(member.id.clone(), i);
            nodes.push(SimNode {
                config: node_config,
                storage,
                node: Some(node),
                life: 0,
                clock,
                paused: false,
                held: Vec::new(),
                disk: VecDeque::new(),
                disk_busy_until: Duration::ZERO,
                fail_next_fsync: false,
                crash_on_next_write: false,
                disk_failed: false,
                fsyncs: 0,
                timer_at: None,
                timer_generation: 0,
            });
        }
        let mut schedule =
            FaultSchedule::generate(&config.faults, count, config.safety, &mut fault_rng);
        if !config.extra_faults.is_empty() {
            let heal = schedule.actions.pop();
            let extra = config
                .extra_faults
                .iter()
                .filter(|(at, a)| *at < config.safety && a.nodes().iter().all(|n| *n < count));
            schedule.actions.extend(extra.cloned());
            schedule.actions.sort_by_key(|(at, _)| *at);
            schedule.actions.extend(heal);
        }
        let weather = schedule.network;
        let mut kept_down: Vec<usize> = (0..count).collect();
        kept_down.shuffle(&mut fault_rng);
        kept_down.truncate(config.down_in_liveness.min(count.saturating_sub(1)));
        let mut workload_config = WorkloadConfig::new(config.workload, config.keys, config.clients);
        workload_config.max_value_bytes = limits.max_value_bytes();
        if let Some(primary) = config.primary_quorums {
            workload_config.primary_quorums = primary;
        }
        let mut workload = Workload::new(workload_config);
        workload.set_poison_fraction(config.poison_fraction);
        let mut sim = Simulation {
            config,
            seed,
            base,
            now: Duration::ZERO,
            phase: Phase::Safety,
            queue: EventQueue::new(),
            net_rng,
            client_rng,
            ring,
            q,
            nodes,
            index,
            cut: BTreeSet::new(),
            weather,
            workload,
            history: History::new(),
            before_repair: FinalState::new(),
            routes: BTreeMap::new(),
            pending_out: BTreeSet::new(),
            inflight: BTreeMap::new(),
            next_inbound: 0,
            limits: DecodeLimits::default(),
            trace: Xxh3::new(),
            stats: SimStats::default(),
            anomalies: Vec::new(),
            schedule,
            kept_down,
            dots: BTreeMap::new(),
            reused_dots: Vec::new(),
            corrupted: BTreeSet::new(),
        };
        for (at, action) in sim.schedule.actions.clone() {
            sim.queue.push(at, Event::Fault(action));
        }
        let settle = config.safety + config.settle;
        let drain = settle + config.liveness;
        let final_reads =
            drain + config.client_timeout + Duration::from_millis(100) + config.converge;
        let end = final_reads + config.client_timeout + Duration::from_secs(1);
        sim.queue.push(config.safety, Event::Phase(Phase::Settle));
        sim.queue.push(settle, Event::Phase(Phase::Liveness));
        sim.queue.push(drain, Event::Phase(Phase::Drain));
        sim.queue.push(final_reads, Event::Phase(Phase::FinalReads));
        sim.queue.push(end, Event::Phase(Phase::End));
        for n in 0..count {
            sim.reschedule_timer(n);
        }
        for client in 0..config.clients {
            let at = sim.think_time();
            sim.queue.push(at, Event::ClientStart { client });
        }
        Ok(sim)
    }

    fn run(&mut self) {
        while let Some((at, event)) = self.queue.pop() {
            self.now = at;
            self.stats.events += 1;
            if self.stats.events > self.config.max_events {
                self.anomalies.push(format!(
                    "more than {} events by {:?}: a livelock?",
                    self.config.max_events, self.now
                ));
                return;
            }
            if let Event::Phase(Phase::End) = event {
                self.trace(9, 0, &[]);
                return;
            }
            self.process(event);
        }
    }

    fn process(&mut self, event: Event) {
        match event {
            Event::Deliver {
                to,
                life,
                bytes,
                route,
                arrived,
            } => self.deliver(to, life, bytes, route, arrived),
            Event::Respond {
                to,
                life,
                from,
                out,
                bytes,
            } => self.respond(to, life, from, out, bytes),
            Event::SendFailed {
                to,
                life,
                out,
                error,
            } => self.send_failed(to, life, out, error),
            Event::DiskDone { node, life } => self.disk_done(node, life),
            Event::Timer { node, generation } => self.timer(node, generation),
            Event::ClientStart { client } => self.client_start(client),
            Event::ClientReply { op, bytes } => self.client_reply(op, bytes),
            Event::ClientTimeout { op } => {
                if self.inflight.contains_key(&op) {
                    self.trace(7, op.0 as usize, &[]);
                    let outcome =
                        Outcome::Indeterminate("no reply before the client timeout".into());
                    self.complete(op, outcome, None);
                }
            }
            Event::Fault(action) => self.fault(action),
            Event::CrashMidWrite { node, life } => {
                if self.phase == Phase::Safety && self.nodes[node].life == life {
                    self.trace(14, node, &[]);
                    self.crash(node);
                }
            }
            Event::Phase(phase) => self.enter(phase),
        }
    }

    // ---- node inputs -----------------------------------------------------------------

    fn deliver(
        &mut self,
        to: usize,
        life: u32,
        bytes: Bytes,
        route: Route,
        arrived: Option<Duration>,
    ) {
        let node = &self.nodes[to];
        let cut = matches!(route, Route::Peer { node: from, .. } if self.cut.contains(&(from, to)));
        if node.node.is_none() || node.life != life || cut {
            self.stats.dropped += 1;
            return;
        }
        if node.paused {
            let arrived = Some(arrived.unwrap_or(self.now));
            self.nodes[to].held.push(Event::Deliver {
                to,
                life,
                bytes,
                route,
                arrived,
            });
            return;
        }
        self.trace(1, to, &bytes);
        let request = match decode::<Request>(&bytes, &self.limits) {
            Ok(r) => r,
            Err(e) => return self.anomaly(format!("a request to n{} did not decode: {e}", to + 1)),
        };
        self.next_inbound += 1;
        let inbound = InboundId(self.next_inbound);
        self.routes.insert((to, inbound), route);
        let arrived = arrived.map(|at| self.base + self.nodes[to].clock.local(at));
        self.with_node(to, |node, now| {
            node.handle_request(now, arrived.unwrap_or(now), inbound, request)
        });
    }

    fn respond(&mut self, to: usize, life: u32, from: usize, out: OutboundId, bytes: Bytes) {
        let node = &self.nodes[to];
        if node.node.is_none() || node.life != life || self.cut.contains(&(from, to)) {
            self.stats.dropped += 1;
            return;
        }
        if node.paused {
            self.nodes[to].held.push(Event::Respond {
                to,
                life,
                from,
                out,
                bytes,
            });
            return;
        }
        // Answered already (a duplicate's answer), or the transport gave up on it.
        if !self.pending_out.remove(&(to, life, out)) {
            return;
        }
        self.trace(2, to, &bytes);
        let result = match decode::<Response>(&bytes, &self.limits) {
            Ok(Response::Peer(r)) => Ok(r),
            Ok(Response::Refused(refusal)) => Err(SendError::Refused(refusal)),
            Ok(other) => {
                return self.anomaly(format!("n{} got {other:?} to a peer request", to + 1));
            }
            Err(e) => {
                return self.anomaly(format!("a response to n{} did not decode: {e}", to + 1));
            }
        };
        self.with_node(to, |node, now| node.handle_response(now, out, result));
    }

    fn send_failed(&mut self, to: usize, life: u32, out: OutboundId, error: SendError) {
        let node = &self.nodes[to];
        if node.node.is_none() || node.life != life {
            return;
        }
        if node.paused {
            self.nodes[to].held.push(Event::SendFailed {
                to,
                life,
                out,
                error,
            });
            return;
        }
        if !self.pending_out.remove(&(to, life, out)) {
            return;
        }
        let tag = if error == SendError::Unreachable {
            3
        } else {
            4
        };
        self.trace(tag, to, &out.0.to_le_bytes());
        self.with_node(to, |node, now| node.handle_response(now, out, Err(error)));
    }

    fn disk_done(&mut self, n: usize, life: u32) {
        let node = &self.nodes[n];
        if node.node.is_none() || node.life != life {
            return;
        }
        if node.paused {
            self.nodes[n].held.push(Event::DiskDone { node: n, life });
            return;
        }
        while self.nodes[n]
            .disk
            .front()
            .is_some_and(|b| b.done_at <= self.now)
        {
            let Some(done) = self.nodes[n].disk.pop_front() else {
                break;
            };
            self.trace(5, n, &done.id.0.to_le_bytes());
            let result = if done.fail {
                self.nodes[n].disk_failed = true;
                Err(CommitError::Engine(EngineError::io(
                    "committing",
                    io::Error::other("simulated fsync failure"),
                )))
            } else if self.config.lying_disks && self.nodes[n].fsyncs % 10 == 9 {
                self.nodes[n].fsyncs += 1;
                Ok(())
            } else {
                self.nodes[n].fsyncs += 1;
                self.check_dots(n, &done.batch);
                let result = self.nodes[n].storage.write(done.batch);
                if let Err(e) = &result {
                    self.anomaly(format!("storage of n{} refused a batch: {e}", n + 1));
                }
                result
            };
            self.with_node(n, |node, now| node.handle_persisted(now, done.id, result));
        }
    }

    fn timer(&mut self, n: usize, generation: u64) {
        if generation != self.nodes[n].timer_generation {
            return;
        }
        self.nodes[n].timer_at = None;
        // A paused node's timer is set again when it resumes.
        if self.nodes[n].node.is_none() || self.nodes[n].paused {
            return;
        }
        self.trace(6, n, &[]);
        self.with_node(n, |node, now| node.handle_timeout(now));
    }

    /// Gives node `n` one input at its local time, then carries out what it wants done.
    fn with_node(&mut self, n: usize, input: impl FnOnce(&mut Node<SimStorage>, Instant)) {
        let now = self.local_now(n);
        let Some(node) = self.nodes[n].node.as_mut() else {
            return;
        };
        input(node, now);
        while let Some(output) = self.nodes[n].node.as_mut().and_then(Node::poll_output) {
            self.output(n, output);
        }
        self.reschedule_timer(n);
    }

    fn local_now(&self, n: usize) -> Instant {
        self.base + self.nodes[n].clock.local(self.now)
    }

    fn reschedule_timer(&mut self, n: usize) {
        let node = &self.nodes[n];
        let Some(deadline) = node.node.as_ref().and_then(Node::poll_timeout) else {
            return;
        };
        if node.paused {
            return;
        }
        let local = deadline.saturating_duration_since(self.base);
        let at = node.clock.sim_time_of(local).max(self.now);
        if node.timer_at == Some(at) {
            return;
        }
        let node = &mut self.nodes[n];
        node.timer_generation += 1;
        node.timer_at = Some(at);
        let generation = node.timer_generation;
        self.queue.push(
            at,
            Event::Timer {
                node: n,
                generation,
            },
        );
    }

    // ---- node outputs ----------------------------------------------------------------

    fn output(&mut self, n: usize, output: Output) {
        match output {
            Output::Reply { id, response } => self.reply(n, id, &response),
            Output::Send {
                id,
                to,
                request,
                priority,
            } => {
                if priority == Priority::Bulk {
                    self.stats.bulk_requests += 1;
                }
                let coordinate = matches!(request.message, PeerMessage::Coordinate(_));
                match self.index.get(&to).copied() {
                    Some(to) => self.send(n, id, to, &Request::Peer(request), coordinate),
                    None => self.anomaly(format!("n{} sent to unknown node {to}", n + 1)),
                }
            }
            Output::Abandon { id } => {
                // The answer, if it comes, goes to nobody; the message itself may still arrive.
                let life = self.nodes[n].life;
                self.pending_out.remove(&(n, life, id));
            }
            Output::Persist { id, batch } => {
                let fsync = self.fsync_latency();
                let node = &mut self.nodes[n];
                let done_at = self.now.max(node.disk_busy_until) + fsync;
                node.disk_busy_until = done_at;
                let fail = std::mem::take(&mut node.fail_next_fsync);
                node.disk.push_back(PendingBatch {
                    id,
                    batch,
                    done_at,
                    fail,
                });
                let life = node.life;
                let crash = std::mem::take(&mut node.crash_on_next_write);
                self.queue.push(done_at, Event::DiskDone { node: n, life });
                if crash {
                    // Before the batch is durable: it is lost, and with it the write.
                    let at = self.now + (done_at - self.now) / 2;
                    self.queue.push(at, Event::CrashMidWrite { node: n, life });
                }
            }
        }
    }

    fn reply(&mut self, n: usize, id: InboundId, response: &Response) {
        let Some(route) = self.routes.remove(&(n, id)) else {
            return self.anomaly(format!("n{} answered {id:?}, which nobody asked", n + 1));
        };
        let bytes = match encode(response) {
            Ok(b) => b,
            Err(e) => {
                return self.anomaly(format!(
                    "n{} made a response that does not encode: {e}",
                    n + 1
                ));
            }
        };
        match route {
            Route::Peer {
                node: to,
                life,
                out,
            } => {
                self.stats.messages += 1;
                if self.cut.contains(&(n, to)) || self.roll(self.weather.drop) {
                    self.stats.dropped += 1;
                    return;
                }
                let at = self.now + self.latency();
                let respond = Event::Respond {
                    to,
                    life,
                    from: n,
                    out,
                    bytes,
                };
                self.queue.push(at, respond);
            }
            Route::Client { op } => {
                if self.roll(self.weather.client_drop) {
                    self.stats.dropped += 1;
                    return;
                }
                let at = self.now + self.latency();
                self.queue.push(at, Event::ClientReply { op, bytes });
            }
        }
    }

    fn send(&mut self, n: usize, out: OutboundId, to: usize, request: &Request, coordinate: bool) {
        self.stats.messages += 1;
        let life = self.nodes[n].life;
        self.pending_out.insert((n, life, out));
        let bytes = match encode(request) {
            Ok(b) => b,
            Err(e) => {
                return self.anomaly(format!(
                    "n{} made a request that does not encode: {e}",
                    n + 1
                ));
            }
        };
        if self.cut.contains(&(n, to)) || self.nodes[to].node.is_none() {
            // No connection can be made: the message is not delivered, and the sender knows.
            self.stats.unreachable += 1;
            let at = self.now + Duration::from_micros(self.net_rng.random_range(10..500));
            let error = SendError::Unreachable;
            self.queue.push(
                at,
                Event::SendFailed {
                    to: n,
                    life,
                    out,
                    error,
                },
            );
            return;
        }
        let at = self.now + self.config.transport_timeout;
        let error = SendError::Lost;
        self.queue.push(
            at,
            Event::SendFailed {
                to: n,
                life,
                out,
                error,
            },
        );
        if self.roll(self.weather.drop) {
            self.stats.dropped += 1;
            return;
        }
        // A forwarded write is never duplicated: QUIC delivers a stream once, and a second
        // coordination would be a second write, not a network fault.
        let copies = if !coordinate && self.roll(self.weather.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let route = Route::Peer { node: n, life, out };
        let to_life = self.nodes[to].life;
        for _ in 0..copies {
            let at = self.now + self.latency();
            let deliver = Event::Deliver {
                to,
                life: to_life,
                bytes: bytes.clone(),
                route,
                arrived: None,
            };
            self.queue.push(at, deliver);
        }
    }

    // ---- clients ---------------------------------------------------------------------

    fn client_start(&mut self, client: usize) {
        if self.phase >= Phase::Drain {
            return;
        }
        let id = ClientId(u32::try_from(client).unwrap_or(u32::MAX - 1));
        let step = self.workload.next(id, &mut self.client_rng);
        let healthy = self.phase == Phase::Liveness;
        let op = self
            .history
            .invoke(id, step.key.clone(), step.kind.clone(), self.now, healthy);
        self.workload.invoked(id, op, &step);
        let target = self.client_rng.random_range(0..self.nodes.len());
        self.client_request(op, Caller::Client(client), target, step.request);
    }

    fn client_request(&mut self, op: OpId, caller: Caller, target: usize, request: ClientRequest) {
        self.stats.operations += 1;
        self.inflight.insert(op, caller);
        // A refused connection delivered nothing: the client tries the next node.
        let count = self.nodes.len();
        let target = (0..count)
            .map(|i| (target + i) % count)
            .find(|n| self.nodes[*n].node.is_some())
            .unwrap_or(target);
        if self.nodes[target].node.is_none() {
            let outcome = Outcome::Failed("connection refused: the node is down".into());
            return self.complete(op, outcome, None);
        }
        let bytes = match encode(&Request::Client(request)) {
            Ok(b) => b,
            Err(e) => return self.anomaly(format!("a client request does not encode: {e}")),
        };
        self.queue.push(
            self.now + self.config.client_timeout,
            Event::ClientTimeout { op },
        );
        if self.roll(self.weather.client_drop) {
            self.stats.dropped += 1;
            return;
        }
        let at = self.now + self.latency();
        let deliver = Event::Deliver {
            to: target,
            life: self.nodes[target].life,
            bytes,
            route: Route::Client { op },
            arrived: None,
        };
        self.queue.push(at, deliver);
    }

    fn client_reply(&mut self, op: OpId, bytes: Bytes) {
        if !self.inflight.contains_key(&op) {
            return;
        }
        self.trace(8, op.0 as usize, &bytes);
        match decode::<Response>(&bytes, &self.limits) {
            Ok(Response::Client(answer)) => {
                let outcome = Outcome::from_response(&answer);
                self.complete(op, outcome, Some(&answer));
            }
            Ok(Response::Refused(refusal)) => {
                self.complete(op, Outcome::Failed(refusal.to_string()), None);
            }
            Ok(other) => self.anomaly(format!("a client got {other:?}")),
            Err(e) => self.anomaly(format!("a client's answer did not decode: {e}")),
        }
    }

    fn complete(&mut self, op: OpId, outcome: Outcome, answer: Option<&ClientResponse>) {
        let Some(caller) = self.inflight.remove(&op) else {
            return;
        };
        self.history.complete(op, self.now, outcome);
        if let Caller::Client(client) = caller {
            let id = ClientId(u32::try_from(client).unwrap_or(u32::MAX - 1));
            self.workload.completed(id, op, answer);
            let at = self.now + self.think_time();
            self.queue.push(at, Event::ClientStart { client });
        }
    }

    // ---- faults and phases -----------------------------------------------------------

    fn fault(&mut self, action: FaultAction) {
        self.trace(10, 0, action.to_string().as_bytes());
        match action {
            FaultAction::Cut { links, .. } => self.cut.extend(links),
            FaultAction::Heal { links } => {
                for link in links {
                    self.cut.remove(&link);
                }
            }
            FaultAction::Crash(n) => self.crash(n),
            FaultAction::Stop(n) => self.stop_cleanly(n),
            FaultAction::CrashDuringWrite(n) => {
                if self.nodes[n].node.is_some() {
                    self.nodes[n].crash_on_next_write = true;
                }
            }
            FaultAction::Restart(n) => {
                self.nodes[n].crash_on_next_write = false;
                self.restart(n);
            }
            FaultAction::Pause(n) => {
                if self.nodes[n].node.is_some() {
                    self.nodes[n].paused = true;
                }
            }
            FaultAction::Resume(n) => self.resume(n),
            FaultAction::ClockJump { node, by } => {
                let now = self.now;
                self.nodes[node].clock.jump(now, by);
                self.reschedule_timer(node);
            }
            FaultAction::ClockRate { node, permille } => {
                let now = self.now;
                self.nodes[node].clock.set_rate(now, permille);
                self.reschedule_timer(node);
            }
            FaultAction::DiskError(n) => self.nodes[n].fail_next_fsync = true,
            FaultAction::CorruptRecord(n) => self.corrupt_record(n),
            FaultAction::ReadErrors { node, reads } => {
                if self.nodes[node].node.is_some() {
                    self.stats.failed_reads += reads;
                    self.nodes[node].storage.fail_reads(reads);
                }
            }
            FaultAction::HealAll => {
                self.cut.clear();
                self.weather = NetworkFaults::default();
                self.workload.set_poison_fraction(0.0);
                for n in 0..self.nodes.len() {
                    self.nodes[n].storage.fail_reads(0);
                    self.nodes[n].fail_next_fsync = false;
                    self.nodes[n].crash_on_next_write = false;
                    for batch in &mut self.nodes[n].disk {
                        batch.fail = false;
                    }
                    let now = self.now;
                    self.nodes[n].clock.set_rate(now, NORMAL_RATE_PERMILLE);
                    self.resume(n);
                    // A node whose disk failed stops coordinating writes until it restarts.
                    if self.nodes[n].disk_failed || self.kept_down.contains(&n) {
                        self.crash(n);
                    }
                    if !self.kept_down.contains(&n) {
                        self.restart(n);
                    }
                }
            }
        }
    }

    /// Corrupts node `n`'s record of a workload key it is a primary of and that no fault
    /// corrupted before, if it holds one.
    fn corrupt_record(&mut self, n: usize) {
        let id = self.nodes[n].config.id.clone();
        let candidates: Vec<Key> = self
            .workload
            .keys()
            .iter()
            .filter(|k| !self.corrupted.contains(*k))
            .filter(|k| {
                let partition = self.ring.partition_for_key(k);
                self.ring.primaries(partition).contains(&id)
            })
            .cloned()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let key = candidates[self.net_rng.random_range(0..candidates.len())].clone();
        let partition = self.ring.partition_for_key(&key);
        if self.nodes[n].storage.corrupt(partition, &key) {
            self.stats.corrupted_records += 1;
            self.corrupted.insert(key);
        }
    }

    /// Records the dots of every object in `batch`, which just became durable on node `n`; a
    /// dot already seen on the same key naming another value is a reused dot.
    fn check_dots(&mut self, n: usize, batch: &WriteBatch) {
        for write in batch.writes() {
            let Write::Object { key, object, .. } = write else {
                continue;
            };
            let entries = object.version_vector().len();
            self.stats.longest_vector = self.stats.longest_vector.max(entries);
            for (dot, sibling) in object.siblings() {
                let named = (key.clone(), dot.clone());
                match self.dots.get(&named) {
                    None => {
                        self.dots.insert(named, sibling.clone());
                    }
                    Some(first) if first == sibling => {}
                    Some(first) => {
                        if self.reused_dots.len() < 20 {
                            let text = format!(
                                "{:?}: n{} persisted {key:?} with {dot:?} = {sibling:?}, which \
                                 named {first:?} before",
                                self.now,
                                n + 1
                            );
                            self.reused_dots.push(text);
                        }
                    }
                }
            }
        }
    }

    fn crash(&mut self, n: usize) {
        if self.nodes[n].node.is_none() {
            return;
        }
        self.stats.crashes += 1;
        self.stats.batches_lost += self.nodes[n].disk.len() as u64;
        self.halt(n);
    }

    /// A clean stop: the node takes nothing more, every batch already handed to its disk is
    /// written (the commit queue finishes), and, unless a commit of this run failed, the stop
    /// is recorded clean. What it was coordinating is abandoned, as by a real node's drain
    /// timeout: its clients see no answer (indeterminate).
    fn stop_cleanly(&mut self, n: usize) {
        if self.nodes[n].node.is_none() {
            return;
        }
        let mut clean = !self.nodes[n].disk_failed;
        while let Some(done) = self.nodes[n].disk.pop_front() {
            self.trace(5, n, &done.id.0.to_le_bytes());
            if done.fail {
                clean = false;
                continue;
            }
            self.nodes[n].fsyncs += 1;
            self.check_dots(n, &done.batch);
            if let Err(e) = self.nodes[n].storage.write(done.batch) {
                self.anomaly(format!("storage of n{} refused a batch: {e}", n + 1));
                clean = false;
            }
        }
        if clean && self.nodes[n].storage.record_clean_stop() {
            self.stats.clean_stops += 1;
        } else {
            self.stats.crashes += 1;
        }
        self.halt(n);
    }

    /// The node's process is gone: its memory, its pending disk batches, its messages.
    fn halt(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.node = None;
        node.life += 1;
        node.paused = false;
        node.held.clear();
        node.disk.clear();
        node.disk_busy_until = self.now;
        node.fail_next_fsync = false;
        node.crash_on_next_write = false;
        node.disk_failed = false;
        node.timer_at = None;
        node.timer_generation += 1;
        self.routes.retain(|(m, _), _| *m != n);
        self.pending_out.retain(|(m, _, _)| *m != n);
    }

    fn restart(&mut self, n: usize) {
        if self.nodes[n].node.is_some() {
            return;
        }
        let now = self.local_now(n);
        let seed = self.net_rng.random();
        // The run begins by the same rule a real node's open follows: the disk's incarnation is
        // kept after any stop (the renewed one if a lost record renewed it), since a node sends
        // out only dots durable on its disk.
        let candidate = Incarnation::new(self.net_rng.random());
        match self.nodes[n].storage.begin_run(candidate) {
            Ok((incarnation, _)) => self.nodes[n].config.incarnation = incarnation,
            Err(e) => {
                return self.anomaly(format!("n{} could not begin a run on its disk: {e}", n + 1));
            }
        }
        let node = &mut self.nodes[n];
        // Every start has a greater generation (a real server takes the wall clock's), so the
        // other nodes count its gossip heartbeats again.
        node.config.generation += 1;
        node.node = Some(Node::new(
            now,
            node.config.clone(),
            self.ring.clone(),
            node.storage.clone(),
            seed,
        ));
        self.trace(11, n, &[]);
        self.reschedule_timer(n);
    }

    fn resume(&mut self, n: usize) {
        if !self.nodes[n].paused {
            return;
        }
        self.nodes[n].paused = false;
        for event in std::mem::take(&mut self.nodes[n].held) {
            self.queue.push(self.now, event);
        }
        self.reschedule_timer(n);
    }

    fn enter(&mut self, phase: Phase) {
        self.trace(12, phase as usize, &[]);
        self.phase = phase;
        if phase == Phase::Drain {
            for n in self.kept_down.clone() {
                self.restart(n);
            }
        }
        if phase == Phase::FinalReads {
            // Measure convergence before the final reads repair anything.
            self.record_before_repair();
            let options = RequestOptions {
                r: Some(3),
                ..RequestOptions::default()
            };
            for key in self.workload.keys().to_vec() {
                let op =
                    self.history
                        .invoke(FINAL_READER, key.clone(), OpKind::Read, self.now, true);
                let target = self.client_rng.random_range(0..self.nodes.len());
                let request = ClientRequest::Get { key, options };
                self.client_request(op, Caller::FinalRead, target, request);
            }
        }
    }

    // ---- the end ---------------------------------------------------------------------

    /// What every primary holds now, in storage, before any repairing read.
    fn record_before_repair(&mut self) {
        for key in self.workload.keys().to_vec() {
            for (primary, object) in self.stored_replicas(&key, false) {
                self.before_repair
                    .add_replica_before_repair(key.clone(), primary, object);
            }
        }
    }

    /// What each primary of `key` holds in storage (`None`: nothing, or unreadable — an
    /// anomaly, reported when `report_unreadable`).
    fn stored_replicas(
        &mut self,
        key: &Key,
        report_unreadable: bool,
    ) -> Vec<(NodeId, Option<Object>)> {
        let partition = self.ring.partition_for_key(key);
        let mut out = Vec::new();
        for primary in self.ring.primaries(partition).to_vec() {
            let Some(&n) = self.index.get(&primary) else {
                continue;
            };
            let object = match self.nodes[n].storage.object(partition, key) {
                Ok(ReadOutcome::Found(o)) => Some(o),
                Ok(ReadOutcome::NotFound) => None,
                Ok(ReadOutcome::Corrupted) | Err(_) => {
                    if report_unreadable {
                        self.anomaly(format!("n{} cannot read {key:?}", n + 1));
                    }
                    None
                }
            };
            out.push((primary, object));
        }
        out
    }

    fn finish(mut self) -> RunResult {
        let mut final_state = std::mem::take(&mut self.before_repair);
        for key in self.workload.keys().to_vec() {
            for (primary, object) in self.stored_replicas(&key, true) {
                final_state.add_replica(key.clone(), primary, object);
            }
        }
        for partition in self.ring.q().partitions() {
            for primary in self.ring.primaries(partition).to_vec() {
                let Some(&n) = self.index.get(&primary) else {
                    continue;
                };
                match self.nodes[n].storage.tree(partition) {
                    Ok(tree) => final_state.add_tree(partition, primary, tree.root()),
                    Err(e) => self.anomaly(format!("n{} cannot read its tree: {e}", n + 1)),
                }
            }
        }
        let members: Vec<NodeId> = self.ring.members().iter().map(|m| m.id.clone()).collect();
        for (holder, &n) in &self.index {
            let storage = &self.nodes[n].storage;
            let holds = members
                .iter()
                .any(|t| storage.hints(t, None, 1).is_ok_and(|h| !h.is_empty()));
            final_state.add_hints(holder.clone(), holds);
        }
        let options = CheckOptions {
            liveness_deadline: self.config.liveness_deadline,
        };
        let report = checker::check(&self.history, &final_state, &options);
        self.trace(13, 0, &[]);
        for node in self.nodes.iter().filter_map(|n| n.node.as_ref()) {
            self.stats.read_repairs += node.metrics().read_repairs;
            self.stats.exchange_repairs +=
                node.metrics().exchange_keys_pushed + node.metrics().exchange_keys_pulled;
            self.stats.forwarded += node.metrics().forwarded;
            self.stats.expired += node.metrics().expired_client + node.metrics().expired_peer;
            self.stats.incarnation_renewals += node.metrics().incarnation_renewals;
            self.stats.tombstones_reaped += node.metrics().tombstones_reaped;
            self.stats.reaping_records += node.storage().reaped_count().unwrap_or(0);
        }
        self.stats.simulated = self.now;
        RunResult {
            seed: self.seed,
            nodes: self.nodes.len(),
            partitions: self.q,
            report,
            trace_hash: self.trace.digest(),
            schedule: self.schedule,
            stats: self.stats,
            history: self.history,
            final_state,
            anomalies: self.anomalies,
            reused_dots: self.reused_dots,
        }
    }

    // ---- randomness and bookkeeping --------------------------------------------------

    fn roll(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.net_rng.random_bool(probability.min(1.0))
    }

    /// One-way network latency: 50 µs – 2 ms, and now and then a long delay (reordering).
    fn latency(&mut self) -> Duration {
        let mut latency = Duration::from_micros(self.net_rng.random_range(50..2000));
        if self.roll(self.weather.delay) {
            latency += Duration::from_millis(self.net_rng.random_range(10..300));
        }
        latency
    }

    /// fsync: 50 µs – 2 ms, and 2% of the time a slow one of 10–50 ms.
    fn fsync_latency(&mut self) -> Duration {
        if self.net_rng.random_bool(0.02) {
            Duration::from_millis(self.net_rng.random_range(10..50))
        } else {
            Duration::from_micros(self.net_rng.random_range(50..2000))
        }
    }

    fn think_time(&mut self) -> Duration {
        let (low, high) = self.config.think_time;
        if high <= low {
            return low;
        }
        let nanos = self
            .client_rng
            .random_range(low.as_nanos() as u64..high.as_nanos() as u64);
        Duration::from_nanos(nanos)
    }

    fn trace(&mut self, tag: u8, who: usize, bytes: &[u8]) {
        self.trace
            .update(&(self.now.as_nanos() as u64).to_le_bytes());
        self.trace.update(&[tag]);
        self.trace.update(&(who as u64).to_le_bytes());
        self.trace.update(bytes);
    }

    fn anomaly(&mut self, text: String) {
        if self.anomalies.len() < 20 {
            self.anomalies.push(format!("{:?}: {text}", self.now));
        }
    }
}
