//! The node task: the one task that owns the [`Node`]. It feeds the node accepted requests,
//! peers' answers, commit outcomes and timeouts, and carries out every [`Output`]: replies go
//! back through the requests' responders, messages to peers leave in tasks of their own, write
//! batches go to storage's group commit. Nothing here waits on I/O.
//!
//! Accepted requests wait in the node task's [`Inbox`] until it takes them on: peer messages
//! first, client requests under controlled delay (see the `inbox` module). Each turn the task
//! takes everything already waiting — events first, since they finish work already started —
//! then works through up to [`WORK_BATCH`] queued requests, then carries out the node's
//! effects. A request whose client has gone (its stream was reset or stopped) is dropped when it
//! is taken, and one the node is working on is cancelled when a sweep finds its client gone, so
//! the node stops spending on abandoned work; an answer is not encoded for a client that is gone.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_causality::Object;
use shoal_coordinator::{InboundId, Node, OutboundId, Output, PersistId, Priority, SendError};
use shoal_protocol::{
    ClientResponse, DecodeLimits, LocalRead, PeerRequest, PeerResponse, Refusal, ReplicaResponse,
    Request, Response, decode, encode,
};
use shoal_storage::{CommitError, RedbStorage, Storage, WriteBatch};
use shoal_transport::Priority as StreamPriority;
use shoal_transport::{Endpoint, ExpectedPeer, FrameError, ResetCode, Responder, TransportError};
use shoal_types::{NodeId, RequestOptions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::accept::{self, Accepted};
use crate::inbox::{Class, Inbox, Next};
use crate::metrics::{self, MembershipSnapshot, Metrics, Op, Shed, Snapshot};

/// Responses with more value bytes than this are encoded in a task of their own.
const INLINE_ENCODE_BYTES: usize = 16 * 1024;
/// A message to a peer may take this much longer than the request it serves, so that the
/// peer's own answer (at its deadline) still arrives.
const SEND_TIMEOUT_MARGIN: Duration = RequestOptions::CLIENT_GRACE;
/// Most queued requests the node task takes on in one turn before it looks at events again.
const WORK_BATCH: usize = 64;
/// Most events taken in one turn (answers, commits), so requests are not starved.
const EVENT_BATCH: usize = 1024;
/// How often requests the node works on are checked for clients that went away.
const CANCEL_SWEEP_INTERVAL: Duration = Duration::from_millis(50);
/// Requests younger than this are not checked by the sweep: most are answered by then.
const CANCEL_SWEEP_AGE: Duration = Duration::from_millis(50);

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
    /// Client (and admin) requests from the accept task.
    pub(crate) client_requests: mpsc::Receiver<Accepted>,
    /// Peer messages from the accept task.
    pub(crate) peer_requests: mpsc::Receiver<Accepted>,
    /// Most client requests the inbox holds.
    pub(crate) client_queue: usize,
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
#[derive(Debug)]
struct Books {
    inbox: Inbox<Accepted>,
    /// Requests handed to the node, by id (ids grow, so oldest first).
    pending: BTreeMap<InboundId, Pending>,
    next_inbound: u64,
    /// Messages to peers in flight, to abort one the node abandons.
    sends: HashMap<OutboundId, AbortHandle>,
    next_sweep: Instant,
    /// Requests dropped because their client had gone: taken from the inbox, or answered.
    cancelled: u64,
}

impl NodeTask {
    /// Runs until shutdown is asked for and the node's work is done (or `shutdown_timeout`
    /// passed), then hands the node back so the caller can close its storage off the runtime.
    pub(crate) async fn run(mut self) -> Node<RedbStorage> {
        let now = Instant::now();
        let mut books = Books {
            inbox: Inbox::new(self.client_queue, now),
            pending: BTreeMap::new(),
            next_inbound: 0,
            sends: HashMap::new(),
            next_sweep: now + CANCEL_SWEEP_INTERVAL,
            cancelled: 0,
        };
        let mut accepting = true;
        let mut drain_until: Option<Instant> = None;
        loop {
            let timer = self.node.poll_timeout();
            let queued = !books.inbox.is_empty();
            tokio::select! {
                biased;
                Some(event) = self.events.recv() => self.event(&mut books, event),
                accepted = self.peer_requests.recv(), if accepting => match accepted {
                    Some(accepted) => self.queue(&mut books, Class::Peer, accepted),
                    // The accept task ended: the endpoint is closed.
                    None => accepting = false,
                },
                accepted = self.client_requests.recv(), if accepting => match accepted {
                    Some(accepted) => self.queue(&mut books, Class::Client, accepted),
                    None => accepting = false,
                },
                () = sleep_until(timer), if timer.is_some() => {
                    self.node.handle_timeout(Instant::now());
                }
                () = sleep_until(Some(books.next_sweep)) => self.sweep_cancelled(&mut books),
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
                () = std::future::ready(()), if queued => {}
            }
            self.take_waiting(&mut books);
            self.work(&mut books);
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
            && books.inbox.is_empty()
            && self.client_requests.is_empty()
            && self.peer_requests.is_empty()
    }

    /// Takes every event and request already waiting, without waiting for more: events are
    /// handled, requests queued in the inbox (so it sees the whole queue).
    fn take_waiting(&mut self, books: &mut Books) {
        for _ in 0..EVENT_BATCH {
            match self.events.try_recv() {
                Ok(event) => self.event(books, event),
                Err(_) => break,
            }
        }
        while let Ok(accepted) = self.peer_requests.try_recv() {
            self.queue(books, Class::Peer, accepted);
        }
        while let Ok(accepted) = self.client_requests.try_recv() {
            self.queue(books, Class::Client, accepted);
        }
    }

    fn queue(&mut self, books: &mut Books, class: Class, accepted: Accepted) {
        if let Some(oldest) = books.inbox.push(class, accepted) {
            self.shed(oldest, Shed::QueueFull);
        }
    }

    /// Works through up to [`WORK_BATCH`] queued requests.
    fn work(&mut self, books: &mut Books) {
        let now = Instant::now();
        for _ in 0..WORK_BATCH {
            match books.inbox.next(now) {
                Some(Next::Serve(accepted, class, waited)) => {
                    self.metrics.queued(class, waited);
                    if accepted.responder.is_cancelled() {
                        books.cancelled += 1;
                        continue;
                    }
                    self.request(books, accepted, now);
                }
                Some(Next::Shed(accepted)) => self.shed(accepted, Shed::QueueDelay),
                None => break,
            }
        }
    }

    /// Refuses a client request with `Overloaded` before any work.
    fn shed(&self, accepted: Accepted, why: Shed) {
        self.metrics.shed(Class::Client, why);
        self.metrics.refused(&Refusal::Overloaded);
        accept::respond(accepted.responder, &Response::Refused(Refusal::Overloaded));
    }

    fn request(&mut self, books: &mut Books, accepted: Accepted, now: Instant) {
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
            .handle_request(now, accepted.received, id, accepted.request);
    }

    /// Cancels the requests the node works on whose client has gone.
    fn sweep_cancelled(&mut self, books: &mut Books) {
        let now = Instant::now();
        books.next_sweep = now + CANCEL_SWEEP_INTERVAL;
        let gone: Vec<InboundId> = books
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.received) >= CANCEL_SWEEP_AGE)
            .filter(|(_, p)| p.responder.is_cancelled())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            books.pending.remove(&id);
            self.node.handle_cancel(now, id);
        }
    }

    fn event(&mut self, books: &mut Books, event: Event) {
        match event {
            Event::Response(id, result) => {
                books.sends.remove(&id);
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
                Output::Abandon { id } => {
                    if let Some(send) = books.sends.remove(&id) {
                        // Dropping the exchange resets its stream: the peer may drop the work.
                        send.abort();
                    }
                }
                Output::Persist { id, batch } => self.persist(id, batch),
            }
        }
    }

    fn reply(&mut self, books: &mut Books, id: InboundId, response: Response) {
        let Some(pending) = books.pending.remove(&id) else {
            // Cancelled by a sweep (a peer's write the node still finished): nobody to tell.
            tracing::debug!(?id, "an answer for a request whose sender has gone");
            return;
        };
        let outcome = metrics::outcome(&response);
        self.metrics
            .answered(pending.op, outcome, pending.received.elapsed());
        if pending.responder.is_cancelled() {
            books.cancelled += 1;
            return;
        }
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
        let Some(addr) = self.node.address_of(&to) else {
            // Neither in our ring nor in the membership: nothing can be sent.
            tracing::warn!(%to, "message to a node of unknown address");
            self.node
                .handle_response(Instant::now(), id, Err(SendError::Unreachable));
            return;
        };
        let timeout = self.send_timeout(&request);
        let (endpoint, events, limits) = (self.peers.clone(), self.events_tx.clone(), self.limits);
        let task = tokio::spawn(async move {
            let result = exchange(&endpoint, addr, to, request, priority, timeout, &limits).await;
            // The node task is gone only after shutdown; then nobody needs the answer.
            let _ = events.send(Event::Response(id, result));
        });
        books.sends.insert(id, task.abort_handle());
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

    /// How long a message may wait for its answer: as long as the request it serves has left
    /// (its budget), plus a margin; background messages get the default request timeout.
    fn send_timeout(&self, request: &PeerRequest) -> Duration {
        request.budget.unwrap_or(self.request_timeout) + SEND_TIMEOUT_MARGIN
    }

    fn snapshot(&self, books: &Books) -> Snapshot {
        Snapshot {
            node: self.node.metrics().clone(),
            storage: self.node.storage().stats(),
            trees: self.node.storage().trees_status(),
            listen: self.listen.stats(),
            peers: self.peers.stats(),
            in_flight: self.node.in_flight(),
            awaiting_reply: books.pending.len(),
            persists_pending: self.node.persists_pending(),
            hints_pending: self.node.hints_pending(),
            sends_in_flight: books.sends.len(),
            queued_client: books.inbox.len(Class::Client) + self.client_requests.len(),
            queued_peer: books.inbox.len(Class::Peer) + self.peer_requests.len(),
            cancelled_unworked: books.cancelled,
            storage_failed: self.node.storage_failed().is_some(),
            matched_all_ago: self.matched_all_ago(Instant::now()),
            membership: MembershipSnapshot {
                ring_epoch: self.node.ring().epoch().get(),
                hash: self.node.membership_hash(),
                peers: self
                    .node
                    .peers(Instant::now())
                    .into_iter()
                    .map(|p| (p.node, p.phi, p.reachable))
                    .collect(),
            },
        }
    }

    /// For each partition this node is a primary of, with at least one other primary, how long
    /// ago it last matched all of them (`None`: not since it started).
    fn matched_all_ago(&self, now: Instant) -> Vec<Option<Duration>> {
        let ring = self.node.ring();
        let me = self.node.id();
        let known: BTreeMap<_, _> = self
            .node
            .divergence(now)
            .into_iter()
            .map(|d| (d.partition, d.matched_all_ago))
            .collect();
        ring.q()
            .partitions()
            .filter(|p| ring.is_primary(me, *p) && ring.primaries(*p).len() > 1)
            .map(|p| known.get(&p).copied().flatten())
            .collect()
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
            // A bug (every message encodes): nothing was sent, but say nothing about the peer,
            // and let a write's outcome stay unknown rather than claim it failed.
            tracing::error!(%error, "cannot encode a peer request");
            return Err(SendError::Lost);
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
        Err(error) => {
            tracing::debug!(%to, %error, "message to peer failed");
            return Err(send_error(&error));
        }
    };
    match decode::<Response>(&answer, limits) {
        Ok(Response::Peer(response)) => Ok(response),
        Ok(Response::Refused(refusal)) => Err(SendError::Refused(refusal)),
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

/// What a failed exchange tells the node: whether the message was delivered, and whether the
/// peer is there. A frame over a limit — ours, the peer's for our request, or the peer's for its
/// answer — says the peer is there: it must never be taken for an unreachable one.
fn send_error(error: &TransportError) -> SendError {
    match error {
        // Not sent, and not the peer's fault.
        TransportError::FrameTooLarge { len, max } => SendError::TooLarge {
            len: *len,
            max: *max,
        },
        // The peer refused our frame: not delivered, but it answered.
        TransportError::Reset {
            code: ResetCode::BadFrame,
            ..
        } => SendError::FrameRefused,
        // Handled there, but the answer could not come.
        TransportError::Reset {
            code: ResetCode::ResponseTooLarge,
            ..
        }
        | TransportError::BadResponse {
            source: FrameError::TooLarge { .. },
            ..
        } => SendError::AnswerTooLarge,
        error if !error.may_have_reached_peer() => SendError::Unreachable,
        _ => SendError::Lost,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7001))
    }

    #[test]
    fn a_size_refusal_is_never_taken_for_an_unreachable_peer() {
        let reset = |code| TransportError::Reset { addr: addr(), code };
        let cases = [
            (
                TransportError::FrameTooLarge { len: 20, max: 10 },
                SendError::TooLarge { len: 20, max: 10 },
            ),
            (reset(ResetCode::BadFrame), SendError::FrameRefused),
            (
                reset(ResetCode::ResponseTooLarge),
                SendError::AnswerTooLarge,
            ),
            (
                TransportError::BadResponse {
                    addr: addr(),
                    source: FrameError::TooLarge { len: 20, max: 10 },
                },
                SendError::AnswerTooLarge,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(send_error(&error), expected, "{error}");
        }
    }

    #[test]
    fn delivery_is_reported_as_the_transport_knows_it() {
        let unreachable = TransportError::Unreachable {
            addr: addr(),
            reason: "refused".into(),
        };
        assert_eq!(send_error(&unreachable), SendError::Unreachable);
        let lost = TransportError::ConnectionLost {
            addr: addr(),
            reason: "reset".into(),
        };
        assert_eq!(send_error(&lost), SendError::Lost);
    }
}
