//! The async client applications use to talk to a Shoal cluster.
//!
//! [`Client::connect`] loads a client (or admin) certificate, asks the given nodes for the ring
//! and keeps it. Each request then goes straight to one of its key's primaries (starting at a
//! rotating index, so load spreads), which coordinates it. When a node cannot be reached and the
//! request surely did not leave ([`TransportError::may_have_reached_peer`] is false), the client
//! tries the next primary, then any other member. A write whose request may have reached a node
//! is never sent again: the error says the outcome is unknown ([`ClientError::is_indeterminate`]).
//! Reads may be retried elsewhere on any transport failure, and are *hedged*: a read slower
//! than most recent reads ([`ClientConfig::hedge`]) is also sent to the next node, and the first
//! answer wins. Retries and hedges spend a retry budget (about a tenth of requests), and a
//! request every node refused as overloaded is retried only after a jittered backoff, so a
//! client never multiplies the load on a cluster that is already behind. A node that failed in the network, or made a read late, is tried after the
//! others until a background probe finds it answering again, so requests do not keep waiting on
//! a node that died (its connection would take seconds to be declared lost).
//!
//! Not-found and siblings are values: a [`ReadResult`] with no values is not found, several
//! values are concurrent writes the application resolves by writing with the read's
//! [`CausalContext`]. Contexts travel outside Rust (command lines, HTTP) as opaque URL-safe
//! tokens: [`context_to_token`] and [`context_from_token`].
//!
//! Not here: quorum logic, hinted handoff and read repair (the nodes do them); connection
//! pooling beyond the transport's connection cache.
//!
//! Main types: [`Client`], [`ClientConfig`], [`ReadResult`], [`RequestOptions`],
//! [`ClientError`].

mod client;
mod config;
mod error;
mod health;
mod pacing;
mod routing;
mod token;

pub use client::{Client, ReadResult};
pub use config::{ClientConfig, Hedge};
pub use error::{ClientError, ProtocolError};
pub use token::{MAX_TOKEN_CHARS, TOKEN_VERSION, TokenError, context_from_token, context_to_token};

pub use shoal_causality::{CausalContext, Object, Sibling};
pub use shoal_protocol::{
    ContextError, LocalRead, NodeStatus, PairDivergence, PartitionDivergence, PeerStatus,
    RepairRefusal, RequestError, TreesState,
};
pub use shoal_ring::Ring;
pub use shoal_transport::{Role, TransportConfig, TransportError};
pub use shoal_types::RequestOptions;
