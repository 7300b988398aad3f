//! The coordinator's fan-out and quorum merge for one put and one get, through three sans-IO
//! `Node`s with `MemoryStorage`, at zero latency: every message is handed over as a value (no
//! codec, no network), every persist is applied at once, and the clock never moves. What is
//! left is the logic's own cost per request: routing, the DVV update, the overlay, the quorum
//! bookkeeping, building the messages, merging the replies, read repair's check.
//!
//! The driver is written here, minimal (like `crates/shoal-coordinator/tests/harness`): the
//! simulator (`shoal-sim`) runs whole workloads with faults and the real codec, not one request
//! at a time. Each iteration runs until the cluster is quiet again (the third replica's ack and
//! any read repair included), so no state piles up between iterations.

// Bench setup works on values it made itself: a panic is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use shoal_causality::CausalContext;
use shoal_coordinator::{InboundId, Node, NodeConfig, OutboundId, Output, SendError};
use shoal_protocol::{ClientRequest, ClientResponse, PeerResponse, Request, Response};
use shoal_ring::{Member, Ring};
use shoal_storage::{MemoryStorage, Storage};
use shoal_types::{Incarnation, Key, NodeId, PartitionCount, ReplicationFactor, RequestOptions};

const VALUE_BYTES: usize = 1024;
/// Virtual time between two requests.
const REQUEST_SPACING: Duration = Duration::from_micros(100);

/// Three nodes and the messages between them.
struct Cluster {
    nodes: Vec<Node<MemoryStorage>>,
    index: HashMap<NodeId, usize>,
    now: Instant,
    queue: VecDeque<Event>,
    /// Peer requests in flight: (receiver, its inbound id) → (sender, its outbound id).
    routes: HashMap<(usize, InboundId), (usize, OutboundId)>,
    next_inbound: u64,
}

enum Event {
    Deliver(usize, InboundId, Request),
    Answer(usize, OutboundId, Result<PeerResponse, SendError>),
}

impl Cluster {
    fn new() -> Cluster {
        let members: Vec<Member> = (1..=3)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + i).parse().unwrap();
                Member::new(NodeId::new(&format!("n{i}")).unwrap(), addr)
            })
            .collect();
        let ring = Ring::new(
            members.clone(),
            PartitionCount::DEFAULT,
            ReplicationFactor::new(3).unwrap(),
        )
        .unwrap();
        let now = Instant::now();
        let nodes: Vec<Node<MemoryStorage>> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let config = NodeConfig::new(m.id.clone(), Incarnation::new(1000 + i as u64));
                Node::new(
                    now,
                    config,
                    ring.clone(),
                    MemoryStorage::new(ring.q()),
                    i as u64,
                )
            })
            .collect();
        let index = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        Cluster {
            nodes,
            index,
            now,
            queue: VecDeque::new(),
            routes: HashMap::new(),
            next_inbound: 0,
        }
    }

    /// The node that should coordinate `key`: its first primary (as a ring-aware client picks).
    fn primary(&self, key: &Key) -> usize {
        let ring = self.nodes[0].ring();
        self.index[&ring.primaries(ring.partition_for_key(key))[0]]
    }

    /// Runs a client request at node `at` until the cluster is quiet; returns the answer.
    fn request(&mut self, at: usize, request: ClientRequest) -> ClientResponse {
        // Time moves between requests (never during one), so deadlines of finished requests
        // expire and leave the nodes' timer heaps as they would at 10,000 requests a second.
        self.now += REQUEST_SPACING;
        for node in &mut self.nodes {
            if node.poll_timeout().is_some_and(|t| t <= self.now) {
                node.handle_timeout(self.now);
            }
        }
        let id = self.inbound();
        self.nodes[at].handle_request(self.now, self.now, id, Request::Client(request));
        let mut answer = None;
        loop {
            let mut busy = false;
            for from in 0..self.nodes.len() {
                while let Some(output) = self.nodes[from].poll_output() {
                    busy = true;
                    if let Some(r) = self.route(from, output, (at, id)) {
                        answer = Some(r);
                    }
                }
            }
            if let Some(event) = self.queue.pop_front() {
                match event {
                    Event::Deliver(to, id, request) => {
                        self.nodes[to].handle_request(self.now, self.now, id, request)
                    }
                    Event::Answer(to, id, result) => {
                        self.nodes[to].handle_response(self.now, id, result)
                    }
                }
            } else if !busy {
                break;
            }
        }
        match answer {
            Some(Response::Client(response)) => response,
            other => panic!("no client answer: {other:?}"),
        }
    }

    /// Carries out one output; returns the client's answer if this is it.
    fn route(
        &mut self,
        from: usize,
        output: Output,
        client: (usize, InboundId),
    ) -> Option<Response> {
        match output {
            Output::Reply { id, response } => {
                if (from, id) == client {
                    return Some(response);
                }
                let (to, out) = self
                    .routes
                    .remove(&(from, id))
                    .expect("a reply to a peer request");
                let result = match response {
                    Response::Peer(r) => Ok(r),
                    Response::Refused(refusal) => Err(SendError::Refused(refusal)),
                    other => panic!("a peer request answered with {other:?}"),
                };
                self.queue.push_back(Event::Answer(to, out, result));
            }
            Output::Send {
                id, to, request, ..
            } => {
                let to = self.index[&to];
                let inbound = self.inbound();
                self.routes.insert((to, inbound), (from, id));
                self.queue
                    .push_back(Event::Deliver(to, inbound, Request::Peer(request)));
            }
            Output::Abandon { .. } => {}
            Output::Persist { id, batch } => {
                let node = &mut self.nodes[from];
                node.storage().write(batch).unwrap();
                node.handle_persisted(self.now, id, Ok(()));
            }
        }
        None
    }

    fn inbound(&mut self) -> InboundId {
        self.next_inbound += 1;
        InboundId(self.next_inbound)
    }
}

fn coordinator(c: &mut Criterion) {
    let mut cluster = Cluster::new();
    let key = Key::new(&b"user00012345"[..]).unwrap();
    let at = cluster.primary(&key);
    let value = Bytes::from(vec![0x5a; VALUE_BYTES]);
    let put = |context: CausalContext| ClientRequest::Put {
        key: key.clone(),
        value: value.clone(),
        context,
        options: RequestOptions::default(),
    };
    // Steady state: the key exists on all three replicas, each put supersedes the last.
    let mut context = match cluster.request(at, put(CausalContext::empty())) {
        ClientResponse::Written { context } => context,
        other => panic!("{other:?}"),
    };
    let mut group = c.benchmark_group("coordinator");
    group.bench_function("put/1KiB", |b| {
        b.iter(|| match cluster.request(at, put(context.clone())) {
            ClientResponse::Written { context: written } => context = black_box(written),
            other => panic!("{other:?}"),
        })
    });
    let get = ClientRequest::Get {
        key: key.clone(),
        options: RequestOptions::default(),
    };
    group.bench_function("get/1KiB", |b| {
        b.iter(|| match cluster.request(at, get.clone()) {
            ClientResponse::Read { values, .. } => assert_eq!(black_box(values).len(), 1),
            other => panic!("{other:?}"),
        })
    });
    group.finish();
}

criterion_group!(benches, coordinator);
criterion_main!(benches);
