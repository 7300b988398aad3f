//! What the parts of a node share: the effect queue they push [`Output`]s onto, the timer table,
//! the ids that name inbound requests, outbound messages and persists, the node's identity and
//! ring, its counters and its seeded randomness ([`Shared`]).
//!
//! Every outbound message is recorded once, with its [`Purpose`] — the part that sent it and what
//! that part needs to handle the answer — so that its answer goes back to that part and to no
//! other; persists name their waiters by [`Part`] the same way. The driver (the
//! tokio server, the simulator, a test harness) drains the queue with
//! [`Node::poll_output`](crate::Node::poll_output) and carries each effect out.
//!
//! Not here: what any part decides. This module only carries effects.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use shoal_causality::VersionVector;
use shoal_protocol::{PeerError, PeerMessage, PeerRequest, PeerResponse, Response};
use shoal_ring::Ring;
use shoal_storage::WriteBatch;
use shoal_types::{Key, NodeId, PartitionId};

use crate::timers::TimerTable;
use crate::{NodeConfig, NodeMetrics};

/// Names one inbound request (from a client, an admin or a peer) until the node answers it
/// with [`Output::Reply`]. Chosen by the caller; unique among unanswered requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundId(pub u64);

/// An inbound request's arrival: its id, when it arrived (it may have waited in the driver's
/// queue since), and for peer messages the time their sender had left.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inbound {
    pub(crate) id: InboundId,
    pub(crate) arrived: Instant,
    pub(crate) budget: Option<Duration>,
}

impl Inbound {
    /// Whether the sender's deadline has passed: nobody waits for the answer any more. A budget
    /// too large to add to the clock never expires (and is bounded where it matters).
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.budget
            .and_then(|b| self.arrived.checked_add(b))
            .is_some_and(|deadline| deadline <= now)
    }
}

/// Names one message this node sends; its outcome comes back through
/// [`Node::handle_response`](crate::Node::handle_response).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboundId(pub u64);

/// Names one batch handed out to persist; its outcome comes back through
/// [`Node::handle_persisted`](crate::Node::handle_persisted).
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
        /// The message, in its envelope (this node as sender, its ring epoch).
        request: PeerRequest,
        /// How its bytes rank against other traffic to the same peer.
        priority: Priority,
    },
    /// The node no longer needs the answer to message `id` (the request it served was
    /// cancelled): stop sending it if it is not sent yet, and reset its stream so the peer can
    /// drop the work. Its outcome need not be reported (it would be ignored).
    Abandon {
        /// The message given up.
        id: OutboundId,
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

/// How urgently a message's bytes are sent, relative to other traffic to the same peer. The
/// server maps it to the transport's stream priority; the simulator counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Client requests and the replication that serves them.
    #[default]
    Normal,
    /// Background transfers (hinted handoff, anti-entropy, ownership handoff): sent when normal
    /// traffic leaves room.
    Bulk,
}

/// The parts of a node that wait for persists: each finished persist is routed back to the
/// parts named here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Client requests: a coordinator's own write.
    Client,
    /// The replica side: storing objects for peers.
    Replica,
    /// Hints: a fallback's hint, or objects handed off to this node.
    Hints,
    /// Anti-entropy: objects pulled from a peer, or pushed here by one.
    AntiEntropy,
    /// The reaper: a tombstone reaped here (for a peer's ask or this node's own round).
    Reaper,
}

/// Who waits for a persist: a part, and what the part calls the wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Waiter {
    pub(crate) part: Part,
    pub(crate) token: u64,
}

/// What an outbound message was for, for routing its answer: one variant per part that sends
/// (as [`Timer`](crate::timers::Timer) has one per part that sets timers), holding what that part
/// needs to handle the answer. The one record of the message: a part keeps no map of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Client requests: a read, a replication, a forward or a read repair.
    Client(crate::client::Purpose),
    /// Membership: a gossip message.
    Gossip,
    /// Hints: a handoff batch.
    Hints(crate::hints::Purpose),
    /// Anti-entropy: an ask, fetch or push of an exchange.
    AntiEntropy(crate::anti_entropy::Purpose),
    /// The reaper: a read of a primary's replica for a reap check, or a reap ask.
    Reaper(crate::reaper::Purpose),
}

/// A key another part hands to the reaper (`Shared::hand_to_reaper`): its replica here holds
/// no value, and its tombstone may now be on every primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReapCandidate {
    pub(crate) partition: PartitionId,
    pub(crate) key: Key,
    /// The tombstone's version vector.
    pub(crate) vv: VersionVector,
    /// Every primary acked the tombstone durably (the delete's coordinator saw N primary
    /// acks): reap at once. Otherwise check every primary first.
    pub(crate) confirmed: bool,
}

/// An outbound message awaiting its answer.
#[derive(Debug)]
pub(crate) struct Sent {
    /// The destination.
    pub(crate) to: NodeId,
    /// What it was for.
    pub(crate) purpose: Purpose,
}

/// What every part shares. One value, owned by the [`Node`](crate::Node), lent to each part in
/// turn.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) ring: Ring,
    pub(crate) timers: TimerTable,
    pub(crate) metrics: NodeMetrics,
    pub(crate) rng: StdRng,
    outputs: VecDeque<Output>,
    outbound: BTreeMap<OutboundId, Sent>,
    next_id: u64,
    /// Keys handed to the reaper by other parts, taken by the node after each input.
    reap_candidates: Vec<ReapCandidate>,
}

impl Shared {
    pub(crate) fn new(config: NodeConfig, ring: Ring, rng: StdRng) -> Shared {
        Shared {
            config,
            ring,
            timers: TimerTable::default(),
            metrics: NodeMetrics::default(),
            rng,
            outputs: VecDeque::new(),
            outbound: BTreeMap::new(),
            next_id: 0,
            reap_candidates: Vec::new(),
        }
    }

    /// Hands a key whose replica here holds no value to the reaper (the delete's coordinator
    /// once its write is done; anti-entropy when it ships or receives such an object). The
    /// node passes it on after the input being handled.
    pub(crate) fn hand_to_reaper(&mut self, candidate: ReapCandidate) {
        self.reap_candidates.push(candidate);
    }

    /// The keys handed to the reaper since the last call.
    pub(crate) fn take_reap_candidates(&mut self) -> Vec<ReapCandidate> {
        std::mem::take(&mut self.reap_candidates)
    }

    /// This node's id.
    pub(crate) fn id(&self) -> &NodeId {
        &self.config.id
    }

    /// A fresh id, unique within this node's run, for requests, messages and persists alike.
    pub(crate) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends `message` to `to` for `purpose`: its answer goes to the part the purpose names.
    /// `budget`: how long the request it serves has left (the receiver drops it unstarted after
    /// that).
    pub(crate) fn send(
        &mut self,
        purpose: Purpose,
        to: NodeId,
        message: PeerMessage,
        priority: Priority,
        budget: Option<Duration>,
    ) -> OutboundId {
        let id = OutboundId(self.new_id());
        self.outbound.insert(
            id,
            Sent {
                to: to.clone(),
                purpose,
            },
        );
        let request = PeerRequest {
            from: self.config.id.clone(),
            epoch: self.ring.epoch(),
            budget,
            message,
        };
        self.outputs.push_back(Output::Send {
            id,
            to,
            request,
            priority,
        });
        id
    }

    /// What message `id` was for and where it went, forgotten once asked (an answer comes once).
    pub(crate) fn answered(&mut self, id: OutboundId) -> Option<Sent> {
        self.outbound.remove(&id)
    }

    /// Gives up on message `id`: its answer, if it comes, goes to nobody. Nothing happens if it
    /// was already answered or given up.
    pub(crate) fn abandon(&mut self, id: OutboundId) {
        if self.outbound.remove(&id).is_some() {
            self.outputs.push_back(Output::Abandon { id });
        }
    }

    /// Gives up on every message still out for `purpose` (a cancelled get's reads), in the
    /// order they were sent. Cancelling is rare next to sending: a scan of the messages out
    /// costs less, overall, than a list per request kept for it.
    pub(crate) fn abandon_all(&mut self, purpose: Purpose) {
        let ids: Vec<OutboundId> = self
            .outbound
            .iter()
            .filter(|(_, sent)| sent.purpose == purpose)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.abandon(id);
        }
    }

    /// Answers inbound request `id`.
    pub(crate) fn reply(&mut self, id: InboundId, response: Response) {
        self.outputs.push_back(Output::Reply { id, response });
    }

    /// Answers peer request `id` with `error`: nothing was done.
    pub(crate) fn refuse(&mut self, id: InboundId, error: PeerError) {
        self.reply(id, Response::Peer(PeerResponse::Failed(error)));
    }

    /// If the sender of peer request `inbound` no longer waits (its deadline passed), counts it
    /// and refuses it unworked (`PeerError::Expired`). Returns whether it did.
    pub(crate) fn refuse_expired(&mut self, inbound: &Inbound, now: Instant) -> bool {
        if !inbound.expired(now) {
            return false;
        }
        self.metrics.expired_peer += 1;
        self.refuse(inbound.id, PeerError::Expired);
        true
    }

    /// Hands `batch` out to be made durable.
    pub(crate) fn persist(&mut self, id: PersistId, batch: WriteBatch) {
        self.outputs.push_back(Output::Persist { id, batch });
    }

    /// The next effect to carry out.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }
}
