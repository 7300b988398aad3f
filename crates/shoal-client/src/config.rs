use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_transport::{Role, TransportConfig};
use shoal_types::RequestOptions;

/// How a [`Client`](crate::Client) finds the cluster and proves who it is.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Nodes to ask for the ring when connecting, in order. Any members will do; after the
    /// first answer the client routes by the ring.
    pub nodes: Vec<SocketAddr>,
    /// The certificate directory (`ca.pem` and the client's `<role>-<name>.pem/.key`).
    pub certs_dir: PathBuf,
    /// Which certificate to present: [`Role::Client`] (the default) or [`Role::Admin`].
    pub role: Role,
    /// The certificate's name, when the directory holds several of the role.
    pub name: Option<String>,
    /// How long one call may take. The coordinating node is given this deadline (unless a call
    /// sets its own), and the client waits a little longer for its answer. Default
    /// [`RequestOptions::DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// QUIC limits and timeouts of the client's endpoint. Its `idle_timeout` also bounds a
    /// handshake, so it is how soon a node that is down is given up for the next one:
    /// [`ClientConfig::new`] sets it to [`ClientConfig::DEFAULT_IDLE_TIMEOUT`], well below
    /// `timeout`, so a call can still fail over within its deadline. (QUIC never gives up a
    /// handshake before three probe timeouts, about 3 s on a fresh connection, whatever this
    /// says.)
    pub transport: TransportConfig,
    /// A read (or ring request) not answered this long is also sent to the next node; the
    /// first answer wins. `None` never hedges. Writes are never hedged: a second copy would be
    /// a second write. Default [`ClientConfig::DEFAULT_HEDGE_AFTER`].
    pub hedge_after: Option<Duration>,
}

impl ClientConfig {
    /// The default QUIC idle timeout of the client's endpoint (and so its handshake timeout).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
    /// The default keep-alive interval, below the idle timeout.
    pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(1);
    /// The default hedge delay of reads: well above a healthy read's latency, well below the
    /// seconds QUIC takes to declare a dead node's connection lost.
    pub const DEFAULT_HEDGE_AFTER: Duration = Duration::from_millis(50);

    /// A client certificate from `certs_dir`, talking to `nodes`, with default timeouts.
    pub fn new(nodes: Vec<SocketAddr>, certs_dir: impl Into<PathBuf>) -> Self {
        ClientConfig {
            nodes,
            certs_dir: certs_dir.into(),
            role: Role::Client,
            name: None,
            timeout: RequestOptions::DEFAULT_TIMEOUT,
            transport: TransportConfig {
                idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
                keep_alive_interval: Self::DEFAULT_KEEP_ALIVE,
                ..TransportConfig::default()
            },
            hedge_after: Some(Self::DEFAULT_HEDGE_AFTER),
        }
    }

    /// The same configuration presenting an admin certificate.
    pub fn admin(mut self) -> Self {
        self.role = Role::Admin;
        self
    }
}
