use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_ring::Ring;
use shoal_types::{Incarnation, NodeId, PartitionId};

use crate::MemberRecord;

/// What an operator asks of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The node's view of the cluster: members, reachability, ring.
    Status,
    /// Compare `partition` (or every partition the node is a primary of) with `node` (or each
    /// of its other primaries) by anti-entropy now, off the schedule (`shoal cluster repair`).
    Repair {
        /// One partition, or all of the node's.
        partition: Option<PartitionId>,
        /// One other primary, or all of them.
        node: Option<NodeId>,
    },
}

/// A node's answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AdminResponse {
    /// The node's view of the cluster (boxed: it is by far the largest response).
    Status(Box<NodeStatus>),
    /// A [`AdminRequest::Repair`] was taken: this many exchanges (pairs of a partition) were
    /// asked for. They start as the node's exchange slots free up; their outcome shows in
    /// [`NodeStatus::divergence`] and the node's metrics.
    Repairing {
        /// Exchanges asked for.
        exchanges: u64,
    },
    /// A [`AdminRequest::Repair`] was refused; nothing was asked for.
    RepairRefused(RepairRefusal),
}

/// Why a node refused an [`AdminRequest::Repair`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RepairRefusal {
    /// The partition is not below the ring's Q.
    #[error("partition {0} is not in the ring")]
    UnknownPartition(PartitionId),
    /// The node is not a primary of the partition: it holds no replica of it to compare.
    #[error("the node is not a primary of partition {0}")]
    NotPrimary(PartitionId),
    /// The node named is not another primary of the partitions asked.
    #[error("{0} is not another primary of the partitions asked")]
    NotAPeer(NodeId),
}

/// One node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The answering node.
    pub node: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Its ring (members, epoch, owners).
    pub ring: Ring,
    /// Every other member this node knows of, and how it judges each.
    pub peers: Vec<PeerStatus>,
    /// This node's own member record.
    pub record: MemberRecord,
    /// A hash of the membership document as this node holds it (every record's id, generation
    /// and version): nodes that agree on the membership report the same hash.
    pub membership_hash: u64,
    /// Whether the node's storage works: `false` once a commit failed in this run, after which
    /// the node coordinates and stores no writes until it restarts.
    pub storage_healthy: bool,
    /// Whether the node's anti-entropy trees are built (they are built beside serving after a
    /// start, and anti-entropy waits for them).
    pub trees: TreesState,
    /// The hints this node holds, one queue per target (empty when it holds none).
    pub hints: Vec<HintQueue>,
    /// Anti-entropy: for each partition this node is a primary of and has compared since it
    /// started, what it saw of each other primary (in partition order).
    pub divergence: Vec<PartitionDivergence>,
}

/// Where a node's anti-entropy trees stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreesState {
    /// Built: anti-entropy compares them.
    Ready,
    /// Being built from the records found at start.
    Building {
        /// Records scanned so far.
        records_done: u64,
        /// Records to scan in all.
        records_total: u64,
    },
    /// The build failed (the engine failed reading the records): no anti-entropy until the
    /// node restarts.
    Failed,
}

/// How one partition's replicas compared, as one of its primaries saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDivergence {
    /// The partition.
    pub partition: PartitionId,
    /// How long ago this node last knew its replica to match every other primary's: the oldest
    /// of its peers' `matched_ago` (`None` until it has matched each one since it started).
    pub matched_all_ago: Option<Duration>,
    /// The last exchange with each other primary, in node order.
    pub peers: Vec<PairDivergence>,
}

/// The last anti-entropy exchange between this node and one other primary of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairDivergence {
    /// The other primary.
    pub peer: NodeId,
    /// How long ago the last exchange with it ended.
    pub ago: Duration,
    /// Whether this node ran that exchange (and so knows the counts below) or served the
    /// peer's root ask and found the roots equal (the counts are 0).
    pub ran_here: bool,
    /// Whether the two replicas were found equal at the start: equal roots, or no difference
    /// that lasted past the confirm pause.
    pub matched: bool,
    /// Segments found differing (at both looks).
    pub segments_differing: u64,
    /// Keys found differing in the segments compared.
    pub keys_differing: u64,
    /// Keys the exchange repaired (pushed and acknowledged, or pulled and merged).
    pub keys_repaired: u64,
    /// How long ago the pair was last known equal: its roots found equal (at the start of an
    /// exchange, or at the check after a repair), or no difference lasting past the confirm
    /// pause (`None`: not since this node started).
    pub matched_ago: Option<Duration>,
}

/// The hints one node holds for one target, and how their handoff stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintQueue {
    /// The node the hints are for.
    pub target: NodeId,
    /// Keys held.
    pub keys: u64,
    /// Bytes held (keys and values), as counted against `max_hint_bytes`.
    pub bytes: u64,
    /// When the oldest hint held was stored, in Unix milliseconds.
    pub oldest_unix_ms: Option<u64>,
    /// Whether a handoff batch to the target is out now.
    pub replaying: bool,
    /// Hints handed off to the target since the node started.
    pub replayed: u64,
}

/// How a node judges one peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer.
    pub node: NodeId,
    /// Whether this node sends it requests now: not judged down by its failure detector, and
    /// no connection to it refused since it was last heard from.
    pub reachable: bool,
    /// The peer's record as this node knows it (generation 0: a seed not heard from yet).
    pub record: MemberRecord,
    /// The failure detector's phi for it (`None`: never heard from).
    pub phi: Option<f64>,
    /// How long ago its latest heartbeat reached this node, directly or through gossip.
    pub last_heard: Option<Duration>,
}
