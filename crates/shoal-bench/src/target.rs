//! What the load generator drives: a [`Target`] does one read or one update of a key and says
//! how it went. [`ShoalTarget`](crate::ShoalTarget) and [`EtcdTarget`](crate::EtcdTarget)
//! (and, with the `etcd-grpc` feature, `EtcdGrpcTarget`) implement it; tests implement it with
//! fakes. One call is one *attempt*: timeouts and retries are the driver's, the same for every
//! target ([`crate::AttemptPolicy`]).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;

use bytes::Bytes;
use serde::Serialize;

/// The two operations of a key-value workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Read a key (Shoal: a get at R; etcd: a linearizable range).
    Read,
    /// Write a new value to a key that exists (Shoal: a put with the last context seen for the
    /// key, so it supersedes it instead of adding a sibling; etcd: a put).
    Update,
}

impl Op {
    /// Both, in report order.
    pub const ALL: [Op; 2] = [Op::Read, Op::Update];

    /// "read" or "update".
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Op::Read => 0,
            Op::Update => 1,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One key of the workload: its number and its name (`user{number:08}`).
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    /// 0-based.
    pub number: u64,
    /// The bytes sent.
    pub name: &'a [u8],
}

/// What a successful read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// At least one value.
    Value,
    /// Nothing (counted apart: after a preload every key should be found).
    Nothing,
}

/// A failed operation, counted per `kind` in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// A short snake_case name, stable across runs (`timeout`, `quorum_failed`, `connection`).
    pub kind: Cow<'static, str>,
    /// What exactly happened (logged at debug level, not reported per request).
    pub message: String,
}

impl OpError {
    /// The kind of a request whose every attempt timed out (see [`crate::AttemptPolicy`]).
    pub const ATTEMPT_TIMEOUT: &'static str = "attempt_timeout";

    /// An error of `kind`.
    pub fn new(kind: impl Into<Cow<'static, str>>, message: impl Into<String>) -> OpError {
        OpError {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl OpError {
    /// Whether the store answered that the request's deadline passed (Shoal's `timeout`,
    /// gRPC's `deadline_exceeded`), or every attempt timed out: what a timed-out attempt is
    /// retried after.
    pub fn is_timeout(&self) -> bool {
        matches!(
            &*self.kind,
            "timeout" | "deadline_exceeded" | OpError::ATTEMPT_TIMEOUT
        )
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// A store the load generator can drive. Shared by every request task.
///
/// A future it returns may be dropped before it completes (an attempt abandoned at its
/// timeout): it must then give up the request (Shoal's client resets the QUIC stream, a gRPC
/// client the HTTP/2 stream).
pub trait Target: Send + Sync + 'static {
    /// What an update is sent with besides its value, fixed before its first attempt so that
    /// every attempt sends the same (Shoal: the causal context of the key's last read or write;
    /// etcd: nothing).
    type Context: Send + Sync + 'static;

    /// Reads `key`.
    fn read(&self, key: KeyRef<'_>) -> impl Future<Output = Result<Found, OpError>> + Send;

    /// The context the next update of `key` is sent with.
    fn context(&self, key: KeyRef<'_>) -> Self::Context;

    /// Writes `value` to `key` with `context` (from [`Target::context`]).
    fn update(
        &self,
        key: KeyRef<'_>,
        value: Bytes,
        context: &Self::Context,
    ) -> impl Future<Output = Result<(), OpError>> + Send;
}
