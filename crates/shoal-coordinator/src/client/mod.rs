//! Client requests: the gets, puts and deletes this node coordinates, and the writes it forwards
//! to a primary because it holds no replica of the key.
//!
//! Each request in flight is one [`Coordination`], named by a [`RequestId`] with its deadline in
//! the timer table ([`Timer::Request`]). A get asks the key's primaries, answers after R replies
//! merged ([`get`]) and then read-repairs every replica that answered older; a put or delete is
//! coordinated by a primary, which makes the dot, persists locally and replicates at once, and
//! answers after W durable acks ([`put`]); a write that lands elsewhere is forwarded to one
//! primary at a time, and tried on the next only when the one before surely did not apply it
//! ([`forward`]). The quorum arithmetic is in [`crate::quorum`]; this part keeps the state
//! around it.
//!
//! Not here: the replica side of these messages (`crate::replica`), whether peers are reachable
//! (`crate::membership`, asked), and how objects become durable (`crate::durability`, asked).

mod context;
mod forward;
mod get;
mod put;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_protocol::{
    ClientRequest, ClientResponse, HintResponse, PeerError, PeerResponse, ReplicaResponse,
    RequestError, Response,
};
use shoal_ring::Target;
use shoal_storage::Storage;
use shoal_types::{Key, NodeId, PartitionId, RequestOptions};

use crate::SendError;
use crate::durability::Durability;
use crate::effects::{self, InboundId, Shared};
use crate::hints::Hints;
use crate::membership::Membership;
use crate::replica::sendable;
use crate::timers::Timer;

use self::forward::ForwardState;
use self::get::GetState;
use self::put::PutState;

/// Names one request this node coordinates (or forwards) until it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RequestId(pub(crate) u64);

/// What the client-requests part borrows of the rest of the node for one input.
pub(crate) struct Env<'a, S> {
    pub(crate) shared: &'a mut Shared,
    pub(crate) durability: &'a mut Durability<S>,
    pub(crate) membership: &'a Membership,
    pub(crate) hints: &'a mut Hints,
    pub(crate) now: Instant,
}

impl<S> Env<'_, S> {
    fn is_reachable(&self, node: &NodeId) -> bool {
        node == self.shared.id() || self.membership.is_reachable(node)
    }

    /// Where a request for `partition` goes (a sloppy quorum): each reachable primary, then
    /// for each primary judged down the next reachable fallback in ring order, standing in
    /// for it. This node is reachable to itself.
    /// With hints off (`HintsConfig::enabled`), no fallback stands in: the reachable primaries.
    fn targets(&self, partition: PartitionId) -> Vec<Target> {
        let mut targets = self
            .shared
            .ring
            .sloppy_preference_list(partition, |n| !self.is_reachable(n));
        if !self.shared.config.hints.enabled {
            targets.retain(Target::is_primary);
        }
        targets
    }

    /// The targets of a request for `partition` that needs `required` distinct nodes, `of`
    /// them primaries, with how many are primaries; or why it cannot be tried at all:
    /// `Unavailable` when fewer than `required` nodes can be, `PrimariesUnavailable` (naming
    /// the primaries judged down) when fewer than `of` primaries can. Both are definite.
    fn targets_for(
        &mut self,
        partition: PartitionId,
        required: usize,
        of: usize,
    ) -> Result<(Vec<Target>, usize), RequestError> {
        let targets = self.targets(partition);
        let primaries = targets.iter().filter(|t| t.is_primary()).count();
        let error = if targets.len() < required {
            RequestError::Unavailable {
                required,
                alive: targets.len(),
            }
        } else if primaries < of {
            let missing = self.shared.ring.primaries(partition).iter();
            RequestError::PrimariesUnavailable {
                required: of,
                missing: missing.filter(|n| !self.is_reachable(n)).cloned().collect(),
            }
        } else {
            return Ok((targets, primaries));
        };
        self.shared.metrics.unavailable += 1;
        Err(error)
    }

    /// `down`, one of `tried` (the targets of a request for `partition`), could not be
    /// reached: the next reachable fallback not among `tried` stands in for the primary it is
    /// or stood in for. Returns that stand-in and whether `down` was a primary; `None` when
    /// `down` is not a target or no fallback is left.
    fn stand_in(
        &self,
        partition: PartitionId,
        tried: &[Target],
        down: &NodeId,
    ) -> Option<(Target, bool)> {
        if !self.shared.config.hints.enabled {
            return None;
        }
        let was = tried.iter().find(|t| t.node == *down)?;
        let me = self.shared.id();
        let fallback =
            self.shared.ring.fallbacks(partition).find(|n| {
                *n != me && self.is_reachable(n) && !tried.iter().any(|t| t.node == **n)
            })?;
        let target = Target {
            node: fallback.clone(),
            stands_in_for: Some(was.primary().clone()),
        };
        Some((target, was.is_primary()))
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ClientRequests {
    /// Every request in flight, with the instant its [`Timer::Request`] is set for. Boxed: a
    /// coordination is hundreds of bytes, which a B-tree would move on every insert and
    /// removal next to it (13 % of a get's time in the coordinator bench went to those moves).
    requests: Requests,
    /// The request each inbound id is being served by, for cancellation.
    by_origin: BTreeMap<InboundId, RequestId>,
    /// Of `requests`, the gets already answered that wait for their last replicas only to
    /// read-repair them: they hold no slot of `max_in_flight`.
    repairing: usize,
}

/// Who gets the answer of a coordinated request, and how it is wrapped.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin {
    /// A client (or admin) asked this node directly.
    Client(InboundId),
    /// A peer forwarded a write here (`PeerMessage::Coordinate`).
    Forwarded(InboundId),
}

impl Origin {
    fn inbound(self) -> InboundId {
        match self {
            Origin::Client(id) | Origin::Forwarded(id) => id,
        }
    }
}

type Requests = BTreeMap<RequestId, (Instant, Box<Coordination>)>;

/// Request `id`'s deadline and coordination.
fn entry(requests: &Requests, id: RequestId) -> Option<(&Instant, &Coordination)> {
    requests.get(&id).map(|(deadline, c)| (deadline, &**c))
}

/// Request `id`'s deadline and coordination, to change.
fn entry_mut(requests: &mut Requests, id: RequestId) -> Option<(&mut Instant, &mut Coordination)> {
    requests
        .get_mut(&id)
        .map(|(deadline, c)| (deadline, &mut **c))
}

#[derive(Debug)]
enum Coordination {
    Get(GetState),
    Put(PutState),
    Forward(ForwardState),
}

impl Coordination {
    /// Whether the request's answer has gone out (what remains is read repair).
    fn answered(&self) -> bool {
        match self {
            Coordination::Get(get) => get.answered(),
            Coordination::Put(put) => put.answered(),
            Coordination::Forward(_) => false,
        }
    }

    fn origin(&self) -> Origin {
        match self {
            Coordination::Get(get) => get.origin(),
            Coordination::Put(put) => put.origin(),
            Coordination::Forward(fwd) => fwd.origin(),
        }
    }
}

/// How long a request whose deadline is `deadline` has left at `now`: the budget its messages
/// carry.
fn budget(deadline: Instant, now: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(now))
}

/// What a message this part sent was for (recorded with the message in
/// [`Shared`](crate::effects::Shared), which hands it back with the answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A write forwarded to a primary.
    Forward(RequestId),
    /// A coordinated write sent to another primary (`primary`), or to a fallback standing in
    /// for one.
    Replicate {
        /// The write.
        request: RequestId,
        /// Whether the target is a primary (its ack counts toward PW).
        primary: bool,
    },
    /// A get's read of another primary's replica.
    Read(RequestId),
    /// A read repair: nobody waits for it.
    Repair,
}

impl ClientRequests {
    pub(crate) fn new() -> ClientRequests {
        ClientRequests {
            requests: BTreeMap::new(),
            by_origin: BTreeMap::new(),
            repairing: 0,
        }
    }

    /// Requests being coordinated or forwarded, answered gets still read-repairing included.
    pub(crate) fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// A request from a client (`Origin::Client`) or a write a peer forwarded here
    /// (`Origin::Forwarded`, with the time its sender had left: `budget`). It arrived at
    /// `arrived` (it may have waited in the driver's queue since): its deadline counts from
    /// then, and a request whose deadline passed while it waited is refused unworked.
    pub(crate) fn request<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        origin: Origin,
        request: ClientRequest,
        arrived: Instant,
        budget: Option<Duration>,
    ) {
        let options = match &request {
            ClientRequest::Get { options, .. }
            | ClientRequest::Put { options, .. }
            | ClientRequest::Delete { options, .. } => *options,
            ClientRequest::GetLocal { .. } | ClientRequest::Ring => RequestOptions::default(),
        };
        let deadline = match request {
            ClientRequest::Get { .. }
            | ClientRequest::Put { .. }
            | ClientRequest::Delete { .. } => {
                match self.deadline_of(env, &options, arrived, budget) {
                    Ok(deadline) => deadline,
                    Err(error) => return answer(env.shared, origin, ClientResponse::Failed(error)),
                }
            }
            ClientRequest::GetLocal { .. } | ClientRequest::Ring => env.now,
        };
        match request {
            ClientRequest::Get { key, options } => {
                self.start_get(env, origin, key, options, deadline)
            }
            ClientRequest::Put { ref value, .. }
                if value.len() > env.shared.config.limits.max_value_bytes() =>
            {
                let error = RequestError::ValueTooLarge {
                    size: value.len(),
                    max: env.shared.config.limits.max_value_bytes(),
                };
                answer(env.shared, origin, ClientResponse::Failed(error));
            }
            ClientRequest::Put { .. } | ClientRequest::Delete { .. } => {
                self.start_write(env, origin, request, deadline)
            }
            ClientRequest::GetLocal { key } => {
                let partition = env.shared.ring.partition_for_key(&key);
                let read = env
                    .durability
                    .durable_read(&mut env.shared.metrics, partition, &key);
                let read = sendable(read, env.shared.config.limits.max_object_bytes());
                answer(env.shared, origin, ClientResponse::Local(read));
            }
            ClientRequest::Ring => {
                let ring = env.shared.ring.clone();
                answer(env.shared, origin, ClientResponse::Ring(ring));
            }
        }
    }

    /// The outcome of a message this part sent to `to` for `purpose`.
    pub(crate) fn response<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        to: NodeId,
        purpose: Purpose,
        result: Result<PeerResponse, SendError>,
    ) {
        match purpose {
            Purpose::Forward(request) => self.forward_outcome(env, request, result),
            Purpose::Replicate { request, primary } => {
                if matches!(result, Err(SendError::Unreachable))
                    && self.stand_in_for_write(env, request, &to)
                {
                    return;
                }
                let acked = matches!(
                    result,
                    Ok(PeerResponse::Replica(ReplicaResponse::Stored)
                        | PeerResponse::Hint(HintResponse::Stored))
                );
                self.replicate_outcome(env, request, &to, primary, acked);
            }
            Purpose::Read(request) => {
                if matches!(result, Err(SendError::Unreachable))
                    && self.stand_in_for_read(env, request, &to)
                {
                    return;
                }
                let read = match result {
                    Ok(PeerResponse::Replica(ReplicaResponse::Replica(read)))
                    | Ok(PeerResponse::Hint(HintResponse::Held(read))) => Some(read),
                    _ => None,
                };
                self.read_outcome(env, request, to, read);
            }
            Purpose::Repair => {}
        }
    }

    /// The persist that request `token` waited for (its coordinator's own write) ended.
    pub(crate) fn persisted<S: Storage>(&mut self, env: &mut Env<'_, S>, token: u64, ok: bool) {
        self.coordinator_write_outcome(env, RequestId(token), ok);
    }

    /// [`Timer::Request`] fired: the request's deadline passed.
    pub(crate) fn deadline<S: Storage>(&mut self, env: &mut Env<'_, S>, request: RequestId) {
        let Some((_, coordination)) = self.take(request) else {
            return;
        };
        self.by_origin.remove(&coordination.origin().inbound());
        match coordination {
            Coordination::Get(get) => self.get_expired(env, get),
            Coordination::Put(put) => {
                put.hold_for_unacked(env);
                put.hand_to_reaper(env.shared);
                put.expired(env.shared)
            }
            Coordination::Forward(fwd) => fwd.expired(env.shared),
        }
    }

    /// The client behind inbound request `id` gave up on it: stop spending on it. Nothing is
    /// answered; reads and forwards still out are abandoned (their peers may drop them
    /// unstarted). A write already handed to storage and replicas stays where it went: its
    /// outcome is the client's to find out, as after a timeout.
    pub(crate) fn cancel<S: Storage>(&mut self, env: &mut Env<'_, S>, id: InboundId) {
        let Some(request) = self.by_origin.remove(&id) else {
            return;
        };
        let Some(coordination) = self.remove(env.shared, request) else {
            return;
        };
        env.shared.metrics.cancelled += 1;
        match &coordination {
            Coordination::Get(_) => env
                .shared
                .abandon_all(effects::Purpose::Client(Purpose::Read(request))),
            Coordination::Forward(fwd) => {
                if let Some(out) = fwd.sent() {
                    env.shared.abandon(out);
                }
            }
            Coordination::Put(_) => {}
        }
    }

    // ---- shared by gets, puts and forwards ---------------------------------------------

    /// The deadline of a request that arrived at `arrived`, or why it is refused at once: a
    /// timeout that is zero or over the node's maximum, or a deadline that passed while the
    /// request waited to be worked on (`Overloaded`: nothing was done, so the client may retry).
    /// A forwarded request keeps no more than its sender's `budget`.
    fn deadline_of<S>(
        &self,
        env: &mut Env<'_, S>,
        options: &RequestOptions,
        arrived: Instant,
        budget: Option<Duration>,
    ) -> Result<Instant, RequestError> {
        let config = &env.shared.config;
        let asked = options.timeout.unwrap_or(config.request_timeout);
        let max = config.max_request_timeout;
        if asked.is_zero() || asked > max {
            return Err(RequestError::InvalidTimeout { asked, max });
        }
        let timeout = budget.map_or(asked, |b| b.min(asked));
        let deadline = arrived
            .checked_add(timeout)
            .ok_or(RequestError::InvalidTimeout { asked, max })?;
        if deadline <= env.now {
            env.shared.metrics.expired_client += 1;
            return Err(RequestError::Overloaded);
        }
        Ok(deadline)
    }

    /// Starts tracking `coordination` until `deadline`.
    fn insert(
        &mut self,
        shared: &mut Shared,
        request: RequestId,
        deadline: Instant,
        coordination: Coordination,
    ) {
        self.by_origin
            .insert(coordination.origin().inbound(), request);
        self.requests
            .insert(request, (deadline, Box::new(coordination)));
        shared.timers.schedule(deadline, Timer::Request(request));
    }

    /// Stops tracking `request` before its deadline.
    fn remove(&mut self, shared: &mut Shared, request: RequestId) -> Option<Coordination> {
        let (deadline, coordination) = self.take(request)?;
        shared.timers.cancel(deadline, Timer::Request(request));
        let inbound = coordination.origin().inbound();
        if self.by_origin.get(&inbound) == Some(&request) {
            self.by_origin.remove(&inbound);
        }
        Some(coordination)
    }

    /// Forgets `request`, keeping the count of answered ones true.
    fn take(&mut self, request: RequestId) -> Option<(Instant, Coordination)> {
        let (deadline, coordination) = self.requests.remove(&request)?;
        if coordination.answered() {
            self.repairing -= 1;
        }
        Some((deadline, *coordination))
    }

    /// Counts a request, still tracked, that has just been answered. Returns whether it may
    /// keep waiting for late replies: not beyond `max_in_flight` answered requests, so that
    /// what they hold stays bounded.
    fn mark_answered(&mut self, shared: &Shared) -> bool {
        self.repairing += 1;
        self.repairing <= shared.config.max_in_flight
    }

    /// Refuses a request before any work, when it is too big or the node too busy.
    fn refuse_early(&self, shared: &mut Shared, key: &Key) -> Option<RequestError> {
        let limits = &shared.config.limits;
        if key.len() > limits.max_key_bytes() {
            return Some(RequestError::KeyTooLarge {
                size: key.len(),
                max: limits.max_key_bytes(),
            });
        }
        // An answered request that waits only to repair late replicas holds no slot.
        if self.requests.len().saturating_sub(self.repairing) >= shared.config.max_in_flight {
            shared.metrics.overloaded += 1;
            return Some(RequestError::Overloaded);
        }
        None
    }
}

/// Answers the origin of a request.
fn answer(shared: &mut Shared, origin: Origin, response: ClientResponse) {
    match origin {
        Origin::Client(id) => shared.reply(id, Response::Client(response)),
        Origin::Forwarded(id) => {
            shared.reply(id, Response::Peer(PeerResponse::Coordinated(response)))
        }
    }
}

/// Refuses a forwarded write this node will not coordinate (the forwarder tries another).
fn refuse_forwarded(shared: &mut Shared, id: InboundId, error: PeerError) {
    shared.reply(id, Response::Peer(PeerResponse::Failed(error)));
}
