//! Puts and deletes, coordinated by a primary of the key: it reads its local replica (what a
//! write builds on, not yet durable writes included), refuses a context that cannot be honest
//! ([`super::context`]), applies `Object::update` with the client's context and its own actor,
//! persists the result, and once it is durable here sends it to the other reachable primaries
//! (Dynamo's and Riak's order: local first) and, for each primary judged down, to the next
//! reachable fallback as a hint for it (a sloppy quorum); it answers after W durable acks, a
//! fallback's counting toward W but never toward PW, its own first among them, with the
//! writer's context plus the new dot. `Unavailable` only when fewer than W nodes can be tried
//! at all; `PrimariesUnavailable`, naming them, when fewer than PW primaries are reachable.
//!
//! Only a primary makes a dot: a fallback that did would count on from the counters of the
//! hints it holds, and after it handed a key's hint off (and removed it) it could make the
//! same dot again for another value (Riak's kv679). So a write whose primaries are all judged
//! down is `Unavailable` even when fallbacks are reachable (`docs/hints.md`). A write
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
    ClientRequest, ClientResponse, HintMessage, PeerError, PeerMessage, ReplicaMessage,
    RequestError, StorageFault,
};
use shoal_ring::Target;
use shoal_storage::Storage;
use shoal_types::{Key, NodeId, PartitionId};

use super::{
    ClientRequests, Coordination, Env, Origin, Purpose, RequestId, answer, budget, entry,
    entry_mut, refuse_forwarded,
};
use crate::durability::Local;
use crate::effects::{self, Part, Priority, Shared, Waiter};
use crate::quorum::{WriteProgress, WriteQuorum};

/// The most targets a put's other replicas and stand-ins may number (N is at most 16, and
/// each stand-in replaces a target that failed): the width of `Outgoing::awaited`.
const MAX_TARGETS: usize = 63;

/// One put or delete in flight.
#[derive(Debug)]
pub(super) struct PutState {
    origin: Origin,
    /// What the answer carries: the writer's context plus the new dot.
    answer: CausalContext,
    quorum: WriteQuorum,
    answered: bool,
    /// What goes to the other targets once the coordinator's own write is durable, and to
    /// whom (kept after it went, so that a target found unreachable can be stood in for).
    outgoing: Outgoing,
}

/// A write's object and where it goes.
#[derive(Debug)]
struct Outgoing {
    partition: PartitionId,
    key: Key,
    object: Object,
    /// The other targets: primaries, and fallbacks standing in for primaries judged down.
    replicas: Vec<Target>,
    /// Whether the object was sent (the coordinator's own write is durable).
    sent: bool,
    /// Bit i: the answer of `replicas[i]` is still awaited (once sent). A bit set, not a
    /// list, so that a put allocates nothing for it; `MAX_TARGETS` bounds the targets.
    awaited: u64,
    deadline: Instant,
}

impl PutState {
    pub(super) fn origin(&self) -> Origin {
        self.origin
    }

    pub(super) fn answered(&self) -> bool {
        self.answered
    }

    /// The write is given up on before every target answered: the coordinator holds a hint
    /// for each primary that has not taken it (see `Hints::hold_for`).
    pub(super) fn hold_for_unacked<S: Storage>(&self, env: &mut Env<'_, S>) {
        let out = &self.outgoing;
        for (i, target) in out.replicas.iter().enumerate() {
            if out.awaited & (1 << i) != 0 {
                out.hold_for(env, target);
            }
        }
    }

    /// The write is done (every target answered, or its time is up): a delete hands its key to
    /// the reaper — to reap at once if every primary acked the tombstone durably, else to
    /// check later. Only a write that was sent (durable here) and holds no value counts.
    pub(super) fn hand_to_reaper(&self, shared: &mut Shared) {
        let out = &self.outgoing;
        if !out.sent || !out.object.holds_no_value() {
            return;
        }
        let primaries = shared.ring.primaries(out.partition).len();
        shared.hand_to_reaper(effects::ReapCandidate {
            partition: out.partition,
            key: out.key.clone(),
            vv: out.object.version_vector().clone(),
            confirmed: self.quorum.primary_acks() >= primaries,
        });
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
        // A sloppy quorum: fallbacks stand in for the primaries judged down.
        let (targets, primary_targets) =
            match env.targets_for(partition, required.w(), required.pw()) {
                Ok(t) => t,
                Err(error) => return answer(env.shared, origin, ClientResponse::Failed(error)),
            };
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
        let quorum = WriteQuorum::new(required, targets.len(), primary_targets);
        let replicas: Vec<Target> = targets
            .into_iter()
            .filter(|t| t.node != *env.shared.id())
            .collect();
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
            outgoing: Outgoing {
                partition,
                key,
                object,
                awaited: 0,
                replicas,
                sent: false,
                deadline,
            },
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
        let Some((_, Coordination::Put(put))) = entry_mut(&mut self.requests, request) else {
            return;
        };
        let out = &mut put.outgoing;
        if out.sent {
            return;
        }
        if durable {
            // Sends the durable object to the other primaries, and as hints to the fallbacks
            // standing in for primaries judged down.
            put.quorum.add_ack(true);
            out.sent = true;
            for target in &out.replicas {
                send_replica(env, request, out, target);
            }
            out.awaited = (1u64 << out.replicas.len()) - 1;
        } else {
            // A failed local commit fails the write, indeterminately: nothing was sent, but a
            // later write to the key was built on it (the overlay) and may carry it out, and a
            // failed commit may have reached the disk anyway. The replicas it was not sent to
            // count as failed.
            put.quorum.add_failure(true);
            for target in &out.replicas {
                put.quorum.add_failure(target.is_primary());
            }
        }
        self.advance_put(env, request);
    }

    /// A target of `request` could not be reached (the message surely was not delivered):
    /// the next reachable fallback not yet written stands in for the primary it was or stood
    /// in for, as if that had been known before the write began. Returns whether one did.
    pub(super) fn stand_in_for_write<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        request: RequestId,
        down: &NodeId,
    ) -> bool {
        let Some((_, Coordination::Put(put))) = entry_mut(&mut self.requests, request) else {
            return false;
        };
        let out = &mut put.outgoing;
        if out.replicas.len() >= MAX_TARGETS {
            return false;
        }
        let Some((target, was_primary)) = env.stand_in(out.partition, &out.replicas, down) else {
            return false;
        };
        if was_primary {
            put.quorum.stand_in();
        }
        send_replica(env, request, out, &target);
        out.mark_answered(down);
        out.awaited |= 1 << out.replicas.len();
        out.replicas.push(target);
        true
    }

    pub(super) fn replicate_outcome<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        request: RequestId,
        to: &NodeId,
        primary: bool,
        acked: bool,
    ) {
        let Some((_, Coordination::Put(put))) = entry_mut(&mut self.requests, request) else {
            return;
        };
        let out = &mut put.outgoing;
        if let Some(target) = out.mark_answered(to)
            && !acked
        {
            // It may or may not have taken the write: the coordinator keeps a hint for it
            // (Cassandra's rule), so that it gets the write once it is back.
            out.hold_for(env, &target);
        }
        if acked {
            put.quorum.add_ack(primary);
        } else {
            put.quorum.add_failure(primary);
        }
        self.advance_put(env, request);
    }

    fn advance_put<S: Storage>(&mut self, env: &mut Env<'_, S>, request: RequestId) {
        let Some((_, Coordination::Put(put))) = entry_mut(&mut self.requests, request) else {
            return;
        };
        let mut linger = true;
        if !put.answered {
            let response = match put.quorum.progress() {
                WriteProgress::Waiting => None,
                WriteProgress::Enough => Some(ClientResponse::Written {
                    context: put.answer.clone(),
                }),
                WriteProgress::Failed(error) => {
                    env.shared.metrics.quorum_failures += 1;
                    Some(ClientResponse::Failed(error))
                }
            };
            if let Some(response) = response {
                put.answered = true;
                answer(env.shared, put.origin, response);
                // Answered: the put waits on, holding no slot, only so that a primary found
                // unreachable still gets a fallback standing in for it (every key reaches N
                // nodes while they exist). Late acks change nothing else.
                linger = self.mark_answered(env.shared);
            }
        }
        let Some((_, Coordination::Put(put))) = entry(&self.requests, request) else {
            return;
        };
        if put.answered
            && (put.quorum.is_complete() || !linger)
            && let Some(Coordination::Put(put)) = self.remove(env.shared, request)
        {
            put.hold_for_unacked(env);
            put.hand_to_reaper(env.shared);
        }
    }
}

impl Outgoing {
    /// Target `node` answered (or was stood in for): no longer awaited. Returns the target,
    /// if it was awaited.
    fn mark_answered(&mut self, node: &NodeId) -> Option<Target> {
        let i = self
            .replicas
            .iter()
            .enumerate()
            .position(|(i, t)| self.awaited & (1 << i) != 0 && t.node == *node)?;
        self.awaited &= !(1 << i);
        Some(self.replicas[i].clone())
    }

    /// The coordinator holds a hint of the write for the primary that `target` is (or stood
    /// in for).
    fn hold_for<S: Storage>(&self, env: &mut Env<'_, S>, target: &Target) {
        let primary = target.primary().clone();
        env.hints.hold_for(
            env.shared,
            env.durability,
            env.now,
            primary,
            self.partition,
            self.key.clone(),
            self.object.clone(),
        );
    }
}

/// Sends the object of `request` to `target`: a replica write to a primary, a hint to a
/// fallback standing in for one.
fn send_replica<S>(env: &mut Env<'_, S>, request: RequestId, out: &Outgoing, target: &Target) {
    let message = match &target.stands_in_for {
        None => PeerMessage::Replica(ReplicaMessage::Replicate {
            partition: out.partition,
            key: out.key.clone(),
            object: out.object.clone(),
        }),
        Some(for_primary) => {
            env.shared.metrics.hinted_writes += 1;
            PeerMessage::Hint(HintMessage::Store {
                primary: for_primary.clone(),
                partition: out.partition,
                key: out.key.clone(),
                object: out.object.clone(),
            })
        }
    };
    let left = budget(out.deadline, env.now);
    let primary = target.is_primary();
    let purpose = effects::Purpose::Client(Purpose::Replicate { request, primary });
    env.shared.send(
        purpose,
        target.node.clone(),
        message,
        Priority::Normal,
        left,
    );
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
