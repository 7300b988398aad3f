use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_coordinator::{Node, NodeConfig};
use shoal_protocol::{
    ClientRequest, ClientResponse, DecodeLimits, Request, Response, decode, encode,
};
use shoal_ring::Ring;
use shoal_storage::{CloseError, CommitError, RedbStorage};
use shoal_transport::{Endpoint, ExpectedPeer, Identity, Role, certs};
use shoal_types::{Incarnation, Limits, NodeId};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::accept::{RingView, ToNode};
use crate::metrics::Metrics;
use crate::node_task::NodeTask;
use crate::{JoinError, ServerConfig, ServerError, accept, http};

/// How long closing the node-to-node endpoint waits for peers to acknowledge.
const PEER_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A running Shoal node: its QUIC endpoint, its node task, its storage and its metrics
/// endpoint. See the crate docs for the tasks and what each owns.
///
/// Stop it with [`Server::shutdown`] (or [`Server::run_until_signal`]): only that records a clean
/// stop. Dropping it without shutting down also drains the node, but nobody waits for it, and
/// the next start reports a recovery. Either way the next start keeps the incarnation.
#[derive(Debug)]
pub struct Server {
    node_id: NodeId,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    incarnation: Incarnation,
    listen: Endpoint,
    peers: Endpoint,
    /// Turned true to start graceful shutdown.
    shutdown: watch::Sender<bool>,
    /// Turned true to stop the metrics endpoint, last.
    stop_metrics: watch::Sender<bool>,
    node_task: JoinHandle<Node<RedbStorage>>,
    accept_task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
}

impl Server {
    /// Opens storage, loads the node certificate, binds QUIC and metrics, builds the ring, starts
    /// the node task; returns once listening.
    pub async fn start(mut config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let load_identity = || {
            Identity::load(&config.certs_dir, Role::Node, Some(config.node_id.as_str())).map_err(
                |source| ServerError::Certificate {
                    dir: config.certs_dir.clone(),
                    node: config.node_id.clone(),
                    source,
                },
            )
        };
        // One for listening, one for the node-to-node endpoint, one to fetch the ring if joining.
        let (listen_identity, peer_identity) = (load_identity()?, load_identity()?);
        let join_identity = if config.join.is_empty() {
            None
        } else {
            Some(load_identity()?)
        };
        if let Some(key) = certs::ca_key_in(&config.certs_dir) {
            tracing::warn!(
                path = %key.display(),
                "the cluster CA's private key is in this node's certificate directory: whoever \
                 can read it can mint any identity. Keep it with the operator, and give nodes \
                 directories issued with `shoal certs node NAME --ca DIR --out DIR`"
            );
        }
        let joined = if let Some(identity) = join_identity {
            let ring = fetch_ring(&config, identity).await?;
            if ring.n() != config.quorum.n() {
                return Err(ServerError::InvalidConfig(format!(
                    "the cluster replicates every key {} times; start this node with --n {}, \
                     not {}",
                    ring.n().get(),
                    ring.n().get(),
                    config.quorum.n().get()
                )));
            }
            // The data directory is made for the cluster's partition count.
            config.partitions = ring.q();
            Some(ring)
        } else {
            None
        };
        let storage = open_storage(&config).await?;
        let started =
            Server::launch(config, listen_identity, peer_identity, &storage, joined).await;
        if started.is_err() {
            // No node ran, so nothing happened: record a clean stop.
            close_storage(storage.0, None).await;
        }
        started
    }

    /// The QUIC address the node listens on (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address metrics are served on, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The incarnation this run makes dots with: the data directory's (a run renews it only when
    /// it finds a corrupted record; see `shoal-coordinator`'s durability part).
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// Graceful shutdown: stop accepting (new requests get `Refused(ShuttingDown)`), finish
    /// in-flight requests and pending commits (bounded by `shutdown_timeout`), close QUIC with a
    /// code, close storage (its commit thread finishes the queue) and record a clean stop, unless
    /// a storage write failed during the run.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        tracing::info!(node = %self.node_id, "shutting down");
        let _ = self.shutdown.send(true);
        let node = self.node_task.await;
        tracing::debug!(node = %self.node_id, "node task ended");
        Server::finish(
            self.node_id,
            self.listen,
            self.peers,
            self.stop_metrics,
            node,
            self.accept_task,
            self.metrics_task,
        )
        .await
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully. Returns early, after closing
    /// everything, if the node task fails.
    pub async fn run_until_signal(mut self) -> Result<(), ServerError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(ServerError::Signal)?;
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            node = &mut self.node_task => {
                tracing::error!("the node task ended on its own");
                return Server::finish(
                    self.node_id,
                    self.listen,
                    self.peers,
                    self.stop_metrics,
                    node,
                    self.accept_task,
                    self.metrics_task,
                )
                .await;
            }
        }
        self.shutdown().await
    }

    async fn launch(
        config: ServerConfig,
        listen_identity: Identity,
        peer_identity: Identity,
        storage: &(RedbStorage, Incarnation),
        joined: Option<Ring>,
    ) -> Result<Server, ServerError> {
        let (storage, incarnation) = (storage.0.clone(), storage.1);
        let run_start = storage.run_start();
        let (listen, incoming) =
            Endpoint::server(config.listen, listen_identity, config.transport.clone()).map_err(
                |source| ServerError::Bind {
                    addr: config.listen,
                    source,
                },
            )?;
        let peers = Endpoint::client(peer_identity, config.peer_transport())
            .map_err(ServerError::PeerEndpoint)?;
        let local_addr = listen.local_addr();
        let ring = match joined {
            Some(ring) => ring,
            None => config.ring(local_addr)?,
        };
        let (metrics_listener, metrics_addr) = match config.metrics {
            Some(addr) => {
                let failed = |source| ServerError::MetricsBind { addr, source };
                let listener = TcpListener::bind(addr).await.map_err(failed)?;
                let bound = listener.local_addr().map_err(failed)?;
                (Some(listener), Some(bound))
            }
            None => (None, None),
        };

        let mut node_config = NodeConfig {
            quorum: config.quorum,
            limits: config.limits,
            request_timeout: config.request_timeout,
            generation: generation_now(),
            address: Some(config.advertise.unwrap_or(local_addr)),
            hints: config.hints,
            anti_entropy: config.anti_entropy,
            read_repair: config.read_repair,
            reaper: config.reaper,
            unix_ms_at_start: generation_now(),
            ..NodeConfig::new(config.node_id.clone(), incarnation)
        };
        node_config.gossip.interval = config.gossip_interval;
        let seed = rand::random::<u64>();
        tracing::info!(
            node = %config.node_id,
            listen = %local_addr,
            advertise = ?config.advertise,
            // Node-to-node requests leave from this address, not from `listen`: the
            // whole-system tests' proxies tell node traffic from client traffic by it.
            peer_endpoint = %peers.local_addr(),
            incarnation = %incarnation,
            after_unclean_stop = run_start.after_unclean_stop(),
            run = %run_start,
            members = ring.members().len(),
            partitions = ring.q().get(),
            quorum = ?config.quorum,
            metrics = ?metrics_addr,
            data_dir = %config.data_dir.display(),
            seed,
            "shoal node started"
        );
        let ring_view = RingView::of(&ring);
        let node = Node::new(Instant::now(), node_config, ring, storage, seed);
        let metrics = Arc::new(Metrics::new(
            config.node_id.clone(),
            incarnation,
            config.anti_entropy.interval,
        ));
        let limits = decode_limits(&config);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (stop_metrics, stop_metrics_rx) = watch::channel(false);
        let (client_tx, client_rx) = mpsc::channel(config.request_queue);
        let (peer_tx, peer_rx) = mpsc::channel(config.peer_queue);
        let (events_tx, events_rx) = mpsc::unbounded_channel();

        let metrics_task = metrics_listener.map(|listener| {
            tokio::spawn(http::serve(
                listener,
                metrics.clone(),
                events_tx.clone(),
                stop_metrics_rx,
            ))
        });
        let node_task = tokio::spawn(
            NodeTask {
                node,
                client_requests: client_rx,
                peer_requests: peer_rx,
                client_queue: config.request_queue,
                events: events_rx,
                events_tx,
                listen: listen.clone(),
                peers: peers.clone(),
                limits,
                request_timeout: config.request_timeout,
                shutdown: shutdown_rx.clone(),
                shutdown_timeout: config.shutdown_timeout,
                metrics: metrics.clone(),
            }
            .run(),
        );
        let accept_task = tokio::spawn(accept::run(
            incoming,
            limits,
            ring_view,
            ToNode {
                client: client_tx,
                peer: peer_tx,
            },
            shutdown_rx,
            metrics,
        ));
        Ok(Server {
            node_id: config.node_id,
            local_addr,
            metrics_addr,
            incarnation,
            listen,
            peers,
            shutdown,
            stop_metrics,
            node_task,
            accept_task,
            metrics_task,
        })
    }

    /// Closes everything once the node task has ended: QUIC (answers in flight are delivered
    /// first), then storage, then metrics.
    async fn finish(
        node_id: NodeId,
        listen: Endpoint,
        peers: Endpoint,
        stop_metrics: watch::Sender<bool>,
        node: Result<Node<RedbStorage>, tokio::task::JoinError>,
        accept_task: JoinHandle<()>,
        metrics_task: Option<JoinHandle<()>>,
    ) -> Result<(), ServerError> {
        // The accept task refuses what still arrives, and ends when the endpoint is closed.
        listen.close().await;
        let accepted = accept_task.await;
        tracing::debug!(node = %node_id, "listen endpoint closed");
        // Connections still handshaking with dead peers would hold the close for three probe
        // timeouts; live peers acknowledge in a round trip, the others notice by idle timeout.
        let _ = tokio::time::timeout(PEER_CLOSE_TIMEOUT, peers.close()).await;
        tracing::debug!(node = %node_id, "peer endpoint closed");
        let result = match node {
            Ok(node) => {
                // The node task has ended: the node makes no more dots, and every one it made
                // is in the commit queue, which the close finishes.
                let failed = node.storage_failed().cloned();
                close_storage(node.into_storage(), failed).await;
                Ok(())
            }
            Err(e) => Err(ServerError::TaskFailed {
                task: "node",
                reason: e.to_string(),
            }),
        };
        let _ = stop_metrics.send(true);
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        tracing::info!(node = %node_id, "shut down");
        result?;
        accepted.map_err(|e| ServerError::TaskFailed {
            task: "accept",
            reason: e.to_string(),
        })
    }
}

/// Opens (or creates) the data directory's database, off the runtime: opening may recover a
/// database after a crash, which reads the file.
async fn open_storage(config: &ServerConfig) -> Result<(RedbStorage, Incarnation), ServerError> {
    let (dir, node, q) = (
        config.data_dir.clone(),
        config.node_id.clone(),
        config.partitions,
    );
    let candidate = Incarnation::new(rand::random::<u64>());
    let opened = tokio::task::spawn_blocking(move || RedbStorage::open(&dir, &node, q, candidate))
        .await
        .map_err(|e| ServerError::TaskFailed {
            task: "storage open",
            reason: e.to_string(),
        })?;
    opened.map_err(|source| ServerError::Storage {
        path: config.data_dir.clone(),
        source,
    })
}

/// Closes the storage, whose last handle this is, on a blocking thread (it finishes the queued
/// commits and joins the commit thread). Records a clean stop, unless `storage_failed` is the
/// write of this run that failed (or a commit fails while closing): then the run stays
/// "running" and the next start reports a recovery (under the same incarnation).
async fn close_storage(storage: RedbStorage, storage_failed: Option<CommitError>) {
    let closed = tokio::task::spawn_blocking(move || match storage_failed {
        Some(failed) => {
            drop(storage);
            Err(NotClean::WriteFailed(failed))
        }
        None => storage.close_clean().map_err(NotClean::Close),
    })
    .await;
    match closed {
        Ok(Ok(())) => tracing::info!("storage closed; clean stop recorded"),
        Ok(Err(why)) => tracing::warn!(
            %why,
            "storage closed; the stop is not recorded clean, the next start recovers"
        ),
        Err(error) => tracing::error!(%error, "closing storage failed"),
    }
}

/// Why [`close_storage`] did not record a clean stop.
#[derive(Debug, thiserror::Error)]
enum NotClean {
    /// A storage write failed in this run, so the close did not try.
    #[error("a storage write failed in this run: {0}")]
    WriteFailed(#[source] CommitError),
    /// The clean close was refused or failed.
    #[error(transparent)]
    Close(CloseError),
}

/// What decoded messages may hold. Values are bounded by the frame limit rather than by
/// `limits.max_value_bytes()`, so an oversized put reaches the coordinator and gets its
/// specific `ValueTooLarge`. Siblings get the hard cap: merging two replicas, each within the
/// configured limit, may exceed it, and such an object must still replicate.
/// Asks the seeds of `config.join`, in order, for their ring, over a node-to-node connection
/// (this node's certificate: a seed of another cluster, or one that does not trust it, refuses).
async fn fetch_ring(config: &ServerConfig, identity: Identity) -> Result<Ring, ServerError> {
    let endpoint =
        Endpoint::client(identity, config.peer_transport()).map_err(ServerError::PeerEndpoint)?;
    let limits = decode_limits(config);
    let request = encode(&Request::Client(ClientRequest::Ring)).map_err(|e| ServerError::Join {
        tried: Vec::new(),
        source: JoinError::Codec(e),
    })?;
    let mut last = None;
    for &seed in &config.join {
        let answer = endpoint
            .request(
                seed,
                ExpectedPeer::AnyNode,
                request.clone(),
                config.request_timeout,
            )
            .await
            .map_err(JoinError::from)
            .and_then(|bytes| decode::<Response>(&bytes, &limits).map_err(JoinError::from));
        match answer {
            Ok(Response::Client(ClientResponse::Ring(ring))) => {
                tracing::info!(%seed, members = ring.members().len(), epoch = %ring.epoch(), "joining");
                endpoint.close().await;
                return Ok(ring);
            }
            Ok(other) => last = Some(JoinError::Unexpected(format!("{other:?}"))),
            Err(e) => last = Some(e),
        }
        tracing::warn!(%seed, error = ?last, "a seed gave no ring");
    }
    endpoint.close().await;
    Err(ServerError::Join {
        tried: config.join.clone(),
        source: last.unwrap_or(JoinError::Unexpected("nothing: no seed".into())),
    })
}

/// This start's gossip generation: the wall clock's milliseconds since 1970 (as Cassandra's and
/// chitchat's generations), so each start of a node has a greater one than the last — unless
/// the clock went back past the previous start, in which case the peers keep its old record
/// and ignore its heartbeats for this run (a restart once the clock has passed the previous
/// start's time mends it). Persisting the generation would close that gap.
fn generation_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn decode_limits(config: &ServerConfig) -> DecodeLimits {
    let frame = usize::try_from(config.transport.max_frame_bytes).unwrap_or(usize::MAX);
    DecodeLimits {
        max_value_bytes: frame.max(config.limits.max_value_bytes()),
        max_siblings: Limits::HARD_MAX_SIBLINGS,
        ..DecodeLimits::default()
    }
}
