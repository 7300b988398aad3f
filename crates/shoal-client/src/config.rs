use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_transport::{Role, TransportConfig};
use shoal_types::RequestOptions;

use crate::pacing::HedgeDelay;

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
    /// When a read (or ring request) not answered yet is also sent to the next node; the first
    /// answer wins. Writes are never hedged: a second copy would be a second write. Hedges
    /// and retries together spend a budget of about a tenth of requests. Default
    /// [`Hedge::DEFAULT`].
    pub hedge: Hedge,
}

/// When a read is also sent to a second node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hedge {
    /// Never.
    Never,
    /// After a fixed delay.
    After(Duration),
    /// After the `quantile` of the client's recent reads' latency, kept between `min` and
    /// `max` (`max` until enough reads were seen): only reads slower than most are hedged,
    /// whatever the cluster's normal latency is.
    Adaptive {
        /// The latency quantile, 0 to 1 (0.95: hedge the slowest twentieth).
        quantile: f64,
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
}

impl Hedge {
    /// Adaptive at the 95th percentile, between 1 ms and 250 ms.
    pub const DEFAULT: Hedge = Hedge::Adaptive {
        quantile: 0.95,
        min: Duration::from_millis(1),
        max: Duration::from_millis(250),
    };

    pub(crate) fn delay(self) -> Option<HedgeDelay> {
        match self {
            Hedge::Never => None,
            Hedge::After(d) => Some(HedgeDelay::new(1.0, d, d)),
            Hedge::Adaptive { quantile, min, max } => Some(HedgeDelay::new(quantile, min, max)),
        }
    }
}

impl ClientConfig {
    /// The default QUIC idle timeout of the client's endpoint (and so its handshake timeout).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
    /// The default keep-alive interval, below the idle timeout.
    pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(1);

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
            hedge: Hedge::DEFAULT,
        }
    }

    /// The same configuration presenting an admin certificate.
    pub fn admin(mut self) -> Self {
        self.role = Role::Admin;
        self
    }
}
