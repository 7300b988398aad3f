use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_causality::{CausalContext, Object};
use shoal_ring::Ring;
use shoal_types::Limits;
use thiserror::Error;

use crate::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, ExchangeMessage, ExchangeResponse,
    GossipMessage, HintMessage, HintResponse, LocalRead, MAX_EXCHANGE_BYTES, MAX_EXCHANGE_KEYS,
    MAX_EXCHANGE_OBJECTS, MAX_EXCHANGE_SEGMENTS, MAX_HANDOFF_OBJECTS, NodeStatus, PeerMessage,
    PeerRequest, PeerResponse, ReplicaMessage, ReplicaResponse, Request, RequestError, Response,
    TREE_SEGMENTS,
};

/// The version byte every frame body starts with. Bumped on any incompatible change (3: causal
/// contexts carry listed dots beside their vector, and `RequestError::InvalidContext`; 4:
/// membership gossip, and the admin status reports every member; 5: hinted handoff and
/// `RequestError::PrimariesUnavailable`; 6: anti-entropy exchanges, `PeerError::Exchange`, and
/// the admin status reports each partition's divergence; 7: tombstone reaping,
/// `PeerMessage::Reap`).
pub const PROTOCOL_VERSION: u8 = 7;

/// How deeply nested a decoded message may be. Shoal's deepest message nests about a dozen
/// levels; anything deeper is hostile.
pub const MAX_DECODE_DEPTH: usize = 32;

/// What a frame needs beyond an object's value bytes to carry it: the envelope of the largest
/// message that carries one (a `Replicate`, a `Read` answer), the key (up to `Key::MAX_LEN`),
/// and the object's dots and version vector at the decode caps ([`DecodeLimits`]), about
/// 175 KiB at worst. A frame of `Limits::max_object_bytes` plus this carries any object a
/// coordinator makes; `tests/codec.rs` checks the worst case.
pub const OBJECT_OVERHEAD_BYTES: usize = 1024 * 1024;

/// Why bytes could not be turned into a message, or a message into bytes.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The body is empty: not even a version byte.
    #[error("empty frame body")]
    Empty,
    /// The body was made by a protocol version this node does not speak.
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The body is not a valid message (includes invariant violations of decoded types).
    #[error("malformed message: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
    /// Another value followed the message in the same frame.
    #[error("trailing data after the message")]
    TrailingBytes,
    /// The message decoded but breaks a size cap.
    #[error("message exceeds a limit: {0}")]
    OverLimit(String),
    /// Encoding failed (a bug: every Shoal message is encodable).
    #[error("could not encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Caps checked on every decoded message, beyond what the types check themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most siblings in one object.
    pub max_siblings: usize,
    /// Most entries in one version vector, or in one context (vector entries plus listed dots).
    pub max_vector_entries: usize,
    /// Most members in one ring.
    pub max_members: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_value_bytes: Limits::HARD_MAX_VALUE_BYTES,
            max_siblings: Limits::HARD_MAX_SIBLINGS,
            max_vector_entries: 256,
            max_members: 1024,
        }
    }
}

/// Encodes a message as a frame body: the version byte, then rmp-serde.
pub fn encode<T: Serialize>(message: &T) -> Result<Bytes, CodecError> {
    encode_sized(message, 0)
}

/// Like [`encode`], reserving room for `payload` bytes of values up front so that a large
/// message is not regrown while it is written.
pub fn encode_sized<T: Serialize>(message: &T, payload: usize) -> Result<Bytes, CodecError> {
    let mut out = Vec::with_capacity(256 + payload);
    out.push(PROTOCOL_VERSION);
    rmp_serde::encode::write(&mut out, message)?;
    Ok(Bytes::from(out))
}

/// Decodes a frame body, with bounded depth, then checks the caps.
pub fn decode<T: DeserializeOwned + Checked>(
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<T, CodecError> {
    let (&version, rest) = body.split_first().ok_or(CodecError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(rest);
    de.set_max_depth(MAX_DECODE_DEPTH);
    let message = T::deserialize(&mut de)?;
    // Anything decodable after the message means the frame carried more than one value.
    if serde::de::IgnoredAny::deserialize(&mut de).is_ok() {
        return Err(CodecError::TrailingBytes);
    }
    message.check(limits)?;
    Ok(message)
}

/// A decoded message that can check the caps of [`DecodeLimits`].
pub trait Checked {
    /// Ok when every size in the message is within `limits`.
    fn check(&self, limits: &DecodeLimits) -> Result<(), CodecError>;
}

impl Checked for Request {
    fn check(&self, limits: &DecodeLimits) -> Result<(), CodecError> {
        match self {
            Request::Client(c) => check_client_request(c, limits),
            Request::Peer(r) => check_peer_request(r, limits),
            // A status ask carries nothing; a repair ask one partition and one node id, whose
            // sizes their own decoders bound (the node checks the partition against its ring).
            Request::Admin(AdminRequest::Status | AdminRequest::Repair { .. }) => Ok(()),
        }
    }
}

impl Checked for Response {
    fn check(&self, limits: &DecodeLimits) -> Result<(), CodecError> {
        match self {
            Response::Client(c) => check_client_response(c, limits),
            Response::Peer(r) => match r {
                PeerResponse::Coordinated(c) => check_client_response(c, limits),
                PeerResponse::Replica(ReplicaResponse::Replica(l)) => check_local(l, limits),
                PeerResponse::Gossip(Some(g)) => check_gossip(g, limits),
                PeerResponse::Hint(HintResponse::Held(l)) => check_local(l, limits),
                PeerResponse::Exchange(e) => check_exchange_response(e, limits),
                PeerResponse::Reap(_) => Ok(()),
                PeerResponse::Hint(HintResponse::Stored | HintResponse::HandedOff)
                | PeerResponse::Replica(ReplicaResponse::Stored)
                | PeerResponse::Gossip(None)
                | PeerResponse::Pong
                | PeerResponse::Failed(_) => Ok(()),
            },
            Response::Admin(AdminResponse::Status(s)) => check_status(s, limits),
            Response::Admin(AdminResponse::Repairing { .. } | AdminResponse::RepairRefused(_)) => {
                Ok(())
            }
            Response::Refused(_) => Ok(()),
        }
    }
}

fn check_client_request(c: &ClientRequest, limits: &DecodeLimits) -> Result<(), CodecError> {
    match c {
        ClientRequest::Put { value, context, .. } => {
            check_value(value.len(), limits)?;
            check_context(context, limits)
        }
        ClientRequest::Delete { context, .. } => check_context(context, limits),
        ClientRequest::Get { .. } | ClientRequest::GetLocal { .. } | ClientRequest::Ring => Ok(()),
    }
}

fn check_peer_request(r: &PeerRequest, limits: &DecodeLimits) -> Result<(), CodecError> {
    match &r.message {
        PeerMessage::Coordinate(c) => check_client_request(c, limits),
        PeerMessage::Replica(
            ReplicaMessage::Replicate { object, .. } | ReplicaMessage::Repair { object, .. },
        ) => check_object(object, limits),
        PeerMessage::Gossip(g) => check_gossip(g, limits),
        PeerMessage::Hint(HintMessage::Store { object, .. }) => check_object(object, limits),
        PeerMessage::Hint(HintMessage::Handoff { objects }) => {
            if objects.len() > MAX_HANDOFF_OBJECTS {
                return Err(CodecError::OverLimit(format!(
                    "handoff of {} objects, the limit is {MAX_HANDOFF_OBJECTS}",
                    objects.len()
                )));
            }
            objects
                .iter()
                .try_for_each(|o| check_object(&o.object, limits))
        }
        PeerMessage::Exchange(e) => check_exchange_message(e, limits),
        PeerMessage::Reap(r) => check_context(&r.context, limits),
        PeerMessage::Replica(ReplicaMessage::Read { .. })
        | PeerMessage::Hint(HintMessage::Read { .. })
        | PeerMessage::Ping => Ok(()),
    }
}

fn check_exchange_message(m: &ExchangeMessage, limits: &DecodeLimits) -> Result<(), CodecError> {
    match m {
        ExchangeMessage::Root { .. } | ExchangeMessage::Branches { .. } => Ok(()),
        ExchangeMessage::Segments { segments, .. } | ExchangeMessage::Keys { segments, .. } => {
            check_count("segments asked", segments.len(), MAX_EXCHANGE_SEGMENTS)?;
            segments.iter().try_for_each(|s| check_segment(*s))
        }
        ExchangeMessage::Fetch { keys, .. } => {
            check_count("keys fetched", keys.len(), MAX_EXCHANGE_OBJECTS)
        }
        ExchangeMessage::Push { objects, .. } => {
            check_count("objects pushed", objects.len(), MAX_EXCHANGE_OBJECTS)?;
            let bytes = objects.iter().map(|o| o.object.value_bytes()).sum();
            check_count("value bytes pushed", bytes, MAX_EXCHANGE_BYTES)?;
            objects
                .iter()
                .try_for_each(|o| check_object(&o.object, limits))
        }
    }
}

fn check_exchange_response(r: &ExchangeResponse, limits: &DecodeLimits) -> Result<(), CodecError> {
    match r {
        ExchangeResponse::Root(_) | ExchangeResponse::Pushed => Ok(()),
        ExchangeResponse::Branches(hashes) => {
            check_count("branch hashes", hashes.len(), MAX_EXCHANGE_SEGMENTS)
        }
        ExchangeResponse::Segments(hashes) => {
            check_count("segment hashes", hashes.len(), MAX_EXCHANGE_SEGMENTS)?;
            hashes.iter().try_for_each(|(s, _)| check_segment(*s))
        }
        ExchangeResponse::Keys { keys, .. } => {
            check_count("keys listed", keys.len(), MAX_EXCHANGE_KEYS)
        }
        ExchangeResponse::Fetched(objects) => {
            check_count("objects fetched", objects.len(), MAX_EXCHANGE_OBJECTS)?;
            let bytes = objects
                .iter()
                .map(|(_, l)| match l {
                    LocalRead::Found(o) => o.value_bytes(),
                    _ => 0,
                })
                .sum();
            check_count("value bytes fetched", bytes, MAX_EXCHANGE_BYTES)?;
            objects.iter().try_for_each(|(_, l)| check_local(l, limits))
        }
    }
}

/// Refuses `count` of `what` over `max`.
fn check_count(what: &str, count: usize, max: usize) -> Result<(), CodecError> {
    if count > max {
        return Err(CodecError::OverLimit(format!(
            "{count} {what}, the limit is {max}"
        )));
    }
    Ok(())
}

fn check_segment(index: u16) -> Result<(), CodecError> {
    if usize::from(index) >= TREE_SEGMENTS {
        return Err(CodecError::OverLimit(format!(
            "segment {index}, a tree has {TREE_SEGMENTS}"
        )));
    }
    Ok(())
}

fn check_client_response(c: &ClientResponse, limits: &DecodeLimits) -> Result<(), CodecError> {
    match c {
        ClientResponse::Read { values, context } => {
            if values.len() > limits.max_siblings {
                return Err(CodecError::OverLimit(format!(
                    "{} values, the limit is {}",
                    values.len(),
                    limits.max_siblings
                )));
            }
            for v in values {
                check_value(v.len(), limits)?;
            }
            check_context(context, limits)
        }
        ClientResponse::Written { context } => check_context(context, limits),
        ClientResponse::Local(l) => check_local(l, limits),
        ClientResponse::Ring(ring) => check_ring(ring, limits),
        ClientResponse::Failed(RequestError::ReadTooLarge { context, .. }) => {
            check_context(context, limits)
        }
        ClientResponse::Failed(RequestError::PrimariesUnavailable { missing, .. })
            if missing.len() > limits.max_members =>
        {
            Err(CodecError::OverLimit(format!(
                "{} missing primaries named, the limit is {}",
                missing.len(),
                limits.max_members
            )))
        }
        ClientResponse::Failed(_) => Ok(()),
    }
}

fn check_local(l: &LocalRead, limits: &DecodeLimits) -> Result<(), CodecError> {
    match l {
        LocalRead::Found(o) => check_object(o, limits),
        LocalRead::TooLarge { context, .. } => check_context(context, limits),
        LocalRead::NotFound | LocalRead::Corrupted => Ok(()),
    }
}

fn check_object(o: &Object, limits: &DecodeLimits) -> Result<(), CodecError> {
    if o.siblings().len() > limits.max_siblings {
        return Err(CodecError::OverLimit(format!(
            "object with {} siblings, the limit is {}",
            o.siblings().len(),
            limits.max_siblings
        )));
    }
    if o.version_vector().len() > limits.max_vector_entries {
        return Err(CodecError::OverLimit(format!(
            "version vector of {} entries, the limit is {}",
            o.version_vector().len(),
            limits.max_vector_entries
        )));
    }
    for (_, s) in o.siblings() {
        check_value(s.len(), limits)?;
    }
    Ok(())
}

fn check_context(c: &CausalContext, limits: &DecodeLimits) -> Result<(), CodecError> {
    if c.len() > limits.max_vector_entries {
        return Err(CodecError::OverLimit(format!(
            "causal context of {} entries, the limit is {}",
            c.len(),
            limits.max_vector_entries
        )));
    }
    Ok(())
}

fn check_value(len: usize, limits: &DecodeLimits) -> Result<(), CodecError> {
    if len > limits.max_value_bytes {
        return Err(CodecError::OverLimit(format!(
            "value of {len} bytes, the limit is {}",
            limits.max_value_bytes
        )));
    }
    Ok(())
}

fn check_gossip(g: &GossipMessage, limits: &DecodeLimits) -> Result<(), CodecError> {
    if g.longest_list() > limits.max_members {
        return Err(CodecError::OverLimit(format!(
            "gossip listing {} members, the limit is {}",
            g.longest_list(),
            limits.max_members
        )));
    }
    Ok(())
}

fn check_status(s: &NodeStatus, limits: &DecodeLimits) -> Result<(), CodecError> {
    check_ring(&s.ring, limits)?;
    check_count(
        "partitions of divergence",
        s.divergence.len(),
        shoal_types::PartitionCount::MAX as usize,
    )?;
    s.divergence
        .iter()
        .try_for_each(|d| check_count("peers of a partition", d.peers.len(), limits.max_members))
}

fn check_ring(ring: &Ring, limits: &DecodeLimits) -> Result<(), CodecError> {
    if ring.members().len() > limits.max_members {
        return Err(CodecError::OverLimit(format!(
            "ring of {} members, the limit is {}",
            ring.members().len(),
            limits.max_members
        )));
    }
    Ok(())
}
