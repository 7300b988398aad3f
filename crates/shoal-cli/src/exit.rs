//! Exit codes, and how an error becomes one.

use std::fmt;

use anyhow::Error;
use shoal_client::{ClientError, RequestError};

use crate::json::Json;

/// Success.
pub(crate) const OK: u8 = 0;
/// `get` found no value (never written, or deleted).
pub(crate) const NOT_FOUND: u8 = 1;
/// Bad arguments (clap's own code): unknown flags, bad addresses, a malformed context token.
pub(crate) const USAGE: u8 = 2;
/// The cluster could not complete the request now: unavailable, quorum failed, timeout, no node
/// reachable, overloaded, a network failure. For writes, see the message: quorum failures and
/// timeouts leave the outcome unknown.
pub(crate) const UNAVAILABLE: u8 = 3;
/// The cluster refused the request as asked: unauthorized certificate, a refused TLS handshake
/// (certificates from another CA), too large, too many siblings, a context that cannot be
/// honest, invalid quorum, node shutting down.
pub(crate) const REFUSED: u8 = 4;
/// Anything else: certificates, files, a server or dev cluster that failed, protocol errors.
pub(crate) const FAILURE: u8 = 5;

/// The exit-code table shown at the end of `--help`.
pub(crate) const HELP: &str = "\
Exit codes:
  0  success
  1  not found (get: the key holds no value)
  2  usage error (bad arguments, malformed context token)
  3  the cluster could not complete the request now (unavailable, quorum failed, timeout,
     no node reachable, overloaded); a failed write may still have been applied when the
     message says so
  4  refused (unauthorized certificate, a refused TLS handshake, value/key too large, too
     many siblings, an invalid context, invalid quorum, node shutting down)
  5  other errors (certificates, files, server start-up, protocol)

Environment: SHOAL_NODES (comma-separated node addresses) and SHOAL_CERTS (certificate
directory) stand in for --node and --certs; RUST_LOG sets the log filter.";

/// What a successful command found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done; exit 0.
    Done,
    /// A read found nothing; exit 1.
    NotFound,
}

/// An error in how the command was asked, found after parsing (exit 2).
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The exit code of an error.
pub(crate) fn code(error: &Error) -> u8 {
    if let Some(e) = client_error(error) {
        return match e {
            ClientError::InvalidContextToken(_)
            | ClientError::InvalidKey(_)
            | ClientError::InvalidConfig(_) => USAGE,
            e if e.is_availability() => UNAVAILABLE,
            ClientError::Unauthorized(_)
            | ClientError::Refused { .. }
            | ClientError::HandshakeRefused { .. }
            | ClientError::Request(
                RequestError::TooManySiblings { .. }
                | RequestError::ObjectTooLarge { .. }
                | RequestError::ReadTooLarge { .. }
                | RequestError::ValueTooLarge { .. }
                | RequestError::KeyTooLarge { .. }
                | RequestError::InvalidContext(_)
                | RequestError::InvalidQuorum(_),
            ) => REFUSED,
            _ => FAILURE,
        };
    }
    if error.chain().any(|e| e.is::<UsageError>()) {
        return USAGE;
    }
    FAILURE
}

/// Prints `error` (on stderr, and as JSON on stdout when asked) and returns its exit code.
/// `writes` says whether the command was a write, which an indeterminate failure may have
/// applied.
pub(crate) fn report(error: &Error, json: bool, writes: bool) -> u8 {
    let code = code(error);
    eprintln!("error: {error:#}");
    if writes
        && let Some(e) = client_error(error)
        && e.is_indeterminate()
    {
        eprintln!(
            "note: the outcome is unknown: the write may have been applied; read the key to see"
        );
    }
    // The key's object is too large to read: its context still lets it be replaced.
    let context = match client_error(error) {
        Some(ClientError::Request(RequestError::ReadTooLarge { context, .. })) => {
            let token = shoal_client::context_to_token(context);
            eprintln!("context: {token}");
            eprintln!(
                "note: overwrite the key with `put --context TOKEN`, or delete it with \
                 `delete --context TOKEN`"
            );
            Json::string(token)
        }
        _ => Json::Null,
    };
    if json {
        let kind = client_error(error).map_or(
            if code == USAGE { "usage" } else { "other" },
            ClientError::kind,
        );
        let indeterminate = client_error(error).is_some_and(ClientError::is_indeterminate);
        let out = Json::object([(
            "error",
            Json::object([
                ("kind", Json::string(kind)),
                ("message", Json::string(format!("{error:#}"))),
                ("indeterminate", Json::Bool(indeterminate)),
                ("exit_code", Json::Number(u64::from(code))),
                ("context", context),
            ]),
        )]);
        println!("{out}");
    }
    code
}

fn client_error(error: &Error) -> Option<&ClientError> {
    error.chain().find_map(|e| e.downcast_ref::<ClientError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_documented_codes() {
        let cases: Vec<(ClientError, u8)> = vec![
            (
                ClientError::Request(RequestError::Unavailable {
                    required: 2,
                    alive: 1,
                }),
                UNAVAILABLE,
            ),
            (
                ClientError::Request(RequestError::PrimariesUnavailable {
                    required: 3,
                    missing: vec![shoal_types::NodeId::new("n3").unwrap()],
                }),
                UNAVAILABLE,
            ),
            (
                ClientError::Request(RequestError::QuorumFailed {
                    required: 2,
                    answered: 1,
                }),
                UNAVAILABLE,
            ),
            (
                ClientError::Request(RequestError::Timeout {
                    required: 2,
                    answered: 0,
                }),
                UNAVAILABLE,
            ),
            (
                ClientError::NoNodeReachable {
                    tried: vec![],
                    last_error: None,
                },
                UNAVAILABLE,
            ),
            (ClientError::Unauthorized("x".into()), REFUSED),
            (
                ClientError::HandshakeRefused {
                    tried: vec![],
                    reason: "x".into(),
                },
                REFUSED,
            ),
            (
                ClientError::Request(RequestError::ValueTooLarge { size: 2, max: 1 }),
                REFUSED,
            ),
            (
                ClientError::InvalidContextToken(shoal_client::TokenError::Empty),
                USAGE,
            ),
        ];
        for (e, expected) in cases {
            let name = format!("{e:?}");
            let error = Error::new(e).context("while doing something");
            assert_eq!(code(&error), expected, "{name}");
        }
        assert_eq!(code(&Error::new(UsageError("bad".into()))), USAGE);
        assert_eq!(code(&anyhow::anyhow!("disk full")), FAILURE);
    }
}
