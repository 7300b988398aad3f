//! `shoal server`: one node, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;
use shoal_ring::Member;
use shoal_server::{Server, ServerConfig};
use shoal_types::{NodeId, PartitionCount, Quorum, Zone};

use crate::args::{parse_addr, parse_duration};
use crate::exit::{Outcome, UsageError};

/// Arguments of `shoal server`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Every node of a cluster must be started with the same \
                        --initial-members, --partitions and --n: each computes the ring from \
                        them.")]
pub(crate) struct Args {
    /// This node's id; the node certificate `node-ID.pem` in --certs must name it.
    #[arg(long, value_name = "ID")]
    node_id: NodeId,
    /// The UDP address QUIC listens on, e.g. 127.0.0.1:7001.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    listen: SocketAddr,
    /// The address other nodes and clients reach this node at, when it is not --listen (a
    /// proxy, NAT or port forward in front of it); it must be this node's address in
    /// --initial-members [default: --listen].
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    advertise: Option<SocketAddr>,
    /// The data directory (created if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The certificate directory: ca.pem and this node's node-ID.pem / node-ID.key.
    #[arg(long, value_name = "DIR")]
    certs: PathBuf,
    /// The cluster's members, this node included: ID=ADDR or ID=ADDR@ZONE, comma-separated.
    /// Without it, a one-node cluster.
    #[arg(long, value_name = "ID=ADDR[@ZONE],...", value_delimiter = ',', value_parser = parse_member)]
    initial_members: Vec<MemberArg>,
    /// Join a running cluster through these seeds (any of its nodes: ADDR, comma-separated)
    /// instead of bootstrapping one with --initial-members: the node fetches the ring from the
    /// first that answers and gossips its way into the membership as a `joining` member. It
    /// owns no partitions until a ring change; meanwhile it serves requests like any node.
    /// --n must be the cluster's (default 3).
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',', value_parser = parse_addr, conflicts_with = "initial_members")]
    join: Vec<SocketAddr>,
    /// This node's zone (failure domain); must match its entry in --initial-members.
    #[arg(long, value_name = "ZONE")]
    zone: Option<Zone>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    metrics: Option<SocketAddr>,
    /// Q, the number of partitions (a power of two), fixed when the cluster is created.
    #[arg(long, value_name = "Q", default_value_t = PartitionCount::DEFAULT.get())]
    partitions: u32,
    /// N: replicas per key [default: 3, or the member count if smaller].
    #[arg(long, value_name = "N")]
    n: Option<u8>,
    /// R: replies a read waits for [default: a majority of N].
    #[arg(long, value_name = "R")]
    r: Option<u8>,
    /// W: durable acks a write waits for [default: a majority of N].
    #[arg(long, value_name = "W")]
    w: Option<u8>,
    /// PR: of the R replies, how many must come from primaries.
    #[arg(long, value_name = "PR", default_value_t = 0)]
    pr: u8,
    /// PW: of the W acks, how many must come from primaries.
    #[arg(long, value_name = "PW", default_value_t = 0)]
    pw: u8,
    /// How long a request may take when the client gives no timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    request_timeout: Option<Duration>,
    /// How long a graceful shutdown waits for requests in flight.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    shutdown_timeout: Option<Duration>,
    /// How often the node gossips membership and heartbeats (failure detection takes about
    /// six of these after a node stops answering) [default: 1s, at most 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    gossip_interval: Option<Duration>,
    /// Most bytes of hints held for one node that is down; beyond, this node refuses to stand
    /// in for it (the write then needs its quorum without this node) [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    max_hint_bytes: Option<u64>,
    /// Hints older than this are dropped (anti-entropy repairs what they held)
    /// [default: 3h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_hint_window: Option<Duration>,
    /// Most bytes of hints this node hands off per second, over all the nodes it holds hints
    /// for (below client traffic in priority; faster drains, more foreground latency)
    /// [default: 4 MiB].
    #[arg(long, value_name = "BYTES")]
    hint_replay_rate: Option<u64>,
    /// How often each pair of primaries of a partition is compared by anti-entropy (by one of
    /// the two) [default: 2m, at least 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    anti_entropy_interval: Option<Duration>,
    /// Compare no partitions on a schedule: the node still answers its peers' exchanges and
    /// runs those `shoal cluster repair` asks for.
    #[arg(long, conflicts_with = "anti_entropy_interval")]
    no_anti_entropy: bool,
    /// Do not repair replicas on reads. For tests of anti-entropy alone: with it off, only
    /// anti-entropy and hinted handoff bring a stale replica up to date.
    #[arg(long)]
    no_read_repair: bool,
    /// Write no hints: no fallback stands in for a primary judged down, and a coordinator keeps
    /// no hint for a primary that did not ack (it still hands off hints it holds). For tests
    /// of anti-entropy alone.
    #[arg(long)]
    no_hints: bool,
    /// How long a reaped tombstone's reaping record is kept; must be longer than
    /// --max-hint-window [default: 4h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    reaped_retention: Option<Duration>,
    /// Reap no tombstones (this node still applies its peers' reap asks).
    #[arg(long)]
    no_reaping: bool,
    /// Async worker threads (QUIC, streams and the node's task; storage commits have their own
    /// thread) [default: one per core]. Nodes sharing a machine do best with the cores divided
    /// among them: `shoal dev` gives each node cores / nodes, at least one.
    #[arg(long, value_name = "N")]
    pub(crate) worker_threads: Option<NonZeroUsize>,
}

/// One `ID=ADDR[@ZONE]` of `--initial-members`.
#[derive(Debug, Clone)]
pub(crate) struct MemberArg {
    id: NodeId,
    addr: SocketAddr,
    zone: Option<Zone>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = config(args)?;
    let node = config.node_id.clone();
    let server = Server::start(config)
        .await
        .with_context(|| format!("node {node} could not start"))?;
    tracing::info!(node = %node, "listening on {}", server.local_addr());
    server
        .run_until_signal()
        .await
        .with_context(|| format!("node {node} did not shut down cleanly"))?;
    tracing::info!(node = %node, "stopped");
    Ok(Outcome::Done)
}

fn config(args: Args) -> anyhow::Result<ServerConfig> {
    let zone = args.zone.clone().unwrap_or_default();
    let mut members: Vec<Member> = args
        .initial_members
        .iter()
        .map(|m| {
            // This node's entry takes --zone when it names none itself.
            let zone = match (&m.zone, m.id == args.node_id) {
                (Some(z), _) => z.clone(),
                (None, true) => zone.clone(),
                (None, false) => Zone::default_zone(),
            };
            Member::new(m.id.clone(), m.addr).in_zone(zone)
        })
        .collect();
    if !members.is_empty() && !members.iter().any(|m| m.id == args.node_id) {
        let addr = args.advertise.unwrap_or(args.listen);
        members.push(Member::new(args.node_id.clone(), addr).in_zone(zone.clone()));
    }
    // A joining node cannot count the members: the cluster default N is 3.
    let size = if args.join.is_empty() {
        members.len().max(1)
    } else {
        3
    };
    let n = args.n.unwrap_or_else(|| size.min(3) as u8);
    let majority = n / 2 + 1;
    let quorum = Quorum::new(
        n,
        args.r.unwrap_or(majority),
        args.w.unwrap_or(majority),
        args.pr,
        args.pw,
    )
    .map_err(|e| UsageError(e.to_string()))?;
    let partitions = PartitionCount::new(args.partitions).map_err(|e| UsageError(e.to_string()))?;

    let mut config = ServerConfig::new(args.node_id, args.listen, args.data_dir, args.certs);
    config.advertise = args.advertise;
    config.members = members;
    config.join = args.join;
    config.zone = zone;
    config.metrics = args.metrics;
    config.quorum = quorum;
    config.partitions = partitions;
    if let Some(t) = args.request_timeout {
        config.request_timeout = t;
    }
    if let Some(t) = args.shutdown_timeout {
        config.shutdown_timeout = t;
    }
    if let Some(t) = args.gossip_interval {
        config.gossip_interval = t;
    }
    if let Some(b) = args.max_hint_bytes {
        config.hints.max_hint_bytes = b;
    }
    if let Some(t) = args.max_hint_window {
        config.hints.max_hint_window = t;
    }
    if let Some(r) = args.hint_replay_rate {
        config.hints.replay_rate = r;
    }
    if let Some(t) = args.anti_entropy_interval {
        config.anti_entropy.interval = t;
    }
    config.anti_entropy.enabled = !args.no_anti_entropy;
    config.read_repair = !args.no_read_repair;
    config.hints.enabled = !args.no_hints;
    if let Some(t) = args.reaped_retention {
        config.reaper.retention = t;
    }
    config.reaper.enabled = !args.no_reaping;
    Ok(config)
}

/// Parses `ID=ADDR` or `ID=ADDR@ZONE`.
fn parse_member(s: &str) -> Result<MemberArg, String> {
    let (id, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ID=ADDR[@ZONE]"))?;
    let (addr, zone) = match rest.split_once('@') {
        Some((addr, zone)) => (addr, Some(zone.parse::<Zone>().map_err(|e| e.to_string())?)),
        None => (rest, None),
    };
    Ok(MemberArg {
        id: id
            .parse()
            .map_err(|e: shoal_types::TypesError| e.to_string())?,
        addr: parse_addr(addr)?,
        zone,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config_of(extra: &str) -> Result<ServerConfig, String> {
        let line = format!("--node-id n1 --listen 127.0.0.1:7001 --data-dir d --certs c {extra}");
        let cli = Cli::try_parse_from(std::iter::once("server").chain(line.split_whitespace()))
            .map_err(|e| e.to_string())?;
        config(cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn anti_entropy_and_read_repair_are_on_unless_switched_off() {
        let c = config_of("").unwrap();
        assert!(c.anti_entropy.enabled && c.read_repair);
        let c = config_of("--anti-entropy-interval 30s").unwrap();
        assert_eq!(c.anti_entropy.interval, Duration::from_secs(30));
        assert!(c.anti_entropy.enabled);
        let c = config_of("--no-anti-entropy --no-read-repair").unwrap();
        assert!(!c.anti_entropy.enabled && !c.read_repair);
        assert!(config_of("--no-anti-entropy --anti-entropy-interval 30s").is_err());
    }

    #[test]
    fn hints_and_reaping_flags_set_their_settings() {
        let c = config_of("").unwrap();
        assert!(c.hints.enabled && c.reaper.enabled);
        let c = config_of("--no-hints --no-reaping --reaped-retention 5h").unwrap();
        assert!(!c.hints.enabled && !c.reaper.enabled);
        assert_eq!(c.reaper.retention, Duration::from_secs(5 * 3600));
    }

    #[test]
    fn members_parse_with_and_without_zones() {
        let m = parse_member("n1=127.0.0.1:7001").unwrap();
        assert_eq!(m.id.as_str(), "n1");
        assert_eq!(m.addr.port(), 7001);
        assert!(m.zone.is_none());
        let m = parse_member("n2=127.0.0.1:7002@east").unwrap();
        assert_eq!(m.zone.unwrap().as_str(), "east");
        for bad in [
            "n1",
            "n1=",
            "bad id=127.0.0.1:1",
            "n1=127.0.0.1:1@",
            "n1=nowhere",
        ] {
            assert!(parse_member(bad).is_err(), "{bad}");
        }
    }
}
