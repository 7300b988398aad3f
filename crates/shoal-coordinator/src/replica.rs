//! The replica side: what a node does for its peers' replication messages. A `Replicate` or
//! `Repair` is merged into the local replica (DVV merge, no new dot) and answered `Stored` once
//! the merged object is durable; a `Read` is answered with the durable replica. A message that
//! names another partition than the key's own in this node's ring is refused, since it would
//! file the key where no read finds it; a node whose storage failed refuses to store, and so
//! does one that cannot read its record of the key (it never overwrites what it failed to read). A replica
//! too large to send (see [`sendable`]) is answered with its context only.
//!
//! Overload: a message whose sender's deadline passed while it waited here is dropped unworked
//! ([`PeerError::Expired`]: the sender no longer waits for it), and replica writes are refused
//! ([`PeerError::Overloaded`]) only when the commit queue holds twice what makes the node
//! refuse its own clients' writes, so a busy node sheds its clients before the replica writes
//! that make other nodes' quorums.
//!
//! Not here: forwarded client writes (`PeerMessage::Coordinate`, served by the client-requests
//! part), and gossip and pings (the membership part).

use std::time::Instant;

use shoal_protocol::{
    LocalRead, PeerError, PeerResponse, ReplicaMessage, ReplicaResponse, Response, StorageFault,
};
use shoal_storage::{CommitError, Storage};

use crate::durability::{Durability, Stored};
use crate::effects::{Inbound, InboundId, Part, Shared, Waiter};

/// See the module docs. Holds no state of its own: what it stores lives in [`Durability`].
#[derive(Debug, Default)]
pub(crate) struct ReplicaSide;

impl ReplicaSide {
    /// A peer's replication message, which arrived at `arrived` with `budget` left on its
    /// sender's deadline.
    pub(crate) fn handle<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        inbound: Inbound,
        message: ReplicaMessage,
    ) {
        let id = inbound.id;
        if shared.refuse_expired(&inbound, now) {
            return;
        }
        let (partition, key) = message.partition_key();
        let expected = shared.ring.partition_for_key(key);
        if partition != expected {
            let error = PeerError::WrongPartition {
                expected,
                got: partition,
            };
            return shared.refuse(id, error);
        }
        match message {
            ReplicaMessage::Replicate {
                partition,
                key,
                object,
            }
            | ReplicaMessage::Repair {
                partition,
                key,
                object,
            } => {
                if let Some(error) = refuse_peer_write(shared, durability) {
                    return shared.refuse(id, error);
                }
                shared.metrics.replica_writes += 1;
                let waiter = Waiter {
                    part: Part::Replica,
                    token: id.0,
                };
                match durability.store(shared, partition, &key, &object, Some(waiter)) {
                    Stored::AlreadyDurable => reply(shared, id, ReplicaResponse::Stored),
                    Stored::Pending => {}
                    Stored::Unreadable => {
                        shared.refuse(id, PeerError::Storage(StorageFault::Unreadable));
                    }
                }
            }
            ReplicaMessage::Read { partition, key } => {
                let read = durability.durable_read(&mut shared.metrics, partition, &key);
                let read = sendable(read, shared.config.limits.max_object_bytes());
                reply(shared, id, ReplicaResponse::Replica(read));
            }
        }
    }

    /// The persist that inbound request `token` waited for ended.
    pub(crate) fn persisted(
        &mut self,
        shared: &mut Shared,
        token: u64,
        result: &Result<(), CommitError>,
    ) {
        let id = InboundId(token);
        match result {
            Ok(()) => reply(shared, id, ReplicaResponse::Stored),
            Err(_) => shared.refuse(id, PeerError::Storage(StorageFault::CommitFailed)),
        }
    }
}

/// Why this node will not store a peer's write now, if it will not: its storage failed in
/// this run, or its commit queue holds twice what makes it refuse its own clients' writes
/// (counted as shed). Every part that stores for peers (replica writes, hints, handoffs) asks.
pub(crate) fn refuse_peer_write<S: Storage>(
    shared: &mut Shared,
    durability: &Durability<S>,
) -> Option<PeerError> {
    if durability.failed().is_some() {
        return Some(PeerError::Storage(StorageFault::RunFailed));
    }
    if durability.pending() >= shared.config.max_pending_persists.saturating_mul(2) {
        shared.metrics.shed_peer += 1;
        return Some(PeerError::Overloaded);
    }
    None
}

/// A local replica as it may leave this node: an object with more value bytes than an object
/// may hold (a merge of concurrent writes accepted by different coordinators) would not fit in
/// a frame, so only its size and context go, with which a client can still replace it.
pub(crate) fn sendable(read: LocalRead, max_object_bytes: usize) -> LocalRead {
    match read {
        LocalRead::Found(o) if o.value_bytes() > max_object_bytes => LocalRead::TooLarge {
            size: o.value_bytes() as u64,
            context: o.context(),
        },
        other => other,
    }
}

fn reply(shared: &mut Shared, id: InboundId, response: ReplicaResponse) {
    shared.reply(id, Response::Peer(PeerResponse::Replica(response)));
}
