use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_causality::{CausalContext, Object};
use shoal_ring::Ring;
use shoal_types::{Key, NodeId, QuorumError, RequestOptions};

/// What an application asks of any node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Read a key: R replies, merged.
    Get {
        /// The key.
        key: Key,
        /// R, PR and timeout overrides.
        options: RequestOptions,
    },
    /// Write a value, superseding what `context` saw (an empty context supersedes nothing).
    Put {
        /// The key.
        key: Key,
        /// The value.
        value: Bytes,
        /// The context of the read this write follows, or empty for a blind write.
        context: CausalContext,
        /// W, PW and timeout overrides.
        options: RequestOptions,
    },
    /// Delete: a put of a tombstone, superseding what `context` saw.
    Delete {
        /// The key.
        key: Key,
        /// The context of the read this delete follows.
        context: CausalContext,
        /// W, PW and timeout overrides.
        options: RequestOptions,
    },
    /// This node's own durable replica of a key, unmerged (debugging and tests).
    GetLocal {
        /// The key.
        key: Key,
    },
    /// The node's current ring, so a client can route requests to preference lists.
    Ring,
}

impl ClientRequest {
    /// The key this request is about, if any.
    pub fn key(&self) -> Option<&Key> {
        match self {
            ClientRequest::Get { key, .. }
            | ClientRequest::Put { key, .. }
            | ClientRequest::Delete { key, .. }
            | ClientRequest::GetLocal { key } => Some(key),
            ClientRequest::Ring => None,
        }
    }

    /// A short name of the operation, for logs and metrics.
    pub fn op(&self) -> &'static str {
        match self {
            ClientRequest::Get { .. } => "get",
            ClientRequest::Put { .. } => "put",
            ClientRequest::Delete { .. } => "delete",
            ClientRequest::GetLocal { .. } => "get_local",
            ClientRequest::Ring => "ring",
        }
    }
}

/// A node's answer to a [`ClientRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The merged read. No values means not found (never written, or deleted); the context is
    /// what a following write must send.
    Read {
        /// Distinct live values; several when concurrent writes left siblings.
        values: Vec<Bytes>,
        /// The causal context of the merged object.
        context: CausalContext,
    },
    /// The write is durable on W nodes. The context is the one the write was sent with plus the
    /// write's own dot: a writer that writes again with it supersedes its own write and what it
    /// had seen, never a concurrent write it did not see.
    Written {
        /// The writer's context plus the new write.
        context: CausalContext,
    },
    /// One node's own replica (for `GetLocal`).
    Local(LocalRead),
    /// The node's ring.
    Ring(Ring),
    /// The request failed; see [`RequestError`] for which failures are definite.
    Failed(RequestError),
}

/// One node's own replica of a key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LocalRead {
    /// The node holds this object.
    Found(Object),
    /// The node holds nothing for the key.
    NotFound,
    /// The node's record failed its checksum; it counts as missing and will be repaired.
    Corrupted,
    /// The node holds an object whose values are more than an object may hold (more than
    /// `Limits::max_object_bytes`, the most one frame carries): concurrent writes accepted by
    /// different coordinators, merged here. Only its context is sent, so that a client can
    /// still overwrite or delete the key with it.
    TooLarge {
        /// The object's value bytes, all siblings together.
        size: u64,
        /// The object's context.
        context: CausalContext,
    },
}

/// Why a request failed, as the client sees it. Each variant says whether the write may have
/// been applied (invariant I6: a definite error means it was applied nowhere).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    /// Definite: too few nodes were reachable to even try; nothing was applied.
    #[error(
        "unavailable: {required} replicas required, only {alive} reachable; nothing was applied"
    )]
    Unavailable {
        /// Replicas the quorum needs.
        required: usize,
        /// Replicas that were reachable.
        alive: usize,
    },
    /// Definite: the request asked for PR (or PW) primaries, and fewer than that are reachable;
    /// nothing was applied. `missing` names the primaries judged down.
    #[error(
        "{required} primaries required, {} unreachable ({}); nothing was applied",
        missing.len(),
        names(missing)
    )]
    PrimariesUnavailable {
        /// Primaries the request needs (its PR or PW).
        required: usize,
        /// The primaries that are not reachable.
        missing: Vec<NodeId>,
    },
    /// Indeterminate: the request was tried but too few replicas answered. A write may have
    /// been applied on some replicas.
    #[error("quorum failed: {required} replicas required, {answered} answered")]
    QuorumFailed {
        /// Replies or acks the quorum needs.
        required: usize,
        /// Replies or acks that came.
        answered: usize,
    },
    /// Indeterminate: the deadline passed first. A write may have been applied.
    #[error("timeout: {answered} of {required} required replicas answered in time")]
    Timeout {
        /// Replies or acks the quorum needs.
        required: usize,
        /// Replies or acks that came before the deadline.
        answered: usize,
    },
    /// Definite: the write would leave more siblings than allowed; read, resolve, write with
    /// the context.
    #[error("too many siblings: the write would leave {siblings}, the limit is {max}")]
    TooManySiblings {
        /// Siblings after the write.
        siblings: usize,
        /// The limit.
        max: usize,
    },
    /// Definite: the object (all of the key's siblings) would hold more value bytes than an
    /// object may after this write; read, resolve, write with the context (which replaces the
    /// siblings it covers), or delete.
    #[error("object too large: the write would leave {size} value bytes, the limit is {max}")]
    ObjectTooLarge {
        /// The object's value bytes after the write.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Definite (nothing was written): the key's merged object holds more value bytes than an
    /// object may, so its values cannot be sent. Concurrent writes accepted by different
    /// coordinators made it. `context` covers everything read: a put with it replaces the
    /// values, a delete with it removes them.
    #[error(
        "object too large to read: {size} value bytes, the limit is {max}; overwrite or delete it with the context"
    )]
    ReadTooLarge {
        /// The merged object's value bytes (at least; some replicas sent only their context).
        size: u64,
        /// The limit.
        max: u64,
        /// The context of everything read.
        context: CausalContext,
    },
    /// Definite: the value is larger than the cluster allows.
    #[error("value too large: {size} bytes, the limit is {max}")]
    ValueTooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Definite: the key is larger than the cluster allows.
    #[error("key too large: {size} bytes, the limit is {max}")]
    KeyTooLarge {
        /// The key's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Definite: the timeout asked for is zero or longer than the node allows.
    #[error("invalid timeout: {asked:?}; it must be positive and at most {max:?}")]
    InvalidTimeout {
        /// The timeout asked for.
        asked: Duration,
        /// The longest the node allows.
        max: Duration,
    },
    /// Definite: the write's context cannot be honest (too large, or naming writes that were
    /// never made); nothing was applied. Read the key for a fresh context.
    #[error("invalid context: {0}; nothing was applied")]
    InvalidContext(ContextError),
    /// Definite: R/W/PR/PW do not fit N.
    #[error("invalid quorum: {0}")]
    InvalidQuorum(#[from] QuorumError),
    /// Definite: the node is overloaded (too much work queued or in flight, or the request
    /// waited past its deadline before the node got to it) and did nothing; retry later or
    /// elsewhere.
    #[error("overloaded: the node refused the request before doing anything")]
    Overloaded,
    /// Definite: the node cannot coordinate writes (its storage failed); try another node.
    #[error("node cannot serve this request: {0}")]
    NodeFailed(String),
}

impl RequestError {
    /// Whether the request may have been applied (the outcome is unknown).
    pub fn is_indeterminate(&self) -> bool {
        matches!(
            self,
            RequestError::QuorumFailed { .. } | RequestError::Timeout { .. }
        )
    }

    /// A stable snake_case name of the variant, for metrics and machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::Unavailable { .. } => "unavailable",
            RequestError::PrimariesUnavailable { .. } => "primaries_unavailable",
            RequestError::QuorumFailed { .. } => "quorum_failed",
            RequestError::Timeout { .. } => "timeout",
            RequestError::TooManySiblings { .. } => "too_many_siblings",
            RequestError::ObjectTooLarge { .. } => "object_too_large",
            RequestError::ReadTooLarge { .. } => "read_too_large",
            RequestError::ValueTooLarge { .. } => "value_too_large",
            RequestError::KeyTooLarge { .. } => "key_too_large",
            RequestError::InvalidQuorum(_) => "invalid_quorum",
            RequestError::InvalidTimeout { .. } => "invalid_timeout",
            RequestError::InvalidContext(_) => "invalid_context",
            RequestError::Overloaded => "overloaded",
            RequestError::NodeFailed(_) => "node_failed",
        }
    }
}

/// Node ids joined by commas, for an error message.
fn names(nodes: &[NodeId]) -> String {
    let names: Vec<&str> = nodes.iter().map(NodeId::as_str).collect();
    names.join(", ")
}

/// Why a coordinator refused a write's context (always before applying anything).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ContextError {
    /// More vector entries plus listed dots than a node accepts
    /// (`shoal_causality::MAX_CONTEXT_ENTRIES`).
    #[error("{entries} entries, the limit is {max}")]
    TooManyEntries {
        /// Entries the context holds.
        entries: usize,
        /// The limit.
        max: usize,
    },
    /// A counter no key reaches (`shoal_causality::MAX_PLAUSIBLE_COUNTER`), beyond what the
    /// coordinator's object has seen.
    #[error("counter {counter} is implausible (the limit is {max})")]
    ImplausibleCounter {
        /// The largest counter in the context.
        counter: u64,
        /// The limit.
        max: u64,
    },
    /// The context names actors the coordinator's object does not know, and with them its
    /// vector would pass `shoal_causality::MAX_ENTRIES_FROM_CONTEXTS` entries.
    #[error("it would grow the key's version vector to {entries} entries, the limit is {max}")]
    TooManyActors {
        /// Entries the object's vector would hold.
        entries: usize,
        /// The limit.
        max: usize,
    },
    /// The context names a write of the coordinator's own actor that the coordinator never
    /// made: a client cannot have seen it.
    #[error("it names write {counter} of the coordinator, which has made {issued}")]
    Unissued {
        /// The coordinator's counter the context names.
        counter: u64,
        /// How many writes of the key the coordinator has made.
        issued: u64,
    },
}
