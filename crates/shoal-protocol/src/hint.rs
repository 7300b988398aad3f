//! Hinted handoff on the wire: how a fallback is asked to hold a write for a primary that is
//! down, how a read asks a fallback for what it holds, and how the holder hands its hints back
//! once the primary is reachable again (Dynamo §4.6).
//!
//! Every object here already carries its dots: a fallback merges what it is given into the
//! hint it holds, and a primary merges what is handed off into its replica. Nothing here makes
//! a dot, so replaying a hint twice, or after the primary learned the write another way, adds
//! nothing (DVV merge is idempotent).
//!
//! Not here: when to stand in, when to replay, bounds on what is held (`shoal-coordinator`'s
//! `hints` part).

use serde::{Deserialize, Serialize};
use shoal_causality::Object;
use shoal_types::{Key, NodeId, PartitionId};

use crate::LocalRead;

/// The most objects one [`HintMessage::Handoff`] may carry; more is refused when decoded.
pub const MAX_HANDOFF_OBJECTS: usize = 256;

/// A hinted-handoff message: answered with [`HintResponse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HintMessage {
    /// To a fallback: hold `object` for `primary` (merged into any hint already held for the
    /// key), durably, then answer [`HintResponse::Stored`].
    Store {
        /// The primary the fallback stands in for.
        primary: NodeId,
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
        /// The coordinator's object after its update.
        object: Object,
    },
    /// To a fallback: send the hint you hold for `primary` of this key
    /// ([`HintResponse::Held`]; `NotFound` when you hold none).
    Read {
        /// The primary the fallback stands in for.
        primary: NodeId,
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        key: Key,
    },
    /// To a primary, from a node holding hints for it: merge these objects into your replicas,
    /// durably, then answer [`HintResponse::HandedOff`]. At most [`MAX_HANDOFF_OBJECTS`].
    Handoff {
        /// The objects, each with its key.
        objects: Vec<HandedOff>,
    },
}

/// One object of a [`HintMessage::Handoff`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandedOff {
    /// The key's partition.
    pub partition: PartitionId,
    /// The key.
    pub key: Key,
    /// The object the holder kept for the receiver.
    pub object: Object,
}

/// A node's answer to a [`HintMessage`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HintResponse {
    /// Answer to `Store`: the hint is merged and durable.
    Stored,
    /// Answer to `Read`: the hint held for the key.
    Held(LocalRead),
    /// Answer to `Handoff`: every object is merged into the receiver's replicas and durable.
    HandedOff,
}
