//! The server's metrics: request counts and latency histograms kept in atomics by the tasks that
//! see the requests, and a [`Snapshot`] of the node's, the storage's and the transport's
//! counters that only the node task can take. [`Metrics::render`] writes the Prometheus text
//! format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use shoal_coordinator::NodeMetrics;
use shoal_protocol::{
    AdminResponse, ClientRequest, ClientResponse, HintMessage, PeerMessage, PeerResponse, Refusal,
    ReplicaMessage, Request, Response,
};
use shoal_storage::{StorageStats, TreesStatus};
use shoal_transport::TransportStats;
use shoal_types::{Incarnation, NodeId};

use crate::inbox::Class;

/// Upper bounds of the latency histogram buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// What a request asked for, as metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    Get,
    Put,
    Delete,
    GetLocal,
    Ring,
    ReplicaCoordinate,
    ReplicaReplicate,
    ReplicaRead,
    ReplicaRepair,
    ReplicaPing,
    Gossip,
    HintStore,
    HintRead,
    HintHandoff,
    Exchange,
    Reap,
    Admin,
}

impl Op {
    const ALL: [Op; 17] = [
        Op::Get,
        Op::Put,
        Op::Delete,
        Op::GetLocal,
        Op::Ring,
        Op::ReplicaCoordinate,
        Op::ReplicaReplicate,
        Op::ReplicaRead,
        Op::ReplicaRepair,
        Op::ReplicaPing,
        Op::Gossip,
        Op::HintStore,
        Op::HintRead,
        Op::HintHandoff,
        Op::Exchange,
        Op::Reap,
        Op::Admin,
    ];

    pub(crate) fn of(request: &Request) -> Op {
        match request {
            Request::Client(c) => match c {
                ClientRequest::Get { .. } => Op::Get,
                ClientRequest::Put { .. } => Op::Put,
                ClientRequest::Delete { .. } => Op::Delete,
                ClientRequest::GetLocal { .. } => Op::GetLocal,
                ClientRequest::Ring => Op::Ring,
            },
            Request::Peer(r) => match r.message {
                PeerMessage::Coordinate(_) => Op::ReplicaCoordinate,
                PeerMessage::Replica(ReplicaMessage::Replicate { .. }) => Op::ReplicaReplicate,
                PeerMessage::Replica(ReplicaMessage::Read { .. }) => Op::ReplicaRead,
                PeerMessage::Replica(ReplicaMessage::Repair { .. }) => Op::ReplicaRepair,
                PeerMessage::Ping => Op::ReplicaPing,
                PeerMessage::Gossip(_) => Op::Gossip,
                PeerMessage::Hint(HintMessage::Store { .. }) => Op::HintStore,
                PeerMessage::Hint(HintMessage::Read { .. }) => Op::HintRead,
                PeerMessage::Hint(HintMessage::Handoff { .. }) => Op::HintHandoff,
                PeerMessage::Exchange(_) => Op::Exchange,
                PeerMessage::Reap(_) => Op::Reap,
            },
            Request::Admin(_) => Op::Admin,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::GetLocal => "get_local",
            Op::Ring => "ring",
            Op::ReplicaCoordinate => "replica_coordinate",
            Op::ReplicaReplicate => "replica_replicate",
            Op::ReplicaRead => "replica_read",
            Op::ReplicaRepair => "replica_repair",
            Op::ReplicaPing => "replica_ping",
            Op::Gossip => "gossip",
            Op::HintStore => "hint_store",
            Op::HintRead => "hint_read",
            Op::HintHandoff => "hint_handoff",
            Op::Exchange => "exchange",
            Op::Reap => "reap",
            Op::Admin => "admin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a request ended, as metrics name it.
pub(crate) fn outcome(response: &Response) -> &'static str {
    match response {
        Response::Client(c) | Response::Peer(PeerResponse::Coordinated(c)) => match c {
            ClientResponse::Read { values, .. } if values.is_empty() => "not_found",
            ClientResponse::Read { .. }
            | ClientResponse::Written { .. }
            | ClientResponse::Local(_)
            | ClientResponse::Ring(_) => "ok",
            ClientResponse::Failed(e) => e.kind(),
        },
        Response::Peer(PeerResponse::Failed(_)) => "failed",
        Response::Peer(_)
        | Response::Admin(AdminResponse::Status(_) | AdminResponse::Repairing { .. }) => "ok",
        Response::Admin(AdminResponse::RepairRefused(_)) => "repair_refused",
        Response::Refused(r) => refusal_reason(r),
    }
}

/// The label of a refusal.
pub(crate) fn refusal_reason(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Unauthorized { .. } => "unauthorized",
        Refusal::WrongSender { .. } => "wrong_sender",
        Refusal::NotAMember { .. } => "not_a_member",
        Refusal::WrongEpoch { .. } => "wrong_epoch",
        Refusal::BadRequest(_) => "bad_request",
        Refusal::ShuttingDown => "shutting_down",
        Refusal::Overloaded => "overloaded",
    }
}

const REFUSAL_REASONS: [&str; 7] = [
    "unauthorized",
    "wrong_sender",
    "not_a_member",
    "wrong_epoch",
    "bad_request",
    "shutting_down",
    "overloaded",
];

/// Why a request was refused with `Overloaded` before the node worked on it, by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shed {
    /// Its queue was full when it arrived (or it was the oldest of a full inbox).
    QueueFull,
    /// It waited longer than the inbox allows (controlled delay).
    QueueDelay,
}

impl Shed {
    const ALL: [Shed; 2] = [Shed::QueueFull, Shed::QueueDelay];

    fn as_str(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue_full",
            Shed::QueueDelay => "queue_delay",
        }
    }
}

const CLASSES: [Class; 2] = [Class::Client, Class::Peer];

fn class_index(class: Class) -> usize {
    match class {
        Class::Client => 0,
        Class::Peer => 1,
    }
}

/// What only the node task can see, taken when metrics are scraped.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) node: NodeMetrics,
    pub(crate) storage: StorageStats,
    pub(crate) listen: TransportStats,
    pub(crate) peers: TransportStats,
    /// Requests the node is coordinating.
    pub(crate) in_flight: usize,
    /// Requests handed to the node and not answered yet.
    pub(crate) awaiting_reply: usize,
    /// Batches handed to storage and not yet durable.
    pub(crate) persists_pending: usize,
    /// Messages to peers in flight.
    pub(crate) sends_in_flight: usize,
    /// Client requests waiting for the node task.
    pub(crate) queued_client: usize,
    /// Peer messages waiting for the node task.
    pub(crate) queued_peer: usize,
    /// Requests dropped by the node task because their client had gone: taken from the queue,
    /// or answered after the client left (the answer was not encoded).
    pub(crate) cancelled_unworked: u64,
    /// A storage commit failed in this run: the node refuses writes until it restarts.
    pub(crate) storage_failed: bool,
    /// Whether the anti-entropy trees are built (they are built beside serving after a start).
    pub(crate) trees: TreesStatus,
    /// Hints held for other nodes: keys and bytes.
    pub(crate) hints_pending: (u64, u64),
    /// For each partition this node is a primary of (with another primary), how long ago it
    /// last matched all its other primaries (`None`: not since this node started).
    pub(crate) matched_all_ago: Vec<Option<Duration>>,
    /// How this node sees the membership.
    pub(crate) membership: MembershipSnapshot,
}

/// How a node sees the membership, for the convergence metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct MembershipSnapshot {
    /// The epoch of its ring.
    pub(crate) ring_epoch: u64,
    /// The hash of its membership document (equal on nodes that agree).
    pub(crate) hash: u64,
    /// Every other member: id, phi (`None`: never heard from), reachable.
    pub(crate) peers: Vec<(NodeId, Option<f64>, bool)>,
}

/// The server's metrics, shared by its tasks.
#[derive(Debug)]
pub(crate) struct Metrics {
    node: NodeId,
    incarnation: Incarnation,
    /// The anti-entropy interval: a partition not matched within it counts as unmatched.
    anti_entropy_interval: Duration,
    /// Requests answered by the node, by (op, outcome).
    requests: Mutex<BTreeMap<(Op, &'static str), u64>>,
    latency: [Histogram; Op::ALL.len()],
    /// Requests refused before reaching the node, by reason (index into REFUSAL_REASONS).
    refused: [AtomicU64; REFUSAL_REASONS.len()],
    /// Requests refused `Overloaded` by the server, by class and reason.
    shed: [[AtomicU64; Shed::ALL.len()]; CLASSES.len()],
    /// How long requests waited for the node task, by class.
    queue_delay: [Histogram; CLASSES.len()],
    /// The last snapshot taken, shown when a fresh one cannot be had (node task gone).
    last: Mutex<Snapshot>,
    /// Metrics connections refused because `http::MAX_CONNECTIONS` were being served.
    metrics_connections_refused: AtomicU64,
}

impl Metrics {
    pub(crate) fn new(
        node: NodeId,
        incarnation: Incarnation,
        anti_entropy_interval: Duration,
    ) -> Metrics {
        Metrics {
            node,
            incarnation,
            anti_entropy_interval,
            requests: Mutex::new(BTreeMap::new()),
            latency: Default::default(),
            refused: Default::default(),
            shed: Default::default(),
            queue_delay: Default::default(),
            last: Mutex::new(Snapshot::default()),
            metrics_connections_refused: AtomicU64::new(0),
        }
    }

    /// A request the node answered.
    pub(crate) fn answered(&self, op: Op, outcome: &'static str, latency: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((op, outcome))
            .or_default() += 1;
        self.latency[op.index()].observe(latency);
    }

    /// A request refused before it reached the node.
    pub(crate) fn refused(&self, refusal: &Refusal) {
        let reason = refusal_reason(refusal);
        if let Some(i) = REFUSAL_REASONS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request refused `Overloaded` by the server, before the node saw it.
    pub(crate) fn shed(&self, class: Class, why: Shed) {
        let reason = Shed::ALL.iter().position(|s| *s == why).unwrap_or(0);
        self.shed[class_index(class)][reason].fetch_add(1, Ordering::Relaxed);
    }

    /// A request the node task took on after it waited `waited`.
    pub(crate) fn queued(&self, class: Class, waited: Duration) {
        self.queue_delay[class_index(class)].observe(waited);
    }

    /// A metrics connection refused: as many as are served at once were open.
    pub(crate) fn metrics_connection_refused(&self) {
        self.metrics_connections_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn store_snapshot(&self, snapshot: Snapshot) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    pub(crate) fn last_snapshot(&self) -> Snapshot {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The Prometheus text exposition of everything, with `snapshot` for the node's counters.
    pub(crate) fn render(&self, s: &Snapshot) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let w = &mut out;
        header(
            w,
            "shoal_node_info",
            "gauge",
            "This node's id and incarnation.",
        );
        line(
            w,
            "shoal_node_info",
            &format!(
                "node=\"{}\",incarnation=\"{}\"",
                self.node, self.incarnation
            ),
            1,
        );

        header(
            w,
            "shoal_requests_total",
            "counter",
            "Requests answered by the node, by operation and outcome.",
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for ((op, outcome), n) in &requests {
            let labels = format!("op=\"{}\",outcome=\"{outcome}\"", op.as_str());
            line(w, "shoal_requests_total", &labels, *n);
        }

        header(
            w,
            "shoal_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its answer, by operation.",
        );
        for op in Op::ALL {
            self.latency[op.index()].render(w, "shoal_request_duration_seconds", "op", op.as_str());
        }
        self.render_overload(w, s);

        header(
            w,
            "shoal_requests_refused_total",
            "counter",
            "Requests refused before reaching the node (bad frame, wrong role, shutting down...).",
        );
        for (i, reason) in REFUSAL_REASONS.iter().enumerate() {
            let n = self.refused[i].load(Ordering::Relaxed);
            line(
                w,
                "shoal_requests_refused_total",
                &format!("reason=\"{reason}\""),
                n,
            );
        }

        let name = "shoal_metrics_connections_refused_total";
        header(
            w,
            name,
            "counter",
            "Metrics connections answered 503: as many as are served at once were open.",
        );
        line(
            w,
            name,
            "",
            self.metrics_connections_refused.load(Ordering::Relaxed),
        );

        let name = "shoal_storage_healthy";
        header(
            w,
            name,
            "gauge",
            "1 while storage works; 0 once a commit failed in this run (the node then stores and \
             coordinates no writes until it restarts).",
        );
        line(w, name, "", u64::from(!s.storage_failed));

        let gauges: [(&str, &str, usize); 7] = [
            (
                "shoal_hints_pending_keys",
                "Hints this node holds for other nodes (keys, over all targets).",
                usize::try_from(s.hints_pending.0).unwrap_or(usize::MAX),
            ),
            (
                "shoal_hints_pending_bytes",
                "Bytes of hints this node holds for other nodes, as counted against max_hint_bytes.",
                usize::try_from(s.hints_pending.1).unwrap_or(usize::MAX),
            ),
            (
                "shoal_requests_in_flight",
                "Requests the node is coordinating now.",
                s.in_flight,
            ),
            (
                "shoal_requests_awaiting_reply",
                "Requests received and not answered yet.",
                s.awaiting_reply,
            ),
            (
                "shoal_persists_pending",
                "Write batches handed to storage and not yet durable.",
                s.persists_pending,
            ),
            (
                "shoal_peer_requests_in_flight",
                "Messages sent to other nodes and not answered yet.",
                s.sends_in_flight,
            ),
            (
                "shoal_storage_queued_batches",
                "Batches waiting for the next group commit.",
                usize::try_from(s.storage.queued_batches).unwrap_or(usize::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            header(w, name, "gauge", help);
            line(w, name, "", value as u64);
        }

        let n = &s.node;
        let counters: [(&str, &str, u64); 23] = [
            (
                "shoal_gets_coordinated_total",
                "Gets this node coordinated.",
                n.gets,
            ),
            (
                "shoal_puts_coordinated_total",
                "Puts this node coordinated (not forwarded).",
                n.puts,
            ),
            (
                "shoal_deletes_coordinated_total",
                "Deletes this node coordinated (not forwarded).",
                n.deletes,
            ),
            (
                "shoal_forwarded_total",
                "Writes forwarded to a primary.",
                n.forwarded,
            ),
            (
                "shoal_quorum_failures_total",
                "Requests answered QuorumFailed.",
                n.quorum_failures,
            ),
            (
                "shoal_timeouts_total",
                "Requests answered Timeout.",
                n.timeouts,
            ),
            (
                "shoal_unavailable_total",
                "Requests answered Unavailable.",
                n.unavailable,
            ),
            (
                "shoal_too_many_siblings_total",
                "Writes refused with TooManySiblings.",
                n.too_many_siblings,
            ),
            (
                "shoal_objects_too_large_total",
                "Writes refused with ObjectTooLarge: the object would exceed max_object_bytes.",
                n.objects_too_large,
            ),
            (
                "shoal_reads_too_large_total",
                "Gets answered ReadTooLarge: the merged object was too large to send, so only its context was.",
                n.reads_too_large,
            ),
            (
                "shoal_overloaded_total",
                "Requests the node refused as Overloaded.",
                n.overloaded,
            ),
            (
                "shoal_read_repairs_total",
                "Read-repair objects sent or written locally.",
                n.read_repairs,
            ),
            (
                "shoal_corrupt_reads_total",
                "Local records the node found corrupt.",
                n.corrupt_reads,
            ),
            (
                "shoal_replica_writes_total",
                "Replica writes stored for peers (replication and repair).",
                n.replica_writes,
            ),
            (
                "shoal_gossip_rounds_total",
                "Gossip rounds this node started.",
                n.gossip_rounds,
            ),
            (
                "shoal_convictions_total",
                "Peers judged down (by the failure detector, or by a connection that could not be made).",
                n.convictions,
            ),
            (
                "shoal_recoveries_total",
                "Peers the failure detector judged alive again.",
                n.recoveries,
            ),
            (
                "shoal_hinted_writes_total",
                "Writes this node coordinated that went to a fallback as a hint, for a primary judged down.",
                n.hinted_writes,
            ),
            (
                "shoal_hints_stored_total",
                "Hints this node stored as a fallback.",
                n.hints_stored,
            ),
            (
                "shoal_hints_replayed_total",
                "Hints this node handed off to their targets (removed after the target's durable ack).",
                n.hints_replayed,
            ),
            (
                "shoal_hints_dropped_total",
                "Hints dropped: over max_hint_bytes, older than max_hint_window, or corrupted (left to anti-entropy).",
                n.hints_dropped,
            ),
            (
                "shoal_hint_replay_failures_total",
                "Handoff batches the target did not take (sent again later).",
                n.hint_replay_failures,
            ),
            (
                "shoal_hints_received_total",
                "Objects handed off to this node by holders of hints for it.",
                n.hints_received,
            ),
        ];
        for (name, help, value) in counters {
            header(w, name, "counter", help);
            line(w, name, "", value);
        }

        render_membership(w, s);
        self.render_anti_entropy(w, s);
        render_reaping(w, &s.node);
        self.render_storage(w, &s.storage);
        render_trees(w, s.trees);
        render_transport(w, &s.listen, &s.peers);
        out
    }

    /// What the node refused, dropped and queued under load.
    fn render_overload(&self, w: &mut String, s: &Snapshot) {
        let n = &s.node;
        let name = "shoal_requests_shed_total";
        header(
            w,
            name,
            "counter",
            "Requests refused Overloaded before any work, by class and reason.",
        );
        for class in CLASSES {
            for (i, why) in Shed::ALL.iter().enumerate() {
                let count = self.shed[class_index(class)][i].load(Ordering::Relaxed);
                let labels = format!("class=\"{}\",reason=\"{}\"", class.as_str(), why.as_str());
                line(w, name, &labels, count);
            }
        }
        line(
            w,
            name,
            "class=\"client\",reason=\"node_limit\"",
            n.overloaded,
        );
        line(
            w,
            name,
            "class=\"peer\",reason=\"commit_queue\"",
            n.shed_peer,
        );

        let name = "shoal_requests_expired_total";
        header(
            w,
            name,
            "counter",
            "Requests whose deadline had passed when the node got to them, dropped unworked.",
        );
        line(w, name, "class=\"client\"", n.expired_client);
        line(w, name, "class=\"peer\"", n.expired_peer);

        let name = "shoal_requests_cancelled_total";
        header(
            w,
            name,
            "counter",
            "Requests whose client gave up: dropped from the queue, unanswered, or cancelled while worked on.",
        );
        line(w, name, "", n.cancelled + s.cancelled_unworked);

        let name = "shoal_queue_depth";
        header(
            w,
            name,
            "gauge",
            "Requests waiting for the node task, by class.",
        );
        line(w, name, "class=\"client\"", s.queued_client as u64);
        line(w, name, "class=\"peer\"", s.queued_peer as u64);

        let name = "shoal_queue_delay_seconds";
        header(
            w,
            name,
            "histogram",
            "How long requests waited for the node task, by class.",
        );
        for class in CLASSES {
            self.queue_delay[class_index(class)].render(w, name, "class", class.as_str());
        }
    }

    /// Anti-entropy: the exchanges this node ran and what they repaired, and how its
    /// partitions stand against their other primaries.
    fn render_anti_entropy(&self, w: &mut String, s: &Snapshot) {
        let n = &s.node;
        let name = "shoal_exchanges_total";
        header(
            w,
            name,
            "counter",
            "Anti-entropy exchanges this node ran, by outcome: matched (replicas found equal), \
             repaired (differences found, repair done), failed (dropped before the end: a peer's \
             answer failed, was refused or malformed, or a local read or commit failed), \
             deferred (put off because this node's trees or the peer's were still being built \
             after a start; compared again soon).",
        );
        let repaired = n.exchanges_run.saturating_sub(n.exchanges_matched);
        line(w, name, "outcome=\"matched\"", n.exchanges_matched);
        line(w, name, "outcome=\"repaired\"", repaired);
        line(w, name, "outcome=\"failed\"", n.exchanges_failed);
        line(w, name, "outcome=\"deferred\"", n.exchanges_deferred);

        let name = "shoal_exchange_keys_repaired_total";
        header(
            w,
            name,
            "counter",
            "Keys anti-entropy repaired: pushed to a peer (acknowledged durable there) or pulled \
             from one (merged here, durable).",
        );
        line(w, name, "direction=\"push\"", n.exchange_keys_pushed);
        line(w, name, "direction=\"pull\"", n.exchange_keys_pulled);

        let counters: [(&str, &str, u64); 3] = [
            (
                "shoal_exchange_segments_differing_total",
                "Hash-tree segments the exchanges this node ran found differing (at both looks).",
                n.exchange_segments_differing,
            ),
            (
                "shoal_exchange_keys_differing_total",
                "Keys the exchanges this node ran found differing in the segments compared.",
                n.exchange_keys_differing,
            ),
            (
                "shoal_exchanges_refused_total",
                "Exchange messages from peers refused, nothing applied: malformed, or for a \
                 partition this node or the sender is not a primary of.",
                n.exchanges_refused,
            ),
        ];
        for (name, help, value) in counters {
            header(w, name, "counter", help);
            line(w, name, "", value);
        }

        let interval = self.anti_entropy_interval;
        let unmatched = s
            .matched_all_ago
            .iter()
            .filter(|ago| !ago.is_some_and(|ago| ago <= interval))
            .count();
        let name = "shoal_partitions_unmatched";
        header(
            w,
            name,
            "gauge",
            "Partitions of this node not known to match all their other primaries within one \
             anti-entropy interval (never matched since this node started included).",
        );
        line(w, name, "", unmatched as u64);

        // The oldest match over the partitions; +Inf while one has not matched since the start.
        let oldest = s
            .matched_all_ago
            .iter()
            .try_fold(0.0_f64, |oldest, ago| {
                ago.map(|a| oldest.max(a.as_secs_f64()))
            })
            .unwrap_or(f64::INFINITY);
        let name = "shoal_partition_last_matched_seconds_max";
        header(
            w,
            name,
            "gauge",
            "Seconds since the partition of this node matched longest ago last matched all its \
             other primaries (+Inf while one has not since this node started; 0 with none).",
        );
        let _ = writeln!(w, "{name} {}", prometheus_float(oldest));
    }

    fn render_storage(&self, w: &mut String, st: &StorageStats) {
        let counters: [(&str, &str, u64); 6] = [
            (
                "shoal_storage_commits_total",
                "Group commits (one fsync each).",
                st.commits,
            ),
            (
                "shoal_storage_failed_commits_total",
                "Group commits that failed.",
                st.failed_commits,
            ),
            (
                "shoal_storage_batches_total",
                "Write batches acknowledged durable.",
                st.batches,
            ),
            (
                "shoal_storage_writes_total",
                "Writes in acknowledged batches.",
                st.writes,
            ),
            (
                "shoal_storage_corrupt_objects_total",
                "Object and hint records found corrupt, each time one was read.",
                st.corrupt_objects,
            ),
            (
                "shoal_storage_segment_rebuilds_total",
                "Hash-tree segments recomputed after corruption.",
                st.segment_rebuilds,
            ),
        ];
        for (name, help, value) in counters {
            header(w, name, "counter", help);
            line(w, name, "", value);
        }
        // Per-commit sizes as summaries without quantiles: sum over count is the mean.
        let commit_size: [(&str, &str, u64, u64); 2] = [
            (
                "shoal_storage_commit_writes",
                "Writes per group commit.",
                st.writes,
                st.max_writes_per_commit,
            ),
            (
                "shoal_storage_commit_batches",
                "Batches (requests) per group commit.",
                st.batches,
                st.max_batches_per_commit,
            ),
        ];
        for (name, help, sum, max) in commit_size {
            header(w, name, "summary", help);
            let _ = writeln!(w, "{name}_sum {sum}");
            let _ = writeln!(w, "{name}_count {}", st.commits);
            let max_name = format!("{name}_max");
            header(w, &max_name, "gauge", "The largest group commit so far.");
            line(w, &max_name, "", max);
        }
        let name = "shoal_storage_commit_duration_seconds";
        header(
            w,
            name,
            "summary",
            "Time to apply and fsync one group commit.",
        );
        let _ = writeln!(w, "{name}_sum {}", st.commit_latency_total.as_secs_f64());
        let _ = writeln!(w, "{name}_count {}", st.commits);
        let max_name = "shoal_storage_commit_duration_seconds_max";
        header(w, max_name, "gauge", "The longest group commit so far.");
        let _ = writeln!(w, "{max_name} {}", st.commit_latency_max.as_secs_f64());
    }
}

/// Transport counters of both endpoints, labelled `endpoint="listen"` (requests in) and
/// `endpoint="peers"` (node-to-node requests out).
/// Membership: gossip traffic, the document each node holds (nodes that agree show one hash),
/// and how this node judges each peer.
fn render_membership(w: &mut String, s: &Snapshot) {
    let name = "shoal_gossip_bytes_total";
    header(
        w,
        name,
        "counter",
        "Bytes of gossip messages (requests and answers, as encoded) this node sent and received.",
    );
    line(w, name, "direction=\"sent\"", s.node.gossip_bytes_sent);
    line(
        w,
        name,
        "direction=\"received\"",
        s.node.gossip_bytes_received,
    );

    let m = &s.membership;
    let name = "shoal_ring_epoch";
    header(w, name, "gauge", "The epoch of this node's ring.");
    line(w, name, "", m.ring_epoch);
    let name = "shoal_membership_members";
    header(
        w,
        name,
        "gauge",
        "Members in this node's membership document, this node included.",
    );
    line(w, name, "", m.peers.len() as u64 + 1);
    let name = "shoal_membership_info";
    header(
        w,
        name,
        "gauge",
        "The hash of this node's membership document: equal on every node once they agree.",
    );
    line(w, name, &format!("hash=\"{:016x}\"", m.hash), 1);

    let name = "shoal_peer_phi";
    header(
        w,
        name,
        "gauge",
        "The failure detector's phi for each peer (absent for a peer never heard from).",
    );
    for (peer, phi, _) in &m.peers {
        if let Some(phi) = phi {
            let _ = writeln!(w, "{name}{{peer=\"{peer}\"}} {}", prometheus_float(*phi));
        }
    }
    let name = "shoal_peer_reachable";
    header(
        w,
        name,
        "gauge",
        "1 if this node sends requests to the peer now, 0 if it judges it down.",
    );
    for (peer, _, reachable) in &m.peers {
        line(w, name, &format!("peer=\"{peer}\""), u64::from(*reachable));
    }
}

fn render_transport(w: &mut String, listen: &TransportStats, peers: &TransportStats) {
    type Field = fn(&TransportStats) -> u64;
    let series: [(&str, &str, &str, Field); 13] = [
        (
            "shoal_transport_connections_opened_total",
            "counter",
            "Outgoing connections established.",
            |t| t.connections_opened,
        ),
        (
            "shoal_transport_connections_accepted_total",
            "counter",
            "Incoming connections established.",
            |t| t.connections_accepted,
        ),
        (
            "shoal_transport_connections_refused_total",
            "counter",
            "Incoming connections refused (limit reached, closing).",
            |t| t.connections_refused,
        ),
        (
            "shoal_transport_incoming_handshakes_failed_total",
            "counter",
            "Incoming handshakes that failed (certificate refused, timeout).",
            |t| t.incoming_handshakes_failed,
        ),
        (
            "shoal_transport_outgoing_handshakes_failed_total",
            "counter",
            "Outgoing handshakes that failed (peer down, wrong peer).",
            |t| t.outgoing_handshakes_failed,
        ),
        (
            "shoal_transport_bad_frames_total",
            "counter",
            "Request frames refused as too large, truncated or followed by bytes.",
            |t| t.bad_frames,
        ),
        (
            "shoal_transport_slow_frames_total",
            "counter",
            "Request frames reset because their bytes stopped arriving or came too slowly.",
            |t| t.slow_frames,
        ),
        (
            "shoal_transport_malformed_requests_total",
            "counter",
            "Requests whose body did not decode, counted against their connection.",
            |t| t.malformed_requests,
        ),
        (
            "shoal_transport_connections_closed_for_bad_frames_total",
            "counter",
            "Connections closed for too many bad, slow or malformed requests.",
            |t| t.connections_closed_for_bad_frames,
        ),
        (
            "shoal_transport_responses_undelivered_total",
            "counter",
            "Responses to handled requests reset because they were not delivered in time.",
            |t| t.responses_undelivered,
        ),
        (
            "shoal_transport_requests_sent_total",
            "counter",
            "Requests sent.",
            |t| t.requests_sent,
        ),
        (
            "shoal_transport_requests_received_total",
            "counter",
            "Requests read and handed to the server.",
            |t| t.requests_received,
        ),
        (
            "shoal_transport_open_connections",
            "gauge",
            "Connections open now.",
            |t| t.open_connections,
        ),
    ];
    for (name, kind, help, field) in series {
        header(w, name, kind, help);
        line(w, name, "endpoint=\"listen\"", field(listen));
        line(w, name, "endpoint=\"peers\"", field(peers));
    }
}

/// A Prometheus histogram with fixed buckets, in atomics.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last slot counts those over every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let slot = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the histogram as `name`, with one label `key="value"`.
    fn render(&self, w: &mut String, name: &str, key: &str, value: &str) {
        let label = format!("{key}=\"{value}\"");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(w, "{name}_bucket{{{label},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS_SECONDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(w, "{name}_bucket{{{label},le=\"+Inf\"}} {cumulative}");
        let sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        let _ = writeln!(w, "{name}_sum{{{label}}} {sum}");
        // The count is the +Inf bucket, so the two always agree within one scrape.
        let _ = writeln!(w, "{name}_count{{{label}}} {cumulative}");
    }
}

/// A float as the text format writes it (`+Inf` for infinity).
fn prometheus_float(x: f64) -> String {
    if x.is_infinite() && x > 0.0 {
        "+Inf".to_owned()
    } else {
        x.to_string()
    }
}

/// Whether the trees are built, and how far a build under way got.
fn render_trees(w: &mut String, trees: TreesStatus) {
    let name = "shoal_trees_ready";
    header(
        w,
        name,
        "gauge",
        "1 once the anti-entropy trees are built; 0 while they are built beside serving after a \
         start (anti-entropy waits), or if the build failed.",
    );
    line(w, name, "", u64::from(trees.is_ready()));
    let (done, total) = match trees {
        TreesStatus::Building {
            records_done,
            records_total,
        } => (records_done, records_total),
        TreesStatus::Ready | TreesStatus::Failed => (0, 0),
    };
    let name = "shoal_trees_build_records";
    header(
        w,
        name,
        "gauge",
        "Records of the tree build under way: scanned so far, and in all (0 when none runs).",
    );
    line(w, name, "state=\"done\"", done);
    line(w, name, "state=\"total\"", total);
}

/// Tombstone reaping: counters, the records held, and how long tombstones lived (a histogram
/// in seconds, from the delete's end at its coordinator to the reap on every primary).
fn render_reaping(w: &mut String, n: &NodeMetrics) {
    let counters: [(&str, &str, u64); 4] = [
        (
            "shoal_tombstones_reaped_total",
            "Tombstones this node reaped on every primary of their key.",
            n.tombstones_reaped,
        ),
        (
            "shoal_reaps_refused_total",
            "Reap rounds or checks that found a primary holding something newer than the \
             tombstone (nothing reaped there).",
            n.reaps_refused,
        ),
        (
            "shoal_reap_checks_dropped_total",
            "Keys dropped from the reap-check queue (full, or too many tries); anti-entropy \
             hands them back.",
            n.reap_checks_dropped,
        ),
        (
            "shoal_reaping_records_forgotten_total",
            "Reaping records dropped after their retention.",
            n.reaping_records_forgotten,
        ),
    ];
    for (name, help, value) in counters {
        header(w, name, "counter", help);
        line(w, name, "", value);
    }
    let name = "shoal_reaping_records";
    header(
        w,
        name,
        "gauge",
        "Reaping records this node holds (refreshed at each sweep of them).",
    );
    line(w, name, "", n.reaping_records);
    let name = "shoal_tombstone_lifetime_seconds";
    header(
        w,
        name,
        "histogram",
        "How long tombstones lived: from the delete's end at its coordinator (or the exchange \
         that handed the key over) to the reap on every primary.",
    );
    let mut cumulative = 0;
    for (bound, count) in shoal_coordinator::TOMBSTONE_LIFETIME_BUCKETS_MS
        .iter()
        .zip(n.tombstone_lifetime_buckets)
    {
        cumulative += count;
        let le = if *bound == u64::MAX {
            "+Inf".to_owned()
        } else {
            prometheus_float(*bound as f64 / 1000.0)
        };
        let _ = writeln!(w, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(
        w,
        "{name}_sum {}",
        prometheus_float(n.tombstone_lifetime_total_ms as f64 / 1000.0)
    );
    let _ = writeln!(w, "{name}_count {}", n.tombstones_reaped);
    let name = "shoal_tombstone_lifetime_seconds_max";
    header(
        w,
        name,
        "gauge",
        "The longest a tombstone lived before it was reaped.",
    );
    let _ = writeln!(
        w,
        "{name} {}",
        prometheus_float(n.tombstone_lifetime_max_ms as f64 / 1000.0)
    );
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

fn line(w: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(w, "{name} {value}");
    } else {
        let _ = writeln!(w, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(
            NodeId::new("n1").unwrap(),
            Incarnation::new(7),
            Duration::from_secs(120),
        )
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches_inf() {
        let m = metrics();
        m.answered(Op::Get, "ok", Duration::from_micros(30));
        m.answered(Op::Get, "ok", Duration::from_millis(3));
        m.answered(Op::Get, "timeout", Duration::from_secs(60));
        let text = m.render(&Snapshot::default());
        assert!(
            text.contains("shoal_request_duration_seconds_bucket{op=\"get\",le=\"0.00005\"} 1")
        );
        assert!(text.contains("shoal_request_duration_seconds_bucket{op=\"get\",le=\"0.005\"} 2"));
        assert!(text.contains("shoal_request_duration_seconds_bucket{op=\"get\",le=\"10\"} 2"));
        assert!(text.contains("shoal_request_duration_seconds_bucket{op=\"get\",le=\"+Inf\"} 3"));
        assert!(text.contains("shoal_request_duration_seconds_count{op=\"get\"} 3"));
        assert!(text.contains("shoal_requests_total{op=\"get\",outcome=\"ok\"} 2"));
        assert!(text.contains("shoal_requests_total{op=\"get\",outcome=\"timeout\"} 1"));
        assert!(text.contains("shoal_request_duration_seconds_count{op=\"put\"} 0"));
    }

    #[test]
    fn every_sample_line_belongs_to_a_declared_family() {
        let m = metrics();
        m.refused(&Refusal::ShuttingDown);
        let text = m.render(&Snapshot::default());
        let mut declared = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| declared.iter().any(|d| d == base))
                    .unwrap_or(name);
                assert!(declared.iter().any(|d| d == family), "undeclared: {l}");
                let value = l.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "bad value: {l}");
            }
        }
        assert!(text.contains("shoal_requests_refused_total{reason=\"shutting_down\"} 1"));
    }

    #[test]
    fn a_node_whose_storage_failed_says_it_is_unhealthy() {
        let m = metrics();
        let healthy = m.render(&Snapshot::default());
        assert!(healthy.contains("\nshoal_storage_healthy 1\n"), "{healthy}");
        let failed = Snapshot {
            storage_failed: true,
            ..Snapshot::default()
        };
        let text = m.render(&failed);
        assert!(text.contains("\nshoal_storage_healthy 0\n"));
    }

    #[test]
    fn anti_entropy_counters_are_exported_by_outcome_and_direction() {
        let m = metrics();
        let node = NodeMetrics {
            exchanges_run: 10,
            exchanges_matched: 7,
            exchanges_failed: 2,
            exchanges_refused: 1,
            exchanges_deferred: 6,
            exchange_segments_differing: 5,
            exchange_keys_differing: 9,
            exchange_keys_pushed: 4,
            exchange_keys_pulled: 3,
            ..NodeMetrics::default()
        };
        let text = m.render(&Snapshot {
            node,
            ..Snapshot::default()
        });
        for expected in [
            "shoal_exchanges_total{outcome=\"matched\"} 7\n",
            "shoal_exchanges_total{outcome=\"repaired\"} 3\n",
            "shoal_exchanges_total{outcome=\"failed\"} 2\n",
            "shoal_exchanges_total{outcome=\"deferred\"} 6\n",
            "shoal_exchange_keys_repaired_total{direction=\"push\"} 4\n",
            "shoal_exchange_keys_repaired_total{direction=\"pull\"} 3\n",
            "\nshoal_exchange_segments_differing_total 5\n",
            "\nshoal_exchange_keys_differing_total 9\n",
            "\nshoal_exchanges_refused_total 1\n",
        ] {
            assert!(text.contains(expected), "missing {expected}");
        }
    }

    #[test]
    fn membership_is_exported_per_peer_with_the_document_hash() {
        let m = metrics();
        let node = NodeMetrics {
            gossip_bytes_sent: 1200,
            gossip_bytes_received: 900,
            ..NodeMetrics::default()
        };
        let text = m.render(&Snapshot {
            node,
            membership: MembershipSnapshot {
                ring_epoch: 3,
                hash: 0xabc,
                peers: vec![
                    (NodeId::new("n2").unwrap(), Some(0.5), true),
                    (NodeId::new("n3").unwrap(), None, false),
                ],
            },
            ..Snapshot::default()
        });
        for expected in [
            "shoal_gossip_bytes_total{direction=\"sent\"} 1200\n",
            "shoal_gossip_bytes_total{direction=\"received\"} 900\n",
            "\nshoal_ring_epoch 3\n",
            "\nshoal_membership_members 3\n",
            "shoal_membership_info{hash=\"0000000000000abc\"} 1\n",
            "shoal_peer_phi{peer=\"n2\"} 0.5\n",
            "shoal_peer_reachable{peer=\"n2\"} 1\n",
            "shoal_peer_reachable{peer=\"n3\"} 0\n",
        ] {
            assert!(text.contains(expected), "missing {expected}: {text}");
        }
        assert!(!text.contains("shoal_peer_phi{peer=\"n3\"}"));
    }

    #[test]
    fn trees_being_built_read_as_not_ready_with_the_build_progress() {
        let m = metrics();
        let text = m.render(&Snapshot {
            trees: TreesStatus::Building {
                records_done: 4096,
                records_total: 1_000_000,
            },
            ..Snapshot::default()
        });
        assert!(text.contains("\nshoal_trees_ready 0\n"), "{text}");
        assert!(text.contains("\nshoal_trees_build_records{state=\"done\"} 4096\n"));
        assert!(text.contains("\nshoal_trees_build_records{state=\"total\"} 1000000\n"));
        let text = m.render(&Snapshot::default());
        assert!(text.contains("\nshoal_trees_ready 1\n"));
        assert!(text.contains("\nshoal_trees_build_records{state=\"total\"} 0\n"));
    }

    #[test]
    fn partitions_not_matched_within_an_interval_are_unmatched() {
        let m = metrics();
        let secs = |s| Some(Duration::from_secs(s));
        let text = m.render(&Snapshot {
            matched_all_ago: vec![secs(5), secs(119), secs(121), None],
            ..Snapshot::default()
        });
        assert!(text.contains("\nshoal_partitions_unmatched 2\n"), "{text}");
        assert!(text.contains("\nshoal_partition_last_matched_seconds_max +Inf\n"));

        let text = m.render(&Snapshot {
            matched_all_ago: vec![secs(5), secs(130)],
            ..Snapshot::default()
        });
        assert!(text.contains("\nshoal_partitions_unmatched 1\n"));
        assert!(text.contains("\nshoal_partition_last_matched_seconds_max 130\n"));

        let text = m.render(&Snapshot::default());
        assert!(text.contains("\nshoal_partitions_unmatched 0\n"));
        assert!(text.contains("\nshoal_partition_last_matched_seconds_max 0\n"));
    }

    #[test]
    fn reaping_is_exported_with_a_tombstone_lifetime_histogram() {
        let m = metrics();
        let node = NodeMetrics {
            tombstones_reaped: 3,
            reaps_refused: 2,
            reaping_records: 40,
            reaping_records_forgotten: 5,
            tombstone_lifetime_total_ms: 20_550,
            tombstone_lifetime_max_ms: 20_000,
            tombstone_lifetime_buckets: [1, 1, 0, 1, 0, 0, 0, 0],
            ..NodeMetrics::default()
        };
        let text = m.render(&Snapshot {
            node,
            ..Snapshot::default()
        });
        for expected in [
            "shoal_tombstones_reaped_total 3\n",
            "shoal_reaps_refused_total 2\n",
            "shoal_reaping_records 40\n",
            "shoal_reaping_records_forgotten_total 5\n",
            "shoal_tombstone_lifetime_seconds_bucket{le=\"0.1\"} 1\n",
            "shoal_tombstone_lifetime_seconds_bucket{le=\"1\"} 2\n",
            "shoal_tombstone_lifetime_seconds_bucket{le=\"60\"} 3\n",
            "shoal_tombstone_lifetime_seconds_bucket{le=\"+Inf\"} 3\n",
            "shoal_tombstone_lifetime_seconds_count 3\n",
            "shoal_tombstone_lifetime_seconds_max 20\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
    }
}
