use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use shoal_causality::CausalContext;
use shoal_protocol::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, DecodeLimits, LocalRead,
    NodeStatus, Refusal, RepairRefusal, Request, RequestError, Response, decode, encode,
};
use shoal_ring::Ring;
use shoal_transport::{Endpoint, Identity, Role, TransportError};
use shoal_types::{Key, NodeId, PartitionId, RequestOptions};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::health::{self, Health, StartProbe};
use crate::pacing::{HedgeDelay, RetryBudget, backoff};
use crate::routing::{Target, any_targets, healthy_first, key_targets};
use crate::{ClientConfig, ClientError, ProtocolError};

/// How much longer than the coordinator's deadline the client waits for its answer, so that a
/// node's `Timeout` (which says how many replicas answered) arrives before the client gives up.
const RESPONSE_GRACE: Duration = RequestOptions::CLIENT_GRACE;

/// A ring older than this is refreshed in the background on the next request.
const RING_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// After a node was found unreachable, the ring is refreshed at most this often.
const RING_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// A connection to a Shoal cluster. Cheap to clone; clones share the endpoint and the ring.
///
/// Dropping the last clone closes the endpoint at once; [`Client::close`] closes it gracefully.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The answer to a get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The distinct live values. None: not found (never written, or deleted). Several:
    /// concurrent writes (siblings); resolve them by writing with `context`.
    pub values: Vec<Bytes>,
    /// What this read saw; send it with the next put or delete of the key.
    pub context: CausalContext,
}

impl ReadResult {
    /// Whether the key holds at least one value.
    pub fn is_found(&self) -> bool {
        !self.values.is_empty()
    }

    /// Whether concurrent writes left several values.
    pub fn has_siblings(&self) -> bool {
        self.values.len() > 1
    }
}

impl Client {
    /// Loads the certificate, builds the endpoint and asks `config.nodes`, in order, for the
    /// ring; each node gets the full `config.timeout`.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        if config.nodes.is_empty() {
            return Err(ClientError::InvalidConfig(
                "no node addresses to connect to".into(),
            ));
        }
        if config.role == Role::Node {
            return Err(ClientError::InvalidConfig(
                "node certificates stay on nodes: use a client or admin certificate".into(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(ClientError::InvalidConfig(
                "the timeout must be positive".into(),
            ));
        }
        let identity = Identity::load(&config.certs_dir, config.role, config.name.as_deref())
            .map_err(ClientError::Certificates)?;
        let endpoint = Endpoint::client(identity, config.transport).map_err(|e| match e {
            TransportError::Cert(e) => ClientError::Certificates(e),
            e => ClientError::Endpoint(e),
        })?;
        let wire = Wire {
            endpoint,
            limits: DecodeLimits::default(),
            health: Arc::new(Health::default()),
            hedge: config.hedge.delay(),
            retries: RetryBudget::new(),
            alive: watch::Sender::new(()),
        };
        let seeds: Vec<Target> = config.nodes.iter().copied().map(Target::any_node).collect();
        let ring = wire
            .fetch_ring(seeds, Budget::PerAttempt(config.timeout + RESPONSE_GRACE))
            .await?;
        tracing::debug!(epoch = %ring.epoch(), members = ring.members().len(), "connected");
        Ok(Client {
            inner: Arc::new(Inner {
                wire,
                seeds: config.nodes,
                timeout: config.timeout,
                ring: RwLock::new(RingState {
                    ring: Arc::new(ring),
                    fetched: Instant::now(),
                }),
                refreshing: AtomicBool::new(false),
                next: AtomicUsize::new(RandomState::new().hash_one(0u8) as usize),
            }),
        })
    }

    /// Reads `key` with the cluster's default R and PR.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<ReadResult, ClientError> {
        self.get_with(key, RequestOptions::default()).await
    }

    /// Reads `key` with per-call R, PR and timeout. Retried on another node after any network
    /// failure, within the timeout.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        options: RequestOptions,
    ) -> Result<ReadResult, ClientError> {
        let key = make_key(key)?;
        let (options, deadline) = self.inner.deadline(options);
        let request = ClientRequest::Get {
            key: key.clone(),
            options,
        };
        match self
            .inner
            .keyed(&key, request, Retry::Reads, deadline)
            .await?
        {
            (_, ClientResponse::Read { values, context }) => Ok(ReadResult { values, context }),
            (addr, other) => Err(unexpected(addr, "get", &other)),
        }
    }

    /// Writes `value` under `key`, superseding what `context` saw (`None`: a blind write that
    /// supersedes nothing, and becomes a sibling of whatever is there). Returns the context of
    /// the written object: writing again with it supersedes this write.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        context: Option<&CausalContext>,
    ) -> Result<CausalContext, ClientError> {
        self.put_with(key, value, context, RequestOptions::default())
            .await
    }

    /// [`Client::put`] with per-call W, PW and timeout. Sent to another node only when the
    /// failure proves the first never received it.
    pub async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        context: Option<&CausalContext>,
        options: RequestOptions,
    ) -> Result<CausalContext, ClientError> {
        let key = make_key(key)?;
        let (options, deadline) = self.inner.deadline(options);
        let request = ClientRequest::Put {
            key: key.clone(),
            value: value.into(),
            context: context.cloned().unwrap_or_default(),
            options,
        };
        match self
            .inner
            .keyed(&key, request, Retry::Never, deadline)
            .await?
        {
            (_, ClientResponse::Written { context }) => Ok(context),
            (addr, other) => Err(unexpected(addr, "put", &other)),
        }
    }

    /// Deletes `key`: writes a tombstone superseding what `context` saw. Values written
    /// concurrently (not covered by the context) survive as siblings.
    pub async fn delete(
        &self,
        key: impl AsRef<[u8]>,
        context: &CausalContext,
    ) -> Result<(), ClientError> {
        self.delete_with(key, context, RequestOptions::default())
            .await
    }

    /// [`Client::delete`] with per-call W, PW and timeout.
    pub async fn delete_with(
        &self,
        key: impl AsRef<[u8]>,
        context: &CausalContext,
        options: RequestOptions,
    ) -> Result<(), ClientError> {
        let key = make_key(key)?;
        let (options, deadline) = self.inner.deadline(options);
        let request = ClientRequest::Delete {
            key: key.clone(),
            context: context.clone(),
            options,
        };
        match self
            .inner
            .keyed(&key, request, Retry::Never, deadline)
            .await?
        {
            (_, ClientResponse::Written { .. }) => Ok(()),
            (addr, other) => Err(unexpected(addr, "delete", &other)),
        }
    }

    /// The replica of `key` that the node at `node` holds itself, unmerged: every sibling,
    /// tombstones included (debugging and tests). Asks that node only.
    pub async fn get_local(
        &self,
        node: SocketAddr,
        key: impl AsRef<[u8]>,
    ) -> Result<LocalRead, ClientError> {
        let key = make_key(key)?;
        let request = Request::Client(ClientRequest::GetLocal { key });
        match self.inner.one_node(node, request).await? {
            (_, Response::Client(ClientResponse::Local(local))) => Ok(local),
            (addr, other) => Err(unexpected_response(addr, "get_local", &other)),
        }
    }

    /// The view of the cluster of the node at `node`: members, reachability, ring. Needs an
    /// admin certificate; a client certificate gets [`ClientError::Unauthorized`].
    pub async fn status(&self, node: SocketAddr) -> Result<NodeStatus, ClientError> {
        let request = Request::Admin(AdminRequest::Status);
        match self.inner.one_node(node, request).await? {
            (_, Response::Admin(AdminResponse::Status(status))) => Ok(*status),
            (addr, other) => Err(unexpected_response(addr, "status", &other)),
        }
    }

    /// Asks the node at `node` to compare `partition` (or every partition it is a primary of)
    /// with `peer` (or each of its other primaries) by anti-entropy now. Answers how many
    /// exchanges it asked for, or why it refused (an unknown partition, one it holds no
    /// replica of, a peer that is not another primary). Needs an admin certificate.
    pub async fn repair(
        &self,
        node: SocketAddr,
        partition: Option<PartitionId>,
        peer: Option<NodeId>,
    ) -> Result<Result<u64, RepairRefusal>, ClientError> {
        let request = Request::Admin(AdminRequest::Repair {
            partition,
            node: peer,
        });
        match self.inner.one_node(node, request).await? {
            (_, Response::Admin(AdminResponse::Repairing { exchanges })) => Ok(Ok(exchanges)),
            (_, Response::Admin(AdminResponse::RepairRefused(refusal))) => Ok(Err(refusal)),
            (addr, other) => Err(unexpected_response(addr, "repair", &other)),
        }
    }

    /// The ring requests are routed by.
    pub fn ring(&self) -> Arc<Ring> {
        self.inner.ring()
    }

    /// Asks the members (then the seed addresses) for the ring now, and keeps it unless it is
    /// older than the one held.
    pub async fn refresh_ring(&self) -> Result<(), ClientError> {
        self.inner.refresh_ring().await
    }

    /// Closes the endpoint gracefully: lets requests in flight finish, then tells the nodes.
    /// Requests made afterwards fail.
    pub async fn close(&self) {
        self.inner.wire.endpoint.close().await;
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.inner.ring();
        f.debug_struct("Client")
            .field("identity", self.inner.wire.endpoint.identity())
            .field("epoch", &ring.epoch())
            .field("members", &ring.members().len())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

struct Inner {
    wire: Wire,
    seeds: Vec<SocketAddr>,
    timeout: Duration,
    ring: RwLock<RingState>,
    /// Whether a background ring refresh is running (at most one at a time).
    refreshing: AtomicBool,
    /// Where the next request starts among its targets; starts at a random value.
    next: AtomicUsize,
}

struct RingState {
    ring: Arc<Ring>,
    fetched: Instant,
}

/// Which requests may be sent again after they may have reached a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: sending one twice changes nothing.
    Reads,
    /// Writes: only when the failure proves nothing arrived.
    Never,
}

/// How long attempts may take.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// All attempts together end at this instant.
    Until(Instant),
    /// Each attempt may take this long (connecting through a list of seeds).
    PerAttempt(Duration),
}

impl Inner {
    fn ring(&self) -> Arc<Ring> {
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .ring
            .clone()
    }

    fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The options with the coordinator's timeout filled in, and the client's deadline.
    fn deadline(&self, mut options: RequestOptions) -> (RequestOptions, Instant) {
        let timeout = *options.timeout.get_or_insert(self.timeout);
        (options, Instant::now() + timeout + RESPONSE_GRACE)
    }

    /// Sends a request about `key` to its primaries first, failing over as `retry` allows.
    async fn keyed(
        self: &Arc<Self>,
        key: &Key,
        request: ClientRequest,
        retry: Retry,
        deadline: Instant,
    ) -> Result<(SocketAddr, ClientResponse), ClientError> {
        self.refresh_if_older_than(RING_REFRESH_INTERVAL);
        let targets = key_targets(&self.ring(), key, self.start());
        let targets = self.wire.ordered(targets);
        let op = request.op();
        let outcome = self
            .wire
            .send(
                targets,
                &Request::Client(request),
                retry,
                Budget::Until(deadline),
            )
            .await;
        // A node that cannot be reached may have left or moved: look at the ring again.
        if matches!(outcome, Err(ClientError::NoNodeReachable { .. }))
            || self.wire.health.any_down()
        {
            self.refresh_if_older_than(RING_MIN_REFRESH_INTERVAL);
        }
        match outcome? {
            (addr, Response::Client(response)) => Ok((addr, response)),
            (addr, other) => Err(unexpected_response(addr, op, &other)),
        }
    }

    /// Sends a request to the node at `addr` only.
    async fn one_node(
        &self,
        addr: SocketAddr,
        request: Request,
    ) -> Result<(SocketAddr, Response), ClientError> {
        let target = Target::at(&self.ring(), addr);
        let deadline = Instant::now() + self.timeout + RESPONSE_GRACE;
        self.wire
            .send(
                vec![target],
                &request,
                Retry::Reads,
                Budget::Until(deadline),
            )
            .await
    }

    async fn refresh_ring(&self) -> Result<(), ClientError> {
        let current = self.ring();
        let targets = self
            .wire
            .ordered(any_targets(&current, &self.seeds, self.start()));
        let ring = self
            .wire
            .fetch_ring(targets, Budget::PerAttempt(self.timeout + RESPONSE_GRACE))
            .await?;
        let mut state = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        state.fetched = Instant::now();
        if ring.epoch() >= state.ring.epoch() {
            if ring.epoch() > state.ring.epoch() {
                tracing::info!(epoch = %ring.epoch(), "new ring");
            }
            state.ring = Arc::new(ring);
        }
        Ok(())
    }

    /// Starts a ring refresh in the background if the ring is older than `age` and no refresh
    /// is running. Its failure is only logged: requests keep using the ring held.
    fn refresh_if_older_than(self: &Arc<Self>, age: Duration) {
        let fetched = self
            .ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .fetched;
        if fetched.elapsed() < age || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.refresh_ring().await {
                tracing::debug!(error = %e, "ring refresh failed");
                // Count the attempt, so that failing refreshes are not retried on every request.
                inner
                    .ring
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .fetched = Instant::now();
            }
            inner.refreshing.store(false, Ordering::Release);
        });
    }
}

/// The endpoint, the codec, and what the client believes about each node's health.
struct Wire {
    endpoint: Endpoint,
    limits: DecodeLimits,
    /// Which nodes to try after the others (see [`crate::health`]).
    health: Arc<Health>,
    /// When a read not answered yet is also sent to the next target (`None`: never).
    hedge: Option<HedgeDelay>,
    /// How many retries and hedges the client may still send (see [`crate::pacing`]).
    retries: RetryBudget,
    /// Dropped with the client, which stops the probes.
    alive: watch::Sender<()>,
}

/// Rounds of retries after every node tried refused a request as overloaded.
const MAX_OVERLOAD_ROUNDS: u32 = 2;

/// What one attempt did, as far as failover is concerned.
enum Attempt {
    /// A usable answer (boxed: an admin status is far larger than the other outcomes).
    Answered(Box<Response>),
    /// A definite refusal or failure that another node may not share; try the next. `free`:
    /// the request never reached a node's work (not sent, or refused while shutting down), so
    /// trying another costs the cluster nothing extra and spends no retry budget.
    NextNode { error: ClientError, free: bool },
    /// A final error: return it.
    Fail(ClientError),
}

/// An attempt in flight: its target's address and its outcome.
type Running<'a> = Pin<Box<dyn Future<Output = (SocketAddr, Attempt)> + Send + 'a>>;

impl Wire {
    async fn fetch_ring(&self, targets: Vec<Target>, budget: Budget) -> Result<Ring, ClientError> {
        match self
            .send(
                targets,
                &Request::Client(ClientRequest::Ring),
                Retry::Reads,
                budget,
            )
            .await?
        {
            (_, Response::Client(ClientResponse::Ring(ring))) => Ok(ring),
            (addr, other) => Err(unexpected_response(addr, "ring", &other)),
        }
    }

    /// Tries `targets` in order until one answers, failing over only where `retry` allows. A
    /// read still unanswered after the hedge delay is also sent to the next target (its node is
    /// suspected and probed); the first answer wins and the others are cancelled. Writes are
    /// never sent to two nodes at once. Retries and hedges spend the retry budget (failing over
    /// from a node the request never reached does not); when every node refused the request as
    /// overloaded, it is tried again after a jittered backoff, within the budget and deadline.
    async fn send(
        &self,
        targets: Vec<Target>,
        request: &Request,
        retry: Retry,
        budget: Budget,
    ) -> Result<(SocketAddr, Response), ClientError> {
        let frame = encode(request).map_err(|e| {
            ClientError::InvalidConfig(format!("request could not be encoded: {e}"))
        })?;
        self.retries.deposit();
        let mut round = 0;
        loop {
            let outcome = self.round(targets.clone(), &frame, retry, budget).await;
            let overloaded = matches!(outcome, Err(ClientError::Request(RequestError::Overloaded)));
            if !overloaded || round >= MAX_OVERLOAD_ROUNDS {
                return outcome;
            }
            round += 1;
            let wait = backoff(round);
            let time_left = match budget {
                Budget::Until(deadline) => Instant::now() + wait < deadline,
                Budget::PerAttempt(_) => true,
            };
            if !time_left || !self.retries.withdraw() {
                return outcome;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One pass over `targets`: see [`Wire::send`].
    async fn round(
        &self,
        targets: Vec<Target>,
        frame: &Bytes,
        retry: Retry,
        budget: Budget,
    ) -> Result<(SocketAddr, Response), ClientError> {
        let mut hedging = match retry {
            Retry::Reads => self.hedge.is_some(),
            Retry::Never => false,
        };
        let mut queue = targets.into_iter();
        let mut tried = Vec::with_capacity(queue.len());
        let mut running: Vec<Running<'_>> = Vec::new();
        let mut last: Option<ClientError> = None;
        // Attempts that ended in a refused TLS handshake: a certificate one side distrusts.
        let mut refused_handshakes = 0;
        loop {
            if running.is_empty() {
                match self.launch(&mut queue, frame, retry, budget, &mut tried) {
                    Some(attempt) => running.push(attempt),
                    None => break,
                }
            }
            let hedge_after = self.hedge.as_ref().map(HedgeDelay::current);
            let hedge = async {
                match hedge_after {
                    Some(after) if hedging && queue.len() > 0 => tokio::time::sleep(after).await,
                    _ => std::future::pending().await,
                }
            };
            // `None`: the newest attempt is late.
            let done = tokio::select! {
                done = first(&mut running) => Some(done),
                () = hedge => None,
            };
            match done {
                Some((addr, Attempt::Answered(response))) => {
                    self.health.answered(addr);
                    return Ok((addr, *response));
                }
                Some((addr, Attempt::NextNode { error: e, free })) => {
                    tracing::debug!(node = %addr, error = %e, "trying the next node");
                    if !free && running.is_empty() && queue.len() > 0 && !self.retries.withdraw() {
                        // Out of retry budget: the error stands.
                        last = Some(e);
                        break;
                    }
                    if matches!(
                        &e,
                        ClientError::Transport {
                            source: TransportError::PeerRejected { .. }
                                | TransportError::RejectedByPeer {
                                    tls_alert: true,
                                    ..
                                },
                            ..
                        }
                    ) {
                        refused_handshakes += 1;
                    }
                    last = Some(e);
                }
                Some((_, Attempt::Fail(e))) => return Err(e),
                None => {
                    if !self.retries.withdraw() {
                        // Out of retry budget: this read waits for the attempt it has.
                        hedging = false;
                        continue;
                    }
                    if let Some(late) = tried.last().cloned() {
                        tracing::debug!(node = %late.addr, "read late: asking the next node too");
                        self.suspect(late);
                    }
                    if let Some(attempt) = self.launch(&mut queue, frame, retry, budget, &mut tried)
                    {
                        running.push(attempt);
                    }
                }
            }
        }
        let every_handshake_refused = refused_handshakes > 0 && refused_handshakes == tried.len();
        let tried = tried.into_iter().map(|t| t.addr).collect();
        Err(match last {
            Some(ClientError::Transport { source, .. }) if every_handshake_refused => {
                ClientError::HandshakeRefused {
                    tried,
                    reason: source.to_string(),
                }
            }
            Some(ClientError::Transport { source, .. }) if !source.may_have_reached_peer() => {
                ClientError::NoNodeReachable {
                    tried,
                    last_error: Some(source.to_string()),
                }
            }
            Some(e) => e,
            None => ClientError::NoNodeReachable {
                tried,
                last_error: None,
            },
        })
    }

    /// Starts an attempt on the next target, unless none is left or the budget is spent.
    fn launch<'a>(
        &'a self,
        queue: &mut std::vec::IntoIter<Target>,
        frame: &Bytes,
        retry: Retry,
        budget: Budget,
        tried: &mut Vec<Target>,
    ) -> Option<Running<'a>> {
        let timeout = match budget {
            Budget::PerAttempt(timeout) => timeout,
            Budget::Until(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => return None,
            },
        };
        let target = queue.next()?;
        tried.push(target.clone());
        let frame = frame.clone();
        Some(Box::pin(async move {
            let addr = target.addr;
            (addr, self.attempt(target, frame, retry, timeout).await)
        }))
    }

    async fn attempt(
        &self,
        target: Target,
        frame: Bytes,
        retry: Retry,
        timeout: Duration,
    ) -> Attempt {
        let addr = target.addr;
        let started = Instant::now();
        let reply = match self
            .endpoint
            .request(addr, target.expected_peer(), frame, timeout)
            .await
        {
            Ok(reply) => reply,
            Err(e) if e.is_local() => return Attempt::Fail(ClientError::from_transport(addr, e)),
            Err(e) => {
                // The node could not be reached, or went silent: try it last until a probe
                // finds it answering. (A reset stream came from a live node.)
                if !e.may_have_reached_peer()
                    || matches!(
                        e,
                        TransportError::ConnectionLost { .. } | TransportError::Timeout { .. }
                    )
                {
                    self.mark_down(target);
                }
                let e_reached = e.may_have_reached_peer();
                let error = ClientError::from_transport(addr, e);
                return if !e_reached || retry == Retry::Reads {
                    Attempt::NextNode {
                        error,
                        free: !e_reached,
                    }
                } else {
                    Attempt::Fail(error)
                };
            }
        };
        let response: Response = match decode(&reply, &self.limits) {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Fail(ClientError::Protocol {
                    addr,
                    source: ProtocolError::Codec(e),
                });
            }
        };
        match response {
            Response::Client(ClientResponse::Failed(e)) => {
                let e = ClientError::from(e);
                // Definite and about this node alone: another node may serve it.
                if matches!(
                    e,
                    ClientError::Request(RequestError::Overloaded | RequestError::NodeFailed(_))
                ) {
                    Attempt::NextNode {
                        error: e,
                        free: false,
                    }
                } else {
                    Attempt::Fail(e)
                }
            }
            Response::Refused(refusal) => {
                let next = matches!(refusal, Refusal::ShuttingDown | Refusal::Overloaded);
                let free = refusal == Refusal::ShuttingDown;
                let error = ClientError::from_refusal(addr, refusal);
                if next {
                    Attempt::NextNode { error, free }
                } else {
                    Attempt::Fail(error)
                }
            }
            response => {
                if retry == Retry::Reads
                    && let Some(hedge) = &self.hedge
                {
                    hedge.observe(started.elapsed());
                }
                Attempt::Answered(Box::new(response))
            }
        }
    }

    /// The targets with the nodes believed down or suspected moved last.
    fn ordered(&self, targets: Vec<Target>) -> Vec<Target> {
        healthy_first(targets, |addr| self.health.avoid(addr))
    }

    fn mark_down(&self, target: Target) {
        if let Some(start) = self.health.down(target.addr) {
            self.start_probe(target, start);
        }
    }

    fn suspect(&self, target: Target) {
        if let Some(start) = self.health.suspect(target.addr) {
            self.start_probe(target, start);
        }
    }

    fn start_probe(&self, target: Target, start: StartProbe) {
        let Ok(frame) = encode(&Request::Client(ClientRequest::Ring)) else {
            return;
        };
        tokio::spawn(health::probe(
            self.health.clone(),
            self.endpoint.clone(),
            target,
            start,
            frame,
            self.alive.subscribe(),
        ));
    }
}

/// The first of the running attempts to finish (removed from the list); pending while none has.
fn first<'a, 'b>(
    running: &'b mut Vec<Running<'a>>,
) -> impl Future<Output = (SocketAddr, Attempt)> + 'b {
    poll_fn(move |cx| {
        for i in 0..running.len() {
            if let Poll::Ready(outcome) = running[i].as_mut().poll(cx) {
                drop(running.swap_remove(i));
                return Poll::Ready(outcome);
            }
        }
        Poll::Pending
    })
}

fn make_key(key: impl AsRef<[u8]>) -> Result<Key, ClientError> {
    Key::new(Bytes::copy_from_slice(key.as_ref())).map_err(ClientError::InvalidKey)
}

fn unexpected(addr: SocketAddr, request: &'static str, response: &ClientResponse) -> ClientError {
    let response = match response {
        ClientResponse::Read { .. } => "a read",
        ClientResponse::Written { .. } => "a write acknowledgement",
        ClientResponse::Local(_) => "a local replica",
        ClientResponse::Ring(_) => "a ring",
        ClientResponse::Failed(_) => "a failure",
    };
    ClientError::Protocol {
        addr,
        source: ProtocolError::UnexpectedResponse {
            request,
            response: response.to_owned(),
        },
    }
}

fn unexpected_response(
    addr: SocketAddr,
    request: &'static str,
    response: &Response,
) -> ClientError {
    match response {
        Response::Client(c) => unexpected(addr, request, c),
        other => {
            let response = match other {
                Response::Peer(_) => "a peer message",
                Response::Admin(_) => "an admin answer",
                Response::Refused(_) => "a refusal",
                Response::Client(_) => "a client answer",
            };
            ClientError::Protocol {
                addr,
                source: ProtocolError::UnexpectedResponse {
                    request,
                    response: response.to_owned(),
                },
            }
        }
    }
}
