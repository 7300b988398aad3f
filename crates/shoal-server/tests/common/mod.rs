//! What the server tests share: certificates in a temp dir, a tiny client speaking
//! shoal-protocol over shoal-transport directly, clusters of real servers on 127.0.0.1, and
//! waiting for conditions with deadlines.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_causality::CausalContext;
use shoal_protocol::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, DecodeLimits, LocalRead, Refusal,
    Request, Response, decode, encode,
};
use shoal_ring::Member;
use shoal_server::{Server, ServerConfig};
use shoal_transport::certs::{self, IfExists};
use shoal_transport::{Endpoint, ExpectedPeer, Identity, Role, TransportConfig, TransportError};
use shoal_types::{Key, NodeId, PartitionCount, Quorum, RequestOptions};
use tempfile::TempDir;

/// How long a test waits for anything before failing.
pub const DEADLINE: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

pub fn key(k: &str) -> Key {
    Key::new(Bytes::from(k.to_owned())).unwrap()
}

/// A CA with node certificates n1..n{nodes}, client `app` and admin `ops`.
pub fn cluster_certs(nodes: usize) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::init_ca(dir.path(), IfExists::Refuse).unwrap();
    for i in 1..=nodes {
        certs::issue(dir.path(), Role::Node, &format!("n{i}"), IfExists::Refuse).unwrap();
    }
    certs::issue(dir.path(), Role::Client, "app", IfExists::Refuse).unwrap();
    certs::issue(dir.path(), Role::Admin, "ops", IfExists::Refuse).unwrap();
    dir
}

/// Free UDP ports on 127.0.0.1 for servers that bind them later, never handed out twice by
/// this process.
///
/// They come from below the kernel's ephemeral range (`ip_local_port_range`): a port of that
/// range, bound, read and released, can be given to any socket the process binds to port 0
/// before the server binds it (client endpoints, peer endpoints and the transport's port checks
/// all do), and the server then fails with "address in use". A port below the range is given
/// out only on request; each candidate is bound here first to skip ports in use.
pub fn free_ports(count: usize) -> Vec<u16> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let (low, high) = ports_outside_the_ephemeral_range();
    let span = u32::from(high - low) + 1;
    let mut next = low + (rand::random::<u32>() % span) as u16;
    let mut handed_out = HANDED_OUT.lock().unwrap();
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let mut held = Vec::with_capacity(count);
    for _ in 0..span {
        if held.len() == count {
            break;
        }
        let port = next;
        next = if next == high { low } else { next + 1 };
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(socket) = UdpSocket::bind(("127.0.0.1", port)) {
            handed_out.insert(port);
            held.push(socket);
        }
    }
    assert_eq!(held.len(), count, "no {count} free ports in {low}..={high}");
    held.iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

/// The ports tests may pick: 10000 up to the start of the ephemeral range (or above its end
/// if that leaves more).
fn ports_outside_the_ephemeral_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32768, 60999));
    let below = range.0.saturating_sub(10000);
    let above = u16::MAX.saturating_sub(range.1);
    if below >= above {
        (10000, range.0 - 1)
    } else {
        (range.1 + 1, u16::MAX)
    }
}

pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A config for a one-node cluster on a free port with N=R=W=1 and a small ring.
pub fn single_node_config(certs: &Path, data: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(id("n1"), localhost(0), data.join("n1"), certs);
    config.quorum = Quorum::new(1, 1, 1, 0, 0).unwrap();
    config.partitions = PartitionCount::new(16).unwrap();
    config
}

/// Several servers on fixed loopback ports, sharing one certificate directory.
pub struct Cluster {
    pub certs: TempDir,
    pub data: TempDir,
    pub configs: Vec<ServerConfig>,
    pub servers: Vec<Option<Server>>,
}

impl Cluster {
    /// Starts n1..n{size} with N=3, R=W=2 and Q=16.
    pub async fn start(size: usize) -> Cluster {
        init_logs();
        let certs = cluster_certs(size);
        let data = tempfile::tempdir().unwrap();
        let ports = free_ports(size);
        let members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| Member::new(id(&format!("n{}", i + 1)), localhost(*port)))
            .collect();
        let configs: Vec<ServerConfig> = members
            .iter()
            .map(|m| {
                let mut c = ServerConfig::new(
                    m.id.clone(),
                    m.addr,
                    data.path().join(m.id.as_str()),
                    certs.path(),
                );
                c.members = members.clone();
                c.partitions = PartitionCount::new(16).unwrap();
                c
            })
            .collect();
        let mut servers = Vec::new();
        for c in &configs {
            servers.push(Some(Server::start(c.clone()).await.unwrap()));
        }
        let cluster = Cluster {
            certs,
            data,
            configs,
            servers,
        };
        cluster.await_peers_reachable().await;
        cluster
    }

    /// Waits until every node counts every other as reachable. Listening is not enough: a
    /// node pings its peers when it starts, and one that started before a peer was listening
    /// holds it unreachable for a back-off (250 ms, doubling while it stays down), answering
    /// `Unavailable` to requests that need it meanwhile.
    pub async fn await_peers_reachable(&self) {
        let ops = TestClient::new(self.certs.path(), Role::Admin, "ops");
        for i in 0..self.configs.len() {
            let addr = self.addr(i);
            eventually(&format!("n{} reaches every peer", i + 1), || async {
                match ops
                    .try_request(addr, &Request::Admin(AdminRequest::Status))
                    .await
                {
                    Ok(Response::Admin(AdminResponse::Status(status))) => {
                        status.peers.iter().all(|p| p.reachable)
                    }
                    _ => false,
                }
            })
            .await;
        }
        ops.close().await;
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.configs[i].listen
    }

    pub fn client(&self) -> TestClient {
        TestClient::new(self.certs.path(), Role::Client, "app")
    }

    /// Gracefully stops server `i`.
    pub async fn stop(&mut self, i: usize) {
        let server = self.servers[i].take().unwrap();
        let start = Instant::now();
        within("shutdown", server.shutdown()).await.unwrap();
        println!("n{} shut down in {:?}", i + 1, start.elapsed());
    }

    pub async fn stop_all(&mut self) {
        for i in 0..self.servers.len() {
            if self.servers[i].is_some() {
                self.stop(i).await;
            }
        }
    }
}

/// A minimal client: one endpoint, one request per call, the node named by its address's
/// position in the caller's mind (`ExpectedPeer::AnyNode`).
pub struct TestClient {
    pub endpoint: Endpoint,
}

impl TestClient {
    pub fn new(certs: &Path, role: Role, name: &str) -> TestClient {
        let identity = Identity::load(certs, role, Some(name)).unwrap();
        let endpoint = Endpoint::client(identity, TransportConfig::default()).unwrap();
        TestClient { endpoint }
    }

    /// Sends raw bytes as one request frame.
    pub async fn raw(&self, addr: SocketAddr, frame: Bytes) -> Result<Bytes, TransportError> {
        self.endpoint
            .request(addr, ExpectedPeer::AnyNode, frame, REQUEST_TIMEOUT)
            .await
    }

    /// Sends a request and decodes the answer; transport errors are returned.
    pub async fn try_request(
        &self,
        addr: SocketAddr,
        request: &Request,
    ) -> Result<Response, TransportError> {
        let answer = self.raw(addr, encode(request).unwrap()).await?;
        Ok(decode(&answer, &DecodeLimits::default()).unwrap())
    }

    /// Sends raw bytes and expects a refusal.
    pub async fn refusal(&self, addr: SocketAddr, frame: Bytes) -> Refusal {
        let answer = self.raw(addr, frame).await.unwrap();
        match decode(&answer, &DecodeLimits::default()).unwrap() {
            Response::Refused(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    pub async fn request(&self, addr: SocketAddr, request: &Request) -> Response {
        self.try_request(addr, request).await.unwrap()
    }

    pub async fn client_request(&self, addr: SocketAddr, request: ClientRequest) -> ClientResponse {
        match self.request(addr, &Request::Client(request)).await {
            Response::Client(c) => c,
            other => panic!("expected a client response, got {other:?}"),
        }
    }

    pub async fn put(
        &self,
        addr: SocketAddr,
        k: &str,
        v: &str,
        options: RequestOptions,
    ) -> ClientResponse {
        let request = ClientRequest::Put {
            key: key(k),
            value: Bytes::from(v.to_owned()),
            context: CausalContext::default(),
            options,
        };
        self.client_request(addr, request).await
    }

    pub async fn get(&self, addr: SocketAddr, k: &str, options: RequestOptions) -> ClientResponse {
        let request = ClientRequest::Get {
            key: key(k),
            options,
        };
        self.client_request(addr, request).await
    }

    /// The values of one node's own replica of `k` (empty if it has none).
    pub async fn local_values(&self, addr: SocketAddr, k: &str) -> Vec<String> {
        match self
            .client_request(addr, ClientRequest::GetLocal { key: key(k) })
            .await
        {
            ClientResponse::Local(LocalRead::Found(o)) => strings(&o.values()),
            ClientResponse::Local(_) => Vec::new(),
            other => panic!("expected a local read, got {other:?}"),
        }
    }

    pub async fn close(self) {
        self.endpoint.close().await;
    }
}

pub fn strings(values: &[Bytes]) -> Vec<String> {
    let mut v: Vec<String> = values
        .iter()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    v.sort();
    v
}

pub fn read_values(response: &ClientResponse) -> Vec<String> {
    match response {
        ClientResponse::Read { values, .. } => strings(values),
        other => panic!("expected a read, got {other:?}"),
    }
}

pub fn options(r: Option<u8>, w: Option<u8>) -> RequestOptions {
    RequestOptions {
        r,
        w,
        ..RequestOptions::default()
    }
}

/// Runs `future`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

/// Polls `check` until it holds, failing the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not true within {DEADLINE:?}"
        );
        // Polling interval, not a wait for an outcome: the condition is what is waited on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` on the metrics endpoint: (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    try_http_get(addr, path).await.unwrap()
}

/// [`http_get`], with the connection's errors returned: a busy endpoint closes connections
/// without reading their request, which may reset them.
pub async fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no response head in {response:?}")))?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// The value of one sample line (`name{labels}` exactly as rendered) in a scrape.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub fn data_path(data: &TempDir, node: &str) -> PathBuf {
    data.path().join(node)
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=shoal_server=debug`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
