//! Placement for Shoal: which partition a key falls in, which nodes own each partition, and what
//! data must move when the membership changes.
//!
//! - The **partitioner** ([`partition_for`]) takes the top log2(Q) bits of `xxh3_64(key)`;
//!   [`key_hash`] exposes the whole hash so storage can use the bits below for its hash trees.
//! - The [`Ring`] is the cluster map gossip carries: epoch, Q, N, the [`Member`]s (id, address,
//!   zone, capacity) and the owner of each partition. It is checked on construction and on
//!   decode, and caches every partition's primaries so that a preference-list lookup is a slice
//!   access.
//! - **Claim** ([`Ring::new`], [`Ring::claim`]) computes the owners for a membership: balanced by
//!   capacity (each node owns ⌊Q·c/C⌋ or ⌈Q·c/C⌉), moving as few partitions as the new shares
//!   allow, and keeping nearby partitions on distinct nodes and zones so preference lists are
//!   short and replicas evenly spread. It is deterministic: every node computes the same ring.
//! - **Preference lists** ([`Ring::preference_list`], [`Ring::sloppy_preference_list`]): N
//!   distinct nodes walking the ring from the key's partition, zones spread while possible, and
//!   fallbacks ([`Target`]) standing in for unreachable primaries.
//! - **Transfer plans** ([`transfer_plan`]): for a ring change, which node receives which
//!   partition from whom, and which old copies become surplus.
//!
//! Not here: staging and committing changes, gossip, failure detection (`shoal-membership`),
//! moving any bytes (`shoal-coordinator`). No I/O, no async, no clock, no randomness.
//!
//! Main types: [`Ring`], [`Member`], [`PreferenceList`], [`Target`], [`TransferPlan`],
//! [`RingError`]. `docs/ring.md` explains the algorithms and their measured quality.

mod claim;
mod error;
mod member;
mod partitioner;
mod preference;
mod ring;
mod transfer;

pub use error::RingError;
pub use member::Member;
pub use partitioner::{key_hash, partition_for, partition_of_hash};
pub use preference::{Fallbacks, PreferenceList, Target, Walk};
pub use ring::Ring;
pub use transfer::{
    NodeTransfers, Release, Transfer, TransferPlan, transfer_plan, transfer_plan_without,
};

#[cfg(test)]
mod tests;
