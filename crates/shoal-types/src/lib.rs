//! The vocabulary every Shoal crate shares: who a node is, what a key is, which partition and ring
//! epoch we are talking about, and how many replicas a request must reach.
//!
//! Every type here is parsed, not validated: a value that exists is valid. A `NodeId` is never
//! empty, a `PartitionCount` is always a power of two, a `Quorum` never has `R > N` or `W = 0`.
//! Deserialisation goes through the same checks, so bytes from the network or the disk cannot
//! build an invalid value either.
//!
//! This crate does no I/O, has no async code and reads no clock. It holds no logic beyond the
//! checks that keep its values valid: placement lives in `shoal-ring`, causality in
//! `shoal-causality`, quorum bookkeeping in `shoal-coordinator`.
//!
//! Main types: [`NodeId`], [`Incarnation`], [`Zone`], [`Capacity`], [`Key`], [`PartitionId`],
//! [`PartitionCount`], [`RingEpoch`], [`ReplicationFactor`], [`Quorum`], [`RequestOptions`],
//! [`Limits`], [`Role`].

mod error;
mod key;
mod limits;
mod node;
mod partition;
mod quorum;
mod role;

pub use error::{QuorumError, TypesError};
pub use key::Key;
pub use limits::Limits;
pub use node::{Capacity, Incarnation, NodeId, Zone};
pub use partition::{PartitionCount, PartitionId, RingEpoch};
pub use quorum::{Quorum, ReadRequirement, ReplicationFactor, RequestOptions, WriteRequirement};
pub use role::Role;
