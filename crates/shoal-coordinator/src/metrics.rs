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
    /// Times this run took a new incarnation because a local record was lost (corrupted, or
    /// missing a dot this node made): see `durability`.
    pub incarnation_renewals: u64,
    /// Writes refused with `TooManySiblings`.
    pub too_many_siblings: u64,
    /// Writes refused with `ObjectTooLarge`: the object would hold more value bytes than
    /// `Limits::max_object_bytes`.
    pub objects_too_large: u64,
    /// Gets answered `ReadTooLarge`: the merged object was too large to send, so only its
    /// context went back.
    pub reads_too_large: u64,
    /// Client requests refused with `Overloaded` before any work: too many in flight, or the
    /// commit queue full (not counting `expired_client`).
    pub overloaded: u64,
    /// Client requests whose deadline had passed when the node got to them: answered
    /// `Overloaded` unworked.
    pub expired_client: u64,
    /// Peer messages whose sender's deadline had passed when the node got to them: answered
    /// `Expired` unworked.
    pub expired_peer: u64,
    /// Replica writes from peers refused with `Overloaded` (the commit queue at its peer limit).
    pub shed_peer: u64,
    /// Requests whose client gave up (reset its stream) while the node worked on them: dropped
    /// with no answer, their outstanding reads and forwards abandoned.
    pub cancelled: u64,
    /// Read-repair objects sent (or written locally).
    pub read_repairs: u64,
    /// Local records found corrupt.
    pub corrupt_reads: u64,
    /// Replica writes stored for peers (replication and repair).
    pub replica_writes: u64,
    /// Gossip rounds started.
    pub gossip_rounds: u64,
    /// Bytes of gossip messages this node sent (requests and answers), as encoded.
    pub gossip_bytes_sent: u64,
    /// Bytes of gossip messages this node received (requests and answers), as encoded.
    pub gossip_bytes_received: u64,
    /// Peers judged down (by the failure detector, or by a connection that could not be made).
    pub convictions: u64,
    /// Peers the failure detector judged alive again.
    pub recoveries: u64,
    /// Writes sent to fallbacks as hints, standing in for primaries judged down.
    pub hinted_writes: u64,
    /// Hints this node stored as a fallback.
    pub hints_stored: u64,
    /// Hints this node handed off to their targets (each removed after the target's durable
    /// ack).
    pub hints_replayed: u64,
    /// Hints dropped: refused because the target's hints were at `max_hint_bytes`, older than
    /// `max_hint_window`, or corrupted. Anti-entropy repairs what they held.
    pub hints_dropped: u64,
    /// Handoff batches the target did not take (unreachable, refused, lost): sent again later.
    pub hint_replay_failures: u64,
    /// Objects handed off to this node by holders of hints for it.
    pub hints_received: u64,
    /// Anti-entropy exchanges this node ran to the end (repair included).
    pub exchanges_run: u64,
    /// Of those, exchanges whose roots were equal: the replicas matched.
    pub exchanges_matched: u64,
    /// Exchanges dropped before the end: a remote ask failed, was refused, timed out or was
    /// answered with something malformed, or a local read or commit failed. Compared again
    /// when next due.
    pub exchanges_failed: u64,
    /// Exchanges put off because this node's trees, or the peer's, were still being built
    /// after a start: not failures, compared again a little later.
    pub exchanges_deferred: u64,
    /// Anti-entropy messages from peers refused as malformed or misdirected (not a partition
    /// of the ring, a sender or receiver that is not a primary of it, segments out of order,
    /// keys of another partition).
    pub exchanges_refused: u64,
    /// Segments found differing (at both looks) by the exchanges run.
    pub exchange_segments_differing: u64,
    /// Keys found differing by the exchanges run.
    pub exchange_keys_differing: u64,
    /// Keys pushed to peers by exchanges (acknowledged durable there).
    pub exchange_keys_pushed: u64,
    /// Keys pulled from peers by exchanges and merged here (durable).
    pub exchange_keys_pulled: u64,
    /// Tombstones this node reaped on every primary of their key (rounds it ran where every
    /// primary answered "reaped").
    pub tombstones_reaped: u64,
    /// Reap rounds or checks that found a primary holding something newer than the
    /// tombstone (a value, or a dot the tombstone had not seen): nothing was reaped there.
    pub reaps_refused: u64,
    /// Reap asks of peers (and this node's own) that this node applied as a replica.
    pub reap_asks_served: u64,
    /// Keys queued for a reap check that were dropped: the queue at its bound, or too many
    /// tries (anti-entropy hands them back when it repairs them).
    pub reap_checks_dropped: u64,
    /// Reaping records this node holds (a gauge, refreshed at each sweep).
    pub reaping_records: u64,
    /// Reaping records dropped after `ReaperConfig::retention`.
    pub reaping_records_forgotten: u64,
    /// Tombstone lifetimes, from the delete's end at its coordinator (or the exchange that
    /// handed the key over) to the reap on every primary: their sum, in milliseconds, ...
    pub tombstone_lifetime_total_ms: u64,
    /// ... the longest ...
    pub tombstone_lifetime_max_ms: u64,
    /// ... and a histogram: `tombstone_lifetime_buckets[i]` counts lifetimes up to
    /// `TOMBSTONE_LIFETIME_BUCKETS_MS[i]` (the last, longer ones).
    pub tombstone_lifetime_buckets: [u64; TOMBSTONE_LIFETIME_BUCKETS_MS.len()],
}

/// Upper bounds (ms) of the tombstone-lifetime histogram's buckets; the last is unbounded.
pub const TOMBSTONE_LIFETIME_BUCKETS_MS: [u64; 8] = [
    100,
    1_000,
    10_000,
    60_000,
    300_000,
    3_600_000,
    14_400_000,
    u64::MAX,
];

impl NodeMetrics {
    /// Records one tombstone's lifetime.
    pub(crate) fn tombstone_lived(&mut self, ms: u64) {
        self.tombstones_reaped += 1;
        self.tombstone_lifetime_total_ms = self.tombstone_lifetime_total_ms.saturating_add(ms);
        self.tombstone_lifetime_max_ms = self.tombstone_lifetime_max_ms.max(ms);
        let i = TOMBSTONE_LIFETIME_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(TOMBSTONE_LIFETIME_BUCKETS_MS.len() - 1);
        self.tombstone_lifetime_buckets[i] += 1;
    }
}
