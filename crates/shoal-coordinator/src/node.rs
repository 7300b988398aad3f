use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_causality::{Actor, Object, Sibling};
use shoal_protocol::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, LocalRead, NodeStatus, PeerStatus,
    ReplicaBody, ReplicaError, ReplicaRequest, ReplicaResponse, Request, RequestError, Response,
};
use shoal_ring::Ring;
use shoal_storage::{ReadOutcome, Storage, StorageError, Write, WriteBatch};
use shoal_types::{Key, NodeId, PartitionId, RequestOptions};

use crate::NodeConfig;
use crate::peers::Peers;
use crate::quorum::{ReadProgress, ReadQuorum, WriteProgress, WriteQuorum};

/// Names one inbound request (from a client, an admin or a peer) until the node answers it
/// with [`Output::Reply`]. Chosen by the caller; unique among unanswered requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundId(pub u64);

/// Names one message this node sends; its outcome comes back through
/// [`Node::handle_response`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboundId(pub u64);

/// Names one batch handed out to persist; its outcome comes back through
/// [`Node::handle_persisted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistId(pub u64);

/// An effect the node wants carried out.
#[derive(Debug)]
pub enum Output {
    /// Answer inbound request `id`.
    Reply {
        /// The request answered.
        id: InboundId,
        /// The answer.
        response: Response,
    },
    /// Send `request` to node `to`; report the outcome with `handle_response(id, …)`.
    Send {
        /// Names this message.
        id: OutboundId,
        /// The destination.
        to: NodeId,
        /// The message.
        request: ReplicaRequest,
    },
    /// Make `batch` durable, in order after every earlier batch; report with
    /// `handle_persisted(id, …)`.
    Persist {
        /// Names this batch.
        id: PersistId,
        /// The writes.
        batch: WriteBatch,
    },
}

/// Why a message to a peer got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be made: the message was not delivered.
    Unreachable,
    /// The message may have been delivered, but no answer came (timeout, reset, closed).
    Lost,
    /// The peer refused the message before processing it.
    Refused(String),
}

/// Counters of what the node did. Read them for metrics; they only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Gets coordinated.
    pub gets: u64,
    /// Puts coordinated (here, not forwarded).
    pub puts: u64,
    /// Deletes coordinated (here, not forwarded).
    pub deletes: u64,
    /// Writes forwarded to a primary.
    pub forwarded: u64,
    /// Requests answered `QuorumFailed`.
    pub quorum_failures: u64,
    /// Requests answered `Timeout`.
    pub timeouts: u64,
    /// Requests answered `Unavailable`.
    pub unavailable: u64,
    /// Writes refused with `TooManySiblings`.
    pub too_many_siblings: u64,
    /// Requests refused with `Overloaded`.
    pub overloaded: u64,
    /// Read-repair objects sent (or written locally).
    pub read_repairs: u64,
    /// Local records found corrupt.
    pub corrupt_reads: u64,
    /// Replica writes stored for peers (replication and repair).
    pub replica_writes: u64,
}

/// One Shoal node's logic. See the crate docs.
#[derive(Debug)]
pub struct Node<S> {
    config: NodeConfig,
    actor: Actor,
    ring: Ring,
    storage: S,
    rng: StdRng,
    peers: Peers,
    /// Objects handed to storage but not yet durable, newest per key.
    overlay: BTreeMap<(PartitionId, Key), (Object, PersistId)>,
    persists: BTreeMap<PersistId, PendingPersist>,
    requests: BTreeMap<u64, Coordination>,
    outbound: BTreeMap<OutboundId, Purpose>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    outputs: VecDeque<Output>,
    next_id: u64,
    next_ping: Instant,
    storage_failed: Option<String>,
    metrics: NodeMetrics,
}

/// Who gets the answer of a coordinated request, and how it is wrapped.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// A client (or admin) asked this node directly.
    Client(InboundId),
    /// A peer forwarded a write here (`ReplicaBody::Coordinate`).
    Forwarded(InboundId),
}

#[derive(Debug)]
struct PendingPersist {
    keys: Vec<(PartitionId, Key)>,
    waiters: Vec<Waiter>,
}

/// Who waits for a persist.
#[derive(Debug)]
enum Waiter {
    /// The coordinator's own write of put `request`.
    CoordinatorWrite(u64),
    /// A peer's replicate or repair, answered `Stored` once durable.
    ReplicaAck(InboundId),
    /// A local read repair: nobody to answer.
    Repair,
}

#[derive(Debug)]
enum Coordination {
    Get(GetState),
    Put(PutState),
    Forward(ForwardState),
}

#[derive(Debug)]
struct GetState {
    origin: Origin,
    partition: PartitionId,
    key: Key,
    quorum: ReadQuorum,
    answered: bool,
}

#[derive(Debug)]
struct PutState {
    origin: Origin,
    object: Object,
    quorum: WriteQuorum,
    answered: bool,
}

#[derive(Debug)]
struct ForwardState {
    origin: Origin,
    request: ClientRequest,
    /// Primaries not tried yet, in the order to try them.
    candidates: Vec<NodeId>,
    /// Whether an earlier attempt may have reached a primary (so failure is indeterminate).
    maybe_applied: bool,
    required: usize,
}

/// What an outbound message was for.
#[derive(Debug)]
enum Purpose {
    Forward { request: u64, to: NodeId },
    Replicate { request: u64, to: NodeId },
    Read { request: u64, to: NodeId },
    Repair { to: NodeId },
    Ping { to: NodeId },
}

impl Purpose {
    fn peer(&self) -> &NodeId {
        match self {
            Purpose::Forward { to, .. }
            | Purpose::Replicate { to, .. }
            | Purpose::Read { to, .. }
            | Purpose::Repair { to }
            | Purpose::Ping { to } => to,
        }
    }
}

/// The local replica of a key, as the coordinator sees it.
enum Local {
    Found(Object),
    NotFound,
    Corrupted,
}

impl<S: Storage> Node<S> {
    /// A node with the given identity, ring and storage, started at `now`. `seed` drives every
    /// random choice.
    pub fn new(now: Instant, config: NodeConfig, ring: Ring, storage: S, seed: u64) -> Self {
        let actor = Actor::new(config.id.clone(), config.incarnation);
        Node {
            config,
            actor,
            ring,
            storage,
            rng: StdRng::seed_from_u64(seed),
            peers: Peers::default(),
            overlay: BTreeMap::new(),
            persists: BTreeMap::new(),
            requests: BTreeMap::new(),
            outbound: BTreeMap::new(),
            deadlines: BinaryHeap::new(),
            outputs: VecDeque::new(),
            next_id: 0,
            next_ping: now,
            storage_failed: None,
            metrics: NodeMetrics::default(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.config.id
    }

    /// The ring this node routes with.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The node's storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// What the node has done so far.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Requests being coordinated right now.
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Whether a storage write failed in this run (with the error). The node then stops
    /// coordinating writes, and the run must not be recorded as a clean stop: a dot it made may
    /// be on other replicas and not on its own disk.
    pub fn storage_failed(&self) -> Option<&str> {
        self.storage_failed.as_deref()
    }

    /// The node's storage, for closing it once the node has stopped.
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// Batches handed out to persist and not yet reported durable.
    pub fn persists_pending(&self) -> usize {
        self.persists.len()
    }

    /// The next effect to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `handle_timeout` must be called next, if anything waits for a deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.deadlines.peek().map(|Reverse((at, _))| *at);
        Some(deadline.map_or(self.next_ping, |d| d.min(self.next_ping)))
    }

    /// An inbound request whose sender is already authorised for it (role checked, and for
    /// replica messages `from` checked against the certificate).
    pub fn handle_request(&mut self, now: Instant, id: InboundId, request: Request) {
        match request {
            Request::Client(c) => self.client_request(now, Origin::Client(id), c),
            Request::Replica(r) => self.replica_request(now, id, r),
            Request::Admin(AdminRequest::Status) => {
                let status = self.status(now);
                self.reply(id, Response::Admin(AdminResponse::Status(status)));
            }
        }
    }

    /// The outcome of an [`Output::Send`].
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: OutboundId,
        result: Result<ReplicaResponse, SendError>,
    ) {
        let Some(purpose) = self.outbound.remove(&id) else {
            return;
        };
        match &result {
            Ok(_) | Err(SendError::Refused(_)) => self.peers.mark_reachable(purpose.peer()),
            Err(SendError::Unreachable) => self.peers.mark_unreachable(purpose.peer(), now),
            Err(SendError::Lost) => {}
        }
        match purpose {
            Purpose::Forward { request, .. } => self.forward_outcome(now, request, result),
            Purpose::Replicate { request, .. } => {
                let acked = matches!(result, Ok(ReplicaResponse::Stored));
                self.replicate_outcome(request, acked);
            }
            Purpose::Read { request, to } => {
                let read = match result {
                    Ok(ReplicaResponse::Replica(read)) => Some(read),
                    _ => None,
                };
                self.read_outcome(request, to, read);
            }
            Purpose::Repair { .. } | Purpose::Ping { .. } => {}
        }
    }

    /// The outcome of an [`Output::Persist`]: `Ok` once the batch is durable.
    pub fn handle_persisted(
        &mut self,
        _now: Instant,
        id: PersistId,
        result: Result<(), StorageError>,
    ) {
        let Some(persist) = self.persists.remove(&id) else {
            return;
        };
        for k in &persist.keys {
            if self.overlay.get(k).is_some_and(|(_, pid)| *pid == id) {
                self.overlay.remove(k);
            }
        }
        if let Err(e) = &result {
            // A write this node may have made a dot for is not durable. Stop coordinating
            // writes until restart rather than risk reusing a dot (see DESIGN §3, kv679).
            tracing::error!(error = %e, "storage write failed; this node stops coordinating writes");
            self.storage_failed = Some(e.to_string());
        }
        for waiter in persist.waiters {
            match waiter {
                Waiter::CoordinatorWrite(request) => {
                    self.coordinator_write_outcome(request, result.is_ok())
                }
                Waiter::ReplicaAck(inbound) => {
                    let response = match &result {
                        Ok(()) => ReplicaResponse::Stored,
                        Err(e) => ReplicaResponse::Failed(ReplicaError::Storage(e.to_string())),
                    };
                    self.reply(inbound, Response::Replica(response));
                }
                Waiter::Repair => {}
            }
        }
    }

    /// Deadlines up to `now` have passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_ping {
            self.next_ping = now + self.config.ping_interval;
            self.ping_peers();
        }
        while let Some(Reverse((at, request))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(coordination) = self.requests.remove(&request) else {
                continue;
            };
            match coordination {
                Coordination::Get(get) => {
                    if !get.answered {
                        self.metrics.timeouts += 1;
                        let error = get.quorum.timeout_error();
                        self.answer(get.origin, ClientResponse::Failed(error));
                    }
                    self.read_repair(&get);
                }
                Coordination::Put(put) => {
                    if !put.answered {
                        self.metrics.timeouts += 1;
                        let error = put.quorum.timeout_error();
                        self.answer(put.origin, ClientResponse::Failed(error));
                    }
                }
                Coordination::Forward(fwd) => {
                    self.metrics.timeouts += 1;
                    let error = RequestError::Timeout {
                        required: fwd.required,
                        answered: 0,
                    };
                    self.answer(fwd.origin, ClientResponse::Failed(error));
                }
            }
        }
    }

    // ---- client requests -------------------------------------------------------------

    fn client_request(&mut self, now: Instant, origin: Origin, request: ClientRequest) {
        match request {
            ClientRequest::Get { key, options } => self.start_get(now, origin, key, options),
            ClientRequest::Put {
                key,
                value,
                context,
                options,
            } => {
                if value.len() > self.config.limits.max_value_bytes() {
                    let error = RequestError::ValueTooLarge {
                        size: value.len(),
                        max: self.config.limits.max_value_bytes(),
                    };
                    return self.answer(origin, ClientResponse::Failed(error));
                }
                let request = ClientRequest::Put {
                    key,
                    value,
                    context,
                    options,
                };
                self.start_write(now, origin, request);
            }
            ClientRequest::Delete { .. } => self.start_write(now, origin, request),
            ClientRequest::GetLocal { key } => {
                let partition = self.ring.partition_for_key(&key);
                let read = self.durable_read(partition, &key);
                self.answer(origin, ClientResponse::Local(read));
            }
            ClientRequest::Ring => {
                let ring = self.ring.clone();
                self.answer(origin, ClientResponse::Ring(ring));
            }
        }
    }

    fn start_get(&mut self, now: Instant, origin: Origin, key: Key, options: RequestOptions) {
        if let Some(error) = self.refuse_early(&key) {
            return self.answer(origin, ClientResponse::Failed(error));
        }
        let required = match self.config.quorum.read_with(&options) {
            Ok(r) => r,
            Err(e) => {
                let error = RequestError::InvalidQuorum(e.to_string());
                return self.answer(origin, ClientResponse::Failed(error));
            }
        };
        let partition = self.ring.partition_for_key(&key);
        let primaries = self.ring.primaries(partition).to_vec();
        let alive = primaries
            .iter()
            .filter(|n| self.is_reachable(n, now))
            .count();
        if alive < required.r() {
            self.metrics.unavailable += 1;
            let error = RequestError::Unavailable {
                required: required.r(),
                alive,
            };
            return self.answer(origin, ClientResponse::Failed(error));
        }
        self.metrics.gets += 1;
        let request = self.new_id();
        let deadline = now + options.timeout.unwrap_or(self.config.request_timeout);
        let mut quorum = ReadQuorum::new(required, primaries.len());
        for node in &primaries {
            if *node == self.config.id {
                let read = self.durable_read(partition, &key);
                quorum.add_reply(node.clone(), true, read);
            } else if self.is_reachable(node, now) {
                let body = ReplicaBody::Read {
                    partition,
                    key: key.clone(),
                };
                let purpose = Purpose::Read {
                    request,
                    to: node.clone(),
                };
                self.send(node.clone(), body, purpose);
            } else {
                quorum.add_failure();
            }
        }
        let get = GetState {
            origin,
            partition,
            key,
            quorum,
            answered: false,
        };
        self.requests.insert(request, Coordination::Get(get));
        self.deadlines.push(Reverse((deadline, request)));
        self.advance_get(request);
    }

    fn start_write(&mut self, now: Instant, origin: Origin, request: ClientRequest) {
        let (key, options) = match &request {
            ClientRequest::Put { key, options, .. }
            | ClientRequest::Delete { key, options, .. } => (key.clone(), *options),
            _ => return,
        };
        if let Some(error) = self.refuse_early(&key) {
            return self.answer(origin, ClientResponse::Failed(error));
        }
        let required = match self.config.quorum.write_with(&options) {
            Ok(w) => w,
            Err(e) => {
                let error = RequestError::InvalidQuorum(e.to_string());
                return self.answer(origin, ClientResponse::Failed(error));
            }
        };
        let partition = self.ring.partition_for_key(&key);
        let primaries = self.ring.primaries(partition).to_vec();
        let timeout = options.timeout.unwrap_or(self.config.request_timeout);
        let here = primaries.contains(&self.config.id);
        if !here || self.storage_failed.is_some() {
            if let Origin::Forwarded(id) = origin {
                // Never forward twice: the forwarder tries another primary.
                let error = match &self.storage_failed {
                    Some(e) => ReplicaError::Storage(e.clone()),
                    None => ReplicaError::NotPrimary(partition),
                };
                return self.reply(id, Response::Replica(ReplicaResponse::Failed(error)));
            }
            return self.start_forward(now, origin, request, &primaries, required.w(), timeout);
        }
        let alive = primaries
            .iter()
            .filter(|n| self.is_reachable(n, now))
            .count();
        if alive < required.w() || alive < required.pw() {
            self.metrics.unavailable += 1;
            let error = RequestError::Unavailable {
                required: required.w().max(required.pw()),
                alive,
            };
            return self.answer(origin, ClientResponse::Failed(error));
        }
        let base = match self.local_for_write(partition, &key) {
            Ok(Local::Found(o)) => o,
            Ok(Local::NotFound) => Object::new(),
            Ok(Local::Corrupted) | Err(_) => {
                // Our own latest dot for this key is unknown: making one here could reuse it.
                // Let another primary coordinate.
                let others: Vec<NodeId> = primaries
                    .iter()
                    .filter(|n| **n != self.config.id)
                    .cloned()
                    .collect();
                if let Origin::Forwarded(id) = origin {
                    let error = ReplicaError::Storage("local replica unreadable".into());
                    return self.reply(id, Response::Replica(ReplicaResponse::Failed(error)));
                }
                return self.start_forward(now, origin, request, &others, required.w(), timeout);
            }
        };
        let (sibling, context) = match request {
            ClientRequest::Put { value, context, .. } => {
                self.metrics.puts += 1;
                (Sibling::Value(value), context)
            }
            ClientRequest::Delete { context, .. } => {
                self.metrics.deletes += 1;
                (Sibling::Tombstone, context)
            }
            _ => return,
        };
        let object = match base.update(
            &context,
            sibling,
            &self.actor,
            self.config.limits.max_siblings(),
        ) {
            Ok(o) => o,
            Err(shoal_causality::CausalityError::TooManySiblings { siblings, max }) => {
                self.metrics.too_many_siblings += 1;
                let error = RequestError::TooManySiblings { siblings, max };
                return self.answer(origin, ClientResponse::Failed(error));
            }
            Err(e) => {
                let error = RequestError::NodeFailed(e.to_string());
                return self.answer(origin, ClientResponse::Failed(error));
            }
        };
        let request = self.new_id();
        let mut quorum = WriteQuorum::new(required, primaries.len(), primaries.len());
        let mut replicas = Vec::with_capacity(primaries.len());
        for node in primaries.iter().filter(|n| **n != self.config.id) {
            if self.is_reachable(node, now) {
                replicas.push(node.clone());
            } else {
                quorum.add_failure(true);
            }
        }
        // The coordinator's own write and the replicas' go out together, so a put waits for
        // one durable commit, not two in series. A replica (and, after W acks, the client) may
        // thus hold this dot before it is durable here. That is safe because a node never makes
        // a dot of an earlier run again: a node that did not stop cleanly starts with a new
        // incarnation (shoal-storage's run state), so a crash that loses this write cannot
        // lead to the same (actor, counter) naming another value (Riak's kv679).
        self.persist(
            vec![Write::Object {
                partition,
                key: key.clone(),
                object: object.clone(),
            }],
            &[(partition, key.clone(), object.clone())],
            Waiter::CoordinatorWrite(request),
        );
        for to in replicas {
            let body = ReplicaBody::Replicate {
                partition,
                key: key.clone(),
                object: object.clone(),
            };
            self.send(to.clone(), body, Purpose::Replicate { request, to });
        }
        let put = PutState {
            origin,
            object,
            quorum,
            answered: false,
        };
        self.requests.insert(request, Coordination::Put(put));
        self.deadlines.push(Reverse((now + timeout, request)));
    }

    fn start_forward(
        &mut self,
        now: Instant,
        origin: Origin,
        request: ClientRequest,
        primaries: &[NodeId],
        required: usize,
        timeout: Duration,
    ) {
        let mut candidates: Vec<NodeId> = primaries
            .iter()
            .filter(|n| **n != self.config.id && self.is_reachable(n, now))
            .cloned()
            .collect();
        if candidates.is_empty() {
            self.metrics.unavailable += 1;
            let error = RequestError::Unavailable { required, alive: 0 };
            return self.answer(origin, ClientResponse::Failed(error));
        }
        // Spread forwarded writes over the primaries; try the others in ring order after.
        let first = self.rng.random_range(0..candidates.len());
        candidates.rotate_left(first);
        candidates.reverse();
        self.metrics.forwarded += 1;
        let id = self.new_id();
        let fwd = ForwardState {
            origin,
            request,
            candidates,
            maybe_applied: false,
            required,
        };
        self.requests.insert(id, Coordination::Forward(fwd));
        // The primary answers at its own deadline; give its answer time to arrive.
        self.deadlines
            .push(Reverse((now + timeout + Duration::from_millis(500), id)));
        self.forward_next(id);
    }

    fn forward_next(&mut self, id: u64) {
        let Some(Coordination::Forward(fwd)) = self.requests.get_mut(&id) else {
            return;
        };
        match fwd.candidates.pop() {
            Some(to) => {
                let body = ReplicaBody::Coordinate(fwd.request.clone());
                self.send(to.clone(), body, Purpose::Forward { request: id, to });
            }
            None => {
                let error = if fwd.maybe_applied {
                    self.metrics.quorum_failures += 1;
                    RequestError::QuorumFailed {
                        required: fwd.required,
                        answered: 0,
                    }
                } else {
                    self.metrics.unavailable += 1;
                    RequestError::Unavailable {
                        required: fwd.required,
                        alive: 0,
                    }
                };
                let origin = fwd.origin;
                self.requests.remove(&id);
                self.answer(origin, ClientResponse::Failed(error));
            }
        }
    }

    fn forward_outcome(
        &mut self,
        _now: Instant,
        id: u64,
        result: Result<ReplicaResponse, SendError>,
    ) {
        let Some(Coordination::Forward(fwd)) = self.requests.get_mut(&id) else {
            return;
        };
        match result {
            Ok(ReplicaResponse::Coordinated(response)) => {
                let origin = fwd.origin;
                self.requests.remove(&id);
                self.answer(origin, response);
            }
            // Refused before processing: nothing applied there, try the next primary.
            Ok(ReplicaResponse::Failed(_))
            | Err(SendError::Unreachable | SendError::Refused(_)) => self.forward_next(id),
            // The primary may have applied the write. Trying another primary would apply it a
            // second time, under a second dot (false concurrency, and a definite refusal there
            // would hide the first attempt), so the outcome is unknown.
            Ok(_) | Err(SendError::Lost) => {
                fwd.maybe_applied = true;
                fwd.candidates.clear();
                self.forward_next(id);
            }
        }
    }

    fn coordinator_write_outcome(&mut self, request: u64, durable: bool) {
        let Some(Coordination::Put(put)) = self.requests.get_mut(&request) else {
            return;
        };
        if durable {
            put.quorum.add_ack(true);
        } else {
            // A failed local commit is one failed replica, and an indeterminate one: the
            // replicas may have stored the object, a later write to the key was built on it
            // (the overlay) and may become durable, and a failed commit may have reached the
            // disk anyway. W acks from the others can still make the write succeed.
            put.quorum.add_failure(true);
        }
        self.advance_put(request);
    }

    fn replicate_outcome(&mut self, request: u64, acked: bool) {
        let Some(Coordination::Put(put)) = self.requests.get_mut(&request) else {
            return;
        };
        if acked {
            put.quorum.add_ack(true);
        } else {
            put.quorum.add_failure(true);
        }
        self.advance_put(request);
    }

    fn advance_put(&mut self, request: u64) {
        let Some(Coordination::Put(put)) = self.requests.get_mut(&request) else {
            return;
        };
        if !put.answered {
            match put.quorum.progress() {
                WriteProgress::Waiting => {}
                WriteProgress::Enough => {
                    put.answered = true;
                    let (origin, context) = (put.origin, put.object.context());
                    self.answer(origin, ClientResponse::Written { context });
                }
                WriteProgress::Failed(error) => {
                    put.answered = true;
                    self.metrics.quorum_failures += 1;
                    let origin = put.origin;
                    self.answer(origin, ClientResponse::Failed(error));
                }
            }
        }
        if let Some(Coordination::Put(put)) = self.requests.get(&request)
            && put.answered
            && put.quorum.is_complete()
        {
            self.requests.remove(&request);
        }
    }

    fn read_outcome(&mut self, request: u64, from: NodeId, read: Option<LocalRead>) {
        let Some(Coordination::Get(get)) = self.requests.get_mut(&request) else {
            return;
        };
        match read {
            Some(read) => get.quorum.add_reply(from, true, read),
            None => get.quorum.add_failure(),
        }
        self.advance_get(request);
    }

    fn advance_get(&mut self, request: u64) {
        let Some(Coordination::Get(get)) = self.requests.get_mut(&request) else {
            return;
        };
        if !get.answered {
            match get.quorum.progress() {
                ReadProgress::Waiting => {}
                ReadProgress::Enough => {
                    get.answered = true;
                    let merged = get.quorum.merged();
                    let response = ClientResponse::Read {
                        values: merged.values(),
                        context: merged.context(),
                    };
                    let origin = get.origin;
                    self.answer(origin, response);
                }
                ReadProgress::Failed(error) => {
                    get.answered = true;
                    self.metrics.quorum_failures += 1;
                    let origin = get.origin;
                    self.answer(origin, ClientResponse::Failed(error));
                }
            }
        }
        if let Some(Coordination::Get(get)) = self.requests.get(&request)
            && get.answered
            && get.quorum.is_complete()
            && let Some(Coordination::Get(get)) = self.requests.remove(&request)
        {
            self.read_repair(&get);
        }
    }

    /// Sends the merged object to every replica that answered with something older.
    fn read_repair(&mut self, get: &GetState) {
        let merged = get.quorum.merged();
        for node in get.quorum.stale_replicas() {
            self.metrics.read_repairs += 1;
            if node == self.config.id {
                self.store_replica(get.partition, &get.key, merged, Waiter::Repair);
            } else {
                let body = ReplicaBody::Repair {
                    partition: get.partition,
                    key: get.key.clone(),
                    object: merged.clone(),
                };
                self.send(node.clone(), body, Purpose::Repair { to: node });
            }
        }
    }

    // ---- replica requests ------------------------------------------------------------

    fn replica_request(&mut self, now: Instant, id: InboundId, request: ReplicaRequest) {
        self.peers.mark_reachable(&request.from);
        // A partition that is not the key's own would file the key where no read finds it.
        if let ReplicaBody::Replicate { partition, key, .. }
        | ReplicaBody::Read { partition, key }
        | ReplicaBody::Repair { partition, key, .. } = &request.body
        {
            let expected = self.ring.partition_for_key(key);
            if *partition != expected {
                let error = ReplicaError::WrongPartition {
                    expected,
                    got: *partition,
                };
                return self.reply(id, Response::Replica(ReplicaResponse::Failed(error)));
            }
        }
        match request.body {
            ReplicaBody::Coordinate(client) => match client {
                ClientRequest::Put { .. } | ClientRequest::Delete { .. } => {
                    self.start_write(now, Origin::Forwarded(id), client)
                }
                other => self.client_request(now, Origin::Forwarded(id), other),
            },
            ReplicaBody::Replicate {
                partition,
                key,
                object,
            }
            | ReplicaBody::Repair {
                partition,
                key,
                object,
            } => {
                if let Some(e) = &self.storage_failed {
                    let error = ReplicaError::Storage(e.clone());
                    return self.reply(id, Response::Replica(ReplicaResponse::Failed(error)));
                }
                self.metrics.replica_writes += 1;
                self.store_replica(partition, &key, &object, Waiter::ReplicaAck(id));
            }
            ReplicaBody::Read { partition, key } => {
                let read = self.durable_read(partition, &key);
                self.reply(id, Response::Replica(ReplicaResponse::Replica(read)));
            }
            ReplicaBody::Ping => self.reply(id, Response::Replica(ReplicaResponse::Pong)),
        }
    }

    /// Asks every other member whether it is there, so reachability stays fresh even when no
    /// requests flow (and a peer that came back is noticed).
    fn ping_peers(&mut self) {
        let others: Vec<NodeId> = self
            .ring
            .members()
            .iter()
            .map(|m| m.id.clone())
            .filter(|id| *id != self.config.id)
            .collect();
        for to in others {
            // One ping in flight per peer: a dead peer is not piled up on.
            let busy = self
                .outbound
                .values()
                .any(|p| matches!(p, Purpose::Ping { to: t } if *t == to));
            if !busy {
                self.send(to.clone(), ReplicaBody::Ping, Purpose::Ping { to });
            }
        }
    }

    /// Merges `incoming` into the local replica and makes the result durable; `waiter` is
    /// told once the merged state is durable (at once if it already was).
    fn store_replica(
        &mut self,
        partition: PartitionId,
        key: &Key,
        incoming: &Object,
        waiter: Waiter,
    ) {
        let (base, pending) = match self.overlay.get(&(partition, key.clone())) {
            Some((o, pid)) => (Some(o.clone()), Some(*pid)),
            None => match self.storage.object(partition, key) {
                Ok(ReadOutcome::Found(o)) => (Some(o), None),
                Ok(ReadOutcome::NotFound) => (None, None),
                // A corrupt or unreadable record is replaced by what the peers hold.
                Ok(ReadOutcome::Corrupted) | Err(_) => {
                    self.metrics.corrupt_reads += 1;
                    (None, None)
                }
            },
        };
        let merged = match &base {
            Some(b) => b.merge(incoming),
            None => incoming.clone(),
        };
        if base.as_ref() == Some(&merged) {
            match pending {
                Some(pid) => {
                    if let Some(p) = self.persists.get_mut(&pid) {
                        p.waiters.push(waiter);
                    }
                }
                None => self.notify_durable(waiter),
            }
            return;
        }
        self.persist(
            vec![Write::Object {
                partition,
                key: key.clone(),
                object: merged.clone(),
            }],
            &[(partition, key.clone(), merged)],
            waiter,
        );
    }

    fn notify_durable(&mut self, waiter: Waiter) {
        match waiter {
            Waiter::ReplicaAck(id) => self.reply(id, Response::Replica(ReplicaResponse::Stored)),
            Waiter::CoordinatorWrite(request) => self.coordinator_write_outcome(request, true),
            Waiter::Repair => {}
        }
    }

    // ---- helpers ---------------------------------------------------------------------

    fn refuse_early(&mut self, key: &Key) -> Option<RequestError> {
        if key.len() > self.config.limits.max_key_bytes() {
            return Some(RequestError::KeyTooLarge {
                size: key.len(),
                max: self.config.limits.max_key_bytes(),
            });
        }
        if self.requests.len() >= self.config.max_in_flight {
            self.metrics.overloaded += 1;
            return Some(RequestError::Overloaded);
        }
        None
    }

    fn is_reachable(&self, node: &NodeId, now: Instant) -> bool {
        *node == self.config.id || self.peers.is_reachable(node, now)
    }

    /// The local replica as durable storage holds it: what reads answer. Objects still being
    /// made durable are not shown, so no reader sees a dot that a crash could take back.
    fn durable_read(&mut self, partition: PartitionId, key: &Key) -> LocalRead {
        match self.storage.object(partition, key) {
            Ok(ReadOutcome::Found(o)) => LocalRead::Found(o),
            Ok(ReadOutcome::NotFound) => LocalRead::NotFound,
            Ok(ReadOutcome::Corrupted) | Err(_) => {
                self.metrics.corrupt_reads += 1;
                LocalRead::Corrupted
            }
        }
    }

    /// The local replica including writes not yet durable: what a new write builds on.
    fn local_for_write(
        &mut self,
        partition: PartitionId,
        key: &Key,
    ) -> Result<Local, StorageError> {
        if let Some((o, _)) = self.overlay.get(&(partition, key.clone())) {
            return Ok(Local::Found(o.clone()));
        }
        match self.storage.object(partition, key)? {
            ReadOutcome::Found(o) => Ok(Local::Found(o)),
            ReadOutcome::NotFound => Ok(Local::NotFound),
            ReadOutcome::Corrupted => {
                self.metrics.corrupt_reads += 1;
                Ok(Local::Corrupted)
            }
        }
    }

    fn persist(
        &mut self,
        writes: Vec<Write>,
        objects: &[(PartitionId, Key, Object)],
        waiter: Waiter,
    ) {
        let id = PersistId(self.new_id());
        let mut keys = Vec::with_capacity(objects.len());
        for (partition, key, object) in objects {
            self.overlay
                .insert((*partition, key.clone()), (object.clone(), id));
            keys.push((*partition, key.clone()));
        }
        self.persists.insert(
            id,
            PendingPersist {
                keys,
                waiters: vec![waiter],
            },
        );
        let mut batch = WriteBatch::new();
        for write in writes {
            batch.push(write);
        }
        self.outputs.push_back(Output::Persist { id, batch });
    }

    fn send(&mut self, to: NodeId, body: ReplicaBody, purpose: Purpose) {
        let id = OutboundId(self.new_id());
        self.outbound.insert(id, purpose);
        let request = ReplicaRequest {
            from: self.config.id.clone(),
            epoch: self.ring.epoch(),
            body,
        };
        self.outputs.push_back(Output::Send { id, to, request });
    }

    fn answer(&mut self, origin: Origin, response: ClientResponse) {
        match origin {
            Origin::Client(id) => self.reply(id, Response::Client(response)),
            Origin::Forwarded(id) => self.reply(
                id,
                Response::Replica(ReplicaResponse::Coordinated(response)),
            ),
        }
    }

    fn reply(&mut self, id: InboundId, response: Response) {
        self.outputs.push_back(Output::Reply { id, response });
    }

    fn status(&self, now: Instant) -> NodeStatus {
        let peers = self
            .ring
            .members()
            .iter()
            .filter(|m| m.id != self.config.id)
            .map(|m| PeerStatus {
                node: m.id.clone(),
                reachable: self.peers.is_reachable(&m.id, now),
            })
            .collect();
        NodeStatus {
            node: self.config.id.clone(),
            incarnation: self.config.incarnation,
            ring: self.ring.clone(),
            peers,
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}
