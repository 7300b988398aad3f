//! `shoal dev`: a local cluster of N `shoal server` processes on loopback, with its own
//! certificates, for trying Shoal out and for tests. [`DevCluster`] is also what
//! `shoal bench --dev N` starts, measures and stops.
//!
//! Everything lives in one directory:
//!
//! | path | what |
//! | --- | --- |
//! | `certs/` | the CA, node certificates `n1..nN`, a client certificate `client`, an admin certificate `admin` |
//! | `nodes` | the layout: each node's id, QUIC (UDP) address and metrics (TCP) address |
//! | `n1/`, `n2/`, … | the nodes' data directories |
//! | `n1.log`, … | the nodes' logs (appended across runs) |
//! | `pids` | the running nodes' process ids (while running) |
//! | `env` | `export SHOAL_NODES=… SHOAL_CERTS=…` (written once every node answers, removed on stop) |
//!
//! Ports are chosen once — free loopback ports, or `--base-port P` (QUIC on P…P+N-1, metrics on
//! P+N…P+2N-1) — and recorded in `nodes`, so a restart on the same directory reuses the ports,
//! the data and the certificates.
//!
//! The nodes run in their own process group, so Ctrl-C reaches only `shoal dev`, which then
//! sends SIGTERM to each node and waits for it (SIGKILL after [`STOP_TIMEOUT`]). A node that
//! dies on its own is reported with the end of its log; the others keep running (the cluster
//! stays usable while a quorum is up), and `shoal dev` exits when none is left.

use std::fmt::Write as _;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use shoal_client::{Client, ClientConfig, ClientError};
use shoal_transport::Role;
use shoal_transport::certs::{self, CertFiles, IfExists};
use shoal_types::NodeId;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::args::parse_duration;
use crate::exit::{Outcome, UsageError};

/// How long a node may take to stop after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one readiness probe of a node may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between readiness probes that failed at once.
const PROBE_PAUSE: Duration = Duration::from_millis(100);
/// Lines of a dead node's log shown.
const LOG_TAIL_LINES: usize = 15;
/// How many times, in all, a node that could not bind its port is started again while the
/// cluster starts, and the pause before each (a squatting ephemeral socket lives briefly).
const REBIND_ATTEMPTS: usize = 5;
const REBIND_PAUSE: Duration = Duration::from_millis(200);
/// The most nodes `shoal dev` runs.
const MAX_NODES: usize = 32;
/// The layout file's name.
const LAYOUT_FILE: &str = "nodes";
/// The environment file's name.
const ENV_FILE: &str = "env";
/// The pid file's name.
const PID_FILE: &str = "pids";

/// Arguments of `shoal dev`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Files in DIR: certs/ (CA, n1..nN, client, admin), nodes (ports, kept \
                        for restarts), n1/... (data), n1.log... (logs), pids, env (export \
                        lines, present while the cluster is up). A node that dies is reported; \
                        the others keep running."
)]
pub(crate) struct Args {
    /// How many nodes [default: 3, or as many as DIR was created with].
    #[arg(long, value_name = "N")]
    nodes: Option<usize>,
    /// The directory for certificates, data, logs and the port layout.
    #[arg(long, value_name = "DIR", default_value = "./shoal-dev")]
    dir: PathBuf,
    /// Use ports P..P+N-1 for QUIC and P+N..P+2N-1 for metrics instead of free ones (only when
    /// DIR has no layout yet).
    #[arg(long, value_name = "P")]
    base_port: Option<u16>,
    /// How long the nodes may take to answer after they are started.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    start_timeout: Duration,
    /// An argument for every node's `shoal server` (repeat it), after the ones `shoal dev`
    /// gives: `--node-arg=--no-anti-entropy`, `--node-arg=--max-hint-bytes=0`.
    #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
    node_args: Vec<String>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<Outcome> {
    // Signals first, so a Ctrl-C during start-up still stops whatever was started.
    let mut signals = Signals::catch()?;
    let options = DevOptions {
        dir: args.dir,
        nodes: args.nodes,
        base_port: args.base_port,
        start_timeout: args.start_timeout,
        node_args: args.node_args,
    };
    let Some(mut dev) = DevCluster::start(&options, &mut signals).await? else {
        return Ok(Outcome::Done);
    };
    let exports = exports(&dev.layout, &dev.certs);
    write_atomically(&dev.dir.join(ENV_FILE), &format!("{exports}\n"))?;
    print_banner(&dev.dir, &dev.layout, &exports);

    loop {
        tokio::select! {
            Some(exit) = dev.cluster.exits.recv() => {
                dev.cluster.exited(exit);
                dev.cluster.report_dead();
                if dev.cluster.running() == 0 {
                    let _ = dev.stop().await;
                    bail!("every node has exited; see the logs in {}", dev.dir.display());
                }
                eprintln!("shoal dev: {} of {} nodes still running", dev.cluster.running(), dev.cluster.nodes.len());
            }
            () = signals.recv() => break,
        }
    }
    dev.stop().await
}

/// What a dev cluster is made of (`shoal dev`'s arguments; `shoal bench --dev` sets them too).
#[derive(Debug, Clone)]
pub(crate) struct DevOptions {
    /// The directory for certificates, data, logs and the layout.
    pub(crate) dir: PathBuf,
    /// How many nodes (default 3, or as many as the directory was created with).
    pub(crate) nodes: Option<usize>,
    /// Fixed ports instead of free ones.
    pub(crate) base_port: Option<u16>,
    /// How long the nodes may take to answer.
    pub(crate) start_timeout: Duration,
    /// Extra arguments for every node's `shoal server`.
    pub(crate) node_args: Vec<String>,
}

/// A running dev cluster: its directory, port layout, certificates and node processes. Stop it
/// with [`DevCluster::stop`]; dropping it kills the nodes (their handles kill on drop).
pub(crate) struct DevCluster {
    dir: PathBuf,
    certs: PathBuf,
    layout: Layout,
    cluster: Cluster,
}

/// SIGINT and SIGTERM, caught: what stops `shoal dev` and `shoal bench --dev`.
pub(crate) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Catches both from now on.
    pub(crate) fn catch() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    /// Waits for either.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

impl DevCluster {
    /// Prepares the directory (layout, certificates), starts the nodes and waits until each
    /// answers. `None` when a signal came meanwhile (the nodes are stopped then).
    pub(crate) async fn start(
        options: &DevOptions,
        signals: &mut Signals,
    ) -> anyhow::Result<Option<DevCluster>> {
        let dir = std::path::absolute(&options.dir)
            .with_context(|| format!("cannot resolve {}", options.dir.display()))?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        refuse_if_running(&dir)?;
        let layout = Layout::prepare(&dir, options.nodes, options.base_port)?;
        let certs = dir.join("certs");
        ensure_certificates(&certs, &layout)?;
        remove_if_present(&dir.join(ENV_FILE))?;
        let cluster = Cluster::start(&dir, &certs, &layout, &options.node_args)?;
        let mut dev = DevCluster {
            dir,
            certs,
            layout,
            cluster,
        };

        let deadline = Instant::now() + options.start_timeout;
        let mut rebinds = 0;
        for i in 0..dev.layout.nodes.len() {
            let node = dev.layout.nodes[i].clone();
            let ready = loop {
                break tokio::select! {
                    ready = wait_until_answers(node.listen, &dev.certs, deadline) => ready,
                    Some(exit) = dev.cluster.exits.recv() => {
                        let index = exit.0;
                        if dev.cluster.lost_its_port(index) && rebinds < REBIND_ATTEMPTS {
                            // Its port was squatted for a moment: start it again on the same
                            // port (the members list names it), after a pause.
                            rebinds += 1;
                            tokio::time::sleep(REBIND_PAUSE).await;
                            dev.cluster.spawn(index)?;
                            dev.cluster.write_pids()?;
                            continue;
                        }
                        dev.cluster.exited(exit);
                        Err(anyhow::anyhow!("node {} exited while starting", dev.cluster.nodes[index].id))
                    }
                    () = signals.recv() => {
                        dev.stop().await?;
                        return Ok(None);
                    }
                };
            };
            if let Err(e) = ready {
                dev.cluster.report_dead();
                let _ = dev.stop().await;
                return Err(e.context(format!(
                    "node {} did not come up; see {}",
                    node.id,
                    log_path(&dev.dir, &node.id).display()
                )));
            }
        }
        Ok(Some(dev))
    }

    /// The certificate directory (`client`, `admin` and node certificates).
    pub(crate) fn certs(&self) -> &Path {
        &self.certs
    }

    /// The nodes' QUIC addresses, in node order.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.layout.nodes.iter().map(|n| n.listen).collect()
    }

    /// The nodes' metrics addresses, in node order.
    pub(crate) fn metrics_addrs(&self) -> Vec<SocketAddr> {
        self.layout.nodes.iter().map(|n| n.metrics).collect()
    }

    /// The id and process id of node `index` (0-based), if it runs.
    pub(crate) fn node(&self, index: usize) -> Option<(NodeId, u32)> {
        self.cluster
            .nodes
            .get(index)
            .filter(|n| n.exit.is_none())
            .map(|n| (n.id.clone(), n.pid))
    }

    /// Starts the nodes `indices` (0-based) again, with their data as they left it: nodes
    /// killed on purpose (`shoal bench --restart-at`). Returns each one's id, process id and
    /// address at once; it answers some moments later ([`wait_until_answers`]).
    pub(crate) fn restart(&mut self, indices: &[usize]) -> anyhow::Result<Vec<Restarted>> {
        let mut started = Vec::new();
        for &index in indices {
            let node = self
                .layout
                .nodes
                .get(index)
                .with_context(|| format!("there is no node {}", index + 1))?;
            if let Some(running) = self.cluster.nodes.get(index)
                && running.exit.is_none()
                && !process_exited(running.pid)
            {
                bail!("node {} is still running", node.id);
            }
            let listen = node.listen;
            self.cluster.spawn(index)?;
            let pid = self.cluster.nodes[index].pid;
            started.push((self.cluster.nodes[index].id.clone(), pid, listen));
        }
        self.cluster.write_pids()?;
        Ok(started)
    }

    /// SIGTERM to every running node, then SIGKILL to those that do not stop; removes the env
    /// and pid files.
    pub(crate) async fn stop(&mut self) -> anyhow::Result<Outcome> {
        self.cluster.stop(&self.dir).await
    }
}

/// Where each node listens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    nodes: Vec<NodeLayout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeLayout {
    id: NodeId,
    /// QUIC, UDP.
    listen: SocketAddr,
    /// Prometheus, TCP.
    metrics: SocketAddr,
}

impl Layout {
    /// The recorded layout of `dir`, checked against the arguments, or a new one, recorded.
    fn prepare(dir: &Path, nodes: Option<usize>, base_port: Option<u16>) -> anyhow::Result<Layout> {
        let path = dir.join(LAYOUT_FILE);
        if let Some(layout) = Layout::read(&path)? {
            let count = layout.nodes.len();
            if nodes.is_some_and(|n| n != count) {
                return Err(UsageError(format!(
                    "{} holds a {count}-node cluster: run with --nodes {count}, or use another --dir",
                    dir.display()
                ))
                .into());
            }
            if let Some(base) = base_port
                && layout.nodes.first().map(|n| n.listen.port()) != Some(base)
            {
                return Err(UsageError(format!(
                    "{} already uses the ports recorded in {}: drop --base-port, or use another --dir",
                    dir.display(),
                    path.display()
                ))
                .into());
            }
            return Ok(layout);
        }
        let count = nodes.unwrap_or(3);
        if count == 0 || count > MAX_NODES {
            return Err(UsageError(format!("--nodes must be between 1 and {MAX_NODES}")).into());
        }
        let layout = match base_port {
            Some(base) => Layout::from_base_port(count, base)?,
            None => Layout::free_ports(count)?,
        };
        write_atomically(&path, &layout.to_text())?;
        Ok(layout)
    }

    fn from_base_port(count: usize, base: u16) -> anyhow::Result<Layout> {
        let last = usize::from(base) + 2 * count - 1;
        if base == 0 || last > usize::from(u16::MAX) {
            return Err(UsageError(format!(
                "--base-port {base} leaves no room for {} ports",
                2 * count
            ))
            .into());
        }
        let port = |offset: usize| SocketAddr::from((Ipv4Addr::LOCALHOST, base + offset as u16));
        Ok(Layout {
            nodes: (0..count)
                .map(|i| {
                    Ok(NodeLayout {
                        id: node_id(i)?,
                        listen: port(i),
                        metrics: port(count + i),
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// Free loopback ports: every socket stays bound until all are chosen, so none repeats.
    fn free_ports(count: usize) -> anyhow::Result<Layout> {
        let mut udp = Vec::with_capacity(count);
        let mut tcp = Vec::with_capacity(count);
        let mut nodes = Vec::with_capacity(count);
        for i in 0..count {
            let quic = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("no free UDP port")?;
            let metrics =
                TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free TCP port")?;
            nodes.push(NodeLayout {
                id: node_id(i)?,
                listen: quic.local_addr()?,
                metrics: metrics.local_addr()?,
            });
            udp.push(quic);
            tcp.push(metrics);
        }
        Ok(Layout { nodes })
    }

    fn read(path: &Path) -> anyhow::Result<Option<Layout>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let bad = |line: &str| {
            anyhow::anyhow!(
                "{}: bad line {line:?} (expected: ID QUIC-ADDR METRICS-ADDR)",
                path.display()
            )
        };
        let mut nodes = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, listen, metrics] = fields[..] else {
                return Err(bad(line));
            };
            nodes.push(NodeLayout {
                id: id.parse().map_err(|_| bad(line))?,
                listen: listen.parse().map_err(|_| bad(line))?,
                metrics: metrics.parse().map_err(|_| bad(line))?,
            });
        }
        if nodes.is_empty() {
            bail!(
                "{} lists no node; delete it to choose new ports",
                path.display()
            );
        }
        Ok(Some(Layout { nodes }))
    }

    fn to_text(&self) -> String {
        let mut text = String::from(
            "# shoal dev layout: node id, QUIC (UDP) address, metrics (TCP) address.\n\
             # Restarts reuse it; edit only while the cluster is stopped.\n",
        );
        for n in &self.nodes {
            let _ = writeln!(text, "{} {} {}", n.id, n.listen, n.metrics);
        }
        text
    }

    /// `n1=ADDR,n2=ADDR,…` for `--initial-members`.
    fn members_arg(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.listen))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The running nodes.
struct Cluster {
    nodes: Vec<RunningNode>,
    /// Every node process that exits.
    exits: mpsc::UnboundedReceiver<Exit>,
    dir: PathBuf,
    spawner: Spawner,
}

/// What starting a node takes.
#[derive(Debug)]
struct Spawner {
    exe: PathBuf,
    certs: PathBuf,
    layout: Layout,
    exits: mpsc::UnboundedSender<Exit>,
    /// `DevOptions::node_args`.
    args: Vec<String>,
}

/// A node started again: its id, process id and address.
pub(crate) type Restarted = (NodeId, u32, SocketAddr);

/// A node process exited: node index, process id (a node started again has a new one), status.
type Exit = (usize, u32, io::Result<ExitStatus>);

/// The cores divided among the nodes, at least one each: nodes that share a machine and each
/// run one async worker per core spend their time handing work between threads (W1 phase A,
/// 20,000 keys, on two cores: 5,119 / 5,491 ops/s with two workers per node, 6,552 / 6,056
/// with one).
fn worker_threads_per_node(nodes: usize) -> usize {
    (cores() / nodes.max(1)).max(1)
}

/// The CPUs this process may run on (1 if that cannot be known).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |c| c.get())
}

struct RunningNode {
    id: NodeId,
    pid: u32,
    /// Set when the node's exit was seen.
    exit: Option<String>,
    /// Whether its death was already reported.
    reported: bool,
}

impl Cluster {
    fn start(
        dir: &Path,
        certs: &Path,
        layout: &Layout,
        args: &[String],
    ) -> anyhow::Result<Cluster> {
        let exe = std::env::current_exe().context("cannot find the shoal binary")?;
        let (tx, exits) = mpsc::unbounded_channel();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            exits,
            dir: dir.to_owned(),
            spawner: Spawner {
                exe,
                certs: certs.to_owned(),
                layout: layout.clone(),
                exits: tx,
                args: args.to_vec(),
            },
        };
        for index in 0..layout.nodes.len() {
            if let Err(e) = cluster.spawn(index) {
                cluster.kill_now();
                return Err(e);
            }
        }
        cluster.write_pids()?;
        Ok(cluster)
    }

    /// Starts node `index`'s process (again, if it ran before), appending to its log.
    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let Spawner {
            exe,
            certs,
            layout,
            exits,
            args,
        } = &self.spawner;
        let node = &layout.nodes[index];
        let dir = &self.dir;
        let n = layout.nodes.len().min(3);
        let threads = worker_threads_per_node(layout.nodes.len());
        let data = dir.join(node.id.as_str());
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let log_path = log_path(dir, &node.id);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        // Logs are appended across runs; mark where this one starts.
        let _ = writeln!(log, "=== shoal dev: starting node {} ===", node.id);
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("server")
            .args(["--node-id", node.id.as_str()])
            .args(["--listen", &node.listen.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--certs")
            .arg(certs)
            .args(["--initial-members", &layout.members_arg()])
            .args(["--metrics", &node.metrics.to_string()])
            .args(["--n", &n.to_string()])
            .args(["--worker-threads", &threads.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            // Ctrl-C goes to the terminal's foreground group; `shoal dev` alone decides how
            // the nodes stop.
            .process_group(0)
            // The last resort if `shoal dev` fails without stopping its nodes.
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start node {}", node.id))?;
        let Some(pid) = child.id() else {
            bail!("node {} exited before it could be watched", node.id);
        };
        let running = RunningNode {
            id: node.id.clone(),
            pid,
            exit: None,
            reported: false,
        };
        match self.nodes.get_mut(index) {
            Some(slot) => *slot = running,
            None => self.nodes.push(running),
        }
        let tx = exits.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send((index, pid, status));
        });
        Ok(())
    }

    /// Whether node `index` exited because its port was taken: ports are chosen free, but
    /// released before the nodes bind them, and another process's ephemeral socket (a port
    /// check, a client) may hold one for a moment.
    fn lost_its_port(&self, index: usize) -> bool {
        let id = &self.spawner.layout.nodes[index].id;
        let tail = log_tail(&log_path(&self.dir, id), LOG_TAIL_LINES);
        // Only this start's lines: the log is appended across starts.
        let this_start = tail
            .iter()
            .rposition(|line| line.starts_with("=== shoal dev: starting node"))
            .map_or(0, |i| i + 1);
        tail[this_start..]
            .iter()
            .any(|line| line.contains("cannot bind"))
    }

    fn running(&self) -> usize {
        self.nodes.iter().filter(|n| n.exit.is_none()).count()
    }

    fn exited(&mut self, (index, pid, status): Exit) {
        // The exit of a process since started again is old news.
        if let Some(node) = self.nodes.get_mut(index).filter(|n| n.pid == pid) {
            node.exit = Some(match status {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown status ({e})"),
            });
        }
    }

    /// Prints each node that died on its own and was not reported yet.
    fn report_dead(&mut self) {
        for node in &mut self.nodes {
            if let (Some(exit), false) = (&node.exit, node.reported) {
                node.reported = true;
                let log = log_path(&self.dir, &node.id);
                eprintln!(
                    "shoal dev: node {} exited unexpectedly ({exit}); the end of {}:",
                    node.id,
                    log.display()
                );
                for line in log_tail(&log, LOG_TAIL_LINES) {
                    eprintln!("  | {line}");
                }
            }
        }
    }

    /// SIGTERM to every running node, then waits; SIGKILL to those still running after
    /// [`STOP_TIMEOUT`]. Removes the env and pid files.
    async fn stop(&mut self, dir: &Path) -> anyhow::Result<Outcome> {
        eprintln!("shoal dev: stopping {} node(s)", self.running());
        // Nothing advertises the cluster once it starts stopping.
        let _ = remove_if_present(&dir.join(ENV_FILE));
        self.signal_running(libc::SIGTERM);
        let mut forced = false;
        if !self.wait_all(STOP_TIMEOUT).await {
            forced = true;
            for node in self.nodes.iter().filter(|n| n.exit.is_none()) {
                eprintln!(
                    "shoal dev: node {} did not stop within {STOP_TIMEOUT:?}; killing it",
                    node.id
                );
            }
            self.signal_running(libc::SIGKILL);
            self.wait_all(STOP_TIMEOUT).await;
        }
        let _ = remove_if_present(&dir.join(PID_FILE));
        if forced {
            bail!(
                "some nodes had to be killed; see their logs in {}",
                dir.display()
            );
        }
        eprintln!("shoal dev: stopped");
        Ok(Outcome::Done)
    }

    /// Waits up to `timeout` for every node to exit; whether they all did.
    async fn wait_all(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.running() > 0 {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(exit)) => self.exited(exit),
                Ok(None) | Err(_) => break,
            }
        }
        self.running() == 0
    }

    fn signal_running(&self, signal: libc::c_int) {
        for node in self.nodes.iter().filter(|n| n.exit.is_none()) {
            if let Err(e) = send_signal(node.pid, signal) {
                eprintln!(
                    "shoal dev: cannot signal node {} (pid {}): {e}",
                    node.id, node.pid
                );
            }
        }
    }

    /// SIGKILL to every node started so far (start-up failed half way).
    fn kill_now(&self) {
        self.signal_running(libc::SIGKILL);
    }

    fn write_pids(&self) -> anyhow::Result<()> {
        let mut text = String::from("# shoal dev: node id and process id of the running nodes\n");
        for n in &self.nodes {
            let _ = writeln!(text, "{} {}", n.id, n.pid);
        }
        write_atomically(&self.dir.join(PID_FILE), &text)
    }
}

/// Waits until the node at `addr` answers a ring request with the admin certificate.
pub(crate) async fn wait_until_answers(
    addr: SocketAddr,
    certs: &Path,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut config = ClientConfig::new(vec![addr], certs).admin();
    config.name = Some("admin".into());
    config.timeout = PROBE_TIMEOUT;
    loop {
        let started = Instant::now();
        let probe = tokio::time::timeout_at(deadline, Client::connect(config.clone())).await;
        match probe {
            Ok(Ok(client)) => {
                client.close().await;
                return Ok(());
            }
            Ok(Err(e @ (ClientError::Certificates(_) | ClientError::InvalidConfig(_)))) => {
                return Err(e.into());
            }
            Ok(Err(e)) if Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context("no answer before the start timeout"));
            }
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "node not answering yet");
                // Back off only when the probe failed fast, not after a full probe timeout.
                if started.elapsed() < PROBE_PAUSE {
                    tokio::time::sleep(PROBE_PAUSE).await;
                }
            }
            Err(_) => bail!("no answer from {addr} before the start timeout"),
        }
    }
}

/// Makes whichever certificates are missing: the CA, `n1..nN`, `client`, `admin`.
fn ensure_certificates(certs: &Path, layout: &Layout) -> anyhow::Result<()> {
    let ca = CertFiles::ca(certs);
    if !ca.cert.exists() {
        certs::init_ca(certs, IfExists::Refuse).context("cannot make the cluster CA")?;
    }
    let mut wanted: Vec<(Role, NodeId)> = layout
        .nodes
        .iter()
        .map(|n| (Role::Node, n.id.clone()))
        .collect();
    wanted.push((Role::Client, node_id_str("client")?));
    wanted.push((Role::Admin, node_id_str("admin")?));
    for (role, name) in wanted {
        if !CertFiles::issued(certs, role, &name).cert.exists() {
            certs::issue(certs, role, name.as_str(), IfExists::Refuse)
                .with_context(|| format!("cannot issue the {role} certificate {name}"))?;
        }
    }
    Ok(())
}

/// Refuses to start when the nodes recorded in `dir/pids` still run.
fn refuse_if_running(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(PID_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((id, pid)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        if is_our_node(pid, dir) {
            return Err(UsageError(format!(
                "a shoal dev cluster is already running in {} (node {id} is pid {pid}); stop it \
                 first: Ctrl-C in its terminal, or SIGTERM to the pids listed in {}",
                dir.display(),
                path.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Whether `pid` is alive and is a `shoal server` of `dir` (not a recycled pid).
fn is_our_node(pid: u32, dir: &Path) -> bool {
    if !matches!(send_signal(pid, 0), Ok(true)) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let dir = dir.as_os_str().as_encoded_bytes();
            args.iter().any(|a| *a == b"server") && args.iter().any(|a| a.starts_with(dir))
        }
        // Without /proc we cannot tell; a live process at that pid is assumed to be ours.
        Err(_) => true,
    }
}

/// Sends `signal` to the process `pid` (0 only checks that it exists). `Ok(false)` when there
/// is no such process.
#[allow(unsafe_code)]
pub(crate) fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<bool> {
    // 0 and negative pids address process groups; refuse them rather than signal a group.
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a single process id"))?;
    // SAFETY: kill(2) takes two integers and reads or writes no memory of this process; `pid`
    // is positive, so it names one process, never a group.
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// Whether the process `pid` has exited: gone, or a zombie whose other threads have exited too
/// (its memory and sockets released, only its exit status left). A killed process's main
/// thread can be a zombie while another thread is still finishing a system call (an
/// `fdatasync`), holding the sockets open. Linux's /proc; elsewhere, only "no such process".
pub(crate) fn process_exited(pid: u32) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    match std::fs::read_to_string(proc.join("stat")) {
        // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so look after the last.
        Ok(stat) => {
            let zombie = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| matches!(state, 'Z' | 'X'));
            zombie && std::fs::read_dir(proc.join("task")).is_ok_and(|threads| threads.count() <= 1)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(_) => matches!(send_signal(pid, 0), Ok(false)),
    }
}

fn print_banner(dir: &Path, layout: &Layout, exports: &str) {
    println!(
        "shoal dev: {} node(s) running; data and logs in {}",
        layout.nodes.len(),
        dir.display()
    );
    for n in &layout.nodes {
        println!(
            "  {}  {}  metrics http://{}/metrics  log {}",
            n.id,
            n.listen,
            n.metrics,
            log_path(dir, &n.id).display()
        );
    }
    println!("Use it from another shell:");
    println!(
        "  source {}",
        shell_quote(&dir.join(ENV_FILE).display().to_string())
    );
    println!("  shoal put greeting hello && shoal get greeting");
    println!("{exports}");
    println!(
        "Ctrl-C stops every node; `shoal dev --dir {}` restarts them with the same ports and data.",
        shell_quote(&dir.display().to_string())
    );
}

/// The one line that points the CLI and the client example at the cluster.
fn exports(layout: &Layout, certs: &Path) -> String {
    let nodes = layout
        .nodes
        .iter()
        .map(|n| n.listen.to_string())
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "export SHOAL_NODES={nodes} SHOAL_CERTS={}",
        shell_quote(&certs.display().to_string())
    )
}

/// Quotes `s` for a POSIX shell when it holds anything beyond plain path characters.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-,:=+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn log_path(dir: &Path, id: &NodeId) -> PathBuf {
    dir.join(format!("{id}.log"))
}

/// The last `lines` lines of a log (reading at most its last 64 KiB).
fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let read = || -> io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..]
                .iter()
                .map(|l| (*l).to_owned())
                .collect()
        }
        Err(e) => vec![format!("(cannot read the log: {e})")],
    }
}

/// Writes `text` to a temporary file beside `path`, then renames it, so readers never see half.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn node_id(index: usize) -> anyhow::Result<NodeId> {
    node_id_str(&format!("n{}", index + 1))
}

fn node_id_str(s: &str) -> anyhow::Result<NodeId> {
    NodeId::new(s).with_context(|| format!("{s} is not a node id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LAYOUT_FILE);
        let layout = Layout::from_base_port(3, 40000).unwrap();
        assert_eq!(layout.nodes[2].listen.port(), 40002);
        assert_eq!(layout.nodes[0].metrics.port(), 40003);
        std::fs::write(&path, layout.to_text()).unwrap();
        assert_eq!(Layout::read(&path).unwrap(), Some(layout));
    }

    #[test]
    fn a_recorded_layout_is_reused_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let first = Layout::prepare(dir.path(), Some(2), None).unwrap();
        assert_eq!(first.nodes.len(), 2);
        let again = Layout::prepare(dir.path(), None, None).unwrap();
        assert_eq!(again, first);
        assert!(Layout::prepare(dir.path(), Some(3), None).is_err());
        assert!(Layout::prepare(dir.path(), None, Some(1)).is_err());
    }

    #[test]
    fn free_ports_are_distinct() {
        let layout = Layout::free_ports(5).unwrap();
        let mut quic: Vec<u16> = layout.nodes.iter().map(|n| n.listen.port()).collect();
        quic.sort();
        quic.dedup();
        assert_eq!(quic.len(), 5);
    }

    #[test]
    fn shell_quoting_leaves_plain_paths_alone() {
        assert_eq!(shell_quote("/tmp/shoal-dev/certs"), "/tmp/shoal-dev/certs");
        assert_eq!(shell_quote("/tmp/my dir"), "'/tmp/my dir'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_process_has_exited_once_it_is_a_zombie_or_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!process_exited(pid), "a sleeping process is running");
        assert!(send_signal(pid, libc::SIGKILL).unwrap());
        // Not reaped yet: a zombie once the kernel has torn it down.
        let start = std::time::Instant::now();
        while !process_exited(pid) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "never exited"
            );
            std::thread::yield_now();
        }
        assert!(child.try_wait().unwrap().is_some(), "it can be reaped");
        assert!(process_exited(pid));
    }

    #[test]
    fn base_ports_must_fit() {
        assert!(Layout::from_base_port(3, 65532).is_err());
        assert!(Layout::from_base_port(3, 0).is_err());
    }
}
