//! A cluster of real `shoal server` processes on 127.0.0.1.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use shoal_client::{Client, ClientConfig};
use shoal_protocol::{ClientRequest, ClientResponse, DecodeLimits, Request, Response};
use shoal_transport::{Endpoint, ExpectedPeer, Identity, IfExists, Role, TransportConfig, certs};
use shoal_types::NodeId;
use tokio::time::Instant;

use crate::cli::{self, CliOutput};
use crate::process::{self, Signal};
use crate::proxy::Network;
use crate::{HarnessError, shoal_binary};

/// The client certificate's name in every cluster's certificate directory.
pub const CLIENT_NAME: &str = "app";
/// The admin certificate's name.
pub const ADMIN_NAME: &str = "admin";

/// Attempts at binding a node's port before giving up (another process may take a port
/// between the harness releasing it and the node binding it).
const BIND_ATTEMPTS: usize = 5;

/// How a [`Cluster`] is set up.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// How many nodes (named `n1`, `n2`, …).
    pub nodes: usize,
    /// Put each node behind a fault-injecting proxy ([`Cluster::network`]).
    pub proxied: bool,
    /// Seeds the proxies' fault decisions.
    pub seed: u64,
    /// How long a node may take to answer after it is started.
    pub start_timeout: Duration,
    /// How long a node may take to exit after SIGTERM.
    pub stop_timeout: Duration,
    /// Extra arguments for every `shoal server` (e.g. `--request-timeout 2s`).
    pub server_args: Vec<String>,
    /// The nodes' `RUST_LOG`.
    pub log_filter: String,
    /// Of `nodes`, how many (the last ones) start with `--join` through `n1` instead of being
    /// listed in `--initial-members`; they start once the others answer.
    pub joiners: usize,
}

/// Whether a node's process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Running.
    Running,
    /// Stopped with SIGSTOP.
    Paused,
    /// Not running: killed, stopped, or failed.
    Down,
}

/// N real `shoal server` processes with their certificates, data directories and logs in one
/// temporary directory. See the crate docs.
///
/// Dropping it SIGKILLs every node it started (also when a test panics; the ends of the logs
/// are printed then) and removes the directory, unless `SHOAL_KEEP_CLUSTER=1` is set.
#[derive(Debug)]
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    certs: PathBuf,
    binary: PathBuf,
    config: ClusterConfig,
    nodes: Vec<NodeSlot>,
    network: Option<Network>,
    /// The harness's own admin endpoint, for readiness probes.
    probe: Endpoint,
}

#[derive(Debug)]
struct NodeSlot {
    id: NodeId,
    /// The real address the process listens on.
    listen: SocketAddr,
    /// The address in the ring: the proxy's, or `listen`.
    member: SocketAddr,
    /// Where the node serves Prometheus metrics.
    metrics: SocketAddr,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

impl ClusterConfig {
    /// `nodes` plain nodes (no proxies), default timeouts, `RUST_LOG=info`.
    pub fn new(nodes: usize) -> Self {
        ClusterConfig {
            nodes,
            proxied: false,
            seed: 0,
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
            server_args: Vec::new(),
            log_filter: "info".to_owned(),
            joiners: 0,
        }
    }

    /// The same, with the last `joiners` nodes joining through `n1` (`shoal server --join`).
    pub fn joining(mut self, joiners: usize) -> Self {
        self.joiners = joiners;
        self
    }

    /// The same, with every node behind a fault-injecting proxy whose dice are seeded by
    /// `seed`.
    pub fn proxied(mut self, seed: u64) -> Self {
        self.proxied = true;
        self.seed = seed;
        self
    }
}

impl Cluster {
    /// Starts a cluster of `nodes` plain nodes.
    pub async fn start_plain(nodes: usize) -> Result<Cluster, HarnessError> {
        Cluster::start(ClusterConfig::new(nodes)).await
    }

    /// Makes certificates, starts every node, and returns once each answers a ring request.
    pub async fn start(config: ClusterConfig) -> Result<Cluster, HarnessError> {
        if config.nodes == 0 || config.joiners >= config.nodes {
            return Err(HarnessError::Invalid(
                "a cluster needs a node that does not join".into(),
            ));
        }
        let binary = shoal_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("shoal-cluster-")
            .tempdir()
            .map_err(|e| HarnessError::io("making the cluster directory", e))?;
        let root = dir.path().to_owned();
        let certs = root.join("certs");
        make_certs(&certs, config.nodes)?;
        let network = match config.proxied {
            true => Some(Network::start(config.nodes, config.seed).await?),
            false => None,
        };
        let probe = probe_endpoint(&certs)?;
        let ports = free_udp_ports(config.nodes)?;
        let metrics_ports = free_tcp_ports(config.nodes)?;
        let mut nodes = Vec::with_capacity(config.nodes);
        for (i, (port, metrics_port)) in ports.into_iter().zip(metrics_ports).enumerate() {
            let id = node_id(i)?;
            let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let member = network.as_ref().map_or(listen, |n| n.addr(i));
            nodes.push(NodeSlot {
                data: root.join(id.as_str()),
                log: root.join(format!("{id}.log")),
                id,
                listen,
                member,
                metrics: SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port)),
                child: None,
                paused: false,
                starts: 0,
            });
        }
        let mut cluster = Cluster {
            dir: Some(dir),
            root,
            certs,
            binary,
            config,
            nodes,
            network,
            probe,
        };
        let founders = cluster.nodes.len() - cluster.config.joiners;
        for group in [0..founders, founders..cluster.nodes.len()] {
            for i in group.clone() {
                cluster.spawn(i)?;
            }
            for i in group {
                cluster.await_ready(i).await?;
            }
        }
        Ok(cluster)
    }

    /// Node `i`'s Prometheus metrics, as text (`GET /metrics` on its `--metrics` address).
    pub async fn metrics(&self, i: usize) -> Result<Metrics, HarnessError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.nodes[i].metrics;
        let io = |what: &str| {
            let what = format!("{what} {addr}");
            move |e| HarnessError::io(what, e)
        };
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(io("connecting to metrics at"))?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\n\r\n")
            .await
            .map_err(io("asking for metrics at"))?;
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .await
            .map_err(io("reading metrics from"))?;
        Ok(Metrics(text))
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: [`Cluster::start`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s id (`n1` for node 0).
    pub fn id(&self, i: usize) -> &NodeId {
        &self.nodes[i].id
    }

    /// Node `i`'s address in the ring: where clients and other nodes reach it (its proxy's
    /// address in a proxied cluster).
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].member
    }

    /// Every node's address in the ring.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.member).collect()
    }

    /// Node `i`'s data directory (wipe it while the node is down to restart it empty).
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].data
    }

    /// The address node `i`'s process listens on (bypassing any proxy).
    pub fn listen_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].listen
    }

    /// The certificate directory: the CA, `node-n1…`, `client-app`, `admin-admin`.
    pub fn certs_dir(&self) -> &Path {
        &self.certs
    }

    /// The directory everything lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Node `i`'s log file (stdout and stderr of every start, appended).
    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.nodes[i].log, lines)
    }

    /// Node `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Whether node `i` runs, is paused, or is down.
    pub fn state(&mut self, i: usize) -> NodeState {
        let slot = &mut self.nodes[i];
        match slot.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) if slot.paused => NodeState::Paused,
            Some(Ok(None)) => NodeState::Running,
            _ => NodeState::Down,
        }
    }

    /// The fault-injecting proxies (a proxied cluster only).
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    /// A client configuration for this cluster with the client certificate; adjust it and
    /// pass it to [`Client::connect`].
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.addrs(), &self.certs);
        config.name = Some(CLIENT_NAME.to_owned());
        config
    }

    /// A client with the client certificate, connected to every node.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        Ok(Client::connect(self.client_config()).await?)
    }

    /// A client with the admin certificate.
    pub async fn admin_client(&self) -> Result<Client, HarnessError> {
        let mut config = self.client_config().admin();
        config.name = Some(ADMIN_NAME.to_owned());
        Ok(Client::connect(config).await?)
    }

    /// Runs `shoal ARGS…` as a client of this cluster: `SHOAL_NODES` names every node and
    /// `SHOAL_CERTS` the certificate directory (a `--node` or `--certs` in `args` wins).
    pub async fn shoal(&self, args: &[&str]) -> Result<CliOutput, HarnessError> {
        self.shoal_with_stdin(args, None).await
    }

    /// [`Cluster::shoal`] with bytes for its standard input (`shoal put KEY -`).
    pub async fn shoal_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<CliOutput, HarnessError> {
        let nodes = self
            .addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let certs = self.certs.to_string_lossy().into_owned();
        let env = [
            ("SHOAL_NODES", nodes.as_str()),
            ("SHOAL_CERTS", certs.as_str()),
        ];
        cli::run_with_stdin(&self.binary, args, &env, stdin).await
    }

    /// SIGKILL: node `i` dies at once, losing nothing it acknowledged (the page cache
    /// survives), leaving its peers' connections to time out.
    pub fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        let slot = &mut self.nodes[i];
        let Some(mut child) = slot.child.take() else {
            return Err(HarnessError::Invalid(format!("{} is not running", slot.id)));
        };
        process::send(child.id(), Signal::Kill);
        slot.paused = false;
        child
            .wait()
            .map_err(|e| HarnessError::io(format!("reaping {}", slot.id), e))?;
        Ok(())
    }

    /// SIGTERM, and waits for node `i` to exit (a paused node is resumed first). Returns its
    /// exit status; one that does not exit within the stop timeout is killed and reported.
    pub async fn stop(&mut self, i: usize) -> Result<ExitStatus, HarnessError> {
        let timeout = self.config.stop_timeout;
        let slot = &mut self.nodes[i];
        let Some(mut child) = slot.child.take() else {
            return Err(HarnessError::Invalid(format!("{} is not running", slot.id)));
        };
        if slot.paused {
            process::send(child.id(), Signal::Cont);
            slot.paused = false;
        }
        process::send(child.id(), Signal::Term);
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                result => {
                    process::send(child.id(), Signal::Kill);
                    let _ = child.wait();
                    let problem = match result {
                        Err(e) => format!("could not be waited for: {e}"),
                        _ => format!("did not exit within {timeout:?} of SIGTERM; killed"),
                    };
                    return Err(slot.error(problem));
                }
            }
        }
    }

    /// Starts node `i` again (it must be down) on the same data directory and address, and
    /// waits until it answers.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.state(i) != NodeState::Down {
            return Err(HarnessError::Invalid(format!("{} is running", self.id(i))));
        }
        self.nodes[i].child = None;
        self.spawn(i)?;
        self.await_ready(i).await
    }

    /// SIGTERM to every running node, then waits for all (concurrently).
    pub async fn stop_all(&mut self) -> Result<Vec<ExitStatus>, HarnessError> {
        for slot in &mut self.nodes {
            if let Some(child) = &slot.child {
                if slot.paused {
                    process::send(child.id(), Signal::Cont);
                    slot.paused = false;
                }
                process::send(child.id(), Signal::Term);
            }
        }
        let mut statuses = Vec::new();
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_some() {
                statuses.push(self.stop(i).await?);
            }
        }
        Ok(statuses)
    }

    /// Starts every node that is down, then waits until each answers.
    pub async fn start_all(&mut self) -> Result<(), HarnessError> {
        let mut started = Vec::new();
        for i in 0..self.nodes.len() {
            if self.state(i) == NodeState::Down {
                self.nodes[i].child = None;
                self.spawn(i)?;
                started.push(i);
            }
        }
        for i in started {
            self.await_ready(i).await?;
        }
        Ok(())
    }

    /// SIGSTOP: node `i` freezes (its sockets stay open, nothing is answered).
    pub fn pause(&mut self, i: usize) -> Result<(), HarnessError> {
        let slot = &mut self.nodes[i];
        match &slot.child {
            Some(child) if !slot.paused => {
                process::send(child.id(), Signal::Stop);
                slot.paused = true;
                Ok(())
            }
            _ => Err(HarnessError::Invalid(format!("{} is not running", slot.id))),
        }
    }

    /// SIGCONT: a paused node `i` carries on.
    pub fn resume(&mut self, i: usize) -> Result<(), HarnessError> {
        let slot = &mut self.nodes[i];
        match &slot.child {
            Some(child) if slot.paused => {
                process::send(child.id(), Signal::Cont);
                slot.paused = false;
                Ok(())
            }
            _ => Err(HarnessError::Invalid(format!("{} is not paused", slot.id))),
        }
    }

    /// Starts node `i`'s process, appending its output to its log.
    fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let founders = self.nodes.len() - self.config.joiners;
        let members = self.nodes[..founders]
            .iter()
            .map(|n| format!("{}={}", n.id, n.member))
            .collect::<Vec<_>>()
            .join(",");
        let seed = self.nodes[0].member;
        let proxied = self.network.is_some();
        if let Some(network) = &self.network {
            network.set_target(i, self.nodes[i].listen);
        }
        let slot = &mut self.nodes[i];
        slot.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log)
            .map_err(|e| HarnessError::io(format!("opening {}", slot.log.display()), e))?;
        let _ = writeln!(
            log,
            "=== harness: starting {} (start {}) listening on {} as {} ===",
            slot.id, slot.starts, slot.listen, slot.member
        );
        let err = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log handle", e))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("server")
            .arg("--node-id")
            .arg(slot.id.as_str())
            .arg("--listen")
            .arg(slot.listen.to_string())
            .arg("--data-dir")
            .arg(&slot.data)
            .arg("--certs")
            .arg(&self.certs);
        if i < founders {
            command.arg("--initial-members").arg(&members);
        } else {
            command.arg("--join").arg(seed.to_string());
        }
        command.arg("--metrics").arg(slot.metrics.to_string());
        if proxied {
            command.arg("--advertise").arg(slot.member.to_string());
        }
        command
            .args(&self.config.server_args)
            .env("RUST_LOG", &self.config.log_filter)
            .env_remove("SHOAL_NODES")
            .env_remove("SHOAL_CERTS")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        process::die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {}", self.binary.display()), e))?;
        slot.child = Some(child);
        slot.paused = false;
        Ok(())
    }

    /// Waits until node `i` answers a ring request on its real address. A node that exits
    /// because its port was taken meanwhile is started again on another port when it sits
    /// behind a proxy (the ring keeps the proxy's address), or on the same one a few times.
    async fn await_ready(&mut self, i: usize) -> Result<(), HarnessError> {
        let mut attempts = 1;
        loop {
            match self.wait_answer(i).await {
                Ok(()) => break,
                Err(Exit::Bind) if attempts < BIND_ATTEMPTS => {
                    attempts += 1;
                    if self.network.is_some() {
                        self.nodes[i].listen =
                            SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_ports(1)?[0]));
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    self.spawn(i)?;
                }
                Err(Exit::Bind) => {
                    return Err(self.nodes[i].error(format!(
                        "could not bind {} in {BIND_ATTEMPTS} attempts",
                        self.nodes[i].listen
                    )));
                }
                Err(Exit::Failed(problem)) => {
                    if let Some(mut child) = self.nodes[i].child.take() {
                        process::send(child.id(), Signal::Kill);
                        let _ = child.wait();
                    }
                    return Err(self.nodes[i].error(problem));
                }
            }
        }
        if let Some(network) = &self.network {
            let slot = &self.nodes[i];
            let source = peer_endpoint(&slot.log).ok_or_else(|| {
                slot.error("answered, but its log names no peer_endpoint".to_owned())
            })?;
            network.register_source(i, SocketAddr::from((Ipv4Addr::LOCALHOST, source.port())));
        }
        Ok(())
    }

    async fn wait_answer(&mut self, i: usize) -> Result<(), Exit> {
        let deadline = Instant::now() + self.config.start_timeout;
        let frame = shoal_protocol::encode(&Request::Client(ClientRequest::Ring))
            .map_err(|e| Exit::Failed(format!("cannot encode a ring request: {e}")))?;
        loop {
            let slot = &mut self.nodes[i];
            if let Some(child) = slot.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                slot.child = None;
                let log = tail(&slot.log, 20);
                return Err(if log.contains("cannot bind") {
                    Exit::Bind
                } else {
                    Exit::Failed(format!("exited while starting: {status}"))
                });
            }
            let expect = ExpectedPeer::Node(slot.id.clone());
            let answer = self
                .probe
                .request(slot.listen, expect, frame.clone(), Duration::from_secs(1))
                .await;
            if let Ok(bytes) = answer
                && let Ok(Response::Client(ClientResponse::Ring(_))) =
                    shoal_protocol::decode::<Response>(&bytes, &DecodeLimits::default())
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Exit::Failed(format!(
                    "did not answer within {:?}",
                    self.config.start_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for slot in &mut self.nodes {
            if let Some(mut child) = slot.child.take() {
                process::send(child.id(), Signal::Kill);
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for slot in &self.nodes {
                eprintln!(
                    "--- last lines of {} ---\n{}",
                    slot.log.display(),
                    tail(&slot.log, 30)
                );
            }
        }
        if std::env::var_os("SHOAL_KEEP_CLUSTER").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("keeping the cluster directory {}", dir.keep().display());
        }
    }
}

impl NodeSlot {
    fn error(&self, problem: String) -> HarnessError {
        HarnessError::Node {
            node: self.id.to_string(),
            problem,
            log: self.log.clone(),
            tail: tail(&self.log, 30),
        }
    }
}

/// Why a node did not answer.
#[derive(Debug)]
enum Exit {
    /// Its port was taken.
    Bind,
    Failed(String),
}

/// `n1` for node 0.
fn node_id(i: usize) -> Result<NodeId, HarnessError> {
    NodeId::new(&format!("n{}", i + 1)).map_err(|e| HarnessError::Invalid(e.to_string()))
}

/// The CA, a certificate per node, a client and an admin certificate.
fn make_certs(dir: &Path, nodes: usize) -> Result<(), HarnessError> {
    certs::init_ca(dir, IfExists::Refuse)?;
    for i in 0..nodes {
        certs::issue(dir, Role::Node, node_id(i)?.as_str(), IfExists::Refuse)?;
    }
    certs::issue(dir, Role::Client, CLIENT_NAME, IfExists::Refuse)?;
    certs::issue(dir, Role::Admin, ADMIN_NAME, IfExists::Refuse)?;
    Ok(())
}

/// The harness's admin endpoint, with a short idle timeout so a probe of a node that is not
/// up yet fails fast.
fn probe_endpoint(certs: &Path) -> Result<Endpoint, HarnessError> {
    let identity = Identity::load(certs, Role::Admin, Some(ADMIN_NAME))?;
    let config = TransportConfig {
        idle_timeout: Duration::from_secs(2),
        keep_alive_interval: Duration::from_millis(500),
        ..TransportConfig::default()
    };
    Ok(Endpoint::client(identity, config)?)
}

/// `count` distinct free UDP ports on 127.0.0.1: all bound at once (so none repeats), then
/// released for the nodes to bind.
fn free_tcp_ports(count: usize) -> Result<Vec<u16>, HarnessError> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HarnessError::io("finding free TCP ports", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HarnessError::io("reading a free port", e))
}

fn free_udp_ports(count: usize) -> Result<Vec<u16>, HarnessError> {
    let sockets = (0..count)
        .map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HarnessError::io("finding free UDP ports", e))?;
    sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HarnessError::io("reading a free port", e))
}

/// The `peer_endpoint=ADDR` of the last `shoal node started` line of a log.
fn peer_endpoint(log: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("shoal node started"))?;
    let start = line.find("peer_endpoint=")? + "peer_endpoint=".len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The last `lines` lines of a file (empty if unreadable).
fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut file, &mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_endpoint_is_read_from_the_last_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("n1.log");
        std::fs::write(
            &log,
            "x INFO shoal_server::server: shoal node started node=n1 peer_endpoint=[::]:4000 seed=1\n\
             === harness: starting n1 (start 2) ===\n\
             x INFO shoal_server::server: shoal node started node=n1 peer_endpoint=[::]:5000 seed=2\n",
        )
        .unwrap();
        assert_eq!(peer_endpoint(&log).unwrap().port(), 5000);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_udp_ports(8).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8);
    }
}

/// A node's metrics page.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every series of `name` whose labels contain each of `labels` (`key="value"`
    /// pairs); `None` when the page has no such series.
    pub fn value(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let mut found = None;
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name || !labels.iter().all(|l| series_labels.contains(l)) {
                continue;
            }
            if let Ok(v) = value.parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }
}
