//! The [`Node`]: a thin router over the node's parts. Every input goes to the part that owns
//! it — a client request to the client-requests part, a peer message to the part of its family,
//! an answer to the part that sent the message, a finished persist to the parts waiting for it,
//! a timer to the part that set it — and every part's effects go out through one queue.
//!
//! Adding a feature adds a part (a field here, a variant of [`PeerMessage`], of [`Timer`], of
//! [`Purpose`] and, if it waits for persists, of [`Part`]) and the arms that route to it; it
//! does not touch the other parts. One input goes to two parts: after each gossip round,
//! anti-entropy looks at which peers membership judges reachable (it compares with a peer
//! soon after it is back).

use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use shoal_causality::Actor;
use shoal_protocol::{
    AdminRequest, AdminResponse, HintQueue, NodeStatus, PartitionDivergence, PeerMessage,
    PeerResponse, PeerStatus, Refusal, Request, Response, TreesState,
};
use shoal_ring::Ring;
use shoal_storage::{CommitError, Storage, TreesStatus};
use shoal_types::{NodeId, PartitionId};

use crate::RepairError;
use crate::anti_entropy::AntiEntropy;
use crate::client::{ClientRequests, Env, Origin};
use crate::durability::Durability;
use crate::effects::{Inbound, InboundId, OutboundId, Output, Part, PersistId, Purpose, Shared};
use crate::hints::{Hints, Purpose as HintsPurpose};
use crate::membership::Membership;
use crate::reaper::Reaper;
use crate::replica::ReplicaSide;
use crate::timers::Timer;
use crate::{NodeConfig, NodeMetrics};

/// Why a message to a peer got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be made: the message was not delivered.
    Unreachable,
    /// The message may have been delivered, but no answer came (timeout, reset, closed, or an
    /// answer that made no sense).
    Lost,
    /// The peer refused the message before processing it.
    Refused(Refusal),
    /// This node did not send it: its frame would be over the limit (`len` bytes, at most
    /// `max`). Says nothing about the peer.
    TooLarge {
        /// The frame's length.
        len: u64,
        /// The frame limit.
        max: u32,
    },
    /// The peer reset the message as a bad frame (over its frame limit): it was not delivered,
    /// but the peer is there.
    FrameRefused,
    /// The peer handled the message, but its answer was over the frame limit (the peer reset
    /// the stream saying so, or the frame that came was too long): the message may have been
    /// applied, and the peer is there.
    AnswerTooLarge,
}

/// One Shoal node's logic. See the crate docs.
#[derive(Debug)]
pub struct Node<S> {
    shared: Shared,
    durability: Durability<S>,
    client: ClientRequests,
    replica: ReplicaSide,
    membership: Membership,
    hints: Hints,
    anti_entropy: AntiEntropy,
    reaper: Reaper,
}

impl<S: Storage> Node<S> {
    /// A node with the given identity, ring and storage, started at `now`. `seed` drives every
    /// random choice.
    pub fn new(now: Instant, config: NodeConfig, ring: Ring, storage: S, seed: u64) -> Self {
        let actor = Actor::new(config.id.clone(), config.incarnation);
        let mut shared = Shared::new(config, ring, StdRng::seed_from_u64(seed));
        let membership = Membership::new(now, &mut shared, &actor);
        let hints = Hints::new(now, &mut shared, &storage);
        let anti_entropy = AntiEntropy::new(now, &mut shared);
        let reaper = Reaper::new(now, &mut shared);
        Node {
            shared,
            durability: Durability::new(storage, actor),
            client: ClientRequests::new(),
            replica: ReplicaSide,
            membership,
            hints,
            anti_entropy,
            reaper,
        }
    }

    /// Keys waiting for a reap check.
    pub fn reap_queue(&self) -> usize {
        self.reaper.queued()
    }

    /// Passes the keys other parts handed to the reaper during the last input on to it.
    fn hand_to_reaper(&mut self, now: Instant) {
        let candidates = self.shared.take_reap_candidates();
        if !candidates.is_empty() {
            self.reaper
                .hand_over(&mut self.shared, &mut self.durability, now, candidates);
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        self.shared.id()
    }

    /// The ring this node routes with.
    pub fn ring(&self) -> &Ring {
        &self.shared.ring
    }

    /// Where to reach `node`: its address in the ring, or in its member record if it is known
    /// only through gossip (a joining node). `None` for a node this one has never heard of.
    pub fn address_of(&self, node: &NodeId) -> Option<std::net::SocketAddr> {
        match self.shared.ring.member(node) {
            Some(m) => Some(m.addr),
            None => self.membership.address_of(node),
        }
    }

    /// The node's storage.
    pub fn storage(&self) -> &S {
        self.durability.storage()
    }

    /// What the node has done so far.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.shared.metrics
    }

    /// Hints this node holds for other nodes: keys and bytes, over all targets.
    pub fn hints_pending(&self) -> (u64, u64) {
        self.hints.pending()
    }

    /// Every other member and how this node judges it at `now`: reachability, phi, last heard.
    pub fn peers(&self, now: Instant) -> Vec<PeerStatus> {
        self.membership.status(now)
    }

    /// The hash of this node's membership document (equal on nodes that agree).
    pub fn membership_hash(&self) -> u64 {
        self.membership.hash()
    }

    /// What this node knows of the divergence of each partition it is a primary of, at `now`:
    /// per other primary, the last exchange's figures (see `PartitionDivergence`).
    pub fn divergence(&self, now: Instant) -> Vec<PartitionDivergence> {
        self.anti_entropy.divergence(&self.shared, now)
    }

    /// Compares `partition` (or every partition this node is a primary of) with `peer` (or
    /// each of its other primaries) by anti-entropy now, whoever would compare them on the
    /// schedule (`shoal cluster repair`). Returns how many pairs were asked for; exchanges
    /// start as slots free up, and their outcome shows in [`Node::divergence`] and the metrics.
    pub fn repair(
        &mut self,
        now: Instant,
        partition: Option<PartitionId>,
        peer: Option<NodeId>,
    ) -> Result<usize, RepairError> {
        self.anti_entropy.repair(
            &mut self.shared,
            &mut self.durability,
            &self.membership,
            now,
            partition,
            peer,
        )
    }

    /// Requests being coordinated right now.
    pub fn in_flight(&self) -> usize {
        self.client.in_flight()
    }

    /// Whether a storage write failed in this run (with the error). The node then stops
    /// coordinating and storing writes, and the run is not recorded as a clean stop.
    pub fn storage_failed(&self) -> Option<&CommitError> {
        self.durability.failed()
    }

    /// The node's storage, for closing it once the node has stopped.
    pub fn into_storage(self) -> S {
        self.durability.into_storage()
    }

    /// Batches handed out to persist and not yet reported durable.
    pub fn persists_pending(&self) -> usize {
        self.durability.pending()
    }

    /// The next effect to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.shared.poll_output()
    }

    /// When `handle_timeout` must be called next, if anything waits for a deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.shared.timers.next()
    }

    /// An inbound request whose sender is already authorised for it (role checked, and for
    /// peer messages `from` checked against the certificate). It arrived at `arrived`, which is
    /// `now` unless it waited in the driver's queue: its deadline counts from its arrival, and
    /// a request whose deadline passed while it waited is refused unworked (`Overloaded` for a
    /// client, `Expired` for a peer).
    pub fn handle_request(
        &mut self,
        now: Instant,
        arrived: Instant,
        id: InboundId,
        request: Request,
    ) {
        match request {
            Request::Client(c) => {
                let (client, mut env) = self.client_part(now);
                client.request(&mut env, Origin::Client(id), c, arrived, None);
            }
            Request::Peer(p) => {
                self.membership.heard_from(&p.from);
                let inbound = Inbound {
                    id,
                    arrived,
                    budget: p.budget,
                };
                match p.message {
                    PeerMessage::Coordinate(c) => {
                        let (client, mut env) = self.client_part(now);
                        let origin = Origin::Forwarded(id);
                        client.request(&mut env, origin, c, arrived, p.budget);
                    }
                    PeerMessage::Replica(m) => {
                        self.replica
                            .handle(&mut self.shared, &mut self.durability, now, inbound, m)
                    }
                    PeerMessage::Ping => self.membership.serve_ping(&mut self.shared, id),
                    PeerMessage::Gossip(m) => self.membership.serve(&mut self.shared, now, id, m),
                    PeerMessage::Hint(m) => {
                        self.hints
                            .serve(&mut self.shared, &mut self.durability, now, inbound, m)
                    }
                    PeerMessage::Exchange(m) => self.anti_entropy.serve(
                        &mut self.shared,
                        &mut self.durability,
                        now,
                        inbound,
                        &p.from,
                        m,
                    ),
                    PeerMessage::Reap(m) => {
                        self.reaper
                            .serve(&mut self.shared, &mut self.durability, now, inbound, m)
                    }
                }
                self.hand_to_reaper(now);
            }
            Request::Admin(AdminRequest::Status) => {
                let status = NodeStatus {
                    node: self.shared.id().clone(),
                    incarnation: self.durability.actor().incarnation,
                    ring: self.shared.ring.clone(),
                    peers: self.membership.status(now),
                    record: self.membership.record(),
                    membership_hash: self.membership.hash(),
                    storage_healthy: self.durability.failed().is_none(),
                    trees: match self.durability.storage().trees_status() {
                        TreesStatus::Ready => TreesState::Ready,
                        TreesStatus::Building {
                            records_done,
                            records_total,
                        } => TreesState::Building {
                            records_done,
                            records_total,
                        },
                        TreesStatus::Failed => TreesState::Failed,
                    },
                    hints: self
                        .hints
                        .queues()
                        .into_iter()
                        .map(|q| HintQueue {
                            target: q.target,
                            keys: q.keys,
                            bytes: q.bytes,
                            oldest_unix_ms: q.oldest_unix_ms,
                            replaying: q.replaying,
                            replayed: q.replayed,
                        })
                        .collect(),
                    divergence: self.anti_entropy.divergence(&self.shared, now),
                };
                let response = Response::Admin(AdminResponse::Status(Box::new(status)));
                self.shared.reply(id, response);
            }
            Request::Admin(AdminRequest::Repair { partition, node }) => {
                let response = match self.repair(now, partition, node) {
                    Ok(exchanges) => AdminResponse::Repairing {
                        exchanges: exchanges as u64,
                    },
                    Err(e) => AdminResponse::RepairRefused(e.into()),
                };
                self.shared.reply(id, Response::Admin(response));
            }
        }
    }

    /// The sender of inbound request `id` gave up on it (its stream was reset, or the driver
    /// found it waited past its deadline): the node stops spending on it and answers nothing.
    /// Unknown or already answered ids are ignored.
    pub fn handle_cancel(&mut self, now: Instant, id: InboundId) {
        let (client, mut env) = self.client_part(now);
        client.cancel(&mut env, id);
    }

    /// The outcome of an [`Output::Send`].
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: OutboundId,
        result: Result<PeerResponse, SendError>,
    ) {
        let Some(sent) = self.shared.answered(id) else {
            return;
        };
        self.membership
            .observed(&mut self.shared, &sent.to, &result, now);
        match sent.purpose {
            Purpose::Client(purpose) => {
                let (client, mut env) = self.client_part(now);
                client.response(&mut env, sent.to, purpose, result);
            }
            Purpose::Gossip => self
                .membership
                .response(&mut self.shared, now, sent.to, result),
            Purpose::Hints(HintsPurpose::Handoff) => self.hints.handoff_answered(
                &mut self.shared,
                &mut self.durability,
                &self.membership,
                now,
                sent.to,
                result,
            ),
            Purpose::AntiEntropy(purpose) => self.anti_entropy.answered(
                &mut self.shared,
                &mut self.durability,
                &self.membership,
                now,
                id,
                purpose,
                result,
            ),
            Purpose::Reaper(purpose) => {
                self.reaper
                    .answered(&mut self.shared, &mut self.durability, now, purpose, result)
            }
        }
        self.hand_to_reaper(now);
    }

    /// The outcome of an [`Output::Persist`]: `Ok` once the batch is durable.
    pub fn handle_persisted(
        &mut self,
        now: Instant,
        id: PersistId,
        result: Result<(), CommitError>,
    ) {
        for waiter in self.durability.persisted(id, &result) {
            match waiter.part {
                Part::Client => {
                    let (client, mut env) = self.client_part(now);
                    client.persisted(&mut env, waiter.token, result.is_ok());
                }
                Part::Replica => self
                    .replica
                    .persisted(&mut self.shared, waiter.token, &result),
                Part::Hints => self
                    .hints
                    .persisted(&mut self.shared, now, waiter.token, &result),
                Part::AntiEntropy => self.anti_entropy.persisted(
                    &mut self.shared,
                    &mut self.durability,
                    &self.membership,
                    now,
                    waiter.token,
                    &result,
                ),
                Part::Reaper => self.reaper.persisted(
                    &mut self.shared,
                    &mut self.durability,
                    now,
                    waiter.token,
                    &result,
                ),
            }
        }
        self.hand_to_reaper(now);
    }

    /// Deadlines up to `now` have passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.shared.timers.expire(now) {
            match timer {
                Timer::Request(request) => {
                    let (client, mut env) = self.client_part(now);
                    client.deadline(&mut env, request);
                }
                Timer::Gossip => {
                    self.membership.gossip_timer(&mut self.shared, now);
                    // Who is reachable may have changed: anti-entropy compares with a peer
                    // soon after it is back.
                    self.anti_entropy
                        .look_at_peers(&mut self.shared, &self.membership, now);
                }
                Timer::Exchange => self.anti_entropy.timer(
                    &mut self.shared,
                    &mut self.durability,
                    &self.membership,
                    now,
                ),
                Timer::HintReplay => self.hints.timer(
                    &mut self.shared,
                    &mut self.durability,
                    &self.membership,
                    now,
                ),
                Timer::Reap => self
                    .reaper
                    .timer(&mut self.shared, &mut self.durability, now),
            }
            self.hand_to_reaper(now);
        }
    }

    /// The client-requests part, with what it borrows of the others.
    fn client_part(&mut self, now: Instant) -> (&mut ClientRequests, Env<'_, S>) {
        let env = Env {
            shared: &mut self.shared,
            durability: &mut self.durability,
            membership: &self.membership,
            hints: &mut self.hints,
            now,
        };
        (&mut self.client, env)
    }
}
