//! Gets: any node coordinates one. It reads its own durable replica if it is a primary, sends
//! `Read` to the other reachable primaries and a hint read to the fallback standing in for
//! each primary judged down (a sloppy quorum: what the fallback holds for that primary), merges
//! replies as they come, answers after R (PR from primaries, and always at least one primary:
//! a fallback's reply counts toward R only, and fallbacks hold hints, not the key), and once every replica asked has answered (or at the deadline) read-repairs every
//! primary that answered with something older — also those that answered after the client got
//! its reply (unless `NodeConfig::read_repair` is off, as anti-entropy tests set it).

use std::time::Instant;

use shoal_protocol::{
    ClientResponse, HintMessage, LocalRead, PeerMessage, ReplicaMessage, RequestError,
};
use shoal_ring::Target;
use shoal_storage::Storage;
use shoal_types::{Key, NodeId, PartitionId, RequestOptions};

use super::{
    ClientRequests, Coordination, Env, Origin, Purpose, RequestId, answer, budget, entry, entry_mut,
};
use crate::effects::{self, Priority, Shared};
use crate::quorum::{ReadProgress, ReadQuorum};

/// One get in flight.
#[derive(Debug)]
pub(super) struct GetState {
    origin: Origin,
    partition: PartitionId,
    key: Key,
    quorum: ReadQuorum,
    answered: bool,
    /// Every node asked (this one included), so that a stand-in is never asked twice.
    asked: Vec<Target>,
}

impl GetState {
    pub(super) fn origin(&self) -> Origin {
        self.origin
    }

    pub(super) fn answered(&self) -> bool {
        self.answered
    }
}

impl ClientRequests {
    pub(super) fn start_get<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        origin: Origin,
        key: Key,
        options: RequestOptions,
        deadline: Instant,
    ) {
        if let Some(error) = self.refuse_early(env.shared, &key) {
            return answer(env.shared, origin, ClientResponse::Failed(error));
        }
        let required = match env.shared.config.quorum.read_with(&options) {
            Ok(r) => r,
            Err(e) => {
                let error = RequestError::InvalidQuorum(e);
                return answer(env.shared, origin, ClientResponse::Failed(error));
            }
        };
        let partition = env.shared.ring.partition_for_key(&key);
        let (targets, primary_targets) = match env.targets_for(
            partition,
            required.r(),
            ReadQuorum::primaries_needed(required),
        ) {
            Ok(t) => t,
            Err(error) => return answer(env.shared, origin, ClientResponse::Failed(error)),
        };
        env.shared.metrics.gets += 1;
        let request = RequestId(env.shared.new_id());
        let mut quorum = ReadQuorum::new(required, targets.len(), primary_targets);
        for target in &targets {
            if target.node == *env.shared.id() {
                let metrics = &mut env.shared.metrics;
                let read = match &target.stands_in_for {
                    None => env.durability.durable_read(metrics, partition, &key),
                    Some(p) => env.durability.hint_read(metrics, p, partition, &key),
                };
                quorum.add_reply(target.node.clone(), target.is_primary(), read);
            } else {
                send_read(env, request, deadline, partition, &key, target);
            }
        }
        let get = GetState {
            origin,
            partition,
            key,
            quorum,
            answered: false,
            asked: targets,
        };
        self.insert(env.shared, request, deadline, Coordination::Get(get));
        self.advance_get(env, request);
    }

    /// A node asked by `request` could not be reached (the read surely was not delivered):
    /// the next reachable fallback not yet asked is asked for the hint it holds for the
    /// primary that node was or stood in for. Returns whether one was.
    pub(super) fn stand_in_for_read<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        request: RequestId,
        down: &NodeId,
    ) -> bool {
        let Some((deadline, Coordination::Get(get))) = entry_mut(&mut self.requests, request)
        else {
            return false;
        };
        if get.answered {
            return false;
        }
        let Some((target, was_primary)) = env.stand_in(get.partition, &get.asked, down) else {
            return false;
        };
        if was_primary {
            get.quorum.stand_in();
        }
        send_read(env, request, *deadline, get.partition, &get.key, &target);
        get.asked.push(target);
        true
    }

    pub(super) fn read_outcome<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        request: RequestId,
        from: NodeId,
        read: Option<LocalRead>,
    ) {
        let Some((_, Coordination::Get(get))) = entry_mut(&mut self.requests, request) else {
            return;
        };
        let primary = env.shared.ring.is_primary(&from, get.partition);
        match read {
            Some(read) => get.quorum.add_reply(from, primary, read),
            None => get.quorum.add_failure(primary),
        }
        self.advance_get(env, request);
    }

    /// The get's deadline passed: it is answered (`Timeout`) if it was not, and repaired.
    pub(super) fn get_expired<S: Storage>(&mut self, env: &mut Env<'_, S>, get: GetState) {
        if !get.answered {
            env.shared.metrics.timeouts += 1;
            let error = get.quorum.timeout_error();
            answer(env.shared, get.origin, ClientResponse::Failed(error));
        }
        self.read_repair(env, &get);
    }

    fn advance_get<S: Storage>(&mut self, env: &mut Env<'_, S>, request: RequestId) {
        let Some((_, Coordination::Get(get))) = entry_mut(&mut self.requests, request) else {
            return;
        };
        let mut linger = true;
        if !get.answered {
            let response = match get.quorum.progress() {
                ReadProgress::Waiting => None,
                ReadProgress::Enough => Some(read_answer(env.shared, &get.quorum)),
                ReadProgress::Failed(error) => {
                    env.shared.metrics.quorum_failures += 1;
                    Some(ClientResponse::Failed(error))
                }
            };
            if let Some(response) = response {
                get.answered = true;
                answer(env.shared, get.origin, response);
                // Answered: the get waits on only to repair late replicas, and holds no slot.
                linger = self.mark_answered(env.shared);
            }
        }
        let Some((_, Coordination::Get(get))) = entry(&self.requests, request) else {
            return;
        };
        if get.answered
            && (get.quorum.is_complete() || !linger)
            && let Some(Coordination::Get(get)) = self.remove(env.shared, request)
        {
            self.read_repair(env, &get);
        }
    }

    /// Sends the merged object to every replica that answered with something older (only to
    /// this node's own replica when it is too large to send), unless read repair is off
    /// (`NodeConfig::read_repair`).
    fn read_repair<S: Storage>(&mut self, env: &mut Env<'_, S>, get: &GetState) {
        if !env.shared.config.read_repair {
            return;
        }
        let merged = get.quorum.merged();
        let sendable = merged.value_bytes() <= env.shared.config.limits.max_object_bytes();
        for node in get.quorum.stale_replicas() {
            if node != *env.shared.id() && !sendable {
                continue;
            }
            env.shared.metrics.read_repairs += 1;
            if node == *env.shared.id() {
                // Nobody waits for a local repair.
                env.durability
                    .store(env.shared, get.partition, &get.key, merged, None);
            } else {
                let message = PeerMessage::Replica(ReplicaMessage::Repair {
                    partition: get.partition,
                    key: get.key.clone(),
                    object: merged.clone(),
                });
                let purpose = effects::Purpose::Client(Purpose::Repair);
                env.shared
                    .send(purpose, node, message, Priority::Normal, None);
            }
        }
    }
}

/// Sends `request`'s read of `key` to `target`: a replica read to a primary, a hint read to a
/// fallback standing in for one.
fn send_read<S>(
    env: &mut Env<'_, S>,
    request: RequestId,
    deadline: Instant,
    partition: PartitionId,
    key: &Key,
    target: &Target,
) {
    let message = match &target.stands_in_for {
        None => PeerMessage::Replica(ReplicaMessage::Read {
            partition,
            key: key.clone(),
        }),
        Some(primary) => PeerMessage::Hint(HintMessage::Read {
            primary: primary.clone(),
            partition,
            key: key.clone(),
        }),
    };
    let left = budget(deadline, env.now);
    let purpose = effects::Purpose::Client(Purpose::Read(request));
    env.shared.send(
        purpose,
        target.node.clone(),
        message,
        Priority::Normal,
        left,
    );
}

/// The client's answer to a get that has its replies: the merged values, or, when they hold
/// more value bytes than an object may (concurrent writes accepted by different coordinators,
/// merged) or a replica could send only its context, `ReadTooLarge` with the context of
/// everything read, so that the client can overwrite or delete the key.
fn read_answer(shared: &mut Shared, quorum: &ReadQuorum) -> ClientResponse {
    let merged = quorum.merged();
    let max = shared.config.limits.max_object_bytes();
    let size = merged.value_bytes() as u64;
    let too_large = quorum.too_large();
    if too_large.is_none() && merged.value_bytes() <= max {
        return ClientResponse::Read {
            values: merged.values(),
            context: merged.context(),
        };
    }
    shared.metrics.reads_too_large += 1;
    let (largest, context) = too_large.unwrap_or_else(|| (0, merged.context()));
    ClientResponse::Failed(RequestError::ReadTooLarge {
        size: size.max(largest),
        max: max as u64,
        context,
    })
}
