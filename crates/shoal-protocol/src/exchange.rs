//! Anti-entropy on the wire: how one replica of a partition asks another for the levels of its
//! tictac tree (root, branches, segment hashes), for the keys of some segments with their
//! object digests, for objects (a pull), and how it hands objects over (a push)
//! (`../shared/DESIGN.md` §7).
//!
//! Every answer describes the answering replica's *durable* data, as its tree does. Every
//! object here already carries its dots: the receiver of a push, and the asker of a fetch,
//! merge it into their replica with the DVV merge, so shipping an object twice, or one the
//! receiver already holds, adds nothing.
//!
//! Hashes and digests travel as their 16 bytes, and segments as their index below
//! [`TREE_SEGMENTS`] (the tree and digest types are `shoal-storage`'s, which this crate does
//! not depend on): the codec checks every index after decoding, and caps every list
//! ([`MAX_EXCHANGE_SEGMENTS`], [`MAX_EXCHANGE_KEYS`], [`MAX_EXCHANGE_OBJECTS`],
//! [`MAX_EXCHANGE_BYTES`]).
//!
//! Not here: which replicas compare when, the exchange's rounds and checks, what a receiver
//! refuses (`shoal-coordinator`'s `anti_entropy` part).

use serde::{Deserialize, Serialize};
use shoal_causality::Object;
use shoal_types::{Key, PartitionId};

use crate::LocalRead;

/// A hash of a tictac tree (root, branch or segment), or an object digest: 16 bytes.
pub type TreeHash = [u8; 16];

/// Segments in a partition's tree (`shoal-storage`'s `TictacTree::SEGMENTS`; the coordinator
/// checks at compile time that the two agree). A segment index on the wire is below it.
pub const TREE_SEGMENTS: usize = 1024;

/// The most segments one [`ExchangeMessage::Segments`] or [`ExchangeMessage::Keys`] may name,
/// and the most hashes one answer may carry: every segment of the tree, once.
pub const MAX_EXCHANGE_SEGMENTS: usize = TREE_SEGMENTS;

/// The most keys one [`ExchangeResponse::Keys`] may list. A replica answers the keys of as
/// many whole segments as fit (a segment of a partition of 1,000,000 keys holds about 1,000),
/// and the asker asks again for the rest.
pub const MAX_EXCHANGE_KEYS: usize = 1 << 16;

/// The most keys one [`ExchangeMessage::Fetch`] may name, and the most objects one
/// [`ExchangeMessage::Push`] or [`ExchangeResponse::Fetched`] may carry (as a hint handoff).
pub const MAX_EXCHANGE_OBJECTS: usize = 256;

/// The most value bytes one [`ExchangeMessage::Push`] or [`ExchangeResponse::Fetched`] may
/// carry. Senders fill a batch to a fraction of this, or send one object alone, which is at
/// most `Limits::max_object_bytes` (15 MiB by default).
pub const MAX_EXCHANGE_BYTES: usize = 32 * 1024 * 1024;

/// An anti-entropy message from one primary of a partition to another: answered with
/// [`ExchangeResponse`] (the variant of the same name), or refused with a `PeerError`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExchangeMessage {
    /// Your root hash of `partition` ([`ExchangeResponse::Root`]). Carries the asker's own
    /// root, so that the receiver also learns whether the pair matched.
    Root {
        /// The partition compared.
        partition: PartitionId,
        /// The asker's root hash of it.
        root: TreeHash,
    },
    /// Your branch hashes of `partition`, in branch order ([`ExchangeResponse::Branches`]).
    Branches {
        /// The partition compared.
        partition: PartitionId,
    },
    /// Your hashes of these segments of `partition`, strictly ascending
    /// ([`ExchangeResponse::Segments`]).
    Segments {
        /// The partition compared.
        partition: PartitionId,
        /// Segment indices, below [`TREE_SEGMENTS`]; at most [`MAX_EXCHANGE_SEGMENTS`].
        segments: Vec<u16>,
    },
    /// Every key of these segments of `partition`, strictly ascending, with its object digest
    /// ([`ExchangeResponse::Keys`], which may cover only the first few).
    Keys {
        /// The partition compared.
        partition: PartitionId,
        /// Segment indices, below [`TREE_SEGMENTS`]; at most [`MAX_EXCHANGE_SEGMENTS`].
        segments: Vec<u16>,
    },
    /// Your objects of these keys of `partition` ([`ExchangeResponse::Fetched`], which may
    /// answer only the first few): a pull.
    Fetch {
        /// The keys' partition.
        partition: PartitionId,
        /// At most [`MAX_EXCHANGE_OBJECTS`] keys.
        keys: Vec<Key>,
    },
    /// Merge these objects of `partition` into your replicas, durably, then answer
    /// [`ExchangeResponse::Pushed`]: a push.
    Push {
        /// The keys' partition.
        partition: PartitionId,
        /// At most [`MAX_EXCHANGE_OBJECTS`] objects, of at most [`MAX_EXCHANGE_BYTES`] value
        /// bytes in all.
        objects: Vec<KeyObject>,
    },
}

/// One object of a push, with its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyObject {
    /// The key.
    pub key: Key,
    /// The sender's durable object of it.
    pub object: Object,
}

/// A replica's answer to an [`ExchangeMessage`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExchangeResponse {
    /// Answer to `Root`: the root hash.
    Root(TreeHash),
    /// Answer to `Branches`: every branch hash, in order.
    Branches(Vec<TreeHash>),
    /// Answer to `Segments`: one hash per segment asked, in the order asked.
    Segments(Vec<(u16, TreeHash)>),
    /// Answer to `Keys`: the keys of the first `answered` segments asked (at least one, in the
    /// order asked; each segment whole), in (segment, key) order, each with its object digest.
    /// The asker asks again for the segments after them.
    Keys {
        /// How many of the segments asked, from the first, these keys cover.
        answered: u32,
        /// At most [`MAX_EXCHANGE_KEYS`] keys with their digests.
        keys: Vec<(Key, TreeHash)>,
    },
    /// Answer to `Fetch`: the replicas of the first few keys asked (at least one), in the order
    /// asked; the asker asks again for the rest.
    Fetched(Vec<(Key, LocalRead)>),
    /// Answer to `Push`: every object is merged into the receiver's replicas and durable.
    Pushed,
}

impl ExchangeMessage {
    /// The partition the message is about.
    pub fn partition(&self) -> PartitionId {
        match self {
            ExchangeMessage::Root { partition, .. }
            | ExchangeMessage::Branches { partition }
            | ExchangeMessage::Segments { partition, .. }
            | ExchangeMessage::Keys { partition, .. }
            | ExchangeMessage::Fetch { partition, .. }
            | ExchangeMessage::Push { partition, .. } => *partition,
        }
    }
}
