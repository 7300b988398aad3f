use std::fmt;
use std::net::SocketAddr;

use shoal_protocol::{CodecError, Refusal, RequestError};
use shoal_transport::{CertError, TransportError};
use shoal_types::TypesError;
use thiserror::Error;

use crate::token::TokenError;

/// Why a call failed.
///
/// A node's own answer is [`ClientError::Request`], the node's [`RequestError`] as it sent it;
/// the other variants are what only a client can see: refusals, transport failures, unreachable
/// clusters, bad tokens. Use [`ClientError::is_indeterminate`] before retrying a write: an
/// indeterminate write may have been applied (invariant I6), a definite one was applied nowhere.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The node that coordinated the request answered with a failure (or refused it as
    /// overloaded before any work); [`RequestError`] says which failures are definite.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Definite: the certificate's role may not send this request (e.g. a client certificate
    /// asking for cluster status).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Definite: the node refused the request before processing it (bad request, shutting down).
    #[error("refused by {addr}: {refusal}")]
    Refused {
        /// The refusing node.
        addr: SocketAddr,
        /// Its reason.
        refusal: Refusal,
    },
    /// The request to one node failed in the network. Indeterminate when the request may have
    /// reached the node ([`TransportError::may_have_reached_peer`]); such a write is not retried.
    #[error("request to {addr} failed: {source}")]
    Transport {
        /// The node.
        addr: SocketAddr,
        /// What the transport said.
        #[source]
        source: TransportError,
    },
    /// Definite: every node tried refused the TLS handshake, or presented a certificate this
    /// client does not trust — certificates from another cluster's CA, most likely. Nothing was
    /// sent; trying again will not help until the certificates are fixed.
    #[error(
        "every node tried refused the handshake (tried {}): {reason}; check that the certificates come from this cluster's CA",
        Tried(tried)
    )]
    HandshakeRefused {
        /// Every address tried, in order.
        tried: Vec<SocketAddr>,
        /// What the last refusal said.
        reason: String,
    },
    /// Definite: no node could be reached; nothing was sent anywhere.
    #[error("no node reachable (tried {}){}", Tried(tried), last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    NoNodeReachable {
        /// Every address tried, in order.
        tried: Vec<SocketAddr>,
        /// What went wrong with the last one, if anything was tried.
        last_error: Option<String>,
    },
    /// A node answered with something this client cannot use. The request reached the node, so
    /// a write's outcome is unknown.
    #[error("protocol error from {addr}: {source}")]
    Protocol {
        /// The node.
        addr: SocketAddr,
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },
    /// Definite: the client's certificate or key could not be loaded or checked.
    #[error("certificates: {0}")]
    Certificates(#[source] CertError),
    /// Definite: the client's endpoint could not be built (configuration, socket, runtime).
    #[error("client endpoint: {0}")]
    Endpoint(#[source] TransportError),
    /// Definite: the configuration cannot work (no node addresses, a node certificate).
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// Definite: the key is empty or longer than any Shoal key may be.
    #[error("invalid key: {0}")]
    InvalidKey(#[source] TypesError),
    /// Definite: a context token is not one this client made (or one an older client made).
    #[error("invalid context token: {0}")]
    InvalidContextToken(TokenError),
}

impl ClientError {
    /// Whether a write that failed with this error may nevertheless have been applied. `false`
    /// means it was applied nowhere and may be retried as is.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            ClientError::Request(e) => e.is_indeterminate(),
            ClientError::Protocol { .. } => true,
            ClientError::Transport { source, .. } => source.may_have_reached_peer(),
            ClientError::Unauthorized(_)
            | ClientError::Refused { .. }
            | ClientError::NoNodeReachable { .. }
            | ClientError::HandshakeRefused { .. }
            | ClientError::Certificates(_)
            | ClientError::Endpoint(_)
            | ClientError::InvalidConfig(_)
            | ClientError::InvalidKey(_)
            | ClientError::InvalidContextToken(_) => false,
        }
    }

    /// A stable snake_case name of the variant, for machine-readable output (`--json` errors,
    /// benchmark error counts).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Request(e) => e.kind(),
            ClientError::Unauthorized(_) => "unauthorized",
            ClientError::Refused { .. } => "refused",
            ClientError::Transport { .. } => "transport",
            ClientError::NoNodeReachable { .. } => "no_node_reachable",
            ClientError::HandshakeRefused { .. } => "handshake_refused",
            ClientError::Protocol { .. } => "protocol",
            ClientError::Certificates(_) => "certificates",
            ClientError::Endpoint(_) => "endpoint",
            ClientError::InvalidConfig(_) => "invalid_config",
            ClientError::InvalidKey(_) => "invalid_key",
            ClientError::InvalidContextToken(_) => "invalid_context_token",
        }
    }

    /// Whether the cluster could not complete the request now, so a later retry may succeed:
    /// quorum, timeout, reachability and load failures.
    pub fn is_availability(&self) -> bool {
        matches!(
            self,
            ClientError::Request(
                RequestError::Unavailable { .. }
                    | RequestError::PrimariesUnavailable { .. }
                    | RequestError::QuorumFailed { .. }
                    | RequestError::Timeout { .. }
                    | RequestError::Overloaded
                    | RequestError::NodeFailed(_)
            ) | ClientError::Transport { .. }
                | ClientError::NoNodeReachable { .. }
        )
    }

    /// The error a refusal from `addr` becomes.
    pub(crate) fn from_refusal(addr: SocketAddr, refusal: Refusal) -> ClientError {
        match refusal {
            Refusal::Unauthorized { .. }
            | Refusal::WrongSender { .. }
            | Refusal::NotAMember { .. }
            | Refusal::WrongEpoch { .. } => ClientError::Unauthorized(refusal.to_string()),
            Refusal::Overloaded => ClientError::Request(RequestError::Overloaded),
            Refusal::BadRequest(_) | Refusal::ShuttingDown => {
                ClientError::Refused { addr, refusal }
            }
        }
    }

    /// The error a transport failure to `addr` becomes: local failures say so, network
    /// failures name the node.
    pub(crate) fn from_transport(addr: SocketAddr, source: TransportError) -> ClientError {
        match source {
            TransportError::Cert(e) => ClientError::Certificates(e),
            source => ClientError::Transport { addr, source },
        }
    }
}

/// What was wrong with a node's answer.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The response frame did not decode.
    #[error("undecodable response: {0}")]
    Codec(#[from] CodecError),
    /// The response decoded but does not answer the request sent.
    #[error("unexpected response to a {request} request: {response}")]
    UnexpectedResponse {
        /// The operation asked for.
        request: &'static str,
        /// A short description of what came back.
        response: String,
    },
}

/// Formats a list of addresses as `a, b, c`.
struct Tried<'a>(&'a [SocketAddr]);

impl fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_error_keeps_its_words_kind_and_certainty() {
        let cases = [
            (
                RequestError::Unavailable {
                    required: 2,
                    alive: 1,
                },
                "Unavailable { required: 2, alive: 1 }",
            ),
            (
                RequestError::QuorumFailed {
                    required: 2,
                    answered: 1,
                },
                "QuorumFailed { required: 2, answered: 1 }",
            ),
            (
                RequestError::Timeout {
                    required: 2,
                    answered: 0,
                },
                "Timeout { required: 2, answered: 0 }",
            ),
            (
                RequestError::TooManySiblings {
                    siblings: 65,
                    max: 64,
                },
                "TooManySiblings { siblings: 65, max: 64 }",
            ),
            (
                RequestError::ValueTooLarge { size: 9, max: 8 },
                "ValueTooLarge { size: 9, max: 8 }",
            ),
            (
                RequestError::KeyTooLarge { size: 9, max: 8 },
                "KeyTooLarge { size: 9, max: 8 }",
            ),
            (
                RequestError::InvalidQuorum(shoal_types::QuorumError::ReadOutOfRange {
                    r: 4,
                    n: 3,
                }),
                "InvalidQuorum(ReadOutOfRange { r: 4, n: 3 })",
            ),
            (
                RequestError::InvalidContext(shoal_protocol::ContextError::Unissued {
                    counter: 9,
                    issued: 2,
                }),
                "InvalidContext(Unissued { counter: 9, issued: 2 })",
            ),
            (RequestError::Overloaded, "Overloaded"),
            (
                RequestError::NodeFailed("disk".into()),
                "NodeFailed(\"disk\")",
            ),
        ];
        for (request_error, expected) in cases {
            let indeterminate = request_error.is_indeterminate();
            let (message, kind) = (request_error.to_string(), request_error.kind());
            let client_error = ClientError::from(request_error);
            assert_eq!(format!("{client_error:?}"), format!("Request({expected})"));
            assert_eq!(client_error.is_indeterminate(), indeterminate, "{expected}");
            assert_eq!(client_error.to_string(), message, "same words as the node");
            assert_eq!(client_error.kind(), kind, "same name as the node's metrics");
        }
    }

    #[test]
    fn refusals_are_definite_and_unauthorized_is_named() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let unauthorized = ClientError::from_refusal(
            addr,
            Refusal::Unauthorized {
                required: "admin".into(),
                role: shoal_protocol::Role::Client,
            },
        );
        assert!(matches!(unauthorized, ClientError::Unauthorized(_)));
        assert!(!unauthorized.is_indeterminate());
        let overloaded = ClientError::from_refusal(addr, Refusal::Overloaded);
        assert!(matches!(
            overloaded,
            ClientError::Request(RequestError::Overloaded)
        ));
        let closing = ClientError::from_refusal(addr, Refusal::ShuttingDown);
        assert!(matches!(closing, ClientError::Refused { .. }));
        assert!(!closing.is_indeterminate());
    }

    #[test]
    fn transport_errors_are_indeterminate_only_when_the_request_may_have_arrived() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let unreachable = ClientError::from_transport(
            addr,
            TransportError::Unreachable {
                addr,
                reason: "no route".into(),
            },
        );
        assert!(!unreachable.is_indeterminate());
        let lost = ClientError::from_transport(
            addr,
            TransportError::ConnectionLost {
                addr,
                reason: "reset".into(),
            },
        );
        assert!(lost.is_indeterminate());
        let timed_out_unsent = ClientError::from_transport(
            addr,
            TransportError::Timeout {
                addr,
                after: std::time::Duration::from_secs(1),
                sent: false,
            },
        );
        assert!(!timed_out_unsent.is_indeterminate());
    }

    #[test]
    fn no_node_reachable_lists_what_was_tried() {
        let e = ClientError::NoNodeReachable {
            tried: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            last_error: Some("timed out".into()),
        };
        assert_eq!(
            e.to_string(),
            "no node reachable (tried 127.0.0.1:1, 127.0.0.1:2): timed out"
        );
        assert!(e.is_availability() && !e.is_indeterminate());
    }
}
