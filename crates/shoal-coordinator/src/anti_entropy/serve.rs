//! The answering side of an exchange: what this node does for another primary's anti-entropy
//! messages. Tree levels and key lists are read from storage, so they describe durable data
//! only; a fetch is answered with durable objects (as reads are); a push is merged into the
//! local replicas through the same path as replica writes and read repair
//! (`Durability::store`: DVV merge, no new dot, a corrupted record replaced with a renewed
//! incarnation) and answered once every object is durable, as a hint handoff is.
//!
//! While this node's trees are still being built after a start, a tree level or key list asked
//! for is refused with [`ExchangeFault::TreesNotReady`] ("not yet", not counted as a refusal);
//! fetches and pushes, which need no tree, are served.
//!
//! Everything is checked before anything is read or applied: the partition is in this node's
//! ring, this node and the sender are both primaries of it (only replicas are compared), the
//! segments asked are strictly ascending, every key is of the partition. A message that fails
//! a check is refused with a specific [`PeerError`] and changes nothing. Answers are bounded:
//! a key list covers as many whole segments as fit in [`KEYS_REPLY_BYTES`] and
//! [`MAX_EXCHANGE_KEYS`], a fetch as many objects as fit in [`REPAIR_BATCH_BYTES`] (at least
//! one), and the asker asks again for the rest.

use std::time::Instant;

use shoal_protocol::{
    ExchangeFault, ExchangeMessage, ExchangeResponse, KeyObject, LocalRead, MAX_EXCHANGE_KEYS,
    PeerError, PeerResponse, Response, StorageFault,
};
use shoal_storage::{CommitError, ReadError, SegmentId, Storage};
use shoal_types::{Key, NodeId, PartitionId};

use super::figures::Figures;
use super::{KEYS_REPLY_BYTES, REPAIR_BATCH_BYTES};
use crate::durability::{Durability, Receipts, Received};
use crate::effects::{Inbound, InboundId, Part, Shared};
use crate::replica::{refuse_peer_write, sendable};

/// Pushes being stored, waiting for their persists.
#[derive(Debug, Default)]
pub(super) struct Serving {
    receiving: Receipts,
}

impl Serving {
    /// `from`'s exchange message.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        figures: &mut Figures,
        now: Instant,
        inbound: Inbound,
        from: &NodeId,
        message: ExchangeMessage,
    ) {
        let id = inbound.id;
        if shared.refuse_expired(&inbound, now) {
            return;
        }
        let partition = message.partition();
        if let Err(error) = check_pair(shared, from, partition) {
            return refused(shared, id, error);
        }
        let answer = match message {
            ExchangeMessage::Root { root, .. } => durability
                .storage()
                .tree(partition)
                .map_err(tree_unreadable)
                .map(|tree| {
                    let mine = tree.root();
                    if mine == root {
                        figures.served_match(partition, from, now);
                    }
                    ExchangeResponse::Root(mine)
                }),
            ExchangeMessage::Branches { .. } => durability
                .storage()
                .tree(partition)
                .map_err(tree_unreadable)
                .map(|tree| ExchangeResponse::Branches(tree.branches())),
            ExchangeMessage::Segments { segments, .. } => {
                segment_ids(&segments).and_then(|segments| {
                    let tree = durability
                        .storage()
                        .tree(partition)
                        .map_err(tree_unreadable)?;
                    let hashes = segments
                        .iter()
                        .map(|s| (s.index(), tree.segment(*s)))
                        .collect();
                    Ok(ExchangeResponse::Segments(hashes))
                })
            }
            ExchangeMessage::Keys { segments, .. } => segment_ids(&segments)
                .and_then(|segments| keys_answer(durability.storage(), partition, &segments)),
            ExchangeMessage::Fetch { keys, .. } => check_keys(shared, partition, keys.iter())
                .map(|()| fetch_answer(shared, durability, partition, keys)),
            ExchangeMessage::Push { objects, .. } => {
                match check_keys(shared, partition, objects.iter().map(|o| &o.key)) {
                    Ok(()) => return self.receive(shared, durability, id, partition, objects),
                    Err(e) => Err(e),
                }
            }
        };
        match answer {
            Ok(response) => reply(shared, id, response),
            Err(error) => refused(shared, id, error),
        }
    }

    /// Stores a push's objects; answered once every one is durable.
    fn receive<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        id: InboundId,
        partition: PartitionId,
        objects: Vec<KeyObject>,
    ) {
        if let Some(error) = refuse_peer_write(shared, durability) {
            return shared.refuse(id, error);
        }
        for o in &objects {
            super::hand_over_deleted(shared, partition, &o.key, &o.object);
        }
        let objects = objects.iter().map(|o| (partition, &o.key, &o.object));
        if let Some(done) =
            self.receiving
                .store_all(shared, durability, Part::AntiEntropy, id, objects)
        {
            finish(shared, done);
        }
    }

    /// A persist that a push waited for under `token` ended; `false` if no push waits under
    /// it.
    pub(super) fn persisted(
        &mut self,
        shared: &mut Shared,
        token: u64,
        result: &Result<(), CommitError>,
    ) -> bool {
        match self.receiving.persisted(token, result) {
            None => false,
            Some(done) => {
                if let Some(done) = done {
                    finish(shared, done);
                }
                true
            }
        }
    }
}

/// Refuses an exchange about `partition` unless it is in this node's ring and both this node
/// and `from` are primaries of it.
fn check_pair(shared: &Shared, from: &NodeId, partition: PartitionId) -> Result<(), PeerError> {
    if partition.index() >= shared.ring.q().get() {
        return Err(PeerError::Exchange(ExchangeFault::UnknownPartition(
            partition,
        )));
    }
    if !shared.ring.is_primary(shared.id(), partition) {
        return Err(PeerError::NotPrimary(partition));
    }
    if !shared.ring.is_primary(from, partition) {
        return Err(PeerError::Exchange(ExchangeFault::SenderNotPrimary(
            partition,
        )));
    }
    Ok(())
}

/// Refuses keys that are not of `partition` in this node's ring.
fn check_keys<'a>(
    shared: &Shared,
    partition: PartitionId,
    keys: impl Iterator<Item = &'a Key>,
) -> Result<(), PeerError> {
    for key in keys {
        let expected = shared.ring.partition_for_key(key);
        if expected != partition {
            return Err(PeerError::WrongPartition {
                expected,
                got: partition,
            });
        }
    }
    Ok(())
}

/// The segments asked, which must be segments of the tree and strictly ascending.
fn segment_ids(segments: &[u16]) -> Result<Vec<SegmentId>, PeerError> {
    let mut out: Vec<SegmentId> = Vec::with_capacity(segments.len());
    for index in segments {
        let segment = SegmentId::new(*index).ok_or(PeerError::Exchange(
            ExchangeFault::SegmentOutOfRange(*index),
        ))?;
        if out.last().is_some_and(|last| *last >= segment) {
            return Err(PeerError::Exchange(ExchangeFault::SegmentsOutOfOrder));
        }
        out.push(segment);
    }
    Ok(out)
}

/// The keys of as many whole segments (from the first asked) as fit in one answer.
fn keys_answer<S: Storage>(
    storage: &S,
    partition: PartitionId,
    segments: &[SegmentId],
) -> Result<ExchangeResponse, PeerError> {
    let mut keys = Vec::new();
    let mut bytes = 0usize;
    let mut answered = 0u32;
    for segment in segments {
        let listed = storage
            .segment_keys(partition, *segment)
            .map_err(tree_unreadable)?;
        if listed.len() > MAX_EXCHANGE_KEYS {
            if answered > 0 {
                break;
            }
            return Err(PeerError::Exchange(ExchangeFault::SegmentTooLarge {
                segment: segment.index(),
                keys: listed.len() as u64,
            }));
        }
        // A key and its 16-byte digest, with their framing.
        let size: usize = listed.iter().map(|(k, _)| k.len() + 20).sum();
        if answered > 0
            && (keys.len() + listed.len() > MAX_EXCHANGE_KEYS || bytes + size > KEYS_REPLY_BYTES)
        {
            break;
        }
        bytes += size;
        answered += 1;
        keys.extend(listed.into_iter().map(|(k, d)| (k, d.to_bytes())));
    }
    Ok(ExchangeResponse::Keys { answered, keys })
}

/// The durable replicas of as many keys (from the first asked) as fit in one answer.
fn fetch_answer<S: Storage>(
    shared: &mut Shared,
    durability: &Durability<S>,
    partition: PartitionId,
    keys: Vec<Key>,
) -> ExchangeResponse {
    let max_object = shared.config.limits.max_object_bytes();
    let mut objects = Vec::new();
    let mut bytes = 0usize;
    for key in keys {
        let read = durability.durable_read(&mut shared.metrics, partition, &key);
        let read = sendable(read, max_object);
        let size = match &read {
            LocalRead::Found(o) => o.value_bytes(),
            _ => 0,
        };
        if !objects.is_empty() && bytes + size > REPAIR_BATCH_BYTES {
            break;
        }
        bytes += size;
        objects.push((key, read));
    }
    ExchangeResponse::Fetched(objects)
}

/// What a peer is told when a tree or a key list cannot be read: "not yet" while the trees
/// are being built after a start, a storage fault otherwise.
fn tree_unreadable(error: ReadError) -> PeerError {
    match error {
        ReadError::TreesNotReady { .. } => PeerError::Exchange(ExchangeFault::TreesNotReady),
        ReadError::Engine(_) => PeerError::Storage(StorageFault::Unreadable),
    }
}

/// Answers a push once its last object is durable (or one failed).
fn finish(shared: &mut Shared, (id, outcome): Received) {
    match outcome {
        Ok(()) => reply(shared, id, ExchangeResponse::Pushed),
        Err(error) => shared.refuse(id, error),
    }
}

fn reply(shared: &mut Shared, id: InboundId, response: ExchangeResponse) {
    shared.reply(id, Response::Peer(PeerResponse::Exchange(response)));
}

/// Refuses a message that broke a check (counted: a peer that sends them is misbehaving).
fn refused(shared: &mut Shared, id: InboundId, error: PeerError) {
    if !matches!(
        error,
        PeerError::Storage(_) | PeerError::Exchange(ExchangeFault::TreesNotReady)
    ) {
        shared.metrics.exchanges_refused += 1;
    }
    shared.refuse(id, error);
}
