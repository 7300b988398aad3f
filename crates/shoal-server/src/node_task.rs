//! The node task: the one task that owns the [`Node`]. It feeds the node accepted requests,
//! peers' answers, commit outcomes and timeouts, and carries out every [`Output`]: replies go
//! back through the requests' responders, messages to peers leave in tasks of their own, write
//! batches go to storage's group commit. Nothing here waits on I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_causality::Object;
use shoal_coordinator::{InboundId, Node, OutboundId, Output, PersistId, Priority, SendError};
use shoal_protocol::{
    ClientRequest, ClientResponse, DecodeLimits, LocalRead, PeerMessage, PeerRequest, PeerResponse,
    ReplicaResponse, Request, Response, decode, encode,
};
use shoal_storage::{CommitError, RedbStorage, Storage, WriteBatch};
use shoal_transport::Priority as StreamPriority;
use shoal_transport::{Endpoint, ExpectedPeer, Responder, TransportError};
use shoal_types::NodeId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::accept::{self, Accepted};
use crate::metrics::{self, Metrics, Op, Snapshot};

/// Responses with more value bytes than this are encoded in a task of their own.
const INLINE_ENCODE_BYTES: usize = 16 * 1024;
/// A message to a peer may take this much longer than the request it serves, so that the
/// peer's own answer (at its deadline) still arrives.
const SEND_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// What comes back to the node task from the tasks and threads working for it.
#[derive(Debug)]
pub(crate) enum Event {
    /// The outcome of an [`Output::Send`].
    Response(OutboundId, Result<PeerResponse, SendError>),
    /// The outcome of an [`Output::Persist`], from the storage commit thread.
    Persisted(PersistId, Result<(), CommitError>),
    /// The metrics endpoint asks for the counters only the node task can read.
    Snapshot(oneshot::Sender<Snapshot>),
}

/// The node task's state. Built by the server, consumed by [`NodeTask::run`].
#[derive(Debug)]
pub(crate) struct NodeTask {
    pub(crate) node: Node<RedbStorage>,
    pub(crate) requests: mpsc::Receiver<Accepted>,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    pub(crate) events_tx: mpsc::UnboundedSender<Event>,
    /// The listening endpoint, for its counters.
    pub(crate) listen: Endpoint,
    /// The endpoint node-to-node messages leave from.
    pub(crate) peers: Endpoint,
    pub(crate) limits: DecodeLimits,
    pub(crate) request_timeout: Duration,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

/// A request handed to the node and not answered yet.
#[derive(Debug)]
struct Pending {
    responder: Responder,
    op: Op,
    received: Instant,
}

/// The loop's mutable bookkeeping besides the node.
#[derive(Debug, Default)]
struct Books {
    pending: HashMap<InboundId, Pending>,
    next_inbound: u64,
    sends_in_flight: usize,
}

impl NodeTask {
    /// Runs until shutdown is asked for and the node's work is done (or `shutdown_timeout`
    /// passed), then hands the node back so the caller can close its storage off the runtime.
    pub(crate) async fn run(mut self) -> Node<RedbStorage> {
        let mut books = Books::default();
        let mut accepting = true;
        let mut drain_until: Option<Instant> = None;
        loop {
            let timer = self.node.poll_timeout();
            tokio::select! {
                Some(event) = self.events.recv() => self.event(&mut books, event),
                accepted = self.requests.recv(), if accepting => match accepted {
                    Some(accepted) => self.request(&mut books, accepted),
                    // The accept task ended: the endpoint is closed.
                    None => accepting = false,
                },
                () = sleep_until(timer), if timer.is_some() => {
                    self.node.handle_timeout(Instant::now());
                }
                _ = self.shutdown.changed(), if drain_until.is_none() => {
                    // A dropped sender (the server was dropped) also means shut down.
                    tracing::info!(
                        in_flight = self.node.in_flight(),
                        persists_pending = self.node.persists_pending(),
                        "draining: finishing requests in flight"
                    );
                    drain_until = Some(Instant::now() + self.shutdown_timeout);
                }
                () = sleep_until(drain_until), if drain_until.is_some() => {
                    tracing::warn!(
                        in_flight = self.node.in_flight(),
                        awaiting_reply = books.pending.len(),
                        persists_pending = self.node.persists_pending(),
                        "shutdown timeout: abandoning work in flight"
                    );
                    break;
                }
            }
            self.carry_out(&mut books);
            if drain_until.is_some() && self.is_idle(&books) {
                tracing::info!("drained");
                break;
            }
        }
        self.metrics.store_snapshot(self.snapshot(&books));
        self.node
    }

    /// Nothing left to finish: no coordination, no commit, no unanswered or queued request.
    fn is_idle(&self, books: &Books) -> bool {
        self.node.in_flight() == 0
            && self.node.persists_pending() == 0
            && books.pending.is_empty()
            && self.requests.is_empty()
    }

    fn request(&mut self, books: &mut Books, accepted: Accepted) {
        books.next_inbound += 1;
        let id = InboundId(books.next_inbound);
        books.pending.insert(
            id,
            Pending {
                responder: accepted.responder,
                op: accepted.op,
                received: accepted.received,
            },
        );
        self.node
            .handle_request(Instant::now(), id, accepted.request);
    }

    fn event(&mut self, books: &mut Books, event: Event) {
        match event {
            Event::Response(id, result) => {
                books.sends_in_flight = books.sends_in_flight.saturating_sub(1);
                self.node.handle_response(Instant::now(), id, result);
            }
            Event::Persisted(id, result) => self.node.handle_persisted(Instant::now(), id, result),
            Event::Snapshot(reply) => {
                let snapshot = self.snapshot(books);
                self.metrics.store_snapshot(snapshot.clone());
                let _ = reply.send(snapshot);
            }
        }
    }

    /// Carries out every effect the node has queued.
    fn carry_out(&mut self, books: &mut Books) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Reply { id, response } => self.reply(books, id, response),
                Output::Send {
                    id,
                    to,
                    request,
                    priority,
                } => self.send(books, id, to, request, priority),
                Output::Persist { id, batch } => self.persist(id, batch),
            }
        }
    }

    fn reply(&mut self, books: &mut Books, id: InboundId, response: Response) {
        let Some(pending) = books.pending.remove(&id) else {
            tracing::warn!(?id, "the node answered a request it was not given");
            return;
        };
        let outcome = metrics::outcome(&response);
        self.metrics
            .answered(pending.op, outcome, pending.received.elapsed());
        if value_bytes(&response) <= INLINE_ENCODE_BYTES {
            accept::respond(pending.responder, &response);
        } else {
            tokio::spawn(async move { accept::respond(pending.responder, &response) });
        }
    }

    fn send(
        &mut self,
        books: &mut Books,
        id: OutboundId,
        to: NodeId,
        request: PeerRequest,
        priority: Priority,
    ) {
        let Some(addr) = self.node.ring().member(&to).map(|m| m.addr) else {
            // Not a member of our ring: nothing can be sent. The node queues what follows.
            tracing::warn!(%to, "message to a node outside the ring");
            self.node
                .handle_response(Instant::now(), id, Err(SendError::Unreachable));
            return;
        };
        let timeout = self.send_timeout(&request);
        let (endpoint, events, limits) = (self.peers.clone(), self.events_tx.clone(), self.limits);
        books.sends_in_flight += 1;
        tokio::spawn(async move {
            let result = exchange(&endpoint, addr, to, request, priority, timeout, &limits).await;
            // The node task is gone only after shutdown; then nobody needs the answer.
            let _ = events.send(Event::Response(id, result));
        });
    }

    fn persist(&mut self, id: PersistId, batch: WriteBatch) {
        let events = self.events_tx.clone();
        self.node.storage().submit(
            batch,
            Box::new(move |result| {
                // Runs on the commit thread; an unbounded send never blocks it.
                let _ = events.send(Event::Persisted(id, result));
            }),
        );
    }

    /// How long a message may wait for its answer: as long as the request it serves (a
    /// forwarded write carries the client's timeout), plus a margin.
    fn send_timeout(&self, request: &PeerRequest) -> Duration {
        let client_timeout = match &request.message {
            PeerMessage::Coordinate(
                ClientRequest::Get { options, .. }
                | ClientRequest::Put { options, .. }
                | ClientRequest::Delete { options, .. },
            ) => options.timeout,
            _ => None,
        };
        client_timeout.map_or(self.request_timeout, |t| t.max(self.request_timeout))
            + SEND_TIMEOUT_MARGIN
    }

    fn snapshot(&self, books: &Books) -> Snapshot {
        Snapshot {
            node: self.node.metrics().clone(),
            storage: self.node.storage().stats(),
            listen: self.listen.stats(),
            peers: self.peers.stats(),
            in_flight: self.node.in_flight(),
            awaiting_reply: books.pending.len(),
            persists_pending: self.node.persists_pending(),
            sends_in_flight: books.sends_in_flight,
        }
    }
}

/// Sends one peer request and reads the answer, telling the node what the transport knows
/// about delivery: nothing sent is `Unreachable`, possibly delivered is `Lost`.
async fn exchange(
    endpoint: &Endpoint,
    addr: SocketAddr,
    to: NodeId,
    request: PeerRequest,
    priority: Priority,
    timeout: Duration,
    limits: &DecodeLimits,
) -> Result<PeerResponse, SendError> {
    let priority = match priority {
        Priority::Normal => StreamPriority::Normal,
        Priority::Bulk => StreamPriority::Bulk,
    };
    let frame = match encode(&Request::Peer(request)) {
        Ok(frame) => frame,
        Err(error) => {
            tracing::error!(%error, "cannot encode a peer request");
            return Err(SendError::Refused(format!("could not encode: {error}")));
        }
    };
    let answer = match endpoint
        .request_with_priority(
            addr,
            ExpectedPeer::Node(to.clone()),
            frame,
            timeout,
            priority,
        )
        .await
    {
        Ok(answer) => answer,
        // The peer never saw it, but it is not the peer's fault: do not mark it down.
        Err(error @ TransportError::FrameTooLarge { .. }) => {
            return Err(SendError::Refused(error.to_string()));
        }
        Err(error) if !error.may_have_reached_peer() => {
            tracing::debug!(%to, %error, "peer unreachable");
            return Err(SendError::Unreachable);
        }
        Err(error) => {
            tracing::debug!(%to, %error, "message to peer lost");
            return Err(SendError::Lost);
        }
    };
    match decode::<Response>(&answer, limits) {
        Ok(Response::Peer(response)) => Ok(response),
        Ok(Response::Refused(refusal)) => Err(SendError::Refused(refusal.to_string())),
        Ok(other) => {
            tracing::warn!(%to, ?other, "peer answered a replica request with another kind");
            Err(SendError::Lost)
        }
        Err(error) => {
            tracing::warn!(%to, %error, "undecodable answer from peer");
            Err(SendError::Lost)
        }
    }
}

/// Sleeps until `at`, or forever when there is no deadline (the branch is disabled then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Roughly how many value bytes a response carries: what makes encoding it expensive.
fn value_bytes(response: &Response) -> usize {
    let object = |o: &Object| o.value_bytes();
    match response {
        Response::Client(c) | Response::Peer(PeerResponse::Coordinated(c)) => match c {
            ClientResponse::Read { values, .. } => values.iter().map(|v| v.len()).sum(),
            ClientResponse::Local(LocalRead::Found(o)) => object(o),
            _ => 0,
        },
        Response::Peer(PeerResponse::Replica(ReplicaResponse::Replica(LocalRead::Found(o)))) => {
            object(o)
        }
        _ => 0,
    }
}
