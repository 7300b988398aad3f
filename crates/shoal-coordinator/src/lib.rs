//! The sans-IO Shoal node: everything a node decides, and nothing it does.
//!
//! A [`Node`] coordinates gets, puts and deletes: it finds the key's preference list in the
//! ring, forwards writes that land outside it to a primary, makes the write's dot, has it stored
//! durably (locally and on the other primaries at once), answers after W durable acks (its own
//! among them or not), answers reads after R replies merged with the DVV merge, and read-repairs
//! every replica that answered older — also those that answer after the client got its reply.
//! It serves the replica side of all of this for its peers. Sending a dot before it is durable
//! here relies on the node running under a new incarnation after any stop that was not clean
//! (see `RedbStorage::open`), so it never makes a lost dot again.
//!
//! Like quinn-proto, it has no sockets, no threads and no clock. Inputs are `handle_*` methods
//! that take `now`; effects come out of [`Node::poll_output`] as data ([`Output`]: replies,
//! messages to send, batches to persist); [`Node::poll_timeout`] says when to call
//! [`Node::handle_timeout`]. Randomness comes from a seed. The tokio server and the simulator
//! both drive this same type.
//!
//! Reads of the local replica go straight to [`Storage`](shoal_storage::Storage) (they never
//! wait for a commit); writes leave as [`Output::Persist`] and their durability comes back
//! through [`Node::handle_persisted`]. Until then the node keeps the written object in an
//! overlay, so the next write to the key builds on it.
//!
//! Not here: transport, certificates and authorisation (the server checks a sender's role
//! before calling [`Node::handle_request`]), gossip and failure detection (a minimal
//! unreachable-peer back-off stands in until the membership crate exists).

mod config;
mod node;
mod peers;
pub mod quorum;

pub use config::NodeConfig;
pub use node::{InboundId, Node, NodeMetrics, OutboundId, Output, PersistId, SendError};
pub use quorum::{ReadProgress, ReadQuorum, WriteProgress, WriteQuorum};
