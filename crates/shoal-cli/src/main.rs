//! `shoal`: the one binary of Shoal.
//!
//! Each subcommand lives in its own module with its clap arguments and a `run` function; `main`
//! parses, sets up logging, dispatches, and turns the outcome into an exit code ([`exit`]).
//! Adding a subcommand is one module and one variant of [`Command`].

mod args;
mod bench;
mod certs;
mod cluster;
mod dev;
mod exit;
mod json;
mod kv;
mod server;

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::exit::Outcome;

/// Shoal: a leaderless, Dynamo-style replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, after_long_help = exit::HELP, after_help = exit::HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make the cluster CA and issue node, client and admin certificates.
    #[command(subcommand)]
    Certs(certs::Command),
    /// Run one node.
    Server(Box<server::Args>),
    /// Run a local cluster of N nodes on loopback, with certificates, until Ctrl-C.
    Dev(dev::Args),
    /// Read a key (or, with --local, one node's own replica of it).
    Get(kv::GetArgs),
    /// Write a value.
    Put(kv::PutArgs),
    /// Delete a key (write a tombstone superseding what the context saw).
    Delete(kv::DeleteArgs),
    /// Inspect the cluster (admin certificate).
    #[command(subcommand)]
    Cluster(cluster::Command),
    /// Measure throughput and latency: W1, custom loads, a node killed mid-run; Shoal or etcd.
    Bench(Box<bench::Args>),
}

impl Command {
    /// The log level when RUST_LOG is not set: servers say what they do, tools stay quiet.
    fn default_log_level(&self) -> &'static str {
        match self {
            Command::Server(_) | Command::Dev(_) => "info",
            _ => "warn",
        }
    }

    /// Whether errors should also be printed as JSON on stdout.
    fn json(&self) -> bool {
        match self {
            Command::Get(a) => a.output.json,
            Command::Put(a) => a.output.json,
            Command::Delete(a) => a.output.json,
            Command::Cluster(c) => c.json(),
            Command::Certs(_) | Command::Server(_) | Command::Dev(_) | Command::Bench(_) => false,
        }
    }

    /// The async worker threads the command asks for (`None`: tokio's default, one per core).
    fn worker_threads(&self) -> Option<usize> {
        match self {
            Command::Server(a) => a.worker_threads.map(NonZeroUsize::get),
            Command::Bench(a) => Some(a.client_threads()),
            _ => None,
        }
    }

    /// Whether the command writes, so that an indeterminate failure may have been applied.
    fn writes(&self) -> bool {
        matches!(self, Command::Put(_) | Command::Delete(_))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.command.default_log_level()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: `shoal dev` sends the nodes' logs to files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let json = cli.command.json();
    let writes = cli.command.writes();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.command.worker_threads() {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Do not wait for tasks still running (background ring refreshes, closing endpoints).
    runtime.shutdown_background();
    match result {
        Ok(Outcome::Done) => ExitCode::from(exit::OK),
        Ok(Outcome::NotFound) => ExitCode::from(exit::NOT_FOUND),
        Err(error) => ExitCode::from(exit::report(&error, json, writes)),
    }
}

async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Certs(c) => certs::run(c),
        Command::Server(a) => server::run(*a).await,
        Command::Dev(a) => dev::run(a).await,
        Command::Get(a) => kv::get(a).await,
        Command::Put(a) => kv::put(a).await,
        Command::Delete(a) => kv::delete(a).await,
        Command::Cluster(c) => cluster::run(c).await,
        Command::Bench(a) => bench::run(*a).await,
    }
}
