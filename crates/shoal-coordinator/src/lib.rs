//! The sans-IO Shoal node: everything a node decides, and nothing it does.
//!
//! A [`Node`] coordinates gets, puts and deletes: it finds the key's preference list in the
//! ring, forwards writes that land outside it to a primary, makes the write's dot, has it stored
//! durably (locally first, then on the other primaries), answers after W durable acks (its own
//! first among them), answers reads after R replies merged with the DVV merge, and read-repairs
//! every replica that answered older — also those that answer after the client got its reply.
//! It serves the replica side of all of this for its peers. When a primary is judged down, a
//! fallback (the next reachable node in ring order) stands in for it and holds the write as a
//! hint, which it hands back once the primary is reachable (sloppy quorum, hinted handoff). In
//! the background, the primaries of each partition compare their tictac trees and repair the
//! keys that differ (anti-entropy). A dot leaves the node only inside
//! an object durable on it, so a restart (clean or not) keeps the incarnation and never makes a
//! dot twice; a corrupted record renews the incarnation (`durability`).
//!
//! Like quinn-proto, it has no sockets, no threads and no clock. Inputs are `handle_*` methods
//! that take `now`; effects come out of [`Node::poll_output`] as data ([`Output`]: replies,
//! messages to send with a [`Priority`], batches to persist); [`Node::poll_timeout`] says when to
//! call [`Node::handle_timeout`]. Randomness comes from a seed. The tokio server and the
//! simulator both drive this same type.
//!
//! Inside, the node is a thin router (`node`) over parts, each a sans-IO machine in its own
//! module with its own tests, sharing one effect queue and one timer table (`effects`, `timers`):
//! - `durability`: the local replica, and the overlay of objects handed to storage but not yet
//!   durable (writes build on it, reads never see it), with the waiters of each persist;
//! - `client`: client requests — gets, puts and deletes coordinated here, writes forwarded;
//! - `replica`: the replica side — storing and reading objects for peers;
//! - `membership`: gossip and the phi-accrual failure detector of `shoal-membership` — who the
//!   members are and which peers to send to;
//! - `hints`: sloppy quorums' other half — the hints this node holds as a fallback for
//!   primaries judged down, their handoff once the primary is reachable again, their bounds;
//! - `anti_entropy`: which pairs of primaries compare which partition when, the exchanges
//!   that compare them, the repair that follows, the figures of what they found, and the
//!   answering side for peers' exchanges;
//! - `reaper`: causal tombstone reaping — once every primary of a key holds its tombstone and
//!   nothing newer, each replaces it with a reaping record that no older copy gets past; the
//!   checks anti-entropy hands over, and forgetting the records after their retention.
//!
//! The quorum arithmetic of one request is a pure value ([`ReadQuorum`], [`WriteQuorum`]), and
//! so is one anti-entropy exchange between two replicas of a partition (`anti_entropy::exchange`:
//! roots, branches, segments confirmed after a pause, then keys).
//!
//! Not here: transport, certificates and authorisation (the server checks a sender's role
//! before calling [`Node::handle_request`]), ring changes, and ownership
//! handoff (a part of its own, to come).

mod anti_entropy;
mod client;
mod config;
mod durability;
mod effects;
mod hints;
mod membership;
mod metrics;
mod node;
pub mod quorum;
mod reaper;
mod replica;
mod timers;

pub use anti_entropy::{AntiEntropyConfig, RepairError};
pub use config::NodeConfig;
pub use effects::{InboundId, OutboundId, Output, PersistId, Priority};
pub use hints::HintsConfig;
pub use metrics::{NodeMetrics, TOMBSTONE_LIFETIME_BUCKETS_MS};
pub use node::{Node, SendError};
pub use quorum::{ReadProgress, ReadQuorum, WriteProgress, WriteQuorum};
pub use reaper::ReaperConfig;
