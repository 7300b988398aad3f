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
//! (`crate::liveness`, asked), and how objects become durable (`crate::durability`, asked).

mod forward;
mod get;
mod put;

use std::collections::BTreeMap;
use std::time::Instant;

use shoal_causality::Actor;
use shoal_protocol::{
    ClientRequest, ClientResponse, PeerError, PeerResponse, RequestError, Response,
};
use shoal_storage::Storage;
use shoal_types::Key;

use crate::SendError;
use crate::durability::Durability;
use crate::effects::{InboundId, OutboundId, Shared};
use crate::liveness::Liveness;
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
    pub(crate) liveness: &'a Liveness,
    pub(crate) now: Instant,
}

impl<S> Env<'_, S> {
    fn is_reachable(&self, node: &shoal_types::NodeId) -> bool {
        self.liveness.is_reachable(self.shared, node, self.now)
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ClientRequests {
    /// The actor of the dots this node makes: its id and incarnation.
    actor: Actor,
    requests: BTreeMap<RequestId, Coordination>,
    /// What each message this part sent was for.
    outbound: BTreeMap<OutboundId, Purpose>,
}

/// Who gets the answer of a coordinated request, and how it is wrapped.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin {
    /// A client (or admin) asked this node directly.
    Client(InboundId),
    /// A peer forwarded a write here (`PeerMessage::Coordinate`).
    Forwarded(InboundId),
}

#[derive(Debug)]
enum Coordination {
    Get(GetState),
    Put(PutState),
    Forward(ForwardState),
}

/// What an outbound message of this part was for.
#[derive(Debug)]
enum Purpose {
    Forward(RequestId),
    Replicate(RequestId),
    Read {
        request: RequestId,
        to: shoal_types::NodeId,
    },
    Repair,
}

impl ClientRequests {
    pub(crate) fn new(actor: Actor) -> ClientRequests {
        ClientRequests {
            actor,
            requests: BTreeMap::new(),
            outbound: BTreeMap::new(),
        }
    }

    /// Requests being coordinated or forwarded.
    pub(crate) fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// A request from a client (`Origin::Client`) or a write a peer forwarded here
    /// (`Origin::Forwarded`).
    pub(crate) fn request<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        origin: Origin,
        request: ClientRequest,
    ) {
        match request {
            ClientRequest::Get { key, options } => self.start_get(env, origin, key, options),
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
                self.start_write(env, origin, request)
            }
            ClientRequest::GetLocal { key } => {
                let partition = env.shared.ring.partition_for_key(&key);
                let read = env
                    .durability
                    .durable_read(&mut env.shared.metrics, partition, &key);
                answer(env.shared, origin, ClientResponse::Local(read));
            }
            ClientRequest::Ring => {
                let ring = env.shared.ring.clone();
                answer(env.shared, origin, ClientResponse::Ring(ring));
            }
        }
    }

    /// The outcome of a message this part sent.
    pub(crate) fn response<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        id: OutboundId,
        result: Result<PeerResponse, SendError>,
    ) {
        let Some(purpose) = self.outbound.remove(&id) else {
            return;
        };
        match purpose {
            Purpose::Forward(request) => self.forward_outcome(env, request, result),
            Purpose::Replicate(request) => {
                let acked = matches!(
                    result,
                    Ok(PeerResponse::Replica(
                        shoal_protocol::ReplicaResponse::Stored
                    ))
                );
                self.replicate_outcome(env, request, acked);
            }
            Purpose::Read { request, to } => {
                let read = match result {
                    Ok(PeerResponse::Replica(shoal_protocol::ReplicaResponse::Replica(read))) => {
                        Some(read)
                    }
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
        let Some(coordination) = self.requests.remove(&request) else {
            return;
        };
        match coordination {
            Coordination::Get(get) => self.get_expired(env, get),
            Coordination::Put(put) => put.expired(env.shared),
            Coordination::Forward(fwd) => fwd.expired(env.shared),
        }
    }

    // ---- shared by gets, puts and forwards ---------------------------------------------

    /// Starts tracking `coordination` until `deadline`.
    fn insert(
        &mut self,
        shared: &mut Shared,
        request: RequestId,
        deadline: Instant,
        coordination: Coordination,
    ) {
        self.requests.insert(request, coordination);
        shared.timers.schedule(deadline, Timer::Request(request));
    }

    /// Stops tracking `request` before its deadline.
    fn remove(&mut self, shared: &mut Shared, request: RequestId) -> Option<Coordination> {
        shared.timers.cancel(Timer::Request(request));
        self.requests.remove(&request)
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
        if self.requests.len() >= shared.config.max_in_flight {
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
