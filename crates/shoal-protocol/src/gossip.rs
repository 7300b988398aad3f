//! Gossip messages (scuttlebutt, chitchat's exchange: `Syn{digest}` / `SynAck{digest, delta}` /
//! `Ack{delta}`) and the member records they carry. Their meaning — how records merge, when a
//! heartbeat counts — is `shoal-membership`'s; here is only what crosses the wire, and the caps
//! the codec checks after decoding ([`DecodeLimits::max_members`](crate::DecodeLimits)).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_types::{Capacity, Incarnation, NodeId, Zone};

/// Where a member stands in the cluster, in the order a member passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Known to the cluster, owning no partitions until a ring change commits it.
    Joining,
    /// Owns partitions in the ring.
    Valid,
    /// Handing its partitions off before it leaves.
    Leaving,
    /// Handed everything off; about to stop.
    Exiting,
    /// No longer a member.
    Removed,
}

impl MemberStatus {
    /// The name operators see (`shoal cluster status`).
    pub fn name(self) -> &'static str {
        match self {
            MemberStatus::Joining => "joining",
            MemberStatus::Valid => "valid",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Exiting => "exiting",
            MemberStatus::Removed => "removed",
        }
    }
}

/// One member as the cluster knows it. Records of one node merge to the greatest in this
/// type's order (generation, then version, then the fields in order): see `shoal-membership`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Bumped on every start of the member's process (the server takes it from the wall clock
    /// at start, as Cassandra's and chitchat's generations); a higher generation replaces every
    /// record and heartbeat of a lower one. 0: a seed known only by address, not yet heard.
    pub generation: u64,
    /// Bumped by the member on every change of its record within a generation.
    pub version: u64,
    /// The node.
    pub id: NodeId,
    /// The incarnation its data directory runs under.
    pub incarnation: Incarnation,
    /// Where peers and clients reach it.
    pub addr: SocketAddr,
    /// Its failure domain.
    pub zone: Zone,
    /// Its weight when partitions are claimed.
    pub capacity: Capacity,
    /// Where it stands.
    pub status: MemberStatus,
}

impl MemberRecord {
    /// Whether `other` is a different record for the same node at the same generation and
    /// version: two processes claim one node id.
    pub fn conflicts_with(&self, other: &MemberRecord) -> bool {
        self.id == other.id
            && (self.generation, self.version) == (other.generation, other.version)
            && self != other
    }
}

/// What a node knows of one member, in a digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The member.
    pub id: NodeId,
    /// Its record's generation and version.
    pub generation: u64,
    /// See `generation`.
    pub version: u64,
    /// The latest heartbeat of it seen (counted within its generation).
    pub heartbeat: u64,
}

/// What one side sends the other that it lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Records newer than the other side's.
    pub records: Vec<MemberRecord>,
    /// Heartbeats newer than the other side's: (member, generation, heartbeat).
    pub heartbeats: Vec<(NodeId, u64, u64)>,
}

/// The messages of an exchange. Over the transport a `Syn` is a request answered by the
/// `SynAck`, and the `Ack` a request of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMessage {
    /// Opens an exchange: what the sender knows.
    Syn {
        /// The sender.
        from: NodeId,
        /// Its digest.
        digest: Vec<DigestEntry>,
    },
    /// What the receiver of a `Syn` knows, and what the sender lacked.
    SynAck {
        /// The sender of this message.
        from: NodeId,
        /// Its digest.
        digest: Vec<DigestEntry>,
        /// What the `Syn`'s sender lacked.
        delta: Delta,
    },
    /// Closes an exchange: what the receiver of the `Syn` lacked.
    Ack {
        /// The sender.
        from: NodeId,
        /// The delta.
        delta: Delta,
    },
}

impl GossipMessage {
    /// The node that sent it.
    pub fn from(&self) -> &NodeId {
        match self {
            GossipMessage::Syn { from, .. }
            | GossipMessage::SynAck { from, .. }
            | GossipMessage::Ack { from, .. } => from,
        }
    }

    /// The most entries any of its lists holds (what the codec caps).
    pub fn longest_list(&self) -> usize {
        let delta = |d: &Delta| d.records.len().max(d.heartbeats.len());
        match self {
            GossipMessage::Syn { digest, .. } => digest.len(),
            GossipMessage::SynAck {
                digest, delta: d, ..
            } => digest.len().max(delta(d)),
            GossipMessage::Ack { delta: d, .. } => delta(d),
        }
    }
}
