//! Node-to-node messages: one envelope ([`PeerRequest`]: who sends, in which ring epoch) around
//! a [`PeerMessage`], whose variants are the families of node traffic, each served by its own
//! part of the receiving node: forwarded writes, replication (replicate, read, repair), gossip,
//! pings, hinted handoff and anti-entropy exchanges. Ownership transfers will add a variant here
//! (and one to [`PeerResponse`]) when they are built.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_causality::{CausalContext, Object};
use shoal_types::{Key, NodeId, PartitionId, RingEpoch};

use crate::{
    ClientRequest, ClientResponse, ExchangeMessage, ExchangeResponse, GossipMessage, HintMessage,
    HintResponse, LocalRead,
};

/// A request from one node to another. `from` must be the node named by the sender's
/// certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerRequest {
    /// The sending node.
    pub from: NodeId,
    /// The sender's ring epoch, so a receiver can tell it is talking to an older or newer ring.
    pub epoch: RingEpoch,
    /// How long the request this message serves had left when it was sent: past that, the
    /// sender no longer waits for the answer, so the receiver drops the work unstarted
    /// ([`PeerError::Expired`]). `None`: no deadline (liveness pings). A relative time, since
    /// the two nodes' clocks are not comparable.
    pub budget: Option<Duration>,
    /// What is asked.
    pub message: PeerMessage,
}

/// What one node asks another, by family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Coordinate this put or delete: sent by a node outside the key's preference list to one
    /// inside it, which makes the dot. Answered with [`PeerResponse::Coordinated`].
    Coordinate(ClientRequest),
    /// Replication of keys: answered with [`PeerResponse::Replica`].
    Replica(ReplicaMessage),
    /// Are you there? Answered [`PeerResponse::Pong`] (a probe for operators and tests; nodes
    /// learn liveness from gossip).
    Ping,
    /// Membership gossip: a `Syn` is answered with [`PeerResponse::Gossip`] holding the
    /// `SynAck`, an `Ack` with `PeerResponse::Gossip(None)`.
    Gossip(GossipMessage),
    /// Hinted handoff: a fallback asked to hold or read a hint, or hints handed back to their
    /// primary. Answered with [`PeerResponse::Hint`].
    Hint(HintMessage),
    /// Anti-entropy: another primary of a partition compares its tree with this node's, or
    /// pulls or pushes objects to repair what differs. Answered with
    /// [`PeerResponse::Exchange`].
    Exchange(ExchangeMessage),
    /// Tombstone reaping: every primary of the key holds its tombstone, so replace it with a
    /// reaping record. Answered with [`PeerResponse::Reap`].
    Reap(ReapMessage),
}

/// Reap a key's tombstone: a compare-and-set on the receiver's replica, applied only if it
/// holds no value and `context`'s vector descends what it holds. Sent by a primary of the key
/// to each other primary, once each was found to hold the tombstone and nothing newer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReapMessage {
    /// The key's partition.
    pub partition: PartitionId,
    /// The key.
    pub key: Key,
    /// The tombstone's version vector, joined over the primaries (no listed dots): the
    /// reaping record keeps it. Capped like a client's context when decoded.
    pub context: CausalContext,
}

/// A primary's answer to a [`ReapMessage`], once durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReapResponse {
    /// The key is reaped here: its reaping record covers the vector sent.
    Reaped,
    /// Not reaped: this replica holds a value, or something the vector has not seen.
    Newer,
}

/// The replication messages: how a put's object, a get and a read repair travel between the
/// replicas of a key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaMessage {
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

impl ReplicaMessage {
    /// The partition and key the message is about.
    pub fn partition_key(&self) -> (PartitionId, &Key) {
        match self {
            ReplicaMessage::Replicate { partition, key, .. }
            | ReplicaMessage::Read { partition, key }
            | ReplicaMessage::Repair { partition, key, .. } => (*partition, key),
        }
    }
}

/// A node's answer to a [`PeerRequest`], in the family of the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Answer to [`PeerMessage::Coordinate`]: what the client should see.
    Coordinated(ClientResponse),
    /// Answer to a [`PeerMessage::Replica`].
    Replica(ReplicaResponse),
    /// Answer to [`PeerMessage::Ping`].
    Pong,
    /// Answer to [`PeerMessage::Gossip`]: the next message of the exchange, if there is one.
    Gossip(Option<GossipMessage>),
    /// Answer to [`PeerMessage::Hint`].
    Hint(HintResponse),
    /// Answer to [`PeerMessage::Exchange`].
    Exchange(ExchangeResponse),
    /// Answer to [`PeerMessage::Reap`].
    Reap(ReapResponse),
    /// The request was not served (see [`PeerError`] for what each reason implies).
    Failed(PeerError),
}

/// A node's answer to a [`ReplicaMessage`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaResponse {
    /// Answer to `Replicate` and `Repair`: the object is merged and durable.
    Stored,
    /// Answer to `Read`: this node's replica.
    Replica(LocalRead),
}

/// Why a peer request was not served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PeerError {
    /// The node's storage failed (see [`StorageFault`]); the object does not count as stored
    /// here.
    #[error("storage failed: {0}")]
    Storage(StorageFault),
    /// The node is not in the key's preference list and will not coordinate it; nothing was
    /// applied.
    #[error("not a primary for partition {0}")]
    NotPrimary(PartitionId),
    /// The node is too busy; nothing was applied.
    #[error("overloaded")]
    Overloaded,
    /// The sender's deadline had passed when the node got to the message, so it did nothing.
    #[error("the sender's deadline passed before the message was worked on")]
    Expired,
    /// The message named a partition that is not the key's partition in the receiver's ring;
    /// nothing was applied.
    #[error("key belongs to partition {expected}, not {got}")]
    WrongPartition {
        /// The key's partition in the receiver's ring.
        expected: PartitionId,
        /// The partition the message named.
        got: PartitionId,
    },
    /// The fallback holds as many hints for `primary` as it may (`max_hint_bytes`): it did not
    /// store this one. Nothing was applied; anti-entropy repairs what the primary misses.
    #[error("the hints held for {primary} are at their bound")]
    HintsFull {
        /// The primary the hint was for.
        primary: NodeId,
    },
    /// An anti-entropy message the receiver will not serve (see [`ExchangeFault`]); nothing
    /// was applied.
    #[error("anti-entropy message refused: {0}")]
    Exchange(ExchangeFault),
}

/// Why a node refused an anti-entropy message. Nothing of the message was applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ExchangeFault {
    /// The partition is not one of the receiver's ring (not below its Q).
    #[error("partition {0} is not in this node's ring")]
    UnknownPartition(PartitionId),
    /// The sender is not a primary of the partition: only primaries compare replicas (a
    /// fallback holds hints, not replicas, and hands them off as hints).
    #[error("the sender is not a primary of partition {0}")]
    SenderNotPrimary(PartitionId),
    /// A segment index is not below the tree's segment count.
    #[error("segment {0} is not a segment of the tree")]
    SegmentOutOfRange(u16),
    /// The segments asked are not strictly ascending (one named twice included).
    #[error("the segments asked are not strictly ascending")]
    SegmentsOutOfOrder,
    /// One segment holds more keys than one answer may list.
    #[error("segment {segment} holds {keys} keys, more than one answer may list")]
    SegmentTooLarge {
        /// The segment.
        segment: u16,
        /// How many keys it holds.
        keys: u64,
    },
    /// The receiver's trees are still being built after it started: not yet. The asker
    /// compares the pair again a little later; nothing went wrong.
    #[error("the trees are still being built; ask again later")]
    TreesNotReady,
}

/// What went wrong with a node's storage, as a peer is told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StorageFault {
    /// A commit failed earlier in this run: the node stores and coordinates nothing more until
    /// it restarts. Nothing of this request was applied.
    #[error("a commit failed earlier in this run; the node refuses writes until it restarts")]
    RunFailed,
    /// This request's commit failed. Like any failed fsync, it may still have reached the disk.
    #[error("the commit of this write failed")]
    CommitFailed,
    /// The node's replica of the key could not be read, so it will neither coordinate a write
    /// to it (it could reuse a dot) nor store over it (the record may be intact). Nothing was
    /// applied.
    #[error("the local replica of the key could not be read")]
    Unreadable,
}
