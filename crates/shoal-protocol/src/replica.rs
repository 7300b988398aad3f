use serde::{Deserialize, Serialize};
use shoal_causality::Object;
use shoal_types::{Key, NodeId, PartitionId, RingEpoch};

use crate::{ClientRequest, ClientResponse, LocalRead};

/// Node-to-node requests. `from` must be the node named by the sender's certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRequest {
    /// The sending node.
    pub from: NodeId,
    /// The sender's ring epoch, so a receiver can tell it is talking to an older or newer ring.
    pub epoch: RingEpoch,
    /// What is asked.
    pub body: ReplicaBody,
}

/// What one node asks another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaBody {
    /// Coordinate this put or delete: sent by a node outside the key's preference list to one
    /// inside it, which makes the dot.
    Coordinate(ClientRequest),
    /// Merge this object into your replica, durably, then answer `Stored`.
    Replicate {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
        /// The coordinator's object after its update.
        object: Object,
    },
    /// Send your replica of a key.
    Read {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
    },
    /// Are you there? Answered `Pong`; keeps each node's view of who is reachable fresh.
    Ping,
    /// Read repair: merge this object, which is newer than what you answered.
    Repair {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
        /// The merged object.
        object: Object,
    },
}

/// A node's answer to a [`ReplicaRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaResponse {
    /// Answer to `Coordinate`: what the client should see.
    Coordinated(ClientResponse),
    /// The object is merged and durable.
    Stored,
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Read`: this node's replica.
    Replica(LocalRead),
    /// The request could not be served.
    Failed(ReplicaError),
}

/// Why a replica request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
    /// The node's storage failed the write; nothing is durable here.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The node is not in the key's preference list and will not coordinate it.
    #[error("not a primary for partition {0}")]
    NotPrimary(PartitionId),
    /// The node is too busy.
    #[error("overloaded")]
    Overloaded,
    /// The message named a partition that is not the key's partition in the receiver's ring.
    #[error("key belongs to partition {expected}, not {got}")]
    WrongPartition {
        /// The key's partition in the receiver's ring.
        expected: PartitionId,
        /// The partition the message named.
        got: PartitionId,
    },
}
