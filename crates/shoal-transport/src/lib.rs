//! Shoal's network layer: one QUIC endpoint per process on one UDP port (ALPN `shoal/1`), mutual
//! TLS against the cluster CA and nothing else, certificates made and loaded with rcgen
//! (Ed25519), a connection cache, and framed request/response: each request is one
//! bidirectional stream carrying one request frame and one response frame.
//!
//! A frame is a u32 big-endian length and that many bytes. The length is checked against
//! `max_frame_bytes` before anything is allocated; a bad frame resets its stream with
//! [`ResetCode::BadFrame`], and a connection that keeps sending them is closed. Nothing a peer
//! sends can panic the process.
//!
//! Every certificate names a role and a name (`<name>.<role>.shoal`); [`PeerIdentity`] is what
//! a verified peer certificate says, and comes with every [`IncomingRequest`]. What each role may
//! ask for is the server's decision: this crate authenticates, it does not authorise.
//!
//! Deliberately not here: message types and their encoding (`shoal-protocol`), quorums, retries
//! and routing (`shoal-coordinator`, `shoal-client`). Frames are opaque [`bytes::Bytes`].
//!
//! Main types: [`Endpoint`] (with [`Endpoint::server`], [`Endpoint::client`],
//! [`Endpoint::request`], [`Endpoint::close`]), [`Incoming`] and [`IncomingRequest`],
//! [`TransportConfig`], [`ExpectedPeer`], [`PeerIdentity`], [`Role`], [`Identity`] and the
//! [`certs`] functions [`certs::init_ca`] and [`certs::issue`], [`TransportError`].

pub mod certs;
mod config;
mod der;
mod endpoint;
mod error;
mod frame;
mod liveness;
mod peer;
mod tls;

#[cfg(test)]
mod tests;

pub use certs::{CertFiles, Identity, IfExists};
pub use config::TransportConfig;
pub use endpoint::{Endpoint, Incoming, IncomingRequest, Priority, Responder, TransportStats};
pub use error::{CertError, TransportError};
pub use frame::{CloseCode, FrameError, ResetCode};
pub use peer::{ExpectedPeer, PeerIdentity};
pub use shoal_types::Role;
