//! `shoal cluster …`: what an operator asks of the cluster (admin certificate).

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_client::{ClientError, NodeStatus, PartitionDivergence, PeerStatus, Role, TreesState};
use shoal_types::{NodeId, PartitionId};

use crate::args::{ConnectArgs, OutputArgs};
use crate::exit::Outcome;
use crate::json::Json;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// One node's view: whether its storage is healthy; every member with its address, zone,
    /// membership status and partitions, and whether this node judges it reachable (with the
    /// failure detector's phi and when its last heartbeat came); the ring epoch and a hash of
    /// the membership document (equal on nodes that agree); the hints the node holds for
    /// others. Asks the first --node that answers.
    Status(StatusArgs),
    /// The hints every member holds for members that were down (keys, bytes, the oldest), and
    /// how their handoff stands. Asks each member of the ring; `--watch` asks again every
    /// second, and `--until-empty` stops once no member holds any.
    Hints(HintsArgs),
    /// Anti-entropy on demand: asks the first --node that answers to compare its partitions
    /// (or --partition) with their other primaries (or --peer) now, and prints how many
    /// exchanges it started. With --status, prints every member's per-partition divergence
    /// instead: when each partition last matched all its replicas, and what the last exchange
    /// with each other primary found and repaired.
    Repair(RepairArgs),
}

impl Command {
    pub(crate) fn json(&self) -> bool {
        match self {
            Command::Status(a) => a.output.json,
            Command::Hints(a) => a.output.json,
            Command::Repair(a) => a.output.json,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct HintsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Ask again every second, printing each time (stop with Ctrl-C).
    #[arg(long)]
    watch: bool,
    /// With --watch: stop once no member holds any hint.
    #[arg(long, requires = "watch")]
    until_empty: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RepairArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Only this partition (its index, below Q) [default: every partition of the node].
    #[arg(long, value_name = "P", conflicts_with = "status")]
    partition: Option<u32>,
    /// Only pairs with this other primary (a node id) [default: each other primary].
    #[arg(long, value_name = "ID", conflicts_with = "status")]
    peer: Option<NodeId>,
    /// Start nothing: print every member's per-partition divergence table.
    #[arg(long)]
    status: bool,
}

pub(crate) async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Status(args) => status(args).await,
        Command::Hints(args) => hints(args).await,
        Command::Repair(args) => repair(args).await,
    }
}

async fn repair(args: RepairArgs) -> anyhow::Result<Outcome> {
    let client = args.connect.connect(Role::Admin).await?;
    let result = if args.status {
        repair_status(&client, &args).await
    } else {
        repair_now(&client, &args).await
    };
    client.close().await;
    result
}

/// Asks the first node that answers to repair what `args` names.
async fn repair_now(client: &shoal_client::Client, args: &RepairArgs) -> anyhow::Result<Outcome> {
    let partition = args.partition.map(PartitionId::from_index_unchecked);
    let mut last = None;
    for &addr in &args.connect.nodes {
        match client.repair(addr, partition, args.peer.clone()).await {
            Ok(Ok(exchanges)) => {
                if args.output.json {
                    let answer = Json::object([
                        ("address", Json::string(addr.to_string())),
                        ("exchanges", Json::Number(exchanges)),
                    ]);
                    println!("{answer}");
                } else {
                    println!("{}", repair_started(addr, exchanges));
                }
                return Ok(Outcome::Done);
            }
            // The node's refusal would be the same asked again: a usage error.
            Ok(Err(refusal)) => {
                return Err(crate::exit::UsageError(format!("{addr} refused: {refusal}")).into());
            }
            Err(e) if !e.is_availability() => return Err(e).context("cluster repair"),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or(ClientError::NoNodeReachable {
        tried: args.connect.nodes.clone(),
        last_error: None,
    });
    Err(e).context("cluster repair")
}

fn repair_started(addr: std::net::SocketAddr, exchanges: u64) -> String {
    format!(
        "{addr} started {exchanges} exchange{} (they run a few at a time; see `shoal cluster \
         repair --status`)",
        if exchanges == 1 { "" } else { "s" }
    )
}

/// Prints every member's divergence table.
async fn repair_status(
    client: &shoal_client::Client,
    args: &RepairArgs,
) -> anyhow::Result<Outcome> {
    let ring = client.ring();
    let mut holders: Vec<Holder> = Vec::new();
    for member in ring.members() {
        let answer = client.status(member.addr).await;
        if let Err(e) = &answer
            && !e.is_availability()
        {
            return Err(anyhow::anyhow!("{e}")).context("cluster repair --status");
        }
        holders.push((member.id.clone(), member.addr, answer));
    }
    if args.output.json {
        let nodes = holders
            .iter()
            .map(|(id, addr, answer)| {
                Json::object([
                    ("node", Json::string(id.as_str())),
                    ("address", Json::string(addr.to_string())),
                    (
                        "divergence",
                        answer.as_ref().map_or(Json::Null, divergence_json),
                    ),
                    (
                        "error",
                        answer
                            .as_ref()
                            .err()
                            .map_or(Json::Null, |e| Json::string(e.to_string())),
                    ),
                ])
            })
            .collect();
        println!("{}", Json::Array(nodes));
    } else {
        for (i, (id, addr, answer)) in holders.iter().enumerate() {
            if i > 0 {
                println!();
            }
            match answer {
                Err(e) => println!("{id} (no answer from {addr}: {e})"),
                Ok(status) => print!("{}", divergence_table(addr, status)),
            }
        }
    }
    Ok(Outcome::Done)
}

/// A duration as an operator reads it: `850ms`, `42s`, `2m10s`, `3h5m`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// Each partition the node is a primary of, with another primary: how long ago it matched all
/// of them (`None`: not since it started, or never compared).
fn matched_all(status: &NodeStatus) -> Vec<(PartitionId, Option<Duration>)> {
    let ring = &status.ring;
    ring.q()
        .partitions()
        .filter(|p| ring.is_primary(&status.node, *p) && ring.primaries(*p).len() > 1)
        .map(|p| {
            let known = status.divergence.iter().find(|d| d.partition == p);
            (p, known.and_then(|d| d.matched_all_ago))
        })
        .collect()
}

/// One line on how the node's partitions stand against their other replicas.
fn divergence_summary(status: &NodeStatus) -> String {
    let all = matched_all(status);
    if all.is_empty() {
        return "anti-entropy: no partition of this node has another replica".into();
    }
    let oldest = all.iter().filter_map(|(_, ago)| *ago).max();
    let never: Vec<String> = all
        .iter()
        .filter(|(_, ago)| ago.is_none())
        .map(|(p, _)| p.to_string())
        .collect();
    if never.is_empty() {
        return format!(
            "anti-entropy: all {} partitions matched all their replicas within {}",
            all.len(),
            short(oldest.unwrap_or_default())
        );
    }
    const LISTED: usize = 8;
    let mut list = never
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if never.len() > LISTED {
        list.push_str(&format!(" and {} more", never.len() - LISTED));
    }
    let matched = all.len() - never.len();
    let within = oldest.map_or_else(String::new, |d| format!(" within {}", short(d)));
    format!(
        "anti-entropy: {matched} of {} partitions matched all their replicas{within}; not \
         matched since this node started: {list}",
        all.len()
    )
}

/// The node's divergence, a row per partition and other primary.
fn divergence_table(addr: &std::net::SocketAddr, status: &NodeStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} at {addr}: {}",
        status.node,
        divergence_summary(status)
    );
    let _ = writeln!(
        out,
        "{:>9}  {:>11}  {:<12}  {:>8}  {:<5}  {:<7}  {:>8}  {:>8}  {:>8}  {:>10}",
        "partition",
        "matched all",
        "peer",
        "last",
        "by",
        "matched",
        "segments",
        "keys",
        "repaired",
        "equal"
    );
    let ago = |d: Option<Duration>| d.map_or_else(|| "never".into(), short);
    for (partition, matched_all_ago) in matched_all(status) {
        let d = status.divergence.iter().find(|d| d.partition == partition);
        // PartitionId's Display does not pad: pad its text.
        let partition = partition.to_string();
        let peers = d.map_or(&[][..], |d| &d.peers[..]);
        if peers.is_empty() {
            let _ = writeln!(
                out,
                "{partition:>9}  {:>11}  {:<12}",
                ago(matched_all_ago),
                "(none compared yet)"
            );
        }
        for p in peers {
            let _ = writeln!(
                out,
                "{partition:>9}  {:>11}  {:<12}  {:>8}  {:<5}  {:<7}  {:>8}  {:>8}  {:>8}  {:>10}",
                ago(matched_all_ago),
                p.peer.as_str(),
                short(p.ago),
                if p.ran_here { "here" } else { "peer" },
                if p.matched { "yes" } else { "no" },
                p.segments_differing,
                p.keys_differing,
                p.keys_repaired,
                ago(p.matched_ago),
            );
        }
    }
    out
}

fn divergence_json(status: &NodeStatus) -> Json {
    let ms = |d: Option<Duration>| d.map_or(Json::Null, |d| Json::Number(d.as_millis() as u64));
    let partition = |d: &PartitionDivergence| {
        let peers = d
            .peers
            .iter()
            .map(|p| {
                Json::object([
                    ("peer", Json::string(p.peer.as_str())),
                    ("ago_ms", ms(Some(p.ago))),
                    ("ran_here", Json::Bool(p.ran_here)),
                    ("matched", Json::Bool(p.matched)),
                    ("segments_differing", Json::Number(p.segments_differing)),
                    ("keys_differing", Json::Number(p.keys_differing)),
                    ("keys_repaired", Json::Number(p.keys_repaired)),
                    ("matched_ago_ms", ms(p.matched_ago)),
                ])
            })
            .collect();
        Json::object([
            ("partition", Json::Number(u64::from(d.partition.index()))),
            ("matched_all_ago_ms", ms(d.matched_all_ago)),
            ("peers", Json::Array(peers)),
        ])
    };
    Json::Array(status.divergence.iter().map(partition).collect())
}

/// What one member answered about its hints: its status, or why it did not answer.
type Holder = (
    shoal_types::NodeId,
    std::net::SocketAddr,
    Result<NodeStatus, ClientError>,
);

async fn hints(args: HintsArgs) -> anyhow::Result<Outcome> {
    let client = args.connect.connect(Role::Admin).await?;
    let result = watch_hints(&client, &args).await;
    client.close().await;
    result
}

async fn watch_hints(client: &shoal_client::Client, args: &HintsArgs) -> anyhow::Result<Outcome> {
    let ring = client.ring();
    loop {
        let mut holders: Vec<Holder> = Vec::new();
        for member in ring.members() {
            let answer = client.status(member.addr).await;
            if let Err(e) = &answer
                && !e.is_availability()
            {
                return Err(anyhow::anyhow!("{e}")).context("cluster hints");
            }
            holders.push((member.id.clone(), member.addr, answer));
        }
        let held: u64 = holders
            .iter()
            .filter_map(|(_, _, s)| s.as_ref().ok())
            .flat_map(|s| &s.hints)
            .map(|q| q.keys)
            .sum();
        if args.output.json {
            println!("{}", hints_json(&holders));
        } else {
            print_hints(&holders);
        }
        if !args.watch || (args.until_empty && held == 0) {
            return Ok(Outcome::Done);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if !args.output.json {
            println!();
        }
    }
}

/// How long ago `unix_ms` was, for a hint's age.
fn age(unix_ms: u64) -> std::time::Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(std::time::Duration::from_millis(unix_ms))
}

fn print_hints(holders: &[Holder]) {
    println!(
        "{:<12}  {:<12}  {:>10}  {:>12}  {:>10}  {:<9}  {:>10}",
        "holder", "target", "keys", "bytes", "oldest", "replaying", "replayed"
    );
    let mut total = (0u64, 0u64);
    for (id, addr, answer) in holders {
        match answer {
            Err(e) => println!("{:<12}  (no answer from {addr}: {e})", id.as_str()),
            Ok(status) if status.hints.is_empty() => {
                println!("{:<12}  {:<12}  {:>10}", id.as_str(), "-", 0);
            }
            Ok(status) => {
                for q in &status.hints {
                    total = (total.0 + q.keys, total.1 + q.bytes);
                    let oldest = q
                        .oldest_unix_ms
                        .map_or_else(|| "-".into(), |t| format!("{:.0}s", age(t).as_secs_f64()));
                    println!(
                        "{:<12}  {:<12}  {:>10}  {:>12}  {:>10}  {:<9}  {:>10}",
                        id.as_str(),
                        q.target.as_str(),
                        q.keys,
                        q.bytes,
                        oldest,
                        if q.replaying { "yes" } else { "no" },
                        q.replayed,
                    );
                }
            }
        }
    }
    println!("hints held: {} keys, {} bytes", total.0, total.1);
}

fn hint_queues_json(status: &NodeStatus) -> Json {
    Json::Array(
        status
            .hints
            .iter()
            .map(|q| {
                Json::object([
                    ("target", Json::string(q.target.as_str())),
                    ("keys", Json::Number(q.keys)),
                    ("bytes", Json::Number(q.bytes)),
                    (
                        "oldest_unix_ms",
                        q.oldest_unix_ms.map_or(Json::Null, Json::Number),
                    ),
                    ("replaying", Json::Bool(q.replaying)),
                    ("replayed", Json::Number(q.replayed)),
                ])
            })
            .collect(),
    )
}

fn hints_json(holders: &[Holder]) -> Json {
    Json::Array(
        holders
            .iter()
            .map(|(id, addr, answer)| {
                Json::object([
                    ("node", Json::string(id.as_str())),
                    ("address", Json::string(addr.to_string())),
                    (
                        "hints",
                        match answer {
                            Ok(status) => hint_queues_json(status),
                            Err(_) => Json::Null,
                        },
                    ),
                    (
                        "error",
                        match answer {
                            Ok(_) => Json::Null,
                            Err(e) => Json::string(e.to_string()),
                        },
                    ),
                ])
            })
            .collect(),
    )
}

async fn status(args: StatusArgs) -> anyhow::Result<Outcome> {
    let client = args.connect.connect(Role::Admin).await?;
    let mut last = None;
    let mut answer = None;
    for &addr in &args.connect.nodes {
        match client.status(addr).await {
            Ok(status) => {
                answer = Some((addr, status));
                break;
            }
            // Unauthorized and the like would be the same on every node.
            Err(e) if !e.is_availability() => return Err(e).context("cluster status"),
            Err(e) => last = Some(e),
        }
    }
    client.close().await;
    let Some((addr, status)) = answer else {
        let e = last.unwrap_or(ClientError::NoNodeReachable {
            tried: args.connect.nodes.clone(),
            last_error: None,
        });
        return Err(e).context("cluster status");
    };
    if args.output.json {
        println!("{}", status_json(addr, &status));
    } else {
        print_status(addr, &status);
    }
    Ok(Outcome::Done)
}

/// How the answering node judges member `id` (`None` for itself).
fn peer<'a>(status: &'a NodeStatus, id: &shoal_types::NodeId) -> Option<&'a PeerStatus> {
    status.peers.iter().find(|p| p.node == *id)
}

/// Every member the answering node knows: the ring's, then any known only through gossip.
fn member_ids(status: &NodeStatus) -> Vec<shoal_types::NodeId> {
    let mut ids: Vec<shoal_types::NodeId> =
        status.ring.members().iter().map(|m| m.id.clone()).collect();
    for p in &status.peers {
        if !ids.contains(&p.node) {
            ids.push(p.node.clone());
        }
    }
    ids
}

/// One member's row: (address, zone, membership status, partitions, generation).
fn describe(
    status: &NodeStatus,
    id: &shoal_types::NodeId,
) -> (String, String, &'static str, usize, u64) {
    let ring = &status.ring;
    let record = if *id == status.node {
        Some(&status.record)
    } else {
        peer(status, id).map(|p| &p.record)
    };
    let member = ring.members().iter().find(|m| m.id == *id);
    let addr = member.map(|m| m.addr).or(record.map(|r| r.addr));
    let zone = member
        .map(|m| m.zone.clone())
        .or(record.map(|r| r.zone.clone()));
    (
        addr.map_or_else(|| "?".into(), |a| a.to_string()),
        zone.map_or_else(|| "?".into(), |z| z.as_str().to_owned()),
        record.map_or("?", |r| r.status.name()),
        ring.partitions_owned_by(id),
        record.map_or(0, |r| r.generation),
    )
}

fn print_status(addr: std::net::SocketAddr, status: &NodeStatus) {
    let ring = &status.ring;
    println!(
        "node {} at {addr} (incarnation {})",
        status.node, status.incarnation
    );
    if status.storage_healthy {
        println!("storage healthy");
    } else {
        println!(
            "storage FAILED: a commit failed in this run; the node stores and coordinates no \
             writes until it restarts"
        );
    }
    match status.trees {
        TreesState::Ready => {}
        TreesState::Building {
            records_done,
            records_total,
        } => println!(
            "anti-entropy trees building: {records_done} of {records_total} records \
             (anti-entropy waits for them)"
        ),
        TreesState::Failed => {
            println!("anti-entropy trees FAILED to build: no anti-entropy until a restart")
        }
    }
    let ids = member_ids(status);
    println!(
        "ring epoch {}, {} partitions, N={}, {} members, membership {:016x}",
        ring.epoch(),
        ring.q().get(),
        ring.n().get(),
        ids.len(),
        status.membership_hash,
    );
    let width = ids
        .iter()
        .map(|id| id.as_str().len())
        .max()
        .unwrap_or(2)
        .max(4);
    println!(
        "{:<width$}  {:<22}  {:<10}  {:<8}  {:>10}  {:<11}  {:>6}  {:>8}",
        "node", "address", "zone", "status", "partitions", "reachable", "phi", "heard"
    );
    for id in &ids {
        let (address, zone, member_status, partitions, _) = describe(status, id);
        let (reachable, phi, heard) = match peer(status, id) {
            None if *id == status.node => {
                ("(this node)".to_owned(), "-".to_owned(), "-".to_owned())
            }
            None => ("?".to_owned(), "-".to_owned(), "-".to_owned()),
            Some(p) => (
                if p.reachable { "yes" } else { "NO" }.to_owned(),
                p.phi.map_or_else(|| "-".into(), |x| format!("{x:.1}")),
                p.last_heard.map_or_else(
                    || "never".into(),
                    |d| format!("{:.1}s ago", d.as_secs_f64()),
                ),
            ),
        };
        println!(
            "{:<width$}  {address:<22}  {zone:<10}  {member_status:<8}  {partitions:>10}  {reachable:<11}  {phi:>6}  {heard:>8}",
            id.as_str(),
        );
    }
    if status.hints.is_empty() {
        println!("hints held: none");
    }
    for q in &status.hints {
        let oldest = q
            .oldest_unix_ms
            .map_or_else(|| "-".into(), |t| format!("{:.0}s", age(t).as_secs_f64()));
        println!(
            "hints held for {}: {} keys, {} bytes, oldest {oldest} old{}",
            q.target,
            q.keys,
            q.bytes,
            if q.replaying { ", handing off" } else { "" }
        );
    }
    println!("{}", divergence_summary(status));
}

fn status_json(addr: std::net::SocketAddr, status: &NodeStatus) -> Json {
    let ring = &status.ring;
    let members = member_ids(status)
        .iter()
        .map(|id| {
            let (address, zone, member_status, partitions, generation) = describe(status, id);
            let p = peer(status, id);
            let capacity = ring
                .members()
                .iter()
                .find(|m| m.id == *id)
                .map(|m| m.capacity)
                .or(p.map(|p| p.record.capacity));
            let incarnation = if *id == status.node {
                Some(status.incarnation)
            } else {
                p.filter(|p| p.record.generation > 0)
                    .map(|p| p.record.incarnation)
            };
            Json::object([
                ("id", Json::string(id.as_str())),
                ("address", Json::string(address)),
                ("zone", Json::string(zone)),
                (
                    "capacity",
                    capacity.map_or(Json::Null, |c| Json::Number(u64::from(c.get()))),
                ),
                ("status", Json::string(member_status)),
                ("partitions", Json::Number(partitions as u64)),
                (
                    "reachable",
                    p.map_or(Json::Null, |p| Json::Bool(p.reachable)),
                ),
                ("phi", p.and_then(|p| p.phi).map_or(Json::Null, Json::Float)),
                (
                    "last_heard_ms",
                    p.and_then(|p| p.last_heard)
                        .map_or(Json::Null, |d| Json::Number(d.as_millis() as u64)),
                ),
                ("generation", Json::Number(generation)),
                (
                    "incarnation",
                    incarnation.map_or(Json::Null, |i| Json::string(i.to_string())),
                ),
                ("self", Json::Bool(*id == status.node)),
            ])
        })
        .collect();
    Json::object([
        ("node", Json::string(status.node.as_str())),
        ("address", Json::string(addr.to_string())),
        ("incarnation", Json::string(status.incarnation.to_string())),
        ("storage_healthy", Json::Bool(status.storage_healthy)),
        (
            "trees",
            Json::string(match status.trees {
                TreesState::Ready => "ready",
                TreesState::Building { .. } => "building",
                TreesState::Failed => "failed",
            }),
        ),
        (
            "membership_hash",
            Json::string(format!("{:016x}", status.membership_hash)),
        ),
        ("epoch", Json::Number(ring.epoch().get())),
        ("partitions", Json::Number(u64::from(ring.q().get()))),
        ("n", Json::Number(u64::from(ring.n().get()))),
        ("members", Json::Array(members)),
        ("hints", hint_queues_json(status)),
        ("divergence", divergence_json(status)),
    ])
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use shoal_client::PairDivergence;
    use shoal_protocol::{MemberRecord, MemberStatus};
    use shoal_ring::{Member, Ring};
    use shoal_types::{Capacity, Incarnation, PartitionCount, ReplicationFactor, Zone};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(line: &str) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("cluster").chain(line.split_whitespace()))
            .map(|c| c.command)
    }

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    /// n1's status in a ring of three nodes, N=3 (every partition has two other primaries),
    /// with `divergence`.
    fn status(divergence: Vec<PartitionDivergence>) -> NodeStatus {
        let addr = |i: u16| std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i));
        let members = (1..=3)
            .map(|i| Member::new(id(&format!("n{i}")), addr(i)))
            .collect();
        let ring = Ring::new(
            members,
            PartitionCount::new(4).unwrap(),
            ReplicationFactor::new(3).unwrap(),
        )
        .unwrap();
        NodeStatus {
            node: id("n1"),
            incarnation: Incarnation::new(1),
            ring,
            peers: Vec::new(),
            record: MemberRecord {
                generation: 1,
                version: 0,
                id: id("n1"),
                incarnation: Incarnation::new(1),
                addr: addr(1),
                zone: Zone::default_zone(),
                capacity: Capacity::default(),
                status: MemberStatus::Valid,
            },
            membership_hash: 0,
            storage_healthy: true,
            trees: TreesState::Ready,
            hints: Vec::new(),
            divergence,
        }
    }

    fn pair(peer: &str, matched_ago: Option<u64>) -> PairDivergence {
        PairDivergence {
            peer: id(peer),
            ago: Duration::from_secs(3),
            ran_here: true,
            matched: matched_ago.is_some(),
            segments_differing: 2,
            keys_differing: 5,
            keys_repaired: 4,
            matched_ago: matched_ago.map(Duration::from_secs),
        }
    }

    fn partition(p: u32, matched_all_ago: Option<u64>) -> PartitionDivergence {
        PartitionDivergence {
            partition: PartitionId::from_index_unchecked(p),
            matched_all_ago: matched_all_ago.map(Duration::from_secs),
            peers: vec![pair("n2", matched_all_ago), pair("n3", Some(1))],
        }
    }

    #[test]
    fn repair_takes_a_partition_and_a_peer_or_asks_for_the_status() {
        let base = "repair --node 127.0.0.1:7001 --certs c";
        let Command::Repair(a) = parse(&format!("{base} --partition 3 --peer n2")).unwrap() else {
            panic!("not repair");
        };
        assert_eq!(a.partition, Some(3));
        assert_eq!(a.peer, Some(id("n2")));
        assert!(!a.status);
        let Command::Repair(a) = parse(&format!("{base} --status --json")).unwrap() else {
            panic!("not repair");
        };
        assert!(a.status && a.output.json && a.partition.is_none());
        assert!(parse(&format!("{base} --status --partition 3")).is_err());
        assert!(parse(&format!("{base} --peer bad id")).is_err());
    }

    #[test]
    fn short_durations_read_as_an_operator_would() {
        assert_eq!(short(Duration::from_millis(850)), "850ms");
        assert_eq!(short(Duration::from_secs(42)), "42s");
        assert_eq!(short(Duration::from_secs(130)), "2m10s");
        assert_eq!(short(Duration::from_secs(3 * 3600 + 300)), "3h5m");
    }

    #[test]
    fn status_says_every_partition_matched_within_the_oldest_match() {
        let all = (0..4)
            .map(|p| partition(p, Some(10 + u64::from(p) * 40)))
            .collect();
        assert_eq!(
            divergence_summary(&status(all)),
            "anti-entropy: all 4 partitions matched all their replicas within 2m10s"
        );
    }

    #[test]
    fn status_names_the_partitions_not_matched_since_the_start() {
        let some = vec![partition(0, Some(5)), partition(2, None)];
        assert_eq!(
            divergence_summary(&status(some)),
            "anti-entropy: 1 of 4 partitions matched all their replicas within 5s; not matched \
             since this node started: 1, 2, 3"
        );
        assert_eq!(
            divergence_summary(&status(Vec::new())),
            "anti-entropy: 0 of 4 partitions matched all their replicas; not matched since this \
             node started: 0, 1, 2, 3"
        );
    }

    #[test]
    fn the_divergence_table_has_a_row_per_pair_and_marks_partitions_never_compared() {
        let s = status(vec![partition(0, Some(5)), partition(2, None)]);
        let table = divergence_table(&s.record.addr, &s);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 2 + 1 + 2 + 1, "{table}");
        assert!(lines[0].starts_with("n1 at 127.0.0.1:7001: anti-entropy: 1 of 4"));
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            ["0", "5s", "n2", "3s", "here", "yes", "2", "5", "4", "5s"]
        );
        assert!(lines[4].contains("(none compared yet)"), "{table}");
        let never: Vec<&str> = lines[5].split_whitespace().collect();
        assert_eq!(never[..3], ["2", "never", "n2"]);
        assert_eq!(never[5], "no");
    }

    #[test]
    fn divergence_json_carries_every_figure() {
        let s = status(vec![partition(2, None)]);
        let json = divergence_json(&s).to_string();
        assert!(
            json.starts_with(
                "[{\"partition\":2,\"matched_all_ago_ms\":null,\"peers\":[{\"peer\":\"n2\",\
                 \"ago_ms\":3000,\"ran_here\":true,\"matched\":false,\"segments_differing\":2,\
                 \"keys_differing\":5,\"keys_repaired\":4,\"matched_ago_ms\":null}"
            ),
            "{json}"
        );
        assert_eq!(
            repair_started(s.record.addr, 1),
            "127.0.0.1:7001 started 1 exchange (they run a few at a time; see `shoal cluster \
             repair --status`)"
        );
    }
}
