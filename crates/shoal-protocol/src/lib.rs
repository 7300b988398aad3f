//! Every message that crosses Shoal's wire — client, peer (node-to-node) and admin requests and
//! their responses — and the codec that turns them into frame bodies and back.
//!
//! A frame body is one version byte ([`PROTOCOL_VERSION`]) followed by the rmp-serde encoding
//! of a [`Request`] or [`Response`]. Decoding is bounded three ways: the transport checks the
//! frame length before reading it; the decoder limits nesting depth; after decoding,
//! [`Limits`](DecodeLimits) caps value sizes, siblings, vector entries and ring members, and
//! fixed caps bound every list of a hint handoff or an anti-entropy exchange. Types
//! from `shoal-types` and `shoal-causality` check their own invariants while decoding, so a
//! decoded message is always well formed. Decoding never panics on any input.
//!
//! Who may send what is part of the protocol ([`Request::required_role`]); the server enforces
//! it against the role in the sender's certificate, and checks that a peer message's `from`
//! is the node its certificate names.
//!
//! Not here: framing and sockets (`shoal-transport`), what a node does with a message
//! (`shoal-coordinator`). No I/O, no async.

mod admin;
mod client;
mod codec;
mod exchange;
mod gossip;
mod hint;
mod message;
mod peer;

pub use admin::{
    AdminRequest, AdminResponse, HintQueue, NodeStatus, PairDivergence, PartitionDivergence,
    PeerStatus, RepairRefusal, TreesState,
};
pub use client::{ClientRequest, ClientResponse, ContextError, LocalRead, RequestError};
pub use codec::{
    Checked, CodecError, DecodeLimits, MAX_DECODE_DEPTH, OBJECT_OVERHEAD_BYTES, PROTOCOL_VERSION,
    decode, encode, encode_sized,
};
pub use exchange::{
    ExchangeMessage, ExchangeResponse, KeyObject, MAX_EXCHANGE_BYTES, MAX_EXCHANGE_KEYS,
    MAX_EXCHANGE_OBJECTS, MAX_EXCHANGE_SEGMENTS, TREE_SEGMENTS, TreeHash,
};
pub use gossip::{Delta, DigestEntry, GossipMessage, MemberRecord, MemberStatus};
pub use hint::{HandedOff, HintMessage, HintResponse, MAX_HANDOFF_OBJECTS};
pub use message::{Refusal, Request, Response};
pub use peer::{
    ExchangeFault, PeerError, PeerMessage, PeerRequest, PeerResponse, ReapMessage, ReapResponse,
    ReplicaMessage, ReplicaResponse, StorageFault,
};
pub use shoal_types::Role;
