use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use shoal_ring::RingError;
use shoal_storage::OpenError;
use shoal_transport::{CertError, TransportError};
use shoal_types::{NodeId, Zone};
use thiserror::Error;

/// Why a seed of `--join` gave no ring.
#[derive(Debug, Error)]
pub enum JoinError {
    /// The request did not get through (the seed is down, or refused this certificate).
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The answer was not a message.
    #[error("its answer did not decode: {0}")]
    Codec(#[from] shoal_protocol::CodecError),
    /// The seed answered, but not with a ring (a refusal, for instance).
    #[error("it answered {0}")]
    Unexpected(String),
}

/// Why a server could not start, or did not stop cleanly.
#[derive(Debug, Error)]
pub enum ServerError {
    /// A configuration value cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The member list does not contain this node.
    #[error(
        "the member list does not contain this node ({node}): list every member, this one included"
    )]
    NotAMember {
        /// This node's id.
        node: NodeId,
    },
    /// The member list names this node with another address than the one it listens on.
    #[error("the member list gives {node} the address {member}, but it listens on {listen}")]
    AddressMismatch {
        /// This node's id.
        node: NodeId,
        /// The configured listen address.
        listen: SocketAddr,
        /// The address the member list gives it.
        member: SocketAddr,
    },
    /// The member list names this node with another address than the one it advertises.
    #[error("the member list gives {node} the address {member}, but it advertises {advertise}")]
    AdvertiseMismatch {
        /// This node's id.
        node: NodeId,
        /// The configured advertised address.
        advertise: SocketAddr,
        /// The address the member list gives it.
        member: SocketAddr,
    },
    /// The member list puts this node in another zone than the one configured.
    #[error("the member list puts {node} in zone {member}, but it is configured in zone {zone}")]
    ZoneMismatch {
        /// This node's id.
        node: NodeId,
        /// The configured zone.
        zone: Zone,
        /// The zone the member list gives it.
        member: Zone,
    },
    /// Port 0 was asked for in a cluster of several members, whose peers need a fixed address.
    #[error(
        "listening on port 0 works only for a one-node cluster; this one has {members} members: give a fixed port"
    )]
    EphemeralPortInCluster {
        /// How many members were listed.
        members: usize,
    },
    /// The default quorum needs more replicas than the cluster has members.
    #[error(
        "the default quorum (R={r}, W={w}) needs more replicas than the cluster's {members} member(s): lower R and W (and N), or list more members"
    )]
    QuorumTooLarge {
        /// Members in the cluster.
        members: usize,
        /// The default R.
        r: usize,
        /// The default W.
        w: usize,
    },
    /// The ring could not be built from the member list.
    #[error("cannot build the ring: {0}")]
    Ring(#[source] RingError),
    /// The node certificate could not be loaded.
    #[error("cannot load the node certificate for {node} from {}: {source}", dir.display())]
    Certificate {
        /// The certificate directory.
        dir: PathBuf,
        /// The node whose certificate was looked for.
        node: NodeId,
        /// What was wrong.
        #[source]
        source: CertError,
    },
    /// The data directory's database could not be opened.
    #[error("cannot open storage in {}: {source}", path.display())]
    Storage {
        /// The data directory.
        path: PathBuf,
        /// What storage said.
        #[source]
        source: OpenError,
    },
    /// The QUIC endpoint could not be bound or built.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the transport said.
        #[source]
        source: TransportError,
    },
    /// No seed of `--join` answered with its ring.
    #[error("no seed of --join answered with its ring (tried {tried:?}): {source}")]
    Join {
        /// The seeds asked, in order.
        tried: Vec<SocketAddr>,
        /// Why the last one did not.
        #[source]
        source: JoinError,
    },
    /// The endpoint for node-to-node requests could not be built.
    #[error("cannot open the endpoint for node-to-node requests: {0}")]
    PeerEndpoint(#[source] TransportError),
    /// The metrics listener could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsBind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot listen for signals: {0}")]
    Signal(#[source] io::Error),
    /// A task of the server panicked or was cancelled.
    #[error("the {task} task failed: {reason}")]
    TaskFailed {
        /// Which task.
        task: &'static str,
        /// What happened to it.
        reason: String,
    },
}
