use serde::{Deserialize, Serialize};
use shoal_ring::Ring;
use shoal_types::{Incarnation, NodeId};

/// What an operator asks of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The node's view of the cluster: members, reachability, ring.
    Status,
}

/// A node's answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AdminResponse {
    /// The node's view of the cluster.
    Status(NodeStatus),
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
    /// For each other member, whether this node can reach it now.
    pub peers: Vec<PeerStatus>,
    /// Whether the node's storage works: `false` once a commit failed in this run, after which
    /// the node coordinates and stores no writes until it restarts.
    pub storage_healthy: bool,
}

/// Whether a node can reach one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer.
    pub node: NodeId,
    /// Whether the last exchange with it succeeded.
    pub reachable: bool,
}
