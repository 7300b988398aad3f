//! `shoal cluster …`: what an operator asks of the cluster (admin certificate).

use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_client::{ClientError, NodeStatus, PeerStatus, Role};

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
}

impl Command {
    pub(crate) fn json(&self) -> bool {
        match self {
            Command::Status(a) => a.output.json,
            Command::Hints(a) => a.output.json,
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

pub(crate) async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Status(args) => status(args).await,
        Command::Hints(args) => hints(args).await,
    }
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
            "membership_hash",
            Json::string(format!("{:016x}", status.membership_hash)),
        ),
        ("epoch", Json::Number(ring.epoch().get())),
        ("partitions", Json::Number(u64::from(ring.q().get()))),
        ("n", Json::Number(u64::from(ring.n().get()))),
        ("members", Json::Array(members)),
        ("hints", hint_queues_json(status)),
    ])
}
