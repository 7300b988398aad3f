use serde::{Deserialize, Serialize};
use shoal_types::{RingEpoch, Role};

use crate::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, PeerRequest, PeerResponse,
};

/// Everything a peer can ask of a node: the body of one request frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// get / put / delete and friends, from clients, admins, or nodes.
    Client(ClientRequest),
    /// Node-to-node traffic (replication, liveness). Node certificates only.
    Peer(PeerRequest),
    /// Cluster inspection and changes. Admin certificates only.
    Admin(AdminRequest),
}

impl Request {
    /// Whether a peer with `role` may send this request.
    pub fn allowed_for(&self, role: Role) -> bool {
        match self {
            Request::Client(_) => true,
            Request::Peer(_) => role == Role::Node,
            Request::Admin(_) => role == Role::Admin,
        }
    }

    /// The role a sender needs, for error messages.
    pub fn required_role(&self) -> &'static str {
        match self {
            Request::Client(_) => "client, admin or node",
            Request::Peer(_) => "node",
            Request::Admin(_) => "admin",
        }
    }
}

/// The body of one response frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to a client request.
    Client(ClientResponse),
    /// Answer to a peer request.
    Peer(PeerResponse),
    /// Answer to an admin request.
    Admin(AdminResponse),
    /// The request was not processed at all: bad bytes, wrong role, or the node is shutting
    /// down. Definite: nothing was applied.
    Refused(Refusal),
}

/// Why a request was refused before any processing. Nothing was applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The sender's certificate role may not send this kind of request.
    #[error("unauthorized: this request needs a {required} certificate, the sender's is {role:?}")]
    Unauthorized {
        /// The role the request needs.
        required: String,
        /// The sender's role.
        role: Role,
    },
    /// A peer message named another node than the sender's certificate.
    #[error("unauthorized: message claims to be from {claimed}, certificate names {certified}")]
    WrongSender {
        /// The `from` in the message.
        claimed: String,
        /// The node id in the certificate.
        certified: String,
    },
    /// A peer message came from a node certificate whose node is not a member of the
    /// receiver's ring: only members replicate.
    #[error("unauthorized: {node} is not a member of this node's ring")]
    NotAMember {
        /// The node the certificate names.
        node: String,
    },
    /// A peer message was sent under another ring epoch than the receiver's. The ring is static
    /// for now, so two epochs mean two different rings: placing keys by either could file them
    /// where the other never looks.
    #[error("ring epoch mismatch: the message is of epoch {theirs}, this node's ring is {ours}")]
    WrongEpoch {
        /// The receiver's ring epoch.
        ours: RingEpoch,
        /// The epoch the message carried.
        theirs: RingEpoch,
    },
    /// The frame did not decode, or broke a limit.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The node is shutting down and takes no new work.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node is overloaded; retry later or elsewhere.
    #[error("node is overloaded")]
    Overloaded,
}
