//! A tiny in-memory cluster for coordinator tests, in the spirit of quinn-proto's `Pair`:
//! several `Node`s, a FIFO message queue instead of a network, `MemoryStorage` whose batches
//! are applied when the harness delivers the persist, and a virtual clock. `shoal-sim` is the
//! full simulator with faults; this is the minimum to test one behaviour at a time.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]
// The harness needs one real instant to start its virtual clock from.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_causality::CausalContext;
use shoal_coordinator::{InboundId, Node, NodeConfig, OutboundId, Output, SendError};
use shoal_protocol::{
    ClientRequest, ClientResponse, ExchangeMessage, HintMessage, PeerMessage, PeerResponse,
    ReplicaMessage, Request, Response,
};
use shoal_ring::{Member, Ring};
use shoal_storage::{CommitError, EngineError, MemoryStorage, Storage};
use shoal_types::{Incarnation, Key, NodeId, PartitionCount, ReplicationFactor, RequestOptions};

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node<MemoryStorage>>,
    /// Each node's configuration and seed, to restart it with.
    configs: BTreeMap<NodeId, (NodeConfig, u64)>,
    pub now: Instant,
    /// Nodes whose connections fail at once (`SendError::Unreachable`).
    pub down: BTreeSet<NodeId>,
    /// Nodes that receive nothing and answer nothing: requests to them are lost silently.
    pub silent: BTreeSet<NodeId>,
    /// Persists held back per node (not yet durable), released by `release_persists`.
    pub hold_persists: BTreeSet<NodeId>,
    held: Vec<(
        NodeId,
        shoal_coordinator::PersistId,
        shoal_storage::WriteBatch,
    )>,
    queue: VecDeque<Event>,
    /// Inbound requests that peers sent: answer goes back to (sender, outbound id).
    peer_inbound: BTreeMap<(NodeId, InboundId), (NodeId, OutboundId)>,
    client_replies: BTreeMap<(NodeId, InboundId), Response>,
    next_inbound: u64,
    /// Every message sent, in order: (from, to, kind).
    pub sent: Vec<(NodeId, NodeId, String)>,
    /// Every message a node abandoned: (node, message).
    pub abandoned: Vec<(NodeId, OutboundId)>,
    /// Every message sent, whole: (from, message).
    pub sent_messages: Vec<(NodeId, shoal_protocol::PeerRequest)>,
    /// When each message of `sent` was sent.
    pub sent_at: Vec<Instant>,
    /// Every answer a node gave a peer, whole: (answering node, asking node, answer).
    pub answered: Vec<(NodeId, NodeId, PeerResponse)>,
    /// Messages to silent nodes, which nobody answered: (from, to, id, message). A test may
    /// answer them itself (`Node::handle_response`).
    pub lost: Vec<(NodeId, NodeId, OutboundId, shoal_protocol::PeerRequest)>,
}

enum Event {
    Deliver {
        to: NodeId,
        id: InboundId,
        request: Request,
    },
    Answer {
        to: NodeId,
        id: OutboundId,
        result: Result<PeerResponse, SendError>,
    },
}

pub fn node(n: &str) -> NodeId {
    NodeId::new(n).unwrap()
}

pub fn key(k: &str) -> Key {
    Key::new(Bytes::from(k.to_owned())).unwrap()
}

impl Cluster {
    /// `count` nodes n1..n{count}, N=3, Q=16.
    pub fn new(count: usize) -> Cluster {
        Cluster::with_config(count, |_| {})
    }

    /// [`Cluster::new`] with every node's configuration changed by `configure`.
    pub fn with_config(count: usize, configure: impl Fn(&mut NodeConfig)) -> Cluster {
        let members: Vec<Member> = (1..=count)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + i).parse().unwrap();
                Member::new(node(&format!("n{i}")), addr)
            })
            .collect();
        let ring = Ring::new(
            members.clone(),
            PartitionCount::new(16).unwrap(),
            ReplicationFactor::new(3).unwrap(),
        )
        .unwrap();
        let now = Instant::now();
        let configs: BTreeMap<NodeId, (NodeConfig, u64)> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut config = NodeConfig::new(m.id.clone(), Incarnation::new(1000 + i as u64));
                configure(&mut config);
                (m.id.clone(), (config, i as u64))
            })
            .collect();
        let nodes = configs
            .iter()
            .map(|(id, (config, seed))| {
                let storage = MemoryStorage::new(ring.q());
                let node = Node::new(now, config.clone(), ring.clone(), storage, *seed);
                (id.clone(), node)
            })
            .collect();
        Cluster {
            nodes,
            configs,
            now,
            down: BTreeSet::new(),
            silent: BTreeSet::new(),
            hold_persists: BTreeSet::new(),
            held: Vec::new(),
            queue: VecDeque::new(),
            peer_inbound: BTreeMap::new(),
            client_replies: BTreeMap::new(),
            next_inbound: 0,
            sent: Vec::new(),
            abandoned: Vec::new(),
            sent_messages: Vec::new(),
            sent_at: Vec::new(),
            answered: Vec::new(),
            lost: Vec::new(),
        }
    }

    /// Stops node `n` once the cluster has settled and starts it again at `now` with the same
    /// id and configuration: with its storage, or, `wiped`, with an empty one and a new
    /// incarnation (a lost data directory).
    pub fn restart(&mut self, n: &NodeId, wiped: bool) {
        self.settle();
        let old = self.nodes.remove(n).unwrap();
        let ring = old.ring().clone();
        let storage = if wiped {
            MemoryStorage::new(ring.q())
        } else {
            old.into_storage()
        };
        let (config, seed) = self.configs.get_mut(n).unwrap();
        if wiped {
            config.incarnation = Incarnation::new(config.incarnation.get() + 1_000_000);
        }
        *seed += 100;
        let node = Node::new(self.now, config.clone(), ring, storage, *seed);
        self.nodes.insert(n.clone(), node);
    }

    /// Runs the cluster (advancing the clock a second at a time) until `done` holds, for at
    /// most `deadline`; returns how long it took, or `None` if it never held.
    pub fn run_until(
        &mut self,
        deadline: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        loop {
            if done(self) {
                return Some(self.now - start);
            }
            if self.now - start >= deadline {
                return None;
            }
            self.advance(Duration::from_secs(1));
        }
    }

    pub fn ring(&self) -> Ring {
        self.nodes.values().next().unwrap().ring().clone()
    }

    pub fn primaries(&self, k: &str) -> Vec<NodeId> {
        let ring = self.ring();
        ring.primaries(ring.partition_for_key(&key(k))).to_vec()
    }

    /// A node outside the key's preference list (needs more than N nodes).
    pub fn non_primary(&self, k: &str) -> NodeId {
        let p = self.primaries(k);
        self.nodes.keys().find(|n| !p.contains(n)).unwrap().clone()
    }

    /// Sends a client request to `at` and runs the cluster until it is answered.
    pub fn request(&mut self, at: &NodeId, request: ClientRequest) -> ClientResponse {
        let id = self.submit(at, request);
        for _ in 0..100_000 {
            self.step();
            if let Some(answer) = self.answer(at, id) {
                return answer;
            }
        }
        panic!("request at {at} was never answered");
    }

    pub fn put(
        &mut self,
        at: &str,
        k: &str,
        v: &str,
        ctx: Option<&CausalContext>,
    ) -> ClientResponse {
        self.put_with(at, k, v, ctx, RequestOptions::default())
    }

    pub fn put_with(
        &mut self,
        at: &str,
        k: &str,
        v: &str,
        ctx: Option<&CausalContext>,
        options: RequestOptions,
    ) -> ClientResponse {
        let request = ClientRequest::Put {
            key: key(k),
            value: Bytes::from(v.to_owned()),
            context: ctx.cloned().unwrap_or_default(),
            options,
        };
        self.request(&node(at), request)
    }

    pub fn get(&mut self, at: &str, k: &str) -> ClientResponse {
        self.get_with(at, k, RequestOptions::default())
    }

    pub fn get_with(&mut self, at: &str, k: &str, options: RequestOptions) -> ClientResponse {
        self.request(
            &node(at),
            ClientRequest::Get {
                key: key(k),
                options,
            },
        )
    }

    /// What node `at` holds for `k`, durably.
    pub fn local(&self, at: &str, k: &str) -> Vec<Bytes> {
        self.object(at, k).map(|o| o.values()).unwrap_or_default()
    }

    /// Runs until nothing is queued and no node has output, without advancing time.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.pump() && self.queue.is_empty() {
                return;
            }
            self.deliver_one();
        }
        panic!("cluster did not settle");
    }

    /// Advances the clock by `d`, firing timeouts, then settles.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.settle();
            let next = self
                .nodes
                .values()
                .filter_map(|n| n.poll_timeout())
                .filter(|t| *t <= until)
                .min();
            match next {
                Some(t) => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in self.nodes.values_mut() {
                        if n.poll_timeout().is_some_and(|t| t <= now) {
                            n.handle_timeout(now);
                        }
                    }
                }
                None => break,
            }
        }
        self.now = until;
        self.settle();
    }

    pub fn release_persists(&mut self) {
        for (n, id, batch) in std::mem::take(&mut self.held) {
            let node = self.nodes.get_mut(&n).unwrap();
            node.storage().write(batch).unwrap();
            node.handle_persisted(self.now, id, Ok(()));
        }
        self.settle();
    }

    /// Reports every held persist failed (nothing stored), as a failed fsync would.
    pub fn fail_persists(&mut self) {
        for (n, id, _) in std::mem::take(&mut self.held) {
            let error = CommitError::Engine(EngineError::io(
                "committing",
                io::Error::other("injected fsync failure"),
            ));
            self.nodes
                .get_mut(&n)
                .unwrap()
                .handle_persisted(self.now, id, Err(error));
        }
        self.settle();
    }

    /// A client request handed to `at` without running the cluster; collect the answer with
    /// `answer`.
    pub fn submit(&mut self, at: &NodeId, request: ClientRequest) -> InboundId {
        let now = self.now;
        self.submit_arrived(at, request, now)
    }

    /// [`Cluster::submit`] of a request that arrived at `arrived` and waited in the driver's
    /// queue until now.
    pub fn submit_arrived(
        &mut self,
        at: &NodeId,
        request: ClientRequest,
        arrived: Instant,
    ) -> InboundId {
        let id = self.inbound();
        let now = self.now;
        self.nodes
            .get_mut(at)
            .unwrap()
            .handle_request(now, arrived, id, Request::Client(request));
        id
    }

    /// Hands node `at` a peer message from `from` that arrived at `arrived` with `budget` left
    /// on its sender's deadline, and returns the node's answer (without running the cluster).
    pub fn peer_message(
        &mut self,
        at: &NodeId,
        from: &NodeId,
        message: PeerMessage,
        arrived: Instant,
        budget: Option<Duration>,
    ) -> Option<Response> {
        let id = self.inbound();
        let now = self.now;
        let node = self.nodes.get_mut(at).unwrap();
        let epoch = node.ring().epoch();
        let request = Request::Peer(shoal_protocol::PeerRequest {
            from: from.clone(),
            epoch,
            budget,
            message,
        });
        node.handle_request(now, arrived, id, request);
        let mut answer = None;
        while let Some(out) = self.nodes.get_mut(at).unwrap().poll_output() {
            match out {
                Output::Reply { id: r, response } if r == id => answer = Some(response),
                other => self.route(at, other),
            }
        }
        answer
    }

    /// Tells node `at` that the client of request `id` has gone.
    pub fn cancel(&mut self, at: &NodeId, id: InboundId) {
        let now = self.now;
        self.nodes.get_mut(at).unwrap().handle_cancel(now, id);
    }

    /// Node `at`'s answer to an admin request.
    pub fn admin(&mut self, at: &NodeId, request: shoal_protocol::AdminRequest) -> Response {
        let id = self.inbound();
        let now = self.now;
        let node = self.nodes.get_mut(at).unwrap();
        node.handle_request(now, now, id, Request::Admin(request));
        self.pump();
        match self.client_replies.remove(&(at.clone(), id)) {
            Some(response) => response,
            None => panic!("{at} did not answer the admin request"),
        }
    }

    /// What node `at` reports about itself (the admin status).
    pub fn status(&mut self, at: &NodeId) -> shoal_protocol::NodeStatus {
        let id = self.inbound();
        let now = self.now;
        let node = self.nodes.get_mut(at).unwrap();
        node.handle_request(
            now,
            now,
            id,
            Request::Admin(shoal_protocol::AdminRequest::Status),
        );
        self.pump();
        match self.client_replies.remove(&(at.clone(), id)) {
            Some(Response::Admin(shoal_protocol::AdminResponse::Status(s))) => *s,
            other => panic!("expected a status, got {other:?}"),
        }
    }

    /// The hint node `at` holds for `target` of key `k`, if any.
    pub fn hint(&self, at: &str, target: &str, k: &str) -> Vec<Bytes> {
        let n = &self.nodes[&node(at)];
        let ring = n.ring();
        let partition = ring.partition_for_key(&key(k));
        match n.storage().hint(&node(target), partition, &key(k)).unwrap() {
            Some(shoal_storage::HintEntry::Found(h)) => h.object.values(),
            _ => Vec::new(),
        }
    }

    /// The object node `at` holds for key `k` (its own replica).
    pub fn object(&self, at: &str, k: &str) -> Option<shoal_causality::Object> {
        let n = &self.nodes[&node(at)];
        let ring = n.ring();
        match n
            .storage()
            .object(ring.partition_for_key(&key(k)), &key(k))
            .unwrap()
        {
            shoal_storage::ReadOutcome::Found(o) => Some(o),
            _ => None,
        }
    }

    /// The metrics of node `at`.
    pub fn metrics(&self, at: &NodeId) -> shoal_coordinator::NodeMetrics {
        self.nodes[at].metrics().clone()
    }

    /// The answer to a request from `submit`, if it came.
    pub fn answer(&mut self, at: &NodeId, id: InboundId) -> Option<ClientResponse> {
        match self.client_replies.remove(&(at.clone(), id))? {
            Response::Client(c) => Some(c),
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn step(&mut self) {
        if self.pump() {
            return;
        }
        if !self.queue.is_empty() {
            self.deliver_one();
            return;
        }
        // Idle: jump to the next timeout.
        if let Some(t) = self.nodes.values().filter_map(|n| n.poll_timeout()).min() {
            self.now = self.now.max(t);
            let now = self.now;
            for n in self.nodes.values_mut() {
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
            }
        }
    }

    /// Collects every node's outputs; true if there were any.
    fn pump(&mut self) -> bool {
        let mut any = false;
        let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for from in ids {
            while let Some(out) = self.nodes.get_mut(&from).unwrap().poll_output() {
                any = true;
                self.route(&from, out);
            }
        }
        any
    }

    fn route(&mut self, from: &NodeId, out: Output) {
        match out {
            Output::Reply { id, response } => match self.peer_inbound.remove(&(from.clone(), id)) {
                Some((to, out_id)) => {
                    if let Response::Peer(r) = &response {
                        self.answered.push((from.clone(), to.clone(), r.clone()));
                    }
                    self.queue.push_back(Event::Answer {
                        to,
                        id: out_id,
                        result: match response {
                            Response::Peer(r) => Ok(r),
                            Response::Refused(refusal) => Err(SendError::Refused(refusal)),
                            other => panic!("a peer request answered with {other:?}"),
                        },
                    });
                }
                None => {
                    self.client_replies.insert((from.clone(), id), response);
                }
            },
            Output::Send {
                id, to, request, ..
            } => {
                self.sent
                    .push((from.clone(), to.clone(), kind(&request.message)));
                self.sent_messages.push((from.clone(), request.clone()));
                self.sent_at.push(self.now);
                if self.down.contains(&to) || self.down.contains(from) {
                    // A down node reaches nobody, and nobody reaches it.
                    self.queue.push_back(Event::Answer {
                        to: from.clone(),
                        id,
                        result: Err(SendError::Unreachable),
                    });
                } else if self.silent.contains(&to) {
                    // Lost: the sender only learns at its deadline.
                    self.lost.push((from.clone(), to, id, request));
                } else {
                    let inbound = self.inbound();
                    self.peer_inbound
                        .insert((to.clone(), inbound), (from.clone(), id));
                    self.queue.push_back(Event::Deliver {
                        to,
                        id: inbound,
                        request: Request::Peer(request),
                    });
                }
            }
            Output::Abandon { id } => self.abandoned.push((from.clone(), id)),
            Output::Persist { id, batch } => {
                if self.hold_persists.contains(from) {
                    self.held.push((from.clone(), id, batch));
                } else {
                    let node = self.nodes.get_mut(from).unwrap();
                    node.storage().write(batch).unwrap();
                    node.handle_persisted(self.now, id, Ok(()));
                }
            }
        }
    }

    fn deliver_one(&mut self) {
        let Some(event) = self.queue.pop_front() else {
            return;
        };
        let now = self.now;
        match event {
            Event::Deliver { to, id, request } => {
                if self.down.contains(&to) {
                    if let Some((from, out)) = self.peer_inbound.remove(&(to.clone(), id)) {
                        self.queue.push_back(Event::Answer {
                            to: from,
                            id: out,
                            result: Err(SendError::Unreachable),
                        });
                    }
                    return;
                }
                self.nodes
                    .get_mut(&to)
                    .unwrap()
                    .handle_request(now, now, id, request);
            }
            Event::Answer { to, id, result } => {
                self.nodes
                    .get_mut(&to)
                    .unwrap()
                    .handle_response(now, id, result);
            }
        }
    }

    fn inbound(&mut self) -> InboundId {
        self.next_inbound += 1;
        InboundId(self.next_inbound)
    }
}

fn kind(message: &PeerMessage) -> String {
    match message {
        PeerMessage::Coordinate(_) => "coordinate",
        PeerMessage::Replica(ReplicaMessage::Replicate { .. }) => "replicate",
        PeerMessage::Replica(ReplicaMessage::Read { .. }) => "read",
        PeerMessage::Replica(ReplicaMessage::Repair { .. }) => "repair",
        PeerMessage::Ping => "ping",
        PeerMessage::Gossip(_) => "gossip",
        PeerMessage::Hint(HintMessage::Store { .. }) => "hint_store",
        PeerMessage::Hint(HintMessage::Read { .. }) => "hint_read",
        PeerMessage::Hint(HintMessage::Handoff { .. }) => "handoff",
        PeerMessage::Exchange(ExchangeMessage::Root { .. }) => "exchange_root",
        PeerMessage::Exchange(ExchangeMessage::Branches { .. }) => "exchange_branches",
        PeerMessage::Exchange(ExchangeMessage::Segments { .. }) => "exchange_segments",
        PeerMessage::Exchange(ExchangeMessage::Keys { .. }) => "exchange_keys",
        PeerMessage::Exchange(ExchangeMessage::Fetch { .. }) => "exchange_fetch",
        PeerMessage::Exchange(ExchangeMessage::Push { .. }) => "exchange_push",
        PeerMessage::Reap(_) => "reap",
    }
    .to_owned()
}

pub fn values(r: &ClientResponse) -> Vec<String> {
    match r {
        ClientResponse::Read { values, .. } => {
            let mut v: Vec<String> = values
                .iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect();
            v.sort();
            v
        }
        other => panic!("expected a read, got {other:?}"),
    }
}

pub fn context(r: &ClientResponse) -> CausalContext {
    match r {
        ClientResponse::Read { context, .. } | ClientResponse::Written { context } => {
            context.clone()
        }
        other => panic!("expected a read or write, got {other:?}"),
    }
}
