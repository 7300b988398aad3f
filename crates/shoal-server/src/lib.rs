//! The tokio shell around one Shoal [`Node`](shoal_coordinator::Node): it takes requests off
//! QUIC, checks who may send them, feeds them to the node, carries the node's effects out over
//! the network and into storage's group commit, serves Prometheus metrics, and shuts down
//! without losing an acknowledged write.
//!
//! # Tasks, channels, and who owns what
//!
//! ```text
//!  QUIC (listen endpoint)                                  node-to-node endpoint
//!     │ Incoming                                                 ▲  one task per message:
//!     ▼                                                          │  encode, Endpoint::request,
//!  accept task ── decode, authorise ──► mpsc (bounded) ──►  node task ──┘  decode the answer
//!     │ refusals answered here                      ▲  owns the Node, the responders,   │
//!     ▼                                             │  the clock reads                  │
//!  Response::Refused(..)                  mpsc (unbounded) Event ◄──────────────────────┘
//!                                                   ▲        ▲
//!                      storage commit thread ───────┘        └─── metrics HTTP task (Snapshot)
//! ```
//!
//! - The **accept task** reads the listen endpoint's `Incoming`, decodes each frame (large ones
//!   in a task of their own) and authorises it: the certificate's role must be allowed to send
//!   the request (`Request::allowed_for`), and a replica message's `from` must be the node the
//!   certificate names, a member of the ring, under the ring's epoch. Bad frames, forbidden requests, requests while shutting down, and
//!   requests beyond the node task's queue are answered right there with `Response::Refused`
//!   and counted; the node task never sees them.
//! - The **node task** owns the `Node` — no lock, no sharing. It `select!`s over accepted
//!   requests, `Event`s (peers' answers, commit outcomes, metrics snapshot
//!   requests), the node's next timeout, and shutdown; after each, it drains
//!   `Node::poll_output`: replies are encoded and sent on the request's responder (large ones
//!   from a spawned task), messages to peers leave in spawned tasks whose outcome returns as an
//!   event, write batches are submitted to storage, whose commit thread sends the outcome back
//!   as an event. The node task never waits on I/O. It also owns the pending responders, with
//!   each request's start time and operation for the latency metrics.
//! - **Node-to-node messages** leave from a second, client-only QUIC endpoint with the node's
//!   certificate and a short idle timeout (`ServerConfig::peer_connect_timeout`): a QUIC
//!   handshake to a dead peer otherwise waits for the full idle timeout, far longer than a
//!   request may, and the coordinator must learn quickly that a peer is unreachable. Its
//!   (ephemeral) address is logged as `peer_endpoint` in the `shoal node started` line.
//! - **Storage** ([`RedbStorage`](shoal_storage::RedbStorage)) is owned by the node (its only
//!   handle), written only through the node's `Persist` outputs, and closed after the node
//!   task has ended, on a blocking thread: closing finishes the queued commits.
//! - The **metrics task** serves `GET /metrics` over a minimal HTTP/1.1 responder. Request
//!   counts and latency histograms live in shared atomics; the node's, storage's and
//!   transport's counters come from a snapshot the node task takes on request.
//!
//! # Shutdown
//!
//! [`Server::shutdown`]: the accept task starts refusing with `ShuttingDown`; the node task
//! finishes every request in flight and every pending commit (bounded by
//! `ServerConfig::shutdown_timeout`) and ends; the listen endpoint then delivers the last
//! answers and closes its connections with the shutdown code; the peer endpoint closes; the
//! storage closes after its queue is committed and, if no storage write failed in the run,
//! records a clean stop. A write acknowledged `Written` was durable on W replicas before the
//! acknowledgement; after a graceful shutdown it is durable here too, and a restart on the same
//! data directory finds it, with the same incarnation. Any other end (a crash, `kill -9`, a
//! dropped `Server`, a failed write) is reported as a recovery at the next start, under the same
//! incarnation too: a coordinator sends a dot to replicas only once its own copy is durable, so
//! the disk knows every dot the node made that anyone holds.
//!
//! Not here: command-line parsing (`shoal-cli`), quorum logic (`shoal-coordinator`), framing
//! and TLS (`shoal-transport`), gossip and ring changes (membership is static for now).
//!
//! Main types: [`Server`], [`ServerConfig`], [`ServerError`].

mod accept;
mod config;
mod error;
mod http;
mod inbox;
mod metrics;
mod node_task;
mod server;

pub use config::ServerConfig;
pub use error::{JoinError, ServerError};
pub use server::Server;
