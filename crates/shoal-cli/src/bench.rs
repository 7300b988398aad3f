//! `shoal bench`: the load generator (`shoal-bench`) against a running cluster, a `--dev N`
//! cluster it starts and stops itself, or etcd for comparison.
//!
//! This module only turns arguments into a [`Workload`] and a target, owns the processes
//! (`--dev`) or the kill command (`--kill-cmd`) for phase C, says which server processes and
//! metrics endpoints the bench may watch, and writes the outputs; everything measured is
//! `shoal-bench`'s.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use shoal_bench::{
    AttemptPolicy, BenchReport, Distribution, EtcdTarget, Fault, FaultPlan, Injected, Limit, Load,
    Machine, Overload, PhaseReport, PhaseSpec, PreloadReport, Progress, ServerWatch, ShoalTarget,
    Target, TargetInfo, W1, W1Phase, WatchedNode, Workload, Zipfian,
};
use shoal_client::{Client, ClientConfig, RequestOptions};
use tokio::sync::{mpsc, oneshot};

use crate::args::{parse_addr, parse_duration};
use crate::dev::{
    DevCluster, DevOptions, Restarted, Signals, cores, process_exited, send_signal,
    wait_until_answers,
};
use crate::exit::{Outcome, UsageError};

/// Arguments of `shoal bench`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  shoal bench --dev 3 --workload w1 --json w1.json --plot w1.svg\n  \
    shoal bench --dev 3 --concurrency 1 --ops 10000 --read-ratio 0\n  \
    shoal bench --node 127.0.0.1:7001 --certs DIR --rate 5000 --duration 60s\n  \
    shoal bench --dev 3 --workload w1 --phases b --rate 3700 --attempt-timeout 1s --attempts 3 \
    --max-in-flight 20000\n  \
    shoal bench --dev 3 --workload overload --attempt-timeout 1s --attempts 3\n  \
    shoal bench --dev 5 --workload w1 --phases c --kill-node 4,5 --restart-at 20s\n  \
    shoal bench --target etcd-json --etcd-endpoints http://127.0.0.1:2379 --workload w1 \
    --kill-cmd 'kill -9 PID'\n\nDefaults are W1's: 100,000 keys of 1,024 bytes, 32 in flight, \
    50% reads, uniform keys, 5 s of warm-up, 30 s measured, one attempt per request."
)]
pub(crate) struct Args {
    /// Start a local cluster of N nodes (as `shoal dev` does), measure it, and stop it.
    #[arg(long, value_name = "N", conflicts_with = "nodes")]
    dev: Option<usize>,
    /// The `--dev` cluster's directory [default: a new temporary directory, removed afterwards].
    #[arg(long, value_name = "DIR", requires = "dev")]
    dev_dir: Option<PathBuf>,
    /// A node of a running cluster (repeatable or comma-separated) [default: $SHOAL_NODES].
    #[arg(long = "node", value_name = "ADDR", env = "SHOAL_NODES", hide_env = true, value_delimiter = ',', value_parser = parse_addr)]
    nodes: Vec<SocketAddr>,
    /// The certificate directory of a running cluster [default: $SHOAL_CERTS].
    #[arg(long, value_name = "DIR", env = "SHOAL_CERTS", hide_env = true)]
    certs: Option<PathBuf>,
    /// Which client certificate to use when the directory holds several.
    #[arg(long, value_name = "NAME")]
    cert_name: Option<String>,
    /// What to drive.
    #[arg(long, value_enum, default_value_t = TargetKind::Shoal)]
    target: TargetKind,
    /// etcd's client URLs, comma-separated (with --target etcd or etcd-json).
    #[arg(long, value_name = "URL,...", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Prometheus endpoints (HOST:PORT serving /metrics) of an external cluster's nodes, to
    /// report their overload counters per phase (a --dev cluster's are known).
    #[arg(long = "metrics", value_name = "ADDR,...", value_delimiter = ',', value_parser = parse_addr, conflicts_with = "dev")]
    metrics: Vec<SocketAddr>,
    /// Process ids of an external cluster's servers on this machine, to report their CPU per
    /// operation (a --dev cluster's are known).
    #[arg(
        long,
        value_name = "PID,...",
        value_delimiter = ',',
        conflicts_with = "dev"
    )]
    server_pids: Vec<u32>,

    /// A standard workload: w1 (WORKLOADS.md) runs phases A, B and C; overload measures
    /// capacity (a closed loop), then offers an open loop in steps of it.
    #[arg(long, value_enum)]
    workload: Option<WorkloadName>,
    /// Which of the workload's phases to run, e.g. A,B (phase B alone needs --rate).
    #[arg(
        long,
        value_name = "A,B,C",
        value_delimiter = ',',
        requires = "workload",
        ignore_case = true
    )]
    phases: Vec<PhaseName>,
    /// Keys user00000000 ..; all written before timing unless --no-preload.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    keys: u64,
    /// Bytes per value (random bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    value_size: usize,
    /// Requests in flight (closed loop); in an open loop without --workload, the most in flight
    /// unless --max-in-flight.
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: usize,
    /// Open loops: the most requests in flight; when reached, later requests start late and
    /// their lateness counts [default: --concurrency; W1 phase B: 2 × --concurrency; overload
    /// steps: 20000].
    #[arg(long, value_name = "N")]
    max_in_flight: Option<NonZeroUsize>,
    /// Abandon an attempt that has not answered within this time (its stream is reset) and
    /// send the request again at once, up to --attempts; also the request's deadline at the
    /// server [default: none: one attempt of up to --timeout].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    attempt_timeout: Option<Duration>,
    /// Attempts per request, the first included; a request is sent again only after an
    /// attempt that timed out (updates with the same value and context).
    #[arg(long, value_name = "N", default_value_t = NonZeroU32::MIN)]
    attempts: NonZeroU32,
    /// Overload: the capacity in ops/s the steps are percentages of [default: measured by a
    /// closed loop of --concurrency for --duration (10 s)].
    #[arg(long, value_name = "OPS_PER_S")]
    capacity: Option<f64>,
    /// Overload: the steps, in percent of capacity.
    #[arg(long, value_name = "PCT,...", value_delimiter = ',', value_parser = parse_percent, default_value = "50,100,150,50")]
    steps: Vec<f64>,
    /// Overload: how long each step lasts.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    step_duration: Duration,
    /// Open loop: start requests at this many per second, latency counted from each request's
    /// scheduled start. With --workload w1, phase B's rate (default: half of phase A's).
    #[arg(long, value_name = "OPS_PER_S")]
    rate: Option<f64>,
    /// The share of reads, 0 to 1; the rest are updates.
    #[arg(long, value_name = "RATIO", default_value_t = 0.5)]
    read_ratio: f64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = KeyDistribution::Uniform)]
    distribution: KeyDistribution,
    /// The zipfian skew (s).
    #[arg(long, value_name = "S", default_value_t = Zipfian::DEFAULT_THETA)]
    zipf_theta: f64,
    /// R of each read [default: the cluster's].
    #[arg(long, value_name = "R")]
    r: Option<u8>,
    /// W of each update [default: the cluster's].
    #[arg(long, value_name = "W")]
    w: Option<u8>,
    /// Load before measuring, not recorded.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration_or_zero)]
    warmup: Duration,
    /// How long each phase is measured [default: 30s; overload's capacity phase: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "ops")]
    duration: Option<Duration>,
    /// Measure exactly this many operations instead of a duration.
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// When the node is killed, after warm-up [default: a third of --duration, 10 s for W1].
    /// Without --workload, a kill at this time happens in the one phase.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    kill_at: Option<Duration>,
    /// The command that kills a node of an external cluster (run with sh -c).
    #[arg(long, value_name = "CMD")]
    kill_cmd: Option<String>,
    /// Which --dev nodes to kill, all at once (1-based: 4,5) [default: the last].
    #[arg(long, value_name = "I,...", requires = "dev", value_delimiter = ',')]
    kill_node: Vec<usize>,
    /// Start the killed --dev nodes again at this time after warm-up, with their data (the
    /// hints the others held for them then go home).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    restart_at: Option<Duration>,
    /// An argument for every --dev node's `shoal server` (repeat it), as `shoal dev
    /// --node-arg`: `--node-arg=--no-anti-entropy`.
    #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Do not write the keys first (they are already there).
    #[arg(long)]
    no_preload: bool,
    /// How long one request may take (without --attempt-timeout).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Seeds the key, operation and value choices.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Write every figure and the settings as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the latency percentile spectrum (and p99 over time around a kill) as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// The load generator's async worker threads [default: one per core; with --dev N, the
    /// cores divided among the N nodes and the client, at least one].
    #[arg(long, value_name = "N")]
    client_threads: Option<NonZeroUsize>,
}

impl Args {
    /// How long each phase is measured.
    fn duration(&self) -> Duration {
        self.duration.unwrap_or(DEFAULT_DURATION)
    }

    /// How each request is attempted.
    fn attempt_policy(&self) -> AttemptPolicy {
        AttemptPolicy {
            timeout: self.attempt_timeout,
            attempts: self.attempts,
        }
    }

    /// One attempt's deadline: the attempt timeout, else `--timeout`.
    fn request_timeout(&self) -> Duration {
        self.attempt_timeout.unwrap_or(self.timeout)
    }

    /// The async worker threads this run's client uses.
    pub(crate) fn client_threads(&self) -> usize {
        match (self.client_threads, self.dev) {
            (Some(n), _) => n.get(),
            // The nodes run on the same cores (see `dev`): share them.
            (None, Some(nodes)) => (cores() / (nodes + 1)).max(1),
            (None, None) => cores(),
        }
    }
}

/// Phases measured for this long unless `--duration`.
const DEFAULT_DURATION: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    /// A Shoal cluster (--dev N, or --node and --certs).
    Shoal,
    /// An etcd 3.4 cluster through its native gRPC API (--etcd-endpoints); needs a shoal built
    /// with the etcd-grpc feature.
    Etcd,
    /// An etcd 3.4 cluster through its JSON gateway (--etcd-endpoints), which costs etcd's
    /// servers CPU that gRPC clients do not.
    EtcdJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadName {
    /// W1: quorum key-value, phases A (closed loop), B (open loop), C (a node killed).
    W1,
    /// Capacity (a closed loop), then an open loop in steps of it (--steps, --step-duration).
    #[value(alias = "steps")]
    Overload,
}

impl WorkloadName {
    fn as_str(self) -> &'static str {
        match self {
            WorkloadName::W1 => "w1",
            WorkloadName::Overload => "overload",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PhaseName {
    A,
    B,
    C,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KeyDistribution {
    Uniform,
    Zipfian,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<Outcome> {
    let workload = workload(&args)?;
    workload.validate().map_err(|e| UsageError(e.to_string()))?;
    if workload.needs_fault() && args.dev.is_none() && args.kill_cmd.is_none() {
        return Err(UsageError(
            "killing a node needs --dev (the bench owns the nodes) or --kill-cmd".into(),
        )
        .into());
    }
    let progress = if args.quiet {
        Progress::Hidden
    } else {
        Progress::Stderr
    };
    let mut signals = Signals::catch()?;
    if args.target != TargetKind::Shoal && args.dev.is_some() {
        return Err(UsageError("--dev starts Shoal nodes, not etcd".into()).into());
    }
    let external = external_watch(&args);
    match args.target {
        TargetKind::EtcdJson => {
            let target = Arc::new(EtcdTarget::new(
                &args.etcd_endpoints,
                args.request_timeout(),
            )?);
            target.check().await.context("etcd does not answer")?;
            let info = TargetInfo {
                kind: "etcd-json".into(),
                endpoints: target.endpoints(),
                consistency: "JSON gateway; linearizable range, put (WAL fsync on a majority)"
                    .into(),
            };
            let fault = args
                .kill_cmd
                .as_deref()
                .map(|cmd| command_fault(cmd).into());
            tokio::select! {
                outcome = measure(&args, target, info, &workload, fault, progress, external.as_ref()) => outcome,
                () = signals.recv() => anyhow::bail!("interrupted"),
            }
        }
        TargetKind::Etcd => {
            etcd_grpc(&args, &workload, progress, external.as_ref(), &mut signals).await
        }
        TargetKind::Shoal => match args.dev {
            Some(nodes) => with_dev_cluster(&args, nodes, &workload, progress, &mut signals).await,
            None => {
                if args.nodes.is_empty() {
                    return Err(UsageError(
                        "give --dev N, or --node ADDR (or $SHOAL_NODES) and --certs".into(),
                    )
                    .into());
                }
                let Some(certs) = &args.certs else {
                    return Err(UsageError("--node needs --certs (or $SHOAL_CERTS)".into()).into());
                };
                let target =
                    shoal_target(&args, args.nodes.clone(), certs, args.cert_name.clone()).await?;
                let info = shoal_info(&args, &args.nodes);
                let fault = args
                    .kill_cmd
                    .as_deref()
                    .map(|cmd| command_fault(cmd).into());
                let client = target.client().clone();
                let outcome = tokio::select! {
                    outcome = measure(&args, target, info, &workload, fault, progress, external.as_ref()) => outcome,
                    () = signals.recv() => Err(anyhow::anyhow!("interrupted")),
                };
                client.close().await;
                outcome
            }
        },
    }
}

/// `--target etcd`: etcd's gRPC API.
#[cfg(feature = "etcd-grpc")]
async fn etcd_grpc(
    args: &Args,
    workload: &Workload,
    progress: Progress,
    servers: Option<&Arc<ServerWatch>>,
    signals: &mut Signals,
) -> anyhow::Result<Outcome> {
    let target = Arc::new(
        shoal_bench::EtcdGrpcTarget::connect(&args.etcd_endpoints, args.request_timeout()).await?,
    );
    target.check().await.context("etcd does not answer")?;
    let info = TargetInfo {
        kind: "etcd".into(),
        endpoints: target.endpoints(),
        consistency: "gRPC; linearizable range, put (WAL fsync on a majority)".into(),
    };
    let fault = args
        .kill_cmd
        .as_deref()
        .map(|cmd| command_fault(cmd).into());
    tokio::select! {
        outcome = measure(args, target, info, workload, fault, progress, servers) => outcome,
        () = signals.recv() => anyhow::bail!("interrupted"),
    }
}

/// `--target etcd` in a build without the `etcd-grpc` feature.
#[cfg(not(feature = "etcd-grpc"))]
async fn etcd_grpc(
    _args: &Args,
    _workload: &Workload,
    _progress: Progress,
    _servers: Option<&Arc<ServerWatch>>,
    _signals: &mut Signals,
) -> anyhow::Result<Outcome> {
    Err(UsageError(
        "this shoal was built without etcd's gRPC client: build it with `cargo build --release \
         --bin shoal --features shoal-cli/etcd-grpc` (needs protoc: apt-get install \
         protobuf-compiler), or drive etcd's JSON gateway with --target etcd-json"
            .into(),
    )
    .into())
}

/// What an external cluster's servers the bench may watch: `--metrics` and `--server-pids`,
/// paired in order.
fn external_watch(args: &Args) -> Option<Arc<ServerWatch>> {
    let count = args.metrics.len().max(args.server_pids.len());
    (count > 0).then(|| {
        let nodes = (0..count)
            .map(|i| WatchedNode {
                name: format!("server{}", i + 1),
                metrics: args.metrics.get(i).copied(),
                pid: args.server_pids.get(i).copied(),
            })
            .collect();
        Arc::new(ServerWatch::new(nodes))
    })
}

/// Starts the `--dev` cluster, measures it, and stops it whatever happened.
async fn with_dev_cluster(
    args: &Args,
    nodes: usize,
    workload: &Workload,
    progress: Progress,
    signals: &mut Signals,
) -> anyhow::Result<Outcome> {
    if nodes == 0 {
        return Err(UsageError("--dev needs at least one node".into()).into());
    }
    // A fresh temporary directory unless one is given; removed when this returns.
    let temporary = match &args.dev_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("shoal-bench-")
                .tempdir()
                .context("cannot make a temporary directory")?,
        ),
    };
    let dir = args
        .dev_dir
        .clone()
        .or_else(|| temporary.as_ref().map(|t| t.path().to_owned()))
        .unwrap_or_default();
    let options = DevOptions {
        dir: dir.clone(),
        nodes: Some(nodes),
        base_port: None,
        start_timeout: Duration::from_secs(60),
        node_args: args.node_args.clone(),
    };
    let Some(mut dev) = DevCluster::start(&options, signals).await? else {
        anyhow::bail!("interrupted while the nodes started");
    };
    eprintln!(
        "shoal bench: {nodes} node(s) running in {} ({})",
        dir.display(),
        Machine::filesystem_of(&dir)
    );
    let outcome = async {
        let (restarts, mut restart_requests) = mpsc::unbounded_channel::<RestartRequest>();
        let fault = match &args.kill_cmd {
            Some(cmd) => Some(FaultPlan::from(command_fault(cmd))),
            None => {
                let chosen = if args.kill_node.is_empty() {
                    vec![nodes]
                } else {
                    args.kill_node.clone()
                };
                let mut indices = Vec::new();
                for i in chosen {
                    let index = i.checked_sub(1).filter(|i| *i < nodes).ok_or_else(|| {
                        UsageError(format!("--kill-node must be between 1 and {nodes}"))
                    })?;
                    if !indices.contains(&index) {
                        indices.push(index);
                    }
                }
                let mut victims = Vec::new();
                for &index in &indices {
                    let (id, pid) = dev.node(index).context("a node to kill is not running")?;
                    victims.push((id.to_string(), pid));
                }
                let heal = args
                    .restart_at
                    .map(|_| restart_fault(indices, restarts, dev.certs().to_owned()));
                Some(FaultPlan {
                    strike: kill_fault(victims),
                    heal,
                })
            }
        };
        let addrs = dev.addrs();
        let target = shoal_target(args, addrs.clone(), dev.certs(), Some("client".into())).await?;
        let info = shoal_info(args, &addrs);
        let client = target.client().clone();
        let fault = if workload.needs_fault() { fault } else { None };
        // Every node's metrics and CPU time, for the report's server figures.
        let watched = dev
            .metrics_addrs()
            .into_iter()
            .enumerate()
            .map(|(i, metrics)| {
                let node = dev.node(i);
                WatchedNode {
                    name: node
                        .as_ref()
                        .map_or_else(|| format!("n{}", i + 1), |(id, _)| id.to_string()),
                    metrics: Some(metrics),
                    pid: node.map(|(_, pid)| pid),
                }
            })
            .collect();
        let servers = Arc::new(ServerWatch::new(watched));
        let measured = measure(
            args,
            target,
            info,
            workload,
            fault,
            progress,
            Some(&servers),
        );
        tokio::pin!(measured);
        let outcome = loop {
            tokio::select! {
                outcome = &mut measured => break outcome,
                () = signals.recv() => break Err(anyhow::anyhow!("interrupted")),
                // The restart fault asks; only this task may start nodes (it owns the cluster).
                Some(request) = restart_requests.recv() => {
                    let started = dev.restart(&request.nodes).map_err(|e| format!("{e:#}"));
                    let _ = request.started.send(started);
                }
            }
        };
        client.close().await;
        outcome
    }
    .await;
    let stopped = dev.stop().await;
    drop(temporary);
    let outcome = outcome?;
    // A node killed on purpose has exited already; only nodes that would not stop fail this.
    stopped?;
    Ok(outcome)
}

/// Preloads, runs the phases, prints and writes the report.
async fn measure<T: Target>(
    args: &Args,
    target: Arc<T>,
    info: TargetInfo,
    workload: &Workload,
    fault: Option<FaultPlan>,
    progress: Progress,
    servers: Option<&Arc<ServerWatch>>,
) -> anyhow::Result<Outcome> {
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let preload: Option<PreloadReport> = if args.no_preload {
        None
    } else {
        let concurrency = args.concurrency.max(32);
        let report = shoal_bench::preload(
            target.clone(),
            args.keys,
            args.value_size,
            concurrency,
            args.seed,
            progress,
        )
        .await
        .context("preload")?;
        eprintln!(
            "preload: {} keys in {:.1} s ({:.0} keys/s)",
            report.keys, report.seconds, report.throughput
        );
        Some(report)
    };
    let phases: Vec<PhaseReport> =
        shoal_bench::run(target, workload, fault, progress, servers).await?;
    let report = BenchReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        target: info,
        workload: args.workload.map(|w| w.as_str().to_owned()),
        machine: Machine::detect(),
        client_threads: args.client_threads(),
        started_unix_s,
        preload,
        phases,
    };
    println!("{}", report.to_text());
    if let Some(path) = &args.json {
        write(path, &report.to_json()?)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        write(path, &shoal_bench::plot::svg(&report))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(Outcome::Done)
}

/// The workload the arguments describe.
fn workload(args: &Args) -> anyhow::Result<Workload> {
    let usage = |m: String| anyhow::Error::new(UsageError(m));
    let keys = NonZeroU64::new(args.keys).ok_or_else(|| usage("--keys must be positive".into()))?;
    let concurrency = NonZeroUsize::new(args.concurrency)
        .ok_or_else(|| usage("--concurrency must be positive".into()))?;
    let distribution = match args.distribution {
        KeyDistribution::Uniform => Distribution::Uniform,
        KeyDistribution::Zipfian => Distribution::Zipfian {
            theta: args.zipf_theta,
        },
    };
    // Checked here: clap skips `requires = "dev"` when `--dev` conflicts with an argument given
    // (`--node`; clap-rs/clap#4520).
    if args.restart_at.is_some() && (args.dev.is_none() || args.kill_cmd.is_some()) {
        return Err(usage(
            "--restart-at starts killed --dev nodes again: it needs --dev, not --kill-cmd".into(),
        ));
    }
    if !args.node_args.is_empty() && args.dev.is_none() {
        return Err(usage(
            "--node-arg is for the nodes --dev starts: it needs --dev".into(),
        ));
    }
    if args.workload != Some(WorkloadName::Overload) && args.capacity.is_some() {
        return Err(usage("--capacity is for --workload overload".into()));
    }
    match args.workload {
        Some(WorkloadName::Overload) => {
            if args.ops.is_some() {
                return Err(usage("--ops runs one phase: drop --workload".into()));
            }
            if !args.phases.is_empty() {
                return Err(usage("--phases is for --workload w1".into()));
            }
            let base = W1 {
                keys,
                value_size: args.value_size,
                concurrency,
                read_ratio: args.read_ratio,
                distribution,
                warmup: args.warmup,
                duration: args.duration(),
                kill_at: default_kill_at(args.duration()),
                restart_at: None,
                seed: args.seed,
                attempts: args.attempt_policy(),
                max_in_flight: None,
            };
            let overload = Overload {
                base,
                capacity_duration: args.duration.unwrap_or(Overload::DEFAULT_CAPACITY_DURATION),
                steps: args.steps.clone(),
                step_duration: args.step_duration,
                max_in_flight: args.max_in_flight.unwrap_or_else(|| {
                    NonZeroUsize::new(Overload::DEFAULT_MAX_IN_FLIGHT).unwrap_or(NonZeroUsize::MIN)
                }),
            };
            Ok(Workload::Overload {
                overload,
                capacity: args.capacity,
            })
        }
        Some(WorkloadName::W1) => {
            if args.ops.is_some() {
                return Err(usage("--ops runs one phase: drop --workload".into()));
            }
            let w1 = W1 {
                keys,
                value_size: args.value_size,
                concurrency,
                read_ratio: args.read_ratio,
                distribution,
                warmup: args.warmup,
                duration: args.duration(),
                kill_at: args
                    .kill_at
                    .unwrap_or_else(|| default_kill_at(args.duration())),
                restart_at: args.restart_at,
                seed: args.seed,
                attempts: args.attempt_policy(),
                max_in_flight: args.max_in_flight,
            };
            let phases = if args.phases.is_empty() {
                vec![W1Phase::A, W1Phase::B, W1Phase::C]
            } else {
                args.phases
                    .iter()
                    .map(|p| match p {
                        PhaseName::A => W1Phase::A,
                        PhaseName::B => W1Phase::B,
                        PhaseName::C => W1Phase::C,
                    })
                    .collect()
            };
            Ok(Workload::W1 {
                w1,
                phases,
                phase_b_rate: args.rate,
            })
        }
        None => {
            let load = match args.rate {
                Some(rate) => Load::Open {
                    rate,
                    max_in_flight: args.max_in_flight.unwrap_or(concurrency),
                },
                None => {
                    if args.max_in_flight.is_some() {
                        return Err(usage(
                            "--max-in-flight is for open loops: give --rate, or use --concurrency"
                                .into(),
                        ));
                    }
                    Load::Closed { concurrency }
                }
            };
            let limit = match args.ops {
                Some(n) => Limit::Ops(n),
                None => Limit::Duration(args.duration()),
            };
            let kills =
                args.kill_cmd.is_some() || !args.kill_node.is_empty() || args.restart_at.is_some();
            let fault_at = args
                .kill_at
                .or_else(|| kills.then(|| default_kill_at(args.duration())));
            Ok(Workload::Custom(PhaseSpec {
                name: "run".into(),
                load,
                read_ratio: args.read_ratio,
                keys,
                distribution,
                value_size: args.value_size,
                warmup: args.warmup,
                limit,
                fault_at,
                heal_at: args.restart_at,
                seed: args.seed,
                attempts: args.attempt_policy(),
            }))
        }
    }
}

/// W1's 10 s of 30; a third of other durations.
fn default_kill_at(duration: Duration) -> Duration {
    duration / 3
}

async fn shoal_target(
    args: &Args,
    nodes: Vec<SocketAddr>,
    certs: &Path,
    name: Option<String>,
) -> anyhow::Result<Arc<ShoalTarget>> {
    let mut config = ClientConfig::new(nodes, certs);
    config.name = name;
    config.timeout = args.request_timeout();
    let client = Client::connect(config)
        .await
        .context("cannot connect to the cluster")?;
    // The coordinator's deadline is the attempt's: work it would finish after the client has
    // given up is not counted as done.
    let read = RequestOptions {
        r: args.r,
        timeout: Some(args.request_timeout()),
        ..RequestOptions::default()
    };
    let write = RequestOptions {
        w: args.w,
        timeout: Some(args.request_timeout()),
        ..RequestOptions::default()
    };
    Ok(Arc::new(ShoalTarget::new(client, args.keys, read, write)))
}

fn shoal_info(args: &Args, nodes: &[SocketAddr]) -> TargetInfo {
    let quorum = |name: &str, v: Option<u8>| {
        v.map_or_else(
            || format!("{name}=cluster default"),
            |v| format!("{name}={v}"),
        )
    };
    TargetInfo {
        kind: "shoal".into(),
        endpoints: nodes.iter().map(ToString::to_string).collect(),
        consistency: format!("{} {}", quorum("R", args.r), quorum("W", args.w)),
    }
}

/// SIGKILL to `--dev` nodes (id, pid), all at once; it has taken effect when every process
/// has exited (its sockets closed), which takes the kernel some milliseconds.
fn kill_fault(victims: Vec<(String, u32)>) -> Fault {
    Box::new(move || {
        Box::pin(async move {
            for (id, pid) in &victims {
                match send_signal(*pid, libc::SIGKILL) {
                    Ok(true) => {}
                    Ok(false) => return Err(format!("node {id} (pid {pid}) was not running")),
                    Err(e) => return Err(format!("cannot kill node {id} (pid {pid}): {e}")),
                }
            }
            let mut exits = Vec::new();
            for &(_, pid) in &victims {
                let exited = tokio::task::spawn_blocking(move || wait_exited(pid))
                    .await
                    .ok()
                    .flatten();
                exits.push(exited);
            }
            // Taken effect when the last one is gone; unknown if one would not go.
            let took_effect: Option<Vec<std::time::Instant>> = exits.into_iter().collect();
            let took_effect = took_effect.and_then(|exits| exits.into_iter().max());
            let named: Vec<String> = victims
                .iter()
                .map(|(id, pid)| format!("{id} (pid {pid})"))
                .collect();
            let noun = if victims.len() == 1 { "node" } else { "nodes" };
            Ok(Injected {
                action: format!("SIGKILL to {noun} {}", named.join(", ")),
                took_effect: took_effect.map(tokio::time::Instant::from_std),
            })
        })
    })
}

/// What the restart fault asks of the task that owns the `--dev` cluster: start these nodes
/// (0-based) again; it answers with each one's id, pid and address.
struct RestartRequest {
    nodes: Vec<usize>,
    started: oneshot::Sender<Result<Vec<Restarted>, String>>,
}

/// Starts the killed `--dev` nodes again (through the task that owns the cluster); it has
/// taken effect when every one of them answers.
fn restart_fault(
    nodes: Vec<usize>,
    requests: mpsc::UnboundedSender<RestartRequest>,
    certs: PathBuf,
) -> Fault {
    Box::new(move || {
        Box::pin(async move {
            let (started, answer) = oneshot::channel();
            requests
                .send(RestartRequest { nodes, started })
                .map_err(|_| "the cluster is gone".to_owned())?;
            let started = answer
                .await
                .map_err(|_| "the cluster is gone".to_owned())??;
            let deadline = tokio::time::Instant::now() + RESTART_TIMEOUT;
            for (id, _, addr) in &started {
                wait_until_answers(*addr, &certs, deadline)
                    .await
                    .map_err(|e| format!("node {id} did not answer after its restart: {e:#}"))?;
            }
            let named: Vec<String> = started
                .iter()
                .map(|(id, pid, _)| format!("{id} (pid {pid})"))
                .collect();
            Ok(Injected {
                action: format!("started {} again", named.join(", ")),
                took_effect: Some(tokio::time::Instant::now()),
            })
        })
    })
}

/// How long a restarted node may take to answer.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls until `pid` has exited (see [`process_exited`]), for at most [`EXIT_WAIT`]; when.
fn wait_exited(pid: u32) -> Option<std::time::Instant> {
    let start = std::time::Instant::now();
    while start.elapsed() < EXIT_WAIT {
        if process_exited(pid) {
            return Some(std::time::Instant::now());
        }
        std::thread::sleep(EXIT_POLL);
    }
    None
}

/// How long a killed node may take to exit before the bench stops watching.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How often the bench looks.
const EXIT_POLL: Duration = Duration::from_micros(100);

/// `sh -c CMD`, which must exit 0.
fn command_fault(cmd: &str) -> Fault {
    let cmd = cmd.to_owned();
    Box::new(move || {
        Box::pin(async move {
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .status()
                .await
                .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
            if status.success() {
                Ok(Injected::action(format!("sh -c {cmd:?}")))
            } else {
                Err(format!("{cmd:?} failed: {status}"))
            }
        })
    })
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A step's percentage of capacity: `150` or `150%`.
fn parse_percent(s: &str) -> Result<f64, String> {
    let number = s.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 => Ok(p),
        _ => Err(format!("{s:?} is not a positive percentage")),
    }
}

/// `0s` is a valid warm-up; other durations as usual.
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" | "0s" | "0ms" => Ok(Duration::ZERO),
        other => parse_duration(other),
    }
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

    fn parse(line: &str) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(line.split_whitespace())).map(|c| c.args)
    }

    #[test]
    fn the_overload_workload_takes_its_steps_and_the_attempt_policy() {
        let args = parse(
            "--dev 3 --workload overload --steps 50,150%,50 --step-duration 5s \
             --attempt-timeout 1s --attempts 3",
        )
        .unwrap();
        let Workload::Overload { overload, capacity } = workload(&args).unwrap() else {
            panic!("an overload workload");
        };
        assert_eq!(capacity, None);
        assert_eq!(overload.steps, vec![50.0, 150.0, 50.0]);
        assert_eq!(overload.step_duration, Duration::from_secs(5));
        assert_eq!(overload.capacity_duration, Duration::from_secs(10));
        assert_eq!(overload.max_in_flight.get(), 20_000);
        let policy = overload.steps_phase(1000.0).attempts;
        assert_eq!(policy.timeout, Some(Duration::from_secs(1)));
        assert_eq!(policy.attempts.get(), 3);
        assert!(parse("--dev 3 --workload overload --steps 0").is_err());
    }

    #[test]
    fn max_in_flight_sets_phase_b_cap_and_is_refused_for_a_closed_loop() {
        let args =
            parse("--dev 3 --workload w1 --phases b --rate 100 --max-in-flight 20000").unwrap();
        let Workload::W1 { w1, .. } = workload(&args).unwrap() else {
            panic!("w1");
        };
        assert_eq!(
            w1.phase_b_at(100.0).max_in_flight().map(NonZeroUsize::get),
            Some(20_000)
        );
        let default = parse("--dev 3 --workload w1").unwrap();
        let Workload::W1 { w1, .. } = workload(&default).unwrap() else {
            panic!("w1");
        };
        assert_eq!(
            w1.phase_b_at(100.0).max_in_flight().map(NonZeroUsize::get),
            Some(64)
        );
        assert_eq!(
            w1.attempts,
            AttemptPolicy::SINGLE,
            "one attempt unless told"
        );
        let closed = parse("--dev 3 --max-in-flight 100").unwrap();
        assert!(workload(&closed).is_err());
        let capacity_without_overload = parse("--dev 3 --capacity 100").unwrap();
        assert!(workload(&capacity_without_overload).is_err());
    }

    #[test]
    fn nodes_killed_together_can_be_started_again() {
        let args =
            parse("--dev 5 --workload w1 --phases c --kill-node 4,5 --restart-at 20s").unwrap();
        assert_eq!(args.kill_node, vec![4, 5]);
        let Workload::W1 { w1, .. } = workload(&args).unwrap() else {
            panic!("w1");
        };
        let c = w1.phase_c();
        assert_eq!(
            (c.fault_at, c.heal_at),
            (Some(Duration::from_secs(10)), Some(Duration::from_secs(20)))
        );
        // One phase: the restart implies the kill (a third of the way in).
        let one = parse("--dev 3 --duration 30s --restart-at 25s").unwrap();
        let Workload::Custom(spec) = workload(&one).unwrap() else {
            panic!("one phase");
        };
        assert_eq!(
            (spec.fault_at, spec.heal_at),
            (Some(Duration::from_secs(10)), Some(Duration::from_secs(25)))
        );
        // A restart before the kill cannot work; nor one of an external cluster.
        let early = parse("--dev 3 --duration 30s --kill-at 20s --restart-at 15s").unwrap();
        let Workload::Custom(spec) = workload(&early).unwrap() else {
            panic!("one phase");
        };
        assert!(spec.validate().is_err());
        for external in [
            "--node 127.0.0.1:7001 --restart-at 5s",
            "--dev 3 --kill-cmd true --restart-at 5s",
        ] {
            assert!(workload(&parse(external).unwrap()).is_err(), "{external}");
        }
    }

    #[test]
    fn node_args_go_to_dev_nodes_only() {
        let args =
            parse("--dev 3 --node-arg=--no-anti-entropy --node-arg --max-hint-bytes=0").unwrap();
        assert_eq!(args.node_args, ["--no-anti-entropy", "--max-hint-bytes=0"]);
        assert!(workload(&args).is_ok());
        let external = parse("--node 127.0.0.1:7001 --node-arg=--no-read-repair").unwrap();
        assert!(workload(&external).is_err());
    }

    #[test]
    fn the_attempt_timeout_is_also_the_request_deadline() {
        let args = parse("--dev 3 --attempt-timeout 750ms --attempts 2").unwrap();
        assert_eq!(args.request_timeout(), Duration::from_millis(750));
        assert_eq!(
            parse("--dev 3").unwrap().request_timeout(),
            Duration::from_secs(5)
        );
    }
}
