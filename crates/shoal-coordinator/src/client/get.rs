//! Gets: any node coordinates one. It reads its own durable replica if it is a primary, sends
//! `Read` to the other reachable primaries, merges replies as they come, answers after R (PR
//! from primaries), and once every replica asked has answered (or at the deadline) read-repairs
//! every replica that answered with something older — also those that answered after the client
//! got its reply.

use std::time::Instant;

use shoal_protocol::{ClientResponse, LocalRead, PeerMessage, ReplicaMessage, RequestError};
use shoal_storage::Storage;
use shoal_types::{Key, NodeId, PartitionId, RequestOptions};

use super::{ClientRequests, Coordination, Env, Origin, Purpose, RequestId, answer, budget};
use crate::effects::OutboundId;
use crate::effects::{Part, Priority};
use crate::quorum::{ReadProgress, ReadQuorum};

/// One get in flight.
#[derive(Debug)]
pub(super) struct GetState {
    origin: Origin,
    partition: PartitionId,
    key: Key,
    quorum: ReadQuorum,
    answered: bool,
    /// The `Read`s sent, to abandon those still out if the get is cancelled.
    reads: Vec<OutboundId>,
}

impl GetState {
    pub(super) fn origin(&self) -> Origin {
        self.origin
    }

    pub(super) fn reads(&self) -> Vec<OutboundId> {
        self.reads.clone()
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
        let primaries = env.shared.ring.primaries(partition).to_vec();
        let alive = primaries.iter().filter(|n| env.is_reachable(n)).count();
        if alive < required.r() {
            env.shared.metrics.unavailable += 1;
            let error = RequestError::Unavailable {
                required: required.r(),
                alive,
            };
            return answer(env.shared, origin, ClientResponse::Failed(error));
        }
        env.shared.metrics.gets += 1;
        let request = RequestId(env.shared.new_id());
        let mut quorum = ReadQuorum::new(required, primaries.len());
        let mut reads = Vec::with_capacity(primaries.len());
        for node in &primaries {
            if node == env.shared.id() {
                let read = env
                    .durability
                    .durable_read(&mut env.shared.metrics, partition, &key);
                quorum.add_reply(node.clone(), true, read);
            } else if env.is_reachable(node) {
                let message = PeerMessage::Replica(ReplicaMessage::Read {
                    partition,
                    key: key.clone(),
                });
                let left = budget(deadline, env.now);
                let id =
                    env.shared
                        .send(Part::Client, node.clone(), message, Priority::Normal, left);
                reads.push(id);
                let purpose = Purpose::Read {
                    request,
                    to: node.clone(),
                };
                self.outbound.insert(id, purpose);
            } else {
                quorum.add_failure();
            }
        }
        let get = GetState {
            origin,
            partition,
            key,
            quorum,
            answered: false,
            reads,
        };
        self.insert(env.shared, request, deadline, Coordination::Get(get));
        self.advance_get(env, request);
    }

    pub(super) fn read_outcome<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        request: RequestId,
        from: NodeId,
        read: Option<LocalRead>,
    ) {
        let Some(Coordination::Get(get)) = self.requests.get_mut(&request) else {
            return;
        };
        match read {
            Some(read) => get.quorum.add_reply(from, true, read),
            None => get.quorum.add_failure(),
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
        let Some(Coordination::Get(get)) = self.requests.get_mut(&request) else {
            return;
        };
        if !get.answered {
            match get.quorum.progress() {
                ReadProgress::Waiting => {}
                ReadProgress::Enough => {
                    get.answered = true;
                    let merged = get.quorum.merged();
                    let response = ClientResponse::Read {
                        values: merged.values(),
                        context: merged.context(),
                    };
                    answer(env.shared, get.origin, response);
                }
                ReadProgress::Failed(error) => {
                    get.answered = true;
                    env.shared.metrics.quorum_failures += 1;
                    answer(env.shared, get.origin, ClientResponse::Failed(error));
                }
            }
        }
        if get.answered
            && get.quorum.is_complete()
            && let Some(Coordination::Get(get)) = self.remove(env.shared, request)
        {
            self.read_repair(env, &get);
        }
    }

    /// Sends the merged object to every replica that answered with something older.
    fn read_repair<S: Storage>(&mut self, env: &mut Env<'_, S>, get: &GetState) {
        let merged = get.quorum.merged();
        for node in get.quorum.stale_replicas() {
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
                let id = env
                    .shared
                    .send(Part::Client, node, message, Priority::Normal, None);
                self.outbound.insert(id, Purpose::Repair);
            }
        }
    }
}
