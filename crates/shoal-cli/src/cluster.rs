//! `shoal cluster …`: what an operator asks of the cluster (admin certificate).

use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_client::{ClientError, NodeStatus, Role};

use crate::args::{ConnectArgs, OutputArgs};
use crate::exit::Outcome;
use crate::json::Json;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// One node's view: whether its storage is healthy, members with addresses and zones,
    /// which it can reach, the ring epoch and partitions per node. Asks the first --node that
    /// answers.
    Status(StatusArgs),
}

impl Command {
    pub(crate) fn json(&self) -> bool {
        match self {
            Command::Status(a) => a.output.json,
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

pub(crate) async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Status(args) => status(args).await,
    }
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

fn reachability(status: &NodeStatus, id: &shoal_types::NodeId) -> Option<bool> {
    if *id == status.node {
        return None;
    }
    Some(status.peers.iter().any(|p| p.node == *id && p.reachable))
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
    println!(
        "ring epoch {}, {} partitions, N={}, {} members",
        ring.epoch(),
        ring.q().get(),
        ring.n().get(),
        ring.members().len()
    );
    let width = ring
        .members()
        .iter()
        .map(|m| m.id.as_str().len())
        .max()
        .unwrap_or(2)
        .max(4);
    println!(
        "{:<width$}  {:<22}  {:<10}  {:>10}  reachable",
        "node", "address", "zone", "partitions"
    );
    for m in ring.members() {
        let reachable = match reachability(status, &m.id) {
            None => "(this node)",
            Some(true) => "yes",
            Some(false) => "NO",
        };
        println!(
            "{:<width$}  {:<22}  {:<10}  {:>10}  {reachable}",
            m.id.as_str(),
            m.addr.to_string(),
            m.zone.as_str(),
            ring.partitions_owned_by(&m.id),
        );
    }
}

fn status_json(addr: std::net::SocketAddr, status: &NodeStatus) -> Json {
    let ring = &status.ring;
    let members = ring
        .members()
        .iter()
        .map(|m| {
            Json::object([
                ("id", Json::string(m.id.as_str())),
                ("address", Json::string(m.addr.to_string())),
                ("zone", Json::string(m.zone.as_str())),
                ("capacity", Json::Number(u64::from(m.capacity.get()))),
                (
                    "partitions",
                    Json::Number(ring.partitions_owned_by(&m.id) as u64),
                ),
                (
                    "reachable",
                    match reachability(status, &m.id) {
                        None => Json::Null,
                        Some(r) => Json::Bool(r),
                    },
                ),
                ("self", Json::Bool(m.id == status.node)),
            ])
        })
        .collect();
    Json::object([
        ("node", Json::string(status.node.as_str())),
        ("address", Json::string(addr.to_string())),
        ("incarnation", Json::string(status.incarnation.to_string())),
        ("storage_healthy", Json::Bool(status.storage_healthy)),
        ("epoch", Json::Number(ring.epoch().get())),
        ("partitions", Json::Number(u64::from(ring.q().get()))),
        ("n", Json::Number(u64::from(ring.n().get()))),
        ("members", Json::Array(members)),
    ])
}
