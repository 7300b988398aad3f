use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{QuorumError, TypesError};

/// N: how many distinct nodes hold each key. From 1 to 16.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct ReplicationFactor(u8);

impl ReplicationFactor {
    /// The largest N.
    pub const MAX: u8 = 16;
    /// The default N.
    pub const DEFAULT: ReplicationFactor = ReplicationFactor(3);

    /// Parses N: from 1 to 16.
    pub fn new(n: u8) -> Result<Self, TypesError> {
        if (1..=Self::MAX).contains(&n) {
            Ok(ReplicationFactor(n))
        } else {
            Err(TypesError::InvalidReplicationFactor(n))
        }
    }

    /// N itself.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// N as a count.
    pub const fn count(self) -> usize {
        self.0 as usize
    }
}

impl Default for ReplicationFactor {
    fn default() -> Self {
        ReplicationFactor::DEFAULT
    }
}

impl TryFrom<u8> for ReplicationFactor {
    type Error = TypesError;
    fn try_from(n: u8) -> Result<Self, TypesError> {
        ReplicationFactor::new(n)
    }
}

impl From<ReplicationFactor> for u8 {
    fn from(n: ReplicationFactor) -> u8 {
        n.0
    }
}

impl fmt::Debug for ReplicationFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N={}", self.0)
    }
}

/// A cluster's default quorum settings: N, R, W, PR, PW, always with `1 <= R <= N`,
/// `1 <= W <= N`, `PR <= R` and `PW <= W`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawQuorum", into = "RawQuorum")]
pub struct Quorum {
    n: ReplicationFactor,
    read: ReadRequirement,
    write: WriteRequirement,
}

impl Quorum {
    /// Parses a full set of quorum settings.
    pub fn new(n: u8, r: u8, w: u8, pr: u8, pw: u8) -> Result<Self, TypesError> {
        let n = ReplicationFactor::new(n)?;
        Ok(Quorum {
            n,
            read: ReadRequirement::new(n, r, pr)?,
            write: WriteRequirement::new(n, w, pw)?,
        })
    }

    /// N.
    pub const fn n(&self) -> ReplicationFactor {
        self.n
    }

    /// The default read quorum.
    pub const fn read(&self) -> ReadRequirement {
        self.read
    }

    /// The default write quorum.
    pub const fn write(&self) -> WriteRequirement {
        self.write
    }

    /// The read quorum for one request: the request's R and PR where given, else the defaults.
    pub fn read_with(&self, opts: &RequestOptions) -> Result<ReadRequirement, QuorumError> {
        ReadRequirement::new(
            self.n,
            opts.r.unwrap_or(self.read.r),
            opts.pr.unwrap_or(self.read.pr),
        )
    }

    /// The write quorum for one request: the request's W and PW where given, else the defaults.
    pub fn write_with(&self, opts: &RequestOptions) -> Result<WriteRequirement, QuorumError> {
        WriteRequirement::new(
            self.n,
            opts.w.unwrap_or(self.write.w),
            opts.pw.unwrap_or(self.write.pw),
        )
    }
}

impl Default for Quorum {
    /// N=3, R=2, W=2, PR=PW=0.
    fn default() -> Self {
        let n = ReplicationFactor::DEFAULT;
        Quorum {
            n,
            read: ReadRequirement { n, r: 2, pr: 0 },
            write: WriteRequirement { n, w: 2, pw: 0 },
        }
    }
}

impl fmt::Debug for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "N={} R={} W={} PR={} PW={}",
            self.n.0, self.read.r, self.write.w, self.read.pr, self.write.pw
        )
    }
}

#[derive(Serialize, Deserialize)]
struct RawQuorum {
    n: u8,
    r: u8,
    w: u8,
    pr: u8,
    pw: u8,
}

impl TryFrom<RawQuorum> for Quorum {
    type Error = TypesError;
    fn try_from(q: RawQuorum) -> Result<Self, TypesError> {
        Quorum::new(q.n, q.r, q.w, q.pr, q.pw)
    }
}

impl From<Quorum> for RawQuorum {
    fn from(q: Quorum) -> RawQuorum {
        RawQuorum {
            n: q.n.0,
            r: q.read.r,
            w: q.write.w,
            pr: q.read.pr,
            pw: q.write.pw,
        }
    }
}

/// How many replies one read waits for: R in all, PR of them from primaries.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadRequirement {
    n: ReplicationFactor,
    r: u8,
    pr: u8,
}

impl ReadRequirement {
    /// Parses R and PR for a key replicated N times: `1 <= R <= N`, `PR <= R`.
    pub fn new(n: ReplicationFactor, r: u8, pr: u8) -> Result<Self, QuorumError> {
        if r == 0 || r > n.0 {
            return Err(QuorumError::ReadOutOfRange { r, n: n.0 });
        }
        if pr > r {
            return Err(QuorumError::PrimaryReadsOverR { pr, r });
        }
        Ok(ReadRequirement { n, r, pr })
    }

    /// N.
    pub const fn n(&self) -> ReplicationFactor {
        self.n
    }
    /// R: replies to wait for.
    pub const fn r(&self) -> usize {
        self.r as usize
    }
    /// PR: how many of the R must come from primaries.
    pub const fn pr(&self) -> usize {
        self.pr as usize
    }
}

impl fmt::Debug for ReadRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "R={} PR={} of N={}", self.r, self.pr, self.n.0)
    }
}

/// How many durable acks one write waits for: W in all (the coordinator's own included), PW of
/// them from primaries.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteRequirement {
    n: ReplicationFactor,
    w: u8,
    pw: u8,
}

impl WriteRequirement {
    /// Parses W and PW for a key replicated N times: `1 <= W <= N`, `PW <= W`.
    pub fn new(n: ReplicationFactor, w: u8, pw: u8) -> Result<Self, QuorumError> {
        if w == 0 || w > n.0 {
            return Err(QuorumError::WriteOutOfRange { w, n: n.0 });
        }
        if pw > w {
            return Err(QuorumError::PrimaryWritesOverW { pw, w });
        }
        Ok(WriteRequirement { n, w, pw })
    }

    /// N.
    pub const fn n(&self) -> ReplicationFactor {
        self.n
    }
    /// W: durable acks to wait for.
    pub const fn w(&self) -> usize {
        self.w as usize
    }
    /// PW: how many of the W must come from primaries.
    pub const fn pw(&self) -> usize {
        self.pw as usize
    }
}

impl fmt::Debug for WriteRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "W={} PW={} of N={}", self.w, self.pw, self.n.0)
    }
}

/// What a client may override for one request. Unset fields take the cluster's defaults; the
/// result is checked against N by `Quorum::read_with` / `Quorum::write_with`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestOptions {
    /// Replies a read waits for.
    pub r: Option<u8>,
    /// Durable acks a write waits for.
    pub w: Option<u8>,
    /// Of the R replies, how many must come from primaries.
    pub pr: Option<u8>,
    /// Of the W acks, how many must come from primaries.
    pub pw: Option<u8>,
    /// How long the coordinator may take before answering `Timeout`.
    pub timeout: Option<Duration>,
}

/// How the deadlines of one request nest, from the inside out. The coordinating primary
/// answers by the request's `timeout` (a `Timeout` saying how many replicas answered); a node
/// that forwarded the write to it waits [`RequestOptions::FORWARD_GRACE`] longer for that answer,
/// and answers `Timeout` itself after that; the client waits [`RequestOptions::CLIENT_GRACE`]
/// longer than `timeout`, so the node's answer, which says more than a bare timeout, arrives
/// first. Node-to-node messages carrying a request are given `CLIENT_GRACE` beyond its timeout
/// too: the nodes' own deadlines end them first.
impl RequestOptions {
    /// How long a request may take when neither the call nor the node's configuration says
    /// otherwise: the one default the client, the server and the coordinator share.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// How much longer than the request's timeout a forwarding node waits for the primary.
    pub const FORWARD_GRACE: Duration = Duration::from_millis(500);
    /// How much longer than the request's timeout a client (or a message to a peer) waits.
    pub const CLIENT_GRACE: Duration = Duration::from_secs(1);
}

const _: () = assert!(
    RequestOptions::FORWARD_GRACE.as_nanos() < RequestOptions::CLIENT_GRACE.as_nanos(),
    "a forwarder must answer before the client gives up"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_that_do_not_fit_n_cannot_be_built() {
        assert!(Quorum::new(3, 2, 2, 0, 0).is_ok());
        assert!(Quorum::new(3, 3, 3, 3, 3).is_ok());
        assert!(Quorum::new(3, 4, 2, 0, 0).is_err(), "R > N");
        assert!(Quorum::new(3, 2, 0, 0, 0).is_err(), "W = 0");
        assert!(Quorum::new(3, 0, 2, 0, 0).is_err(), "R = 0");
        assert!(Quorum::new(3, 2, 2, 3, 0).is_err(), "PR > R");
        assert!(Quorum::new(3, 2, 2, 0, 3).is_err(), "PW > W");
        assert!(Quorum::new(0, 1, 1, 0, 0).is_err(), "N = 0");
        assert!(Quorum::new(17, 1, 1, 0, 0).is_err(), "N > 16");
    }

    #[test]
    fn request_options_override_defaults_and_are_checked() {
        let q = Quorum::default();
        let opts = RequestOptions {
            r: Some(3),
            ..Default::default()
        };
        assert_eq!(q.read_with(&opts).unwrap().r(), 3);
        assert_eq!(q.write_with(&opts).unwrap().w(), 2);
        let bad = RequestOptions {
            w: Some(4),
            ..Default::default()
        };
        assert!(q.write_with(&bad).is_err());
    }

    #[test]
    fn decoded_quorums_are_checked() {
        let raw = RawQuorum {
            n: 3,
            r: 5,
            w: 2,
            pr: 0,
            pw: 0,
        };
        let bytes = rmp_serde::to_vec(&raw).unwrap();
        assert!(rmp_serde::from_slice::<Quorum>(&bytes).is_err());
        let good = rmp_serde::to_vec(&Quorum::default()).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<Quorum>(&good).unwrap(),
            Quorum::default()
        );
    }
}
