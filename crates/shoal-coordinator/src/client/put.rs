//! Puts and deletes, coordinated by a primary of the key: it reads its local replica (what a
//! write builds on, not yet durable writes included), refuses a context that cannot be honest
//! ([`super::context`]), applies `Object::update` with the client's context and its own actor,
//! persists the result, and once it is durable here sends it to the other reachable primaries
//! (Dynamo's and Riak's order: local first); it answers after W durable acks (PW from
//! primaries), its own first among them, with the writer's context plus the new dot. A write
//! that lands on a node outside the preference list, or on a primary that cannot coordinate it
//! (storage failed, local replica unreadable), is forwarded ([`super::forward`]).
//!
//! **Why local first.** A dot leaves this node only inside an object already durable on it. So
//! whatever a crash takes back was never seen by anyone else, the disk after any restart holds
//! every dot of this node that exists anywhere, and making the next dot from the disk's
//! counters never makes one twice (Riak's kv679): a restart, clean or not, keeps the
//! incarnation, and version vectors gain no entry per restart. The cost is one commit in series
//! before the replicas' commits (`docs/performance.md`).

use std::time::Instant;

use shoal_causality::{CausalContext, CausalityError, Object, Sibling};
use shoal_protocol::{
    ClientRequest, ClientResponse, PeerError, PeerMessage, ReplicaMessage, RequestError,
    StorageFault,
};
use shoal_storage::Storage;
use shoal_types::{Key, NodeId, PartitionId};

use super::{
    ClientRequests, Coordination, Env, Origin, Purpose, RequestId, answer, budget, refuse_forwarded,
};
use crate::durability::Local;
use crate::effects::{self, Part, Priority, Shared, Waiter};
use crate::quorum::{WriteProgress, WriteQuorum};

/// One put or delete in flight.
#[derive(Debug)]
pub(super) struct PutState {
    origin: Origin,
    /// What the answer carries: the writer's context plus the new dot.
    answer: CausalContext,
    quorum: WriteQuorum,
    answered: bool,
    /// What goes to the other primaries once the coordinator's own write is durable.
    outgoing: Option<Outgoing>,
}

/// A write waiting for its local commit before it is replicated.
#[derive(Debug)]
struct Outgoing {
    partition: PartitionId,
    key: Key,
    object: Object,
    replicas: Vec<NodeId>,
    deadline: Instant,
}

impl PutState {
    pub(super) fn origin(&self) -> Origin {
        self.origin
    }

    pub(super) fn answered(&self) -> bool {
        self.answered
    }

    /// The deadline passed: answered `Timeout` unless it was answered already.
    pub(super) fn expired(self, shared: &mut Shared) {
        if !self.answered {
            shared.metrics.timeouts += 1;
            let error = self.quorum.timeout_error();
            answer(shared, self.origin, ClientResponse::Failed(error));
        }
    }
}

impl ClientRequests {
    pub(super) fn start_write<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        origin: Origin,
        request: ClientRequest,
        deadline: Instant,
    ) {
        let (key, options) = match &request {
            ClientRequest::Put { key, options, .. }
            | ClientRequest::Delete { key, options, .. } => (key.clone(), *options),
            _ => return,
        };
        if let Some(error) = self.refuse_early(env.shared, &key) {
            return answer(env.shared, origin, ClientResponse::Failed(error));
        }
        let required = match env.shared.config.quorum.write_with(&options) {
            Ok(w) => w,
            Err(e) => {
                let error = RequestError::InvalidQuorum(e);
                return answer(env.shared, origin, ClientResponse::Failed(error));
            }
        };
        let partition = env.shared.ring.partition_for_key(&key);
        let primaries = env.shared.ring.primaries(partition).to_vec();
        let here = primaries.contains(env.shared.id());
        if !here || env.durability.failed().is_some() {
            if let Origin::Forwarded(id) = origin {
                // Never forward twice: the forwarder tries another primary.
                let error = match env.durability.failed() {
                    Some(_) => PeerError::Storage(StorageFault::RunFailed),
                    None => PeerError::NotPrimary(partition),
                };
                return refuse_forwarded(env.shared, id, error);
            }
            return self.start_forward(env, origin, request, &primaries, required.w(), deadline);
        }
        if env.durability.pending() >= env.shared.config.max_pending_persists {
            // The commit queue is full: refuse new writes before they add to it.
            env.shared.metrics.overloaded += 1;
            return answer(
                env.shared,
                origin,
                ClientResponse::Failed(RequestError::Overloaded),
            );
        }
        let alive = primaries.iter().filter(|n| env.is_reachable(n)).count();
        if alive < required.w() || alive < required.pw() {
            env.shared.metrics.unavailable += 1;
            let error = RequestError::Unavailable {
                required: required.w().max(required.pw()),
                alive,
            };
            return answer(env.shared, origin, ClientResponse::Failed(error));
        }
        let base = match env
            .durability
            .read_for_write(&mut env.shared.metrics, partition, &key)
        {
            Ok(Local::Found(o)) => o,
            Ok(Local::NotFound) => Object::new(),
            Ok(Local::Corrupted) | Err(_) => {
                // Our own latest dot for this key is unknown: making one here could reuse it.
                // Let another primary coordinate.
                let others: Vec<NodeId> = primaries
                    .iter()
                    .filter(|n| *n != env.shared.id())
                    .cloned()
                    .collect();
                if let Origin::Forwarded(id) = origin {
                    let error = PeerError::Storage(StorageFault::Unreadable);
                    return refuse_forwarded(env.shared, id, error);
                }
                return self.start_forward(env, origin, request, &others, required.w(), deadline);
            }
        };
        let (sibling, context) = match request {
            ClientRequest::Put { value, context, .. } => {
                env.shared.metrics.puts += 1;
                (Sibling::Value(value), context)
            }
            ClientRequest::Delete { context, .. } => {
                env.shared.metrics.deletes += 1;
                (Sibling::Tombstone, context)
            }
            _ => return,
        };
        let actor = env.durability.actor();
        if let Err(e) = super::context::check(&context, actor, &base) {
            let error = RequestError::InvalidContext(e);
            return answer(env.shared, origin, ClientResponse::Failed(error));
        }
        let max_siblings = env.shared.config.limits.max_siblings();
        let (object, dot) = match base.update_with_dot(&context, sibling, actor, max_siblings) {
            Ok(o) => o,
            Err(CausalityError::TooManySiblings { siblings, max }) => {
                env.shared.metrics.too_many_siblings += 1;
                let error = RequestError::TooManySiblings { siblings, max };
                return answer(env.shared, origin, ClientResponse::Failed(error));
            }
            Err(e) => {
                let error = RequestError::NodeFailed(e.to_string());
                return answer(env.shared, origin, ClientResponse::Failed(error));
            }
        };
        if let Some(error) = oversize(env.shared, &object) {
            return answer(env.shared, origin, ClientResponse::Failed(error));
        }
        let request = RequestId(env.shared.new_id());
        let mut quorum = WriteQuorum::new(required, primaries.len(), primaries.len());
        let mut replicas = Vec::with_capacity(primaries.len());
        for node in primaries.iter().filter(|n| *n != env.shared.id()) {
            if env.is_reachable(node) {
                replicas.push(node.clone());
            } else {
                quorum.add_failure(true);
            }
        }
        // Local first (see the module docs): the replicas get the object once it is durable here.
        let waiter = Waiter {
            part: Part::Client,
            token: request.0,
        };
        env.durability
            .persist(env.shared, partition, &key, object.clone(), Some(waiter));
        let put = PutState {
            origin,
            answer: super::context::written(&context, &dot),
            quorum,
            answered: false,
            outgoing: Some(Outgoing {
                partition,
                key,
                object,
                replicas,
                deadline,
            }),
        };
        self.insert(env.shared, request, deadline, Coordination::Put(put));
    }

    /// The coordinator's own write of `request` is durable (`durable`) or failed.
    pub(super) fn coordinator_write_outcome<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        request: RequestId,
        durable: bool,
    ) {
        let Some((_, Coordination::Put(put))) = self.requests.get_mut(&request) else {
            return;
        };
        let outgoing = put.outgoing.take();
        if durable {
            put.quorum.add_ack(true);
            if let Some(out) = outgoing {
                self.replicate(env, request, out);
            }
        } else {
            // A failed local commit fails the write, indeterminately: nothing was sent, but a
            // later write to the key was built on it (the overlay) and may carry it out, and a
            // failed commit may have reached the disk anyway. The replicas it was not sent to
            // count as failed.
            put.quorum.add_failure(true);
            for _ in outgoing.iter().flat_map(|o| &o.replicas) {
                put.quorum.add_failure(true);
            }
        }
        self.advance_put(env, request);
    }

    /// Sends the durable object of `request` to the other primaries.
    fn replicate<S: Storage>(&mut self, env: &mut Env<'_, S>, request: RequestId, out: Outgoing) {
        for to in out.replicas {
            let message = PeerMessage::Replica(ReplicaMessage::Replicate {
                partition: out.partition,
                key: out.key.clone(),
                object: out.object.clone(),
            });
            let left = budget(out.deadline, env.now);
            let purpose = effects::Purpose::Client(Purpose::Replicate(request));
            env.shared
                .send(purpose, to, message, Priority::Normal, left);
        }
    }

    pub(super) fn replicate_outcome<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        request: RequestId,
        acked: bool,
    ) {
        let Some((_, Coordination::Put(put))) = self.requests.get_mut(&request) else {
            return;
        };
        if acked {
            put.quorum.add_ack(true);
        } else {
            put.quorum.add_failure(true);
        }
        self.advance_put(env, request);
    }

    fn advance_put<S: Storage>(&mut self, env: &mut Env<'_, S>, request: RequestId) {
        let Some((_, Coordination::Put(put))) = self.requests.get_mut(&request) else {
            return;
        };
        if !put.answered {
            match put.quorum.progress() {
                WriteProgress::Waiting => {}
                WriteProgress::Enough => {
                    put.answered = true;
                    let context = put.answer.clone();
                    answer(env.shared, put.origin, ClientResponse::Written { context });
                }
                WriteProgress::Failed(error) => {
                    put.answered = true;
                    env.shared.metrics.quorum_failures += 1;
                    answer(env.shared, put.origin, ClientResponse::Failed(error));
                }
            }
        }
        // Answered: late acks change nothing, so the put holds no slot while a silent
        // replica runs out its timeout.
        if put.answered {
            self.mark_answered(env.shared);
            self.remove(env.shared, request);
        }
    }
}

/// Refuses a write whose object would hold more value bytes than an object may, before anything
/// is stored, so that every object a coordinator makes fits in one frame. A write with a
/// context that covers the siblings it replaces shrinks the object, and passes.
fn oversize(shared: &mut Shared, object: &Object) -> Option<RequestError> {
    let (size, max) = (
        object.value_bytes(),
        shared.config.limits.max_object_bytes(),
    );
    if size <= max {
        return None;
    }
    shared.metrics.objects_too_large += 1;
    Some(RequestError::ObjectTooLarge {
        size: size as u64,
        max: max as u64,
    })
}
