use std::time::Duration;

use shoal_membership::GossipConfig;
use shoal_types::{Incarnation, Limits, NodeId, Quorum, RequestOptions};

use crate::{AntiEntropyConfig, HintsConfig, ReaperConfig};

/// What a node needs to know about itself. Every field is already valid by type.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// The incarnation of its data directory when the node starts (part of every dot it makes;
    /// a run that finds a corrupted record renews it, and the durability part holds the current
    /// one).
    pub incarnation: Incarnation,
    /// Default N, R, W, PR, PW.
    pub quorum: Quorum,
    /// Key, value and sibling limits.
    pub limits: Limits,
    /// How long a request may take when the client gives no timeout.
    pub request_timeout: Duration,
    /// The longest timeout a request may ask for; longer ones are refused (`InvalidTimeout`),
    /// so no request can pin the node's memory for long. Default 60 s.
    pub max_request_timeout: Duration,
    /// Most requests this node coordinates at once; beyond it, `Overloaded` at once. Default
    /// 256: the work in flight is what a new request waits behind, and at this machine's
    /// ~1,400 coordinated requests/s per node 256 is under 0.2 s of it, well inside a 1 s
    /// attempt; 4,096 was 3 s, so at 150 % of capacity requests waited past their deadlines
    /// instead of being refused (docs/performance.md, "Overload").
    pub max_in_flight: usize,
    /// Batches handed to storage and not yet durable (the commit queue) beyond which this node
    /// refuses new client writes with `Overloaded`. Replica writes from peers are refused only
    /// at twice this, so a node refuses its own clients before it refuses the replica writes
    /// that make other nodes' quorums. Default 4,096.
    pub max_pending_persists: usize,
    /// This start's generation: greater than every earlier start's of this node (the server
    /// takes the wall clock's milliseconds at start), so its gossip heartbeats count again after
    /// a restart. Default 1.
    pub generation: u64,
    /// Where peers reach this node, for its member record when the ring does not list it (a
    /// joining node). Default `None`: the ring's address.
    pub address: Option<std::net::SocketAddr>,
    /// Gossip and failure-detector settings (`shoal-membership`'s defaults: a round a second).
    pub gossip: GossipConfig,
    /// Hinted-handoff bounds and pacing.
    pub hints: HintsConfig,
    /// Anti-entropy schedule, concurrency and pacing.
    pub anti_entropy: AntiEntropyConfig,
    /// Tombstone reaping: on or off, how long reaping records are kept, the check pacing.
    pub reaper: ReaperConfig,
    /// Whether a get repairs the replicas that answered older objects (read repair). Default
    /// on; off for tests of anti-entropy alone.
    pub read_repair: bool,
    /// The wall clock when the node starts, in Unix milliseconds: hints are stamped with it
    /// plus the time since (the node reads no clock). Default 0.
    pub unix_ms_at_start: u64,
}

impl NodeConfig {
    /// Defaults for everything but identity: N=3 R=2 W=2, default limits, 5 s timeout.
    pub fn new(id: NodeId, incarnation: Incarnation) -> Self {
        NodeConfig {
            id,
            incarnation,
            quorum: Quorum::default(),
            limits: Limits::default(),
            request_timeout: RequestOptions::DEFAULT_TIMEOUT,
            max_request_timeout: Duration::from_secs(60),
            max_in_flight: 256,
            max_pending_persists: 4096,
            generation: 1,
            address: None,
            gossip: GossipConfig::default(),
            hints: HintsConfig::default(),
            anti_entropy: AntiEntropyConfig::default(),
            reaper: ReaperConfig::default(),
            read_repair: true,
            unix_ms_at_start: 0,
        }
    }
}
