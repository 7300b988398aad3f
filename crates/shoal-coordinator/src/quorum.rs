//! The quorum logic of one request as small pure values, after Riak's `get_core` and
//! `put_core`: results go in, the value says whether the request has enough, has failed, or
//! must wait, and what to do afterwards. No I/O, no clock, no node state.

use shoal_causality::{CausalContext, Object};
use shoal_protocol::{LocalRead, RequestError};
use shoal_types::{NodeId, ReadRequirement, WriteRequirement};

/// The tally of one get: replies from the replicas asked, merged as they arrive.
#[derive(Debug, Clone)]
pub struct ReadQuorum {
    required: ReadRequirement,
    asked: usize,
    /// Of `asked`, the primaries (the rest are fallbacks standing in for primaries judged
    /// down, which answer with the hint they hold).
    primaries_asked: usize,
    replies: Vec<ReadReply>,
    failures: usize,
    primary_failures: usize,
    merged: Object,
    /// Replicas that hold an object too large to send sent only its size and context: the
    /// largest size, and the join of their contexts.
    too_large: Option<(u64, CausalContext)>,
}

/// One replica's answer to a read.
#[derive(Debug, Clone)]
struct ReadReply {
    node: NodeId,
    primary: bool,
    /// What the replica holds; `None` when it holds nothing, its record is corrupt, or its
    /// object is too large to send.
    object: Option<Object>,
    /// It answered with only the context of an object too large to send (so it is not stale).
    too_large: bool,
}

/// Where a read stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadProgress {
    /// Not enough replies yet, and enough may still come.
    Waiting,
    /// R replies (PR from primaries) are in: the merged object can be answered.
    Enough,
    /// Too many replicas failed for R (or PR) to be reached, and every other replica asked
    /// has answered (so the error counts every replica that could answer).
    Failed(RequestError),
}

impl ReadQuorum {
    /// A read that asked `asked` replicas, `primaries_asked` of them primaries (the others
    /// fallbacks), and needs `required`. A fallback's reply counts toward R, never toward PR,
    /// and R is never met by fallbacks alone ([`ReadQuorum::primaries_needed`]).
    pub fn new(required: ReadRequirement, asked: usize, primaries_asked: usize) -> Self {
        ReadQuorum {
            required,
            asked,
            primaries_asked,
            replies: Vec::with_capacity(asked),
            failures: 0,
            primary_failures: 0,
            merged: Object::new(),
            too_large: None,
        }
    }

    /// Records a replica's answer. A corrupt record counts as an answer holding nothing, so
    /// read repair rewrites it; an object too large to send counts as an answer whose context
    /// joins [`ReadQuorum::too_large`].
    pub fn add_reply(&mut self, node: NodeId, primary: bool, read: LocalRead) {
        let (object, too_large) = match read {
            LocalRead::Found(o) => {
                self.merged = self.merged.merge(&o);
                (Some(o), false)
            }
            LocalRead::NotFound | LocalRead::Corrupted => (None, false),
            LocalRead::TooLarge { size, context } => {
                self.too_large = Some(match self.too_large.take() {
                    None => (size, context),
                    Some((s, c)) => (s.max(size), join(&c, &context)),
                });
                (None, true)
            }
        };
        self.replies.push(ReadReply {
            node,
            primary,
            object,
            too_large,
        });
    }

    /// When a replica answered with only the context of an object too large to send: the
    /// largest such object's value bytes, and the context of everything read (those replicas'
    /// contexts joined with the merged object's), with which a write replaces it all.
    pub fn too_large(&self) -> Option<(u64, CausalContext)> {
        let (size, context) = self.too_large.as_ref()?;
        Some((*size, join(context, &self.merged.context())))
    }

    /// Records a replica that did not answer (unreachable, error, or lost).
    pub fn add_failure(&mut self, primary: bool) {
        self.failures += 1;
        if primary {
            self.primary_failures += 1;
        }
    }

    /// A primary asked could not be reached and a fallback was asked in its place: one
    /// replica fewer asked is a primary (the number asked stays).
    pub fn stand_in(&mut self) {
        self.primaries_asked = self.primaries_asked.saturating_sub(1);
    }

    /// The primaries whose replies a read needs: PR, and at least one. A fallback holds only
    /// the hints written through it, not the key: replies from fallbacks alone would answer
    /// "not found" for a key the primaries hold.
    pub fn primaries_needed(required: ReadRequirement) -> usize {
        required.pr().max(1)
    }

    /// Where the read stands now.
    pub fn progress(&self) -> ReadProgress {
        let replies = self.replies.len();
        let primary = self.replies.iter().filter(|r| r.primary).count();
        let primaries_needed = Self::primaries_needed(self.required);
        if replies >= self.required.r() && primary >= primaries_needed {
            return ReadProgress::Enough;
        }
        let outstanding = self.outstanding();
        let primaries_outstanding = self
            .primaries_asked
            .saturating_sub(primary + self.primary_failures);
        let impossible = replies + outstanding < self.required.r()
            || primary + primaries_outstanding < primaries_needed;
        // Wait for the replicas still out before failing: a replica that fails fast (its
        // node is known gone) must not make the error undercount those that answer.
        if impossible && outstanding == 0 {
            return ReadProgress::Failed(RequestError::QuorumFailed {
                required: self.required.r(),
                answered: replies,
            });
        }
        ReadProgress::Waiting
    }

    /// The merged object of every reply so far.
    pub fn merged(&self) -> &Object {
        &self.merged
    }

    /// How many replicas have answered.
    pub fn replies(&self) -> usize {
        self.replies.len()
    }

    /// How many of the replies came from primaries (the rest from fallbacks).
    pub fn primary_replies(&self) -> usize {
        self.replies.iter().filter(|r| r.primary).count()
    }

    /// The error to give when the deadline passes before enough replies.
    pub fn timeout_error(&self) -> RequestError {
        RequestError::Timeout {
            required: self.required.r(),
            answered: self.replies.len(),
        }
    }

    /// Whether every replica asked has answered or failed.
    pub fn is_complete(&self) -> bool {
        self.outstanding() == 0
    }

    /// Read repair: the primaries that answered with something older than the merged object
    /// (including nothing, or a corrupt record). Empty when the merge is empty: there is
    /// nothing to repair with. Fallbacks are not repaired: what they hold is a hint, handed
    /// to its primary when it is back, and the primary is what a repair must reach.
    pub fn stale_replicas(&self) -> Vec<NodeId> {
        if self.merged.is_empty() {
            return Vec::new();
        }
        self.replies
            .iter()
            .filter(|r| r.primary && !r.too_large && r.object.as_ref() != Some(&self.merged))
            .map(|r| r.node.clone())
            .collect()
    }

    fn outstanding(&self) -> usize {
        self.asked
            .saturating_sub(self.replies.len() + self.failures)
    }
}

/// The context that covers what both `a` and `b` cover.
fn join(a: &CausalContext, b: &CausalContext) -> CausalContext {
    CausalContext::from(a.vector().join(b.vector()))
}

/// The tally of one put: durable acks from the replicas written, the coordinator's own
/// included.
#[derive(Debug, Clone)]
pub struct WriteQuorum {
    required: WriteRequirement,
    targets: usize,
    primary_targets: usize,
    acks: usize,
    primary_acks: usize,
    failures: usize,
    primary_failures: usize,
}

/// Where a write stands.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteProgress {
    /// Not enough acks yet, and enough may still come.
    Waiting,
    /// W durable acks (PW from primaries) are in.
    Enough,
    /// Too many replicas failed for W (or PW) to be reached, and every other target has
    /// answered (so the error counts every durable copy). Indeterminate: the write is durable
    /// on the replicas that acked and may be on those that failed.
    Failed(RequestError),
}

impl WriteQuorum {
    /// A write sent to `targets` replicas, `primary_targets` of them primaries.
    pub fn new(required: WriteRequirement, targets: usize, primary_targets: usize) -> Self {
        WriteQuorum {
            required,
            targets,
            primary_targets,
            acks: 0,
            primary_acks: 0,
            failures: 0,
            primary_failures: 0,
        }
    }

    /// A primary target could not be reached and a fallback was sent the write in its place:
    /// one target fewer is a primary (the number of targets stays).
    pub fn stand_in(&mut self) {
        self.primary_targets = self.primary_targets.saturating_sub(1);
    }

    /// Records a durable ack.
    pub fn add_ack(&mut self, primary: bool) {
        self.acks += 1;
        if primary {
            self.primary_acks += 1;
        }
    }

    /// Records a replica that did not ack.
    pub fn add_failure(&mut self, primary: bool) {
        self.failures += 1;
        if primary {
            self.primary_failures += 1;
        }
    }

    /// Where the write stands now.
    pub fn progress(&self) -> WriteProgress {
        if self.acks >= self.required.w() && self.primary_acks >= self.required.pw() {
            return WriteProgress::Enough;
        }
        let outstanding = self.targets.saturating_sub(self.acks + self.failures);
        let primary_outstanding = self
            .primary_targets
            .saturating_sub(self.primary_acks + self.primary_failures);
        let impossible = self.acks + outstanding < self.required.w()
            || self.primary_acks + primary_outstanding < self.required.pw();
        // As for reads: wait for the targets still out, so the error counts every durable ack.
        if impossible && outstanding == 0 {
            return WriteProgress::Failed(RequestError::QuorumFailed {
                required: self.required.w(),
                answered: self.acks,
            });
        }
        WriteProgress::Waiting
    }

    /// The error to give when the deadline passes before enough acks.
    pub fn timeout_error(&self) -> RequestError {
        RequestError::Timeout {
            required: self.required.w(),
            answered: self.acks,
        }
    }

    /// The error to give when the write cannot reach its quorum but may have been applied
    /// somewhere (indeterminate).
    pub fn failed_error(&self) -> RequestError {
        RequestError::QuorumFailed {
            required: self.required.w(),
            answered: self.acks,
        }
    }

    /// Whether every target has acked or failed.
    pub fn is_complete(&self) -> bool {
        self.acks + self.failures >= self.targets
    }

    /// Durable acks from primaries so far (the coordinator's own among them).
    pub fn primary_acks(&self) -> usize {
        self.primary_acks
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shoal_causality::{Actor, CausalContext, Sibling};
    use shoal_types::{Incarnation, ReplicationFactor};

    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn n3() -> ReplicationFactor {
        ReplicationFactor::new(3).unwrap()
    }

    fn written(value: &str, by: &str) -> Object {
        let actor = Actor::new(node(by), Incarnation::new(7));
        Object::new()
            .update(
                &CausalContext::empty(),
                Sibling::Value(Bytes::from(value.to_owned())),
                &actor,
                64,
            )
            .unwrap()
    }

    #[test]
    fn read_is_enough_after_r_replies_and_merges_them() {
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 2, 0).unwrap(), 3, 3);
        q.add_reply(node("a"), true, LocalRead::Found(written("x", "a")));
        assert_eq!(q.progress(), ReadProgress::Waiting);
        q.add_reply(node("b"), true, LocalRead::Found(written("y", "b")));
        assert_eq!(q.progress(), ReadProgress::Enough);
        assert_eq!(
            q.merged().values().len(),
            2,
            "concurrent writes are siblings"
        );
    }

    #[test]
    fn read_fails_when_too_many_replicas_fail_and_says_how_many_answered() {
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 3, 0).unwrap(), 3, 3);
        q.add_reply(node("a"), true, LocalRead::NotFound);
        q.add_failure(true);
        // R=3 is out of reach, but the third replica is still out: its answer is counted.
        assert_eq!(q.progress(), ReadProgress::Waiting);
        q.add_reply(node("b"), true, LocalRead::NotFound);
        assert_eq!(
            q.progress(),
            ReadProgress::Failed(RequestError::QuorumFailed {
                required: 3,
                answered: 2
            })
        );
    }

    #[test]
    fn read_with_pr_waits_for_primaries() {
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 2, 2).unwrap(), 3, 2);
        q.add_reply(node("a"), true, LocalRead::NotFound);
        q.add_reply(node("f"), false, LocalRead::NotFound);
        assert_eq!(q.progress(), ReadProgress::Waiting);
        q.add_reply(node("b"), true, LocalRead::NotFound);
        assert_eq!(q.progress(), ReadProgress::Enough);
    }

    #[test]
    fn stale_replicas_are_those_older_than_the_merge_including_late_and_corrupt_ones() {
        let x = written("x", "a");
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 2, 0).unwrap(), 3, 3);
        q.add_reply(node("a"), true, LocalRead::Found(x.clone()));
        q.add_reply(node("b"), true, LocalRead::NotFound);
        assert_eq!(q.progress(), ReadProgress::Enough);
        q.add_reply(node("c"), true, LocalRead::Corrupted);
        assert!(q.is_complete());
        assert_eq!(q.stale_replicas(), vec![node("b"), node("c")]);
    }

    #[test]
    fn nothing_to_repair_when_every_replica_is_empty() {
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 2, 0).unwrap(), 2, 2);
        q.add_reply(node("a"), true, LocalRead::NotFound);
        q.add_reply(node("b"), true, LocalRead::NotFound);
        assert!(q.stale_replicas().is_empty());
    }

    #[test]
    fn write_is_enough_after_w_acks() {
        let mut q = WriteQuorum::new(WriteRequirement::new(n3(), 2, 0).unwrap(), 3, 3);
        q.add_ack(true);
        assert_eq!(q.progress(), WriteProgress::Waiting);
        q.add_failure(true);
        assert_eq!(q.progress(), WriteProgress::Waiting);
        q.add_ack(true);
        assert_eq!(q.progress(), WriteProgress::Enough);
    }

    #[test]
    fn write_fails_indeterminately_when_w_cannot_be_reached() {
        let mut q = WriteQuorum::new(WriteRequirement::new(n3(), 3, 0).unwrap(), 3, 3);
        q.add_ack(true);
        q.add_failure(true);
        // Out of reach, but the third target is still out: its ack is counted.
        assert_eq!(q.progress(), WriteProgress::Waiting);
        q.add_ack(true);
        let WriteProgress::Failed(e) = q.progress() else {
            panic!("expected failure, got {:?}", q.progress());
        };
        assert!(e.is_indeterminate(), "{e}");
        assert_eq!(
            e,
            RequestError::QuorumFailed {
                required: 3,
                answered: 2
            }
        );
    }

    #[test]
    fn write_with_pw_counts_only_primary_acks() {
        let mut q = WriteQuorum::new(WriteRequirement::new(n3(), 2, 2).unwrap(), 3, 2);
        q.add_ack(true);
        q.add_ack(false);
        assert_eq!(q.progress(), WriteProgress::Waiting);
        q.add_failure(true);
        assert!(matches!(q.progress(), WriteProgress::Failed(_)));
    }

    // ---- sloppy quorums: fallbacks standing in for primaries judged down ----------------

    #[test]
    fn a_fallback_reply_counts_toward_r_but_not_pr() {
        // Primary c is down; fallback f stands in for it.
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 2, 0).unwrap(), 3, 2);
        q.add_reply(node("a"), true, LocalRead::Found(written("x", "a")));
        q.add_reply(node("f"), false, LocalRead::NotFound);
        assert_eq!(
            q.progress(),
            ReadProgress::Enough,
            "R=2 from a primary and a fallback"
        );
        assert_eq!((q.replies(), q.primary_replies()), (2, 1));

        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 2, 2).unwrap(), 3, 2);
        q.add_reply(node("a"), true, LocalRead::NotFound);
        q.add_reply(node("f"), false, LocalRead::NotFound);
        assert_eq!(
            q.progress(),
            ReadProgress::Waiting,
            "PR=2 needs the other primary"
        );
        q.add_failure(true);
        assert_eq!(
            q.progress(),
            ReadProgress::Failed(RequestError::QuorumFailed {
                required: 2,
                answered: 2
            }),
            "two replies, but only one primary: PR=2 is out of reach"
        );
    }

    #[test]
    fn fallbacks_alone_never_answer_a_read() {
        // One primary alive, two fallbacks standing in; R=2, PR=0. The fallbacks hold no hint
        // for the key: their two "nothing"s must not answer for the primary that holds it.
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 2, 0).unwrap(), 3, 1);
        q.add_reply(node("f"), false, LocalRead::NotFound);
        q.add_reply(node("g"), false, LocalRead::NotFound);
        assert_eq!(q.progress(), ReadProgress::Waiting, "no primary yet");
        q.add_reply(node("a"), true, LocalRead::Found(written("x", "a")));
        assert_eq!(q.progress(), ReadProgress::Enough);
        assert!(!q.merged().is_empty());
        // The primary failing instead: the read fails, it does not answer "not found".
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 2, 0).unwrap(), 3, 1);
        q.add_reply(node("f"), false, LocalRead::NotFound);
        q.add_reply(node("g"), false, LocalRead::NotFound);
        q.add_failure(true);
        assert!(matches!(q.progress(), ReadProgress::Failed(_)));
    }

    #[test]
    fn pr_is_out_of_reach_once_too_many_primaries_failed_even_with_fallbacks_out() {
        // Two primaries and one fallback asked; R=PR=2. One primary fails: PR cannot be met,
        // and the fallback's answer cannot change that, but it is waited for (it counts).
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 2, 2).unwrap(), 3, 2);
        q.add_reply(node("a"), true, LocalRead::NotFound);
        q.add_failure(true);
        assert_eq!(q.progress(), ReadProgress::Waiting);
        q.add_reply(node("f"), false, LocalRead::NotFound);
        assert!(matches!(q.progress(), ReadProgress::Failed(_)));
    }

    #[test]
    fn fallbacks_are_never_read_repaired() {
        let x = written("x", "a");
        let mut q = ReadQuorum::new(ReadRequirement::new(n3(), 3, 0).unwrap(), 3, 2);
        q.add_reply(node("a"), true, LocalRead::Found(x));
        q.add_reply(node("b"), true, LocalRead::NotFound);
        q.add_reply(node("f"), false, LocalRead::NotFound);
        assert_eq!(q.stale_replicas(), vec![node("b")]);
    }

    #[test]
    fn fallback_acks_count_toward_w_and_never_toward_pw() {
        // a is the coordinator, b a live primary, f a fallback standing in for c.
        let mut q = WriteQuorum::new(WriteRequirement::new(n3(), 2, 0).unwrap(), 3, 2);
        q.add_ack(true);
        q.add_ack(false);
        assert_eq!(
            q.progress(),
            WriteProgress::Enough,
            "W=2: a primary and a fallback"
        );

        let mut q = WriteQuorum::new(WriteRequirement::new(n3(), 3, 2).unwrap(), 3, 2);
        q.add_ack(true);
        q.add_ack(false);
        assert_eq!(q.progress(), WriteProgress::Waiting);
        q.add_ack(true);
        assert_eq!(
            q.progress(),
            WriteProgress::Enough,
            "W=3 with PW=2 from a, b and f"
        );

        let mut q = WriteQuorum::new(WriteRequirement::new(n3(), 2, 2).unwrap(), 3, 2);
        q.add_ack(true);
        q.add_ack(false);
        q.add_failure(true);
        let WriteProgress::Failed(e) = q.progress() else {
            panic!(
                "PW=2 with one primary ack must fail, got {:?}",
                q.progress()
            );
        };
        assert!(e.is_indeterminate(), "the write is durable on a and f: {e}");
    }
}
