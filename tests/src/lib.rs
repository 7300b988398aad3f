//! Whole-system test harness for Shoal: real `shoal server` processes of the built binary on
//! 127.0.0.1, talking real QUIC with mutual TLS, optionally each behind a fault-injecting UDP
//! proxy, and driven by the client crate, the `shoal` command line, or raw hostile frames.
//!
//! - [`Cluster`] makes a cluster CA and certificates, starts N nodes (each with its own data
//!   directory and log file in a temporary directory), waits until each answers a ring
//!   request, and can `kill` (SIGKILL), `stop` (SIGTERM), `restart` (same data directory, same
//!   port), `pause` (SIGSTOP) and `resume` (SIGCONT) any of them. Dropping it kills every
//!   process it started, also when a test panics, and removes the directory.
//! - [`Network`] is the fault-injecting proxy layer of a [`ClusterConfig::proxied`] cluster:
//!   one UDP proxy port per node, which the ring advertises as the node's address (`shoal
//!   server --advertise`), so that every datagram to a node, from clients and from the other
//!   nodes, passes its proxy. Per link (node → node, client → node, node → client) it drops,
//!   delays with jitter, duplicates, or blocks datagrams, in one or both directions. The
//!   proxy forwards datagrams only; QUIC identity stays certificate-based end to end.
//! - [`cli`] runs the `shoal` binary as a client ([`Cluster::shoal`]).
//! - [`hostile`] sends what no well-behaved peer would: raw UDP garbage, QUIC streams with
//!   garbage or oversized frames.
//! - [`nemesis`] runs the workloads of `shoal-sim` against a proxied cluster under a seeded
//!   schedule of faults, records the history, heals, reads every replica, and judges it with
//!   `shoal-sim`'s checker.
//!
//! The binary is found next to the test executable (`target/<profile>/shoal`, see
//! [`shoal_binary`]); `cargo test --workspace` builds it (it builds `shoal-cli`'s binary for
//! that crate's own integration tests before running any test).
//!
//! Not here: timing assertions (benches measure performance), and waiting by fixed sleeps:
//! every wait is for a condition, with a deadline.
//!
//! Main types: [`Cluster`], [`ClusterConfig`], [`Network`], [`Peer`], [`LinkFaults`],
//! [`cli::CliOutput`], [`nemesis::NemesisConfig`], [`HarnessError`].

mod binary;
pub mod cli;
mod cluster;
mod error;
pub mod hostile;
pub mod nemesis;
mod process;
mod proxy;

pub use binary::shoal_binary;
pub use cluster::{ADMIN_NAME, CLIENT_NAME, Cluster, ClusterConfig, Metrics, NodeState};
pub use error::HarnessError;
pub use proxy::{LinkFaults, Network, NetworkStats, Peer};

use std::time::Duration;

/// Polls `condition` every 20 ms until it holds or `timeout` passes; whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
