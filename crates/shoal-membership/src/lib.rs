//! Shoal's membership, sans-IO (DESIGN §2 and §8; issue 13).
//!
//! What is here so far, each part a pure state machine that takes `now` as an input and never
//! reads a clock:
//!
//! - [`Membership`], the member records every node converges on: one [`MemberRecord`] per node
//!   id, merged by a deterministic rule (the greater record wins, by generation, then version,
//!   then the record's own order), so that merging is commutative, associative and idempotent and
//!   all nodes reach one document whatever order records arrive in.
//! - [`PhiAccrual`], a phi-accrual failure detector over one peer's heartbeat arrivals (Hayashibara
//!   et al.; Akka's form: a normal distribution over the sampled intervals, with a minimum standard
//!   deviation and an acceptable pause), and [`FailureDetector`], one per peer, with Cassandra's
//!   local-pause guard: a node whose own checks were far apart (it was paused) convicts no one in
//!   that check.
//!
//! - [`Gossip`], scuttlebutt gossip of the records and heartbeats (`Syn` / `SynAck` / `Ack`), which
//!   feeds the failure detector with every newer heartbeat it learns, whoever relayed it.
//! - [`Staged`] ring changes ([`Change`]: join, leave, remove, replace) and the [`Plan`] they make
//!   against the current ring: the new ring at the next epoch, the transfers, each node's share,
//!   and the [`PlanId`] a commit must name (a stale one is refused).
//! - The commit of a plan ([`Proposer`], [`Acceptor`]): single-decree Paxos per epoch among the
//!   valid members of the current ring, so of concurrent commits at most one plan is chosen and a
//!   commit told "committed" is never overruled.
//! - The [`LayoutHistory`]: the live ring versions while partitions move, where writes go (every
//!   live version), which version a read uses (the newest whose partition has arrived), and
//!   when an old version retires (its releases).
//!
//! The node runs these through its `membership` part (`shoal-coordinator`), which sends gossip
//! as `PeerMessage::Gossip` and asks the detector who is reachable. Not here yet: the ring
//! document and its epoch in gossip, where staged changes are kept, the commit's wire form and
//! transfer progress (the ring-change issue). Not here ever: sockets, tasks, clocks, or removing members (only an
//! admin does, through a ring change).

mod change;
mod commit;
mod document;
mod gossip;
mod history;
mod phi;

pub use change::{Change, NodePlan, PartitionSize, Plan, PlanError, PlanId, StageError, Staged};
pub use commit::{Acceptor, Ballot, CommitMessage, CommitReply, Outcome, Proposal, Proposer};
pub use document::{Membership, Merged};
pub use gossip::{Gossip, GossipConfig, Outgoing};
pub use history::{HistoryError, LayoutHistory};
pub use phi::{FailureDetector, PhiAccrual, PhiConfig, Verdict};
/// The wire types gossip exchanges (defined in `shoal-protocol`, like every message).
pub use shoal_protocol::{Delta, DigestEntry, GossipMessage, MemberRecord, MemberStatus};
