//! What a server is started with, and the checks that run before anything is opened.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_coordinator::{AntiEntropyConfig, HintsConfig, ReaperConfig};
use shoal_protocol::OBJECT_OVERHEAD_BYTES;
use shoal_ring::{Member, Ring};
use shoal_transport::TransportConfig;
use shoal_types::{Limits, NodeId, PartitionCount, Quorum, RequestOptions, Zone};

use crate::ServerError;

/// Everything a server needs to start. Build it with [`ServerConfig::new`] and override fields.
///
/// Every node of a cluster must be started with the same `members`, `partitions` and
/// `quorum.n()`: each node computes the ring from them, deterministically, and they must all
/// compute the same one.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This node's id; the node certificate in `certs_dir` must name it.
    pub node_id: NodeId,
    /// The UDP address QUIC listens on. Port 0 picks a free port (one-node clusters only,
    /// unless `advertise` is set).
    pub listen: SocketAddr,
    /// The address other nodes and clients reach this node at, when it is not `listen`: a
    /// proxy, a NAT or a port forward in front of the node (the whole-system tests put a
    /// fault-injecting UDP proxy there). It must be this node's address in `members`. `None`:
    /// `listen` is that address.
    pub advertise: Option<SocketAddr>,
    /// The data directory; the database is `data_dir/shoal.redb`.
    pub data_dir: PathBuf,
    /// The directory with `ca.pem` and this node's `node-<id>.pem` / `node-<id>.key`.
    pub certs_dir: PathBuf,
    /// Initial cluster members (static membership for now), including this node. Empty = a
    /// one-node cluster of this node alone.
    pub members: Vec<Member>,
    /// This node's zone (failure domain). Must match this node's entry in `members`.
    pub zone: Zone,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// Default N, R, W, PR, PW.
    pub quorum: Quorum,
    /// Q, the number of partitions; fixed when the data directory is created.
    pub partitions: PartitionCount,
    /// Key, value, sibling and object limits. The object bound plus
    /// [`OBJECT_OVERHEAD_BYTES`] must fit in `transport.max_frame_bytes`.
    pub limits: Limits,
    /// How long a request may take when the client gives no timeout. Default
    /// [`RequestOptions::DEFAULT_TIMEOUT`].
    pub request_timeout: Duration,
    /// QUIC limits and timeouts of the listening endpoint.
    pub transport: TransportConfig,
    /// How long graceful shutdown waits for in-flight requests and pending commits.
    pub shutdown_timeout: Duration,
    /// Node-to-node connections use this as their QUIC idle timeout, which also bounds a
    /// handshake: a peer that is down is reported unreachable after this long. Keep it well
    /// below `request_timeout`, so a request can still try another replica.
    pub peer_connect_timeout: Duration,
    /// Most client requests waiting for the node task; beyond it the oldest are refused with
    /// `Overloaded` (see the node task's inbox: a standing queue is also served newest first,
    /// and a request that waited too long refused). Default 4,096.
    pub request_queue: usize,
    /// Most peer messages waiting for the node task; beyond it they are refused `Overloaded`.
    /// Larger than `request_queue`: other nodes' quorums wait for them. Default 16,384.
    pub peer_queue: usize,
    /// How often the node gossips (a round with a few peers; each round is also its
    /// heartbeat, so failure detection scales with it). Default 1 s.
    pub gossip_interval: Duration,
    /// Seeds to join through, instead of `members`: the node fetches the ring from the first
    /// that answers and gossips its way into the membership as a `joining` member (owning no
    /// partitions until a ring change; it serves requests meanwhile, as any node).
    pub join: Vec<SocketAddr>,
    /// Hinted handoff: what a fallback holds per target at most (`max_hint_bytes`, default
    /// 1 GiB; `max_hint_window`, default 3 h) and how fast it hands hints back.
    pub hints: HintsConfig,
    /// Anti-entropy: whether this node compares its partitions with their other primaries on
    /// a schedule (`enabled`; off, it still serves its peers' exchanges and on-demand repair),
    /// how often (`interval`, default 2 min, at least 1 s), and how fast it repairs.
    pub anti_entropy: AntiEntropyConfig,
    /// Whether gets repair the replicas that answered older objects. Default on; off only for
    /// tests of anti-entropy alone.
    pub read_repair: bool,
    /// Tombstone reaping: whether this node reaps (`enabled`) and how long it keeps a reaping
    /// record (`retention`, default 4 h; longer than `hints.max_hint_window`, so no hint older
    /// than the record can still arrive).
    pub reaper: ReaperConfig,
}

impl ServerConfig {
    /// Default graceful-shutdown bound.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default gossip interval.
    pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_secs(1);
    /// The longest gossip interval accepted: slower, and failure detection would take minutes.
    pub const MAX_GOSSIP_INTERVAL: Duration = Duration::from_secs(10);
    /// Default node-to-node handshake and idle timeout.
    pub const DEFAULT_PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// The shortest anti-entropy interval accepted.
    pub const MIN_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(1);

    /// A configuration with defaults for everything but identity, address and directories:
    /// a one-node cluster, the default zone, no metrics, N=3 R=2 W=2, Q=256, default limits,
    /// 5 s requests, default QUIC limits, 10 s graceful shutdown, 2 s peer handshakes.
    ///
    /// A one-node cluster needs a quorum it can meet: set `quorum` to N=1 R=1 W=1, or list
    /// members.
    pub fn new(
        node_id: NodeId,
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        certs_dir: impl Into<PathBuf>,
    ) -> Self {
        ServerConfig {
            node_id,
            listen,
            advertise: None,
            data_dir: data_dir.into(),
            certs_dir: certs_dir.into(),
            members: Vec::new(),
            zone: Zone::default_zone(),
            metrics: None,
            quorum: Quorum::default(),
            partitions: PartitionCount::DEFAULT,
            limits: Limits::default(),
            request_timeout: RequestOptions::DEFAULT_TIMEOUT,
            transport: TransportConfig::default(),
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            peer_connect_timeout: Self::DEFAULT_PEER_CONNECT_TIMEOUT,
            request_queue: 4096,
            peer_queue: 16 * 1024,
            gossip_interval: Self::DEFAULT_GOSSIP_INTERVAL,
            join: Vec::new(),
            hints: HintsConfig::default(),
            anti_entropy: AntiEntropyConfig::default(),
            read_repair: true,
            reaper: ReaperConfig::default(),
        }
    }

    /// Checks everything that can be checked before opening anything: membership, quorum,
    /// timeouts and QUIC limits.
    pub fn validate(&self) -> Result<(), ServerError> {
        let invalid = |reason: String| Err(ServerError::InvalidConfig(reason));
        if !self.join.is_empty() {
            // The ring comes from a seed; its N is checked against the quorum's then.
        } else if self.members.is_empty() {
            self.check_quorum(1)?;
        } else {
            let Some(me) = self.members.iter().find(|m| m.id == self.node_id) else {
                return Err(ServerError::NotAMember {
                    node: self.node_id.clone(),
                });
            };
            match self.advertise {
                Some(advertise) if advertise != me.addr => {
                    return Err(ServerError::AdvertiseMismatch {
                        node: self.node_id.clone(),
                        advertise,
                        member: me.addr,
                    });
                }
                Some(_) => {}
                None if self.listen.port() == 0 && self.members.len() > 1 => {
                    return Err(ServerError::EphemeralPortInCluster {
                        members: self.members.len(),
                    });
                }
                None if self.listen.port() != 0 && !same_address(self.listen, me.addr) => {
                    return Err(ServerError::AddressMismatch {
                        node: self.node_id.clone(),
                        listen: self.listen,
                        member: me.addr,
                    });
                }
                None => {}
            }
            if me.zone != self.zone {
                return Err(ServerError::ZoneMismatch {
                    node: self.node_id.clone(),
                    zone: self.zone.clone(),
                    member: me.zone.clone(),
                });
            }
            self.check_quorum(self.members.len())?;
        }
        if !self.join.is_empty() && !self.members.is_empty() {
            return invalid(
                "a node either bootstraps a cluster (members) or joins one (join), not both".into(),
            );
        }
        if self.hints.max_hint_window.is_zero() || self.hints.replay_rate == 0 {
            return invalid("max_hint_window and the hint replay rate must be positive".into());
        }
        if self.reaper.retention <= self.hints.max_hint_window {
            return invalid(format!(
                "the reaping-record retention ({:?}) must be longer than the hint window ({:?}): \
                 a hint older than a forgotten record could bring a deleted value back",
                self.reaper.retention, self.hints.max_hint_window
            ));
        }
        let ae = &self.anti_entropy;
        if ae.interval < Self::MIN_ANTI_ENTROPY_INTERVAL {
            return invalid(format!(
                "the anti-entropy interval must be at least {:?}, not {:?}",
                Self::MIN_ANTI_ENTROPY_INTERVAL,
                ae.interval
            ));
        }
        if ae.confirm_pause >= ae.interval || ae.repair_rate == 0 {
            return invalid(
                "the anti-entropy confirm pause must be shorter than its interval, and its \
                 repair rate positive"
                    .into(),
            );
        }
        if self.gossip_interval.is_zero() || self.gossip_interval > Self::MAX_GOSSIP_INTERVAL {
            return invalid(format!(
                "gossip_interval must be positive and at most {:?}, not {:?}",
                Self::MAX_GOSSIP_INTERVAL,
                self.gossip_interval
            ));
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout must be positive".into());
        }
        if self.peer_connect_timeout < Duration::from_millis(100) {
            return invalid("peer_connect_timeout must be at least 100 ms".into());
        }
        if self.request_queue == 0 || self.peer_queue == 0 {
            return invalid("request_queue and peer_queue must be positive".into());
        }
        // Every object a coordinator makes must fit in one frame with its envelope, or it could
        // be neither replicated nor read.
        let frame = usize::try_from(self.transport.max_frame_bytes).unwrap_or(usize::MAX);
        let object = self.limits.max_object_bytes();
        if object.saturating_add(OBJECT_OVERHEAD_BYTES) > frame {
            return invalid(format!(
                "the object bound ({object} bytes) and {OBJECT_OVERHEAD_BYTES} bytes of envelope \
                 must fit in a frame ({frame} bytes): raise max_frame_bytes or lower \
                 max_object_bytes"
            ));
        }
        self.transport
            .validate()
            .map_err(|e| ServerError::InvalidConfig(e.to_string()))?;
        self.peer_transport()
            .validate()
            .map_err(|e| ServerError::InvalidConfig(format!("peer_connect_timeout: {e}")))?;
        Ok(())
    }

    /// The ring of the configured members, with this node at `bound` (the address actually
    /// bound, which differs from `listen` only when `listen` asked for port 0) unless it
    /// advertises another address.
    pub(crate) fn ring(&self, bound: SocketAddr) -> Result<Ring, ServerError> {
        let me = self.advertise.unwrap_or(bound);
        let members = if self.members.is_empty() {
            vec![Member::new(self.node_id.clone(), me).in_zone(self.zone.clone())]
        } else if self.listen.port() == 0 && self.advertise.is_none() {
            // validate() allows port 0 only for a single member: this node.
            self.members
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    if m.id == self.node_id {
                        m.addr = bound;
                    }
                    m
                })
                .collect()
        } else {
            self.members.clone()
        };
        Ring::new(members, self.partitions, self.quorum.n()).map_err(ServerError::Ring)
    }

    /// The transport configuration of node-to-node sends: the listening endpoint's, with the
    /// short peer timeout as idle (and so handshake) timeout.
    pub(crate) fn peer_transport(&self) -> TransportConfig {
        TransportConfig {
            idle_timeout: self.peer_connect_timeout,
            keep_alive_interval: self.peer_connect_timeout / 4,
            ..self.transport.clone()
        }
    }

    /// Replicas the default quorum needs must exist.
    fn check_quorum(&self, members: usize) -> Result<(), ServerError> {
        let (read, write) = (self.quorum.read(), self.quorum.write());
        let needed = read.r().max(write.w());
        if needed > members {
            return Err(ServerError::QuorumTooLarge {
                members,
                r: read.r(),
                w: write.w(),
            });
        }
        Ok(())
    }
}

/// Whether a node listening on `listen` is reachable at `member`: the same address, or the same
/// port when listening on every interface (`0.0.0.0` / `::`).
fn same_address(listen: SocketAddr, member: SocketAddr) -> bool {
    listen == member || (listen.ip().is_unspecified() && listen.port() == member.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn config(listen: SocketAddr, members: &[(&str, u16)]) -> ServerConfig {
        let mut config = ServerConfig::new(id("n1"), listen, "/nonexistent", "/nonexistent");
        config.members = members
            .iter()
            .map(|(n, p)| Member::new(id(n), addr(*p)))
            .collect();
        config
    }

    #[test]
    fn a_cluster_of_three_with_this_node_at_its_address_is_valid() {
        let c = config(addr(7001), &[("n1", 7001), ("n2", 7002), ("n3", 7003)]);
        c.validate().unwrap();
        assert_eq!(c.ring(addr(7001)).unwrap().members().len(), 3);
    }

    #[test]
    fn a_node_joins_or_bootstraps_and_gossips_at_a_sane_interval() {
        let mut c = config(addr(7004), &[]);
        c.join = vec![addr(7001)];
        c.validate().unwrap();
        c.members = vec![Member::new(id("n1"), addr(7004))];
        assert!(matches!(c.validate(), Err(ServerError::InvalidConfig(_))));
        let mut c = config(addr(7001), &[("n1", 7001)]);
        c.quorum = Quorum::new(1, 1, 1, 0, 0).unwrap();
        for bad in [Duration::ZERO, ServerConfig::MAX_GOSSIP_INTERVAL * 2] {
            c.gossip_interval = bad;
            assert!(
                matches!(c.validate(), Err(ServerError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn anti_entropy_settings_are_checked() {
        let mut c = config(addr(7001), &[("n1", 7001)]);
        c.quorum = Quorum::new(1, 1, 1, 0, 0).unwrap();
        c.anti_entropy.enabled = false;
        c.read_repair = false;
        c.validate().unwrap();
        let good = c.anti_entropy;
        c.anti_entropy.interval = Duration::from_millis(999);
        assert!(matches!(c.validate(), Err(ServerError::InvalidConfig(_))));
        c.anti_entropy = AntiEntropyConfig {
            repair_rate: 0,
            ..good
        };
        assert!(matches!(c.validate(), Err(ServerError::InvalidConfig(_))));
        c.anti_entropy = AntiEntropyConfig {
            interval: Duration::from_secs(1),
            confirm_pause: Duration::from_secs(1),
            ..good
        };
        assert!(matches!(c.validate(), Err(ServerError::InvalidConfig(_))));
    }

    #[test]
    fn reaping_records_must_outlive_the_hint_window() {
        let mut c = config(addr(7001), &[("n1", 7001)]);
        c.quorum = Quorum::new(1, 1, 1, 0, 0).unwrap();
        c.validate().unwrap();
        // Kept no longer than hints live: a hint older than a forgotten record could bring a
        // deleted value back.
        c.reaper.retention = c.hints.max_hint_window;
        assert!(matches!(c.validate(), Err(ServerError::InvalidConfig(_))));
        c.reaper.retention = c.hints.max_hint_window + Duration::from_secs(1);
        c.validate().unwrap();
    }

    #[test]
    fn members_must_name_this_node() {
        let c = config(addr(7001), &[("n2", 7002), ("n3", 7003), ("n4", 7004)]);
        assert!(matches!(c.validate(), Err(ServerError::NotAMember { .. })));
    }

    #[test]
    fn members_must_give_this_node_its_listen_address() {
        let c = config(addr(7001), &[("n1", 7009), ("n2", 7002), ("n3", 7003)]);
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ServerError::AddressMismatch { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:7009"), "{err}");
    }

    #[test]
    fn listening_on_every_interface_needs_only_the_port_to_match() {
        let any = SocketAddr::from(([0, 0, 0, 0], 7001));
        config(any, &[("n1", 7001), ("n2", 7002), ("n3", 7003)])
            .validate()
            .unwrap();
    }

    #[test]
    fn port_zero_is_for_one_node_clusters_only() {
        let c = config(addr(0), &[("n1", 7001), ("n2", 7002), ("n3", 7003)]);
        assert!(matches!(
            c.validate(),
            Err(ServerError::EphemeralPortInCluster { .. })
        ));
        let mut alone = config(addr(0), &[]);
        alone.quorum = Quorum::new(1, 1, 1, 0, 0).unwrap();
        alone.validate().unwrap();
        let ring = alone.ring(addr(4242)).unwrap();
        assert_eq!(ring.member(&id("n1")).unwrap().addr, addr(4242));
    }

    #[test]
    fn an_advertised_address_stands_in_for_listen_in_the_member_list() {
        let mut c = config(addr(7101), &[("n1", 7001), ("n2", 7002), ("n3", 7003)]);
        assert!(matches!(
            c.validate(),
            Err(ServerError::AddressMismatch { .. })
        ));
        c.advertise = Some(addr(7001));
        c.validate().unwrap();
        let ring = c.ring(addr(7101)).unwrap();
        assert_eq!(ring.member(&id("n1")).unwrap().addr, addr(7001));
        // Behind a proxy the listen port may be picked by the system.
        c.listen = addr(0);
        c.validate().unwrap();
        assert_eq!(
            c.ring(addr(4242)).unwrap().member(&id("n1")).unwrap().addr,
            addr(7001)
        );
        c.advertise = Some(addr(7009));
        let err = c.validate().unwrap_err();
        assert!(
            matches!(err, ServerError::AdvertiseMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("127.0.0.1:7009"), "{err}");
    }

    #[test]
    fn a_quorum_larger_than_the_cluster_is_refused() {
        let c = config(addr(0), &[]);
        assert!(matches!(
            c.validate(),
            Err(ServerError::QuorumTooLarge { members: 1, .. })
        ));
    }

    #[test]
    fn this_nodes_zone_must_match_its_member_entry() {
        let mut c = config(addr(7001), &[("n1", 7001), ("n2", 7002), ("n3", 7003)]);
        c.zone = Zone::new("east").unwrap();
        assert!(matches!(
            c.validate(),
            Err(ServerError::ZoneMismatch { .. })
        ));
    }

    #[test]
    fn the_object_bound_must_fit_in_a_frame_with_its_envelope() {
        let mut c = config(addr(7001), &[("n1", 7001), ("n2", 7002), ("n3", 7003)]);
        assert!(c.validate().is_ok(), "the defaults fit");
        c.limits = Limits::default().with_max_object_bytes(16 << 20).unwrap();
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ServerError::InvalidConfig(_)), "{err}");
        c.transport.max_frame_bytes = 17 << 20;
        c.transport.max_pending_request_bytes_per_peer = 64 << 20;
        assert!(c.validate().is_ok(), "{:?}", c.validate());
    }
}
