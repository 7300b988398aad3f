//! The node's counters: what it did since it started, for the server's metrics endpoint.
//! Every part adds to them; they only grow.

/// Counters of what the node did. Read them for metrics; they only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Gets coordinated.
    pub gets: u64,
    /// Puts coordinated (here, not forwarded).
    pub puts: u64,
    /// Deletes coordinated (here, not forwarded).
    pub deletes: u64,
    /// Writes forwarded to a primary.
    pub forwarded: u64,
    /// Requests answered `QuorumFailed`.
    pub quorum_failures: u64,
    /// Requests answered `Timeout`.
    pub timeouts: u64,
    /// Requests answered `Unavailable`.
    pub unavailable: u64,
    /// Writes refused with `TooManySiblings`.
    pub too_many_siblings: u64,
    /// Requests refused with `Overloaded`.
    pub overloaded: u64,
    /// Read-repair objects sent (or written locally).
    pub read_repairs: u64,
    /// Local records found corrupt.
    pub corrupt_reads: u64,
    /// Replica writes stored for peers (replication and repair).
    pub replica_writes: u64,
}
