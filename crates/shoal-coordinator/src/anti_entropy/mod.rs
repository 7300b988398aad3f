//! Active anti-entropy: two replicas of a partition compare their tictac trees and repair, key
//! by key, what one holds and the other lacks or holds differently (Dynamo §4.7,
//! `../shared/DESIGN.md` §7, issue 15).
//!
//! Built so far: the [`Exchange`](exchange::Exchange) of one pair of replicas of one
//! partition, a small pure value after Riak kv_index_tictactree's `aae_exchange`. It compares
//! roots, then branches, then segments; confirms every differing segment by a second look after
//! a pause (so a write still on its way to one replica is not taken for divergence); compares
//! the keys of the confirmed segments by object digest; and hands out the
//! [`Repair`](exchange::Repair) (which keys to push to the remote replica, which to pull from
//! it) and the [`Outcome`](exchange::Outcome) (what it saw, for the divergence figures). It asks
//! either side for what it needs ([`Step::Ask`](exchange::Step::Ask)) and is told the answers
//! ([`Exchange::handle`](exchange::Exchange::handle)), which it checks: the remote's come from
//! the network.
//!
//! Not here yet: the part of the `Node` that runs exchanges (which pairs, how often, paced
//! below client traffic), the wire messages that carry asks and replies, carrying out a repair
//! (reading, shipping and merging the objects), tombstone reaping, and the figures' metrics.
//! Not here ever: storage reads, the network and the clock — the caller answers the asks from
//! `Storage::tree` and `Storage::segment_keys` (or a peer's), and passes `now` in.

pub(crate) mod exchange;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests need one real instant to start from
mod tests;
