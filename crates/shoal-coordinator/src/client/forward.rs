//! Forwarding: a put or delete that lands on a node that cannot coordinate it goes to one
//! reachable primary at a time (a random first one, to spread the load, then the others in ring
//! order). The next primary is tried only when the last one surely did not apply the write
//! (unreachable, or refused it before any processing): trying another after a primary that may
//! have applied it would apply it a second time under a second dot — false concurrency, and a
//! definite refusal there would hide the first attempt — so the outcome is then unknown.

use std::time::Instant;

use rand::RngExt;
use shoal_protocol::{ClientRequest, ClientResponse, PeerMessage, PeerResponse, RequestError};
use shoal_storage::Storage;
use shoal_types::{NodeId, RequestOptions};

use super::{
    ClientRequests, Coordination, Env, Origin, Purpose, RequestId, answer, budget, entry_mut,
};
use crate::SendError;
use crate::effects::{self, OutboundId, Priority, Shared};

/// One forwarded write in flight.
#[derive(Debug)]
pub(super) struct ForwardState {
    origin: Origin,
    request: ClientRequest,
    /// Primaries not tried yet, in the order to try them (the next one last).
    candidates: Vec<NodeId>,
    /// Whether an earlier attempt may have reached a primary (so failure is indeterminate).
    maybe_applied: bool,
    required: usize,
    /// The request's own deadline (the forwarder waits a little longer, see `start_forward`).
    deadline: Instant,
    /// The attempt out now.
    sent: Option<OutboundId>,
}

impl ForwardState {
    pub(super) fn origin(&self) -> Origin {
        self.origin
    }

    pub(super) fn sent(&self) -> Option<OutboundId> {
        self.sent
    }

    /// The deadline passed with no answer from any primary.
    pub(super) fn expired(self, shared: &mut Shared) {
        shared.metrics.timeouts += 1;
        let error = RequestError::Timeout {
            required: self.required,
            answered: 0,
        };
        answer(shared, self.origin, ClientResponse::Failed(error));
    }
}

impl ClientRequests {
    pub(super) fn start_forward<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        origin: Origin,
        request: ClientRequest,
        primaries: &[NodeId],
        required: usize,
        deadline: Instant,
    ) {
        let mut candidates: Vec<NodeId> = primaries
            .iter()
            .filter(|n| *n != env.shared.id() && env.is_reachable(n))
            .cloned()
            .collect();
        if candidates.is_empty() {
            env.shared.metrics.unavailable += 1;
            let error = RequestError::Unavailable { required, alive: 0 };
            return answer(env.shared, origin, ClientResponse::Failed(error));
        }
        let first = env.shared.rng.random_range(0..candidates.len());
        candidates.rotate_left(first);
        candidates.reverse();
        env.shared.metrics.forwarded += 1;
        let id = RequestId(env.shared.new_id());
        let fwd = ForwardState {
            origin,
            request,
            candidates,
            maybe_applied: false,
            required,
            deadline,
            sent: None,
        };
        // The primary answers at the request's deadline; its answer needs time to arrive.
        let wait = deadline + RequestOptions::FORWARD_GRACE;
        self.insert(env.shared, id, wait, Coordination::Forward(fwd));
        self.forward_next(env, id);
    }

    pub(super) fn forward_outcome<S: Storage>(
        &mut self,
        env: &mut Env<'_, S>,
        id: RequestId,
        result: Result<PeerResponse, SendError>,
    ) {
        let Some((_, Coordination::Forward(fwd))) = entry_mut(&mut self.requests, id) else {
            return;
        };
        match result {
            Ok(PeerResponse::Coordinated(response)) => {
                let origin = fwd.origin;
                self.remove(env.shared, id);
                answer(env.shared, origin, response);
            }
            // Refused before processing: nothing applied there, try the next primary.
            Ok(PeerResponse::Failed(_))
            | Err(
                SendError::Unreachable
                | SendError::Refused(_)
                | SendError::TooLarge { .. }
                | SendError::FrameRefused,
            ) => self.forward_next(env, id),
            // The primary may have applied the write: see the module docs.
            Ok(_) | Err(SendError::Lost | SendError::AnswerTooLarge) => {
                fwd.maybe_applied = true;
                fwd.candidates.clear();
                self.forward_next(env, id);
            }
        }
    }

    fn forward_next<S: Storage>(&mut self, env: &mut Env<'_, S>, id: RequestId) {
        let Some((_, Coordination::Forward(fwd))) = entry_mut(&mut self.requests, id) else {
            return;
        };
        if fwd.deadline <= env.now {
            // No time left to try another primary.
            fwd.candidates.clear();
        }
        match fwd.candidates.pop() {
            Some(to) => {
                // The primary gets what is left of the deadline, not the client's whole timeout.
                let left = budget(fwd.deadline, env.now);
                let mut request = fwd.request.clone();
                if let ClientRequest::Put { options, .. } | ClientRequest::Delete { options, .. } =
                    &mut request
                {
                    options.timeout = left;
                }
                let message = PeerMessage::Coordinate(request);
                let purpose = effects::Purpose::Client(Purpose::Forward(id));
                let out = env
                    .shared
                    .send(purpose, to, message, Priority::Normal, left);
                fwd.sent = Some(out);
            }
            None => {
                let error = if fwd.maybe_applied {
                    env.shared.metrics.quorum_failures += 1;
                    RequestError::QuorumFailed {
                        required: fwd.required,
                        answered: 0,
                    }
                } else {
                    env.shared.metrics.unavailable += 1;
                    RequestError::Unavailable {
                        required: fwd.required,
                        alive: 0,
                    }
                };
                let origin = fwd.origin;
                self.remove(env.shared, id);
                answer(env.shared, origin, ClientResponse::Failed(error));
            }
        }
    }
}
