//! The fault-injecting UDP proxies of a proxied cluster.
//!
//! Each node gets one proxy port on 127.0.0.1, and the ring names that port as the node's
//! address (`shoal server --advertise`), so every datagram to a node passes its proxy: from
//! clients, and from the other nodes. The proxy is a small UDP NAT: for each source address it
//! opens an upstream socket towards the node's real port and relays the node's answers back to
//! the source from the proxy port, so both sides see the addresses they expect. It never looks
//! into a datagram; QUIC and its TLS identities run end to end.
//!
//! Who sent a datagram is read from its source address. A node sends its own requests to other
//! nodes from its peer endpoint (an ephemeral port, which it logs at start-up and the cluster
//! registers here with [`Network::register_source`]), and its answers to their requests come
//! back through the proxy in front of it; every other source is a [`Peer::Client`]. So at the
//! proxy of node B, a flow from A's peer endpoint carries A → B datagrams one way and B → A the
//! other, and each direction gets the faults of its own link.
//!
//! Faults are decided per datagram by a seeded generator, but the interleaving of datagrams
//! depends on real time, so only the schedule of fault changes (the nemesis') is replayable.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};

use crate::HarnessError;

/// A flow (one source's relay) with no datagram in either direction for this long is closed.
const FLOW_IDLE: Duration = Duration::from_secs(60);

/// Largest datagram relayed (UDP's own limit).
const MAX_DATAGRAM: usize = 65_535;

/// Who sends or receives a datagram, as the proxies see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// Node `i` of the cluster (0-based).
    Node(usize),
    /// Anything that is not a node's peer endpoint: clients, admins, the `shoal` command line.
    Client,
}

/// What happens to datagrams on one directed link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Every datagram waits this long...
    pub delay: Duration,
    /// ...plus a uniformly random extra up to this (which also reorders datagrams).
    pub jitter: Duration,
}

/// What the proxies did, cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Datagrams delivered (a duplicate counts twice).
    pub delivered: u64,
    /// Datagrams dropped at random.
    pub dropped: u64,
    /// Datagrams dropped because their link was blocked (partitions).
    pub blocked: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Datagrams delivered late.
    pub delayed: u64,
}

/// The proxies of a cluster and the faults they apply. Dropping it stops every proxy.
#[derive(Debug)]
pub struct Network {
    shared: Arc<Shared>,
    proxies: Vec<Proxy>,
}

#[derive(Debug)]
struct Proxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// What every proxy task shares.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    delivered: AtomicU64,
    dropped: AtomicU64,
    blocked: AtomicU64,
    duplicated: AtomicU64,
    delayed: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// The real address of each node, where its proxy forwards to.
    targets: Vec<SocketAddr>,
    /// Source addresses known to be nodes' peer endpoints.
    sources: HashMap<SocketAddr, usize>,
    /// Faults of every link that has no rule of its own.
    weather: LinkFaults,
    /// Links with their own faults.
    links: HashMap<(Peer, Peer), LinkFaults>,
    /// Links on which nothing passes.
    blocked: HashSet<(Peer, Peer)>,
    rng: StdRng,
}

/// What to do with one datagram: deliver it after each of these delays (none: drop it).
type Deliveries = Vec<Duration>;

impl Network {
    /// Binds one proxy port per node on 127.0.0.1. The proxies forward nowhere until
    /// [`Network::set_target`] names each node's real address.
    pub async fn start(nodes: usize, seed: u64) -> Result<Network, HarnessError> {
        let unset = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                targets: vec![unset; nodes],
                sources: HashMap::new(),
                weather: LinkFaults::default(),
                links: HashMap::new(),
                blocked: HashSet::new(),
                rng: StdRng::seed_from_u64(seed),
            }),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
        });
        let mut proxies = Vec::with_capacity(nodes);
        for node in 0..nodes {
            let front = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(|e| HarnessError::io("binding a proxy port", e))?;
            let addr = front
                .local_addr()
                .map_err(|e| HarnessError::io("reading a proxy's address", e))?;
            let task = tokio::spawn(run_proxy(node, Arc::new(front), shared.clone()));
            proxies.push(Proxy { addr, task });
        }
        Ok(Network { shared, proxies })
    }

    /// The proxy address of `node`: the address the ring gives it.
    pub fn addr(&self, node: usize) -> SocketAddr {
        self.proxies[node].addr
    }

    /// Where `node`'s proxy forwards to: the node's real listen address.
    pub fn set_target(&self, node: usize, real: SocketAddr) {
        self.shared.lock().targets[node] = real;
    }

    /// Records that datagrams from `source` come from `node` (its peer endpoint).
    pub fn register_source(&self, node: usize, source: SocketAddr) {
        let mut state = self.shared.lock();
        // A restarted node has a new peer endpoint; its old port may be reused by anyone.
        state.sources.retain(|_, n| *n != node);
        state.sources.insert(normalise(source), node);
    }

    /// Faults for every link that has no rule of its own (`LinkFaults::default()`: none).
    pub fn set_weather(&self, faults: LinkFaults) {
        self.shared.lock().weather = faults;
    }

    /// Faults for the link `from` → `to`, replacing the weather there.
    pub fn set_link(&self, from: Peer, to: Peer, faults: LinkFaults) {
        self.shared.lock().links.insert((from, to), faults);
    }

    /// Nothing passes from `from` to `to` (a one-way partition); the other way is untouched.
    pub fn block(&self, from: Peer, to: Peer) {
        self.shared.lock().blocked.insert((from, to));
    }

    /// Undoes [`Network::block`] for one direction.
    pub fn unblock(&self, from: Peer, to: Peer) {
        self.shared.lock().blocked.remove(&(from, to));
    }

    /// Splits the nodes into groups that cannot reach each other, in both directions. Nodes in
    /// no group keep their links; clients still reach every node.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        let mut state = self.shared.lock();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in a {
                    for &y in b {
                        state.blocked.insert((Peer::Node(x), Peer::Node(y)));
                        state.blocked.insert((Peer::Node(y), Peer::Node(x)));
                    }
                }
            }
        }
    }

    /// Clears every fault: weather, link rules and blocked links.
    pub fn heal(&self) {
        let mut state = self.shared.lock();
        state.weather = LinkFaults::default();
        state.links.clear();
        state.blocked.clear();
    }

    /// What the proxies did so far.
    pub fn stats(&self) -> NetworkStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.shared;
        NetworkStats {
            delivered: load(&s.delivered),
            dropped: load(&s.dropped),
            blocked: load(&s.blocked),
            duplicated: load(&s.duplicated),
            delayed: load(&s.delayed),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Aborting a proxy task drops its flows' JoinSet, which aborts their relays.
        for proxy in &self.proxies {
            proxy.task.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state holds no invariant a panicking holder could break half-way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn target(&self, node: usize) -> SocketAddr {
        self.lock().targets[node]
    }

    fn classify(&self, source: SocketAddr) -> Peer {
        self.lock()
            .sources
            .get(&normalise(source))
            .map_or(Peer::Client, |&n| Peer::Node(n))
    }

    /// Rolls the dice for one datagram on `from` → `to`.
    fn decide(&self, from: Peer, to: Peer) -> Deliveries {
        let mut state = self.lock();
        if state.blocked.contains(&(from, to)) {
            self.blocked.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        let faults = state
            .links
            .get(&(from, to))
            .copied()
            .unwrap_or(state.weather);
        if faults == LinkFaults::default() {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            return vec![Duration::ZERO];
        }
        let rng = &mut state.rng;
        if faults.drop > 0.0 && rng.random_bool(faults.drop.min(1.0)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        let copies = if faults.duplicate > 0.0 && rng.random_bool(faults.duplicate.min(1.0)) {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        let mut deliveries = Vec::with_capacity(copies);
        for _ in 0..copies {
            let jitter = if faults.jitter.is_zero() {
                Duration::ZERO
            } else {
                faults.jitter.mul_f64(rng.random::<f64>())
            };
            let delay = faults.delay + jitter;
            if !delay.is_zero() {
                self.delayed.fetch_add(1, Ordering::Relaxed);
            }
            deliveries.push(delay);
        }
        self.delivered
            .fetch_add(deliveries.len() as u64, Ordering::Relaxed);
        deliveries
    }
}

/// One proxy: reads datagrams on its port, opens a flow per source, relays.
async fn run_proxy(node: usize, front: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut relays: JoinSet<SocketAddr> = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = front.recv_from(&mut buf) => {
                // Errors on an unconnected UDP socket are transient (ICMP noise); keep serving.
                let Ok((len, source)) = received else { continue };
                let upstream = match flows.get(&source) {
                    Some(upstream) => upstream.clone(),
                    None => {
                        let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await else {
                            continue;
                        };
                        let upstream = Arc::new(socket);
                        flows.insert(source, upstream.clone());
                        relays.spawn(relay_back(
                            node,
                            source,
                            upstream.clone(),
                            front.clone(),
                            shared.clone(),
                        ));
                        upstream
                    }
                };
                let from = shared.classify(source);
                let deliveries = shared.decide(from, Peer::Node(node));
                let target = shared.target(node);
                if target.port() != 0 {
                    deliver(&upstream, Bytes::copy_from_slice(&buf[..len]), target, deliveries).await;
                }
            }
            Some(Ok(source)) = relays.join_next(), if !relays.is_empty() => {
                flows.remove(&source);
            }
        }
    }
}

/// Relays the node's datagrams of one flow back to its source, until the flow is idle.
async fn relay_back(
    node: usize,
    source: SocketAddr,
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    shared: Arc<Shared>,
) -> SocketAddr {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::time::timeout(FLOW_IDLE, upstream.recv_from(&mut buf)).await;
        let Ok(received) = received else {
            // Idle in both directions? The front side bumps nothing, so a flow whose source
            // still sends is simply reopened on its next datagram.
            return source;
        };
        let Ok((len, from)) = received else { continue };
        // Only the node's answers go back; anything else reaching this port is dropped.
        if from != shared.target(node) {
            continue;
        }
        let to = shared.classify(source);
        let deliveries = shared.decide(Peer::Node(node), to);
        deliver(
            &front,
            Bytes::copy_from_slice(&buf[..len]),
            source,
            deliveries,
        )
        .await;
    }
}

/// Sends `datagram` to `to` once per delivery, the undelayed ones at once (in order), the
/// delayed ones from a task each.
async fn deliver(socket: &Arc<UdpSocket>, datagram: Bytes, to: SocketAddr, deliveries: Deliveries) {
    for delay in deliveries {
        if delay.is_zero() {
            let _ = socket.send_to(&datagram, to).await;
        } else {
            let (socket, datagram) = (socket.clone(), datagram.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&datagram, to).await;
            });
        }
    }
}

/// The IPv4 form of an IPv4-mapped IPv6 address (dual-stack sockets report those).
fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, addr.port())),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}
