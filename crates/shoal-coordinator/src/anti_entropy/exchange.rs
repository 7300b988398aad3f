//! One anti-entropy exchange: two replicas of one partition compare their tictac trees level by
//! level and find the keys to repair, as a pure state machine (Riak kv_index_tictactree's
//! `aae_exchange`, without its process, its clock or its messages).
//!
//! Rounds, each asking both sides ([`Side::Local`], [`Side::Remote`]) the same question and
//! moving on only once both have answered:
//! 1. **Root.** Equal roots: the replicas hold the same data, [`Outcome::Matched`].
//! 2. **Branches.** The 32 branch hashes; the branches that differ are looked into.
//! 3. **First look.** The hashes of every segment of those branches; some differ.
//! 4. **Confirm**, `confirm_pause` later: the hashes of the segments that differed, again. A
//!    segment is *confirmed* only if it differs at both looks (the intersection of the two
//!    difference sets), so a write on its way to one replica at the first look, arrived on
//!    both at the second, is not taken for divergence.
//! 5. **Keys.** Of at most `max_segments` confirmed segments, every key with its
//!    [`ObjectDigest`], from both sides. A key only one side holds is shipped to the other; a key
//!    both hold with different digests is shipped both ways ([`Repair`]): the repair merges
//!    objects with the DVV merge, which is commutative and idempotent, so shipping both ways
//!    leaves both replicas with the merge whichever is newer, and shipping something the other
//!    side already has changes nothing.
//!
//! One confirm, at the segment level. Riak confirms twice, at its root (the branch hashes) and at
//! its branch level (the segment hashes), because its levels are kilobytes each and it caps how
//! many it fetches. Here a first look costs 512 bytes per differing branch and finds every
//! differing segment, so one pause, between the two looks at the finest level, confirms exactly
//! what a confirmed branch would have and costs the exchange one pause instead of two.
//!
//! No confirm at the key level. The keys of the confirmed segments are what an exchange costs
//! (the goal: under 64 KiB to repair one key of a partition of 1,000,000 keys, whose segments
//! hold about 1,000 keys each, some 36 KB of 20-byte keys and digests from the remote side):
//! asking for them twice would double that, past the goal. And a key taken for divergent
//! because a write to it was in flight costs one object shipped for nothing, never correctness:
//! the repair merges, and reads the object when it ships it, not when it was compared.
//!
//! The exchange only decides: the caller answers asks (from `Storage::tree` and
//! `Storage::segment_keys`, or over the network), keeps time, and carries the repair out.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use shoal_storage::{ObjectDigest, SegmentId, TictacTree};
use shoal_types::{Key, PartitionCount, PartitionId};

/// How an exchange paces and bounds itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExchangeConfig {
    /// How long after the first look at the differing segments they are looked at again (only
    /// those that differ both times are compared by key). Default 1 s: a write reaches its
    /// replicas within milliseconds (update p99 4–11 ms on this machine, stalls of 100–230 ms,
    /// `docs/performance.md`), so a look a second later sees it on both; Riak pauses 500 ms,
    /// jittered, between each of its rounds.
    pub(crate) confirm_pause: Duration,
    /// Most confirmed segments whose keys one exchange compares; the others wait for the next
    /// exchange ([`Divergence::segments_deferred`] counts them). Default 256, a quarter of the
    /// segments: a node of 60,000 keys in 256 partitions holds about 234 keys a partition,
    /// which fall into about 210 segments, so one exchange a partition refills a wiped node.
    /// Riak compares a few hundred at most (kv_index_tictactree's `MAX_RESULTS` is 128; issue
    /// 15 quotes about 576 for riak_kv), and its operators found large deltas slow to repair
    /// (riak_kv#1775).
    pub(crate) max_segments: NonZeroUsize,
    /// Most keys one side's key reply may list; a reply with more is refused
    /// ([`ExchangeError::TooManyKeys`]), so a peer cannot make an exchange hold more than this.
    /// Default 2^19 = 524,288: twice the keys of 256 segments of a partition of 1,000,000 keys
    /// (about 977 a segment); some 40 MB a side with 20-byte keys.
    pub(crate) max_keys: NonZeroUsize,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            confirm_pause: Duration::from_secs(1),
            max_segments: DEFAULT_MAX_SEGMENTS,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

const DEFAULT_MAX_SEGMENTS: NonZeroUsize = match NonZeroUsize::new(256) {
    Some(n) => n,
    None => panic!("256 is not zero"),
};

const DEFAULT_MAX_KEYS: NonZeroUsize = match NonZeroUsize::new(1 << 19) {
    Some(n) => n,
    None => panic!("2^19 is not zero"),
};

/// One of the two replicas an exchange compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Side {
    /// This node's replica.
    Local,
    /// The peer's replica.
    Remote,
}

/// A question for one side; it answers with the [`Reply`] of the same kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// The partition's root hash ([`TictacTree::root`]).
    Root,
    /// Every branch hash, in order ([`TictacTree::branches`]).
    Branches,
    /// The hashes of these segments (ascending).
    Segments(Vec<SegmentId>),
    /// Every key of these segments (ascending) with its digest ([`Storage::segment_keys`] of
    /// each).
    ///
    /// [`Storage::segment_keys`]: shoal_storage::Storage::segment_keys
    Keys(Vec<SegmentId>),
}

/// One side's answer to an [`Ask`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The root hash.
    Root([u8; 16]),
    /// Exactly [`TictacTree::BRANCHES`] branch hashes, in branch order.
    Branches(Vec<[u8; 16]>),
    /// One hash for each segment asked, in the order asked.
    Segments(Vec<(SegmentId, [u8; 16])>),
    /// Every key of the segments asked with its object digest, in (segment, key) order: the
    /// asked segments' `segment_keys`, one after the other. At most `max_keys` of them.
    Keys(Vec<(Key, ObjectDigest)>),
}

/// The kind of an [`Ask`] or [`Reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    /// [`Ask::Root`], [`Reply::Root`].
    Root,
    /// [`Ask::Branches`], [`Reply::Branches`].
    Branches,
    /// [`Ask::Segments`], [`Reply::Segments`].
    Segments,
    /// [`Ask::Keys`], [`Reply::Keys`].
    Keys,
}

/// What the exchange wants done next ([`Exchange::poll`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Ask `side` this, and hand its answer to [`Exchange::handle`]. Given once per side and
    /// round.
    Ask {
        /// Whom to ask.
        side: Side,
        /// What to ask.
        ask: Ask,
    },
    /// Nothing to do before this instant (the confirm pause); poll again then.
    WaitUntil(Instant),
    /// Ship these keys; given once, before [`Step::Done`], and only if there is a key to ship.
    Repair(Repair),
    /// The exchange is over; given once, after which [`Exchange::poll`] gives nothing.
    Done(Outcome),
}

/// The keys of one partition to ship between the two replicas, each merged (DVV) into what the
/// receiving side holds: repair is per key, never a segment's or a partition's data. A key both
/// sides hold differently is in both lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Repair {
    /// The partition of every key here.
    pub(crate) partition: PartitionId,
    /// Keys the remote side lacks or holds differently: send the local object to the remote
    /// (in key order).
    pub(crate) push: Vec<Key>,
    /// Keys the local side lacks or holds differently: fetch the remote object and merge it here
    /// (in key order).
    pub(crate) pull: Vec<Key>,
}

/// How an exchange ended: the divergence it could see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The roots were equal: the replicas held the same data.
    Matched,
    /// The roots differed; what was found below them.
    Compared(Divergence),
}

/// What an exchange whose roots differed found. Every difference it found went away by itself
/// when `segments_confirmed` is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Divergence {
    /// Segments whose hashes differed at the first look.
    pub(crate) segments_differing: usize,
    /// Of those, the segments that still differed after the pause.
    pub(crate) segments_confirmed: usize,
    /// Confirmed segments whose keys were not compared (beyond `max_segments`): the next
    /// exchange will find them again.
    pub(crate) segments_deferred: usize,
    /// Keys in the compared segments that one side lacks or the two hold differently.
    pub(crate) keys_differing: usize,
    /// Of those, the keys to send to the remote side ([`Repair::push`]).
    pub(crate) keys_to_push: usize,
    /// Of those, the keys to fetch from the remote side ([`Repair::pull`]).
    pub(crate) keys_to_pull: usize,
}

/// A reply the exchange refused. The exchange is unchanged by it: the reply is dropped, and the
/// side it came from is still waited for (a caller that got one from a peer should abandon the
/// exchange rather than wait).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The side has no question outstanding: it was not asked yet, or already answered this
    /// round, or the exchange is pausing or over.
    #[error("a reply from the {side} side, which has no question outstanding")]
    NotAsked {
        /// Who replied.
        side: Side,
    },
    /// The reply is of another kind than the question outstanding.
    #[error("the {side} side answered {got:?} to a {asked:?} question")]
    WrongKind {
        /// Who replied.
        side: Side,
        /// The kind asked.
        asked: ReplyKind,
        /// The kind answered.
        got: ReplyKind,
    },
    /// A branches reply without exactly one hash per branch.
    #[error(
        "the {side} side sent {got} branch hashes, not {}",
        TictacTree::BRANCHES
    )]
    BranchCount {
        /// Who replied.
        side: Side,
        /// How many it sent.
        got: usize,
    },
    /// A segments reply without exactly one hash per segment asked.
    #[error("the {side} side sent {got} segment hashes for {expected} segments asked")]
    SegmentCount {
        /// Who replied.
        side: Side,
        /// How many segments were asked.
        expected: usize,
        /// How many hashes it sent.
        got: usize,
    },
    /// A segments reply names a segment that was not asked.
    #[error("the {side} side sent the hash of {segment:?}, which was not asked")]
    SegmentNotAsked {
        /// Who replied.
        side: Side,
        /// The segment.
        segment: SegmentId,
    },
    /// A segments reply names the segments asked, but not in the order asked (or one twice).
    #[error("the {side} side sent segment hashes out of the order asked")]
    SegmentsOutOfOrder {
        /// Who replied.
        side: Side,
    },
    /// A keys reply lists more keys than `max_keys`.
    #[error("the {side} side sent {got} keys, more than the {max} an exchange takes")]
    TooManyKeys {
        /// Who replied.
        side: Side,
        /// `max_keys`.
        max: usize,
        /// How many it sent.
        got: usize,
    },
    /// A keys reply lists a key of another partition.
    #[error("the {side} side sent {key:?}, which is not in this partition")]
    KeyOutsidePartition {
        /// Who replied.
        side: Side,
        /// The key.
        key: Key,
    },
    /// A keys reply lists a key of a segment that was not asked.
    #[error("the {side} side sent {key:?}, of {segment:?}, which was not asked")]
    KeyNotAsked {
        /// Who replied.
        side: Side,
        /// The key.
        key: Key,
        /// Its segment.
        segment: SegmentId,
    },
    /// A keys reply is not in strictly ascending (segment, key) order (a key listed twice
    /// included).
    #[error("the {side} side sent {key:?} out of (segment, key) order")]
    KeysOutOfOrder {
        /// Who replied.
        side: Side,
        /// The first key out of order.
        key: Key,
    },
}

/// One exchange between the two replicas of one partition: asks go out through
/// [`Exchange::poll`], replies come in through [`Exchange::handle`].
#[derive(Debug)]
pub(crate) struct Exchange {
    partition: PartitionId,
    q: PartitionCount,
    config: ExchangeConfig,
    state: State,
    divergence: Divergence,
}

/// Where an exchange stands.
#[derive(Debug)]
enum State {
    /// Both sides are asked the same question; their answers are gathered.
    Asking(Round),
    /// The first look found these segments (ascending) differing; they are looked at again once
    /// `until` has come.
    Pausing {
        until: Instant,
        differing: Vec<SegmentId>,
    },
    /// The exchange has decided; the repair (if any key is to be shipped) and the outcome are
    /// still to be polled.
    Finished {
        repair: Option<Repair>,
        outcome: Outcome,
    },
    /// [`Step::Done`] was polled.
    Over,
}

/// One question put to both sides.
#[derive(Debug)]
struct Round {
    stage: Stage,
    ask: Ask,
    local: Answer,
    remote: Answer,
}

/// Which round of the exchange a [`Round`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Root,
    Branches,
    FirstLook,
    Confirm,
    Keys,
}

/// One side's part in a round.
#[derive(Debug)]
enum Answer {
    /// The ask has not been polled yet.
    Unasked,
    /// Asked; no reply yet.
    Waiting,
    /// The reply, checked.
    Replied(Reply),
}

impl Exchange {
    /// An exchange of `partition`'s replicas in a ring of `q` partitions (which the keys
    /// replies are checked against). It starts by asking both sides for their roots.
    pub(crate) fn new(partition: PartitionId, q: PartitionCount, config: ExchangeConfig) -> Self {
        Exchange {
            partition,
            q,
            config,
            state: State::Asking(Round::new(Stage::Root, Ask::Root)),
            divergence: Divergence::default(),
        }
    }

    /// The partition compared.
    pub(crate) fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Most keys one side's key reply may list (`ExchangeConfig::max_keys`).
    pub(crate) fn max_keys(&self) -> usize {
        self.config.max_keys.get()
    }

    /// What to do next, if anything: `None` while replies are awaited, and once the exchange is
    /// over.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Step> {
        if let State::Pausing { until, differing } = &mut self.state {
            if now < *until {
                return Some(Step::WaitUntil(*until));
            }
            let segments = std::mem::take(differing);
            self.state = State::Asking(Round::new(Stage::Confirm, Ask::Segments(segments)));
        }
        match &mut self.state {
            State::Asking(round) => round.next_ask(),
            State::Pausing { .. } => None,
            State::Finished { repair, outcome } => match repair.take() {
                Some(repair) => Some(Step::Repair(repair)),
                None => {
                    let outcome = *outcome;
                    self.state = State::Over;
                    Some(Step::Done(outcome))
                }
            },
            State::Over => None,
        }
    }

    /// `side`'s answer to the question it was asked. Once both sides have answered, the exchange
    /// moves on (poll for what next). A reply that does not answer the question outstanding, or
    /// is malformed, is refused and changes nothing.
    pub(crate) fn handle(
        &mut self,
        side: Side,
        reply: Reply,
        now: Instant,
    ) -> Result<(), ExchangeError> {
        let state = std::mem::replace(&mut self.state, State::Over);
        let State::Asking(mut round) = state else {
            self.state = state;
            return Err(ExchangeError::NotAsked { side });
        };
        let checked = match round.answer(side) {
            Answer::Waiting => self.check(&round.ask, side, &reply),
            Answer::Unasked | Answer::Replied(_) => Err(ExchangeError::NotAsked { side }),
        };
        if let Err(e) = checked {
            self.state = State::Asking(round);
            return Err(e);
        }
        *round.answer_mut(side) = Answer::Replied(reply);
        self.state = match round.replies() {
            Ok((stage, local, remote)) => self.advance(stage, local, remote, now),
            Err(round) => State::Asking(round),
        };
        Ok(())
    }

    /// The state after a round of `stage`, from both sides' (checked) answers.
    fn advance(&mut self, stage: Stage, local: Reply, remote: Reply, now: Instant) -> State {
        match (stage, local, remote) {
            (Stage::Root, Reply::Root(l), Reply::Root(r)) => {
                if l == r {
                    State::Finished {
                        repair: None,
                        outcome: Outcome::Matched,
                    }
                } else {
                    State::Asking(Round::new(Stage::Branches, Ask::Branches))
                }
            }
            (Stage::Branches, Reply::Branches(l), Reply::Branches(r)) => {
                let segments: Vec<SegmentId> = l
                    .iter()
                    .zip(&r)
                    .enumerate()
                    .filter(|(_, (l, r))| l != r)
                    .flat_map(|(branch, _)| segments_of(branch))
                    .collect();
                if segments.is_empty() {
                    // The roots differed and the branches, read later, do not: whatever
                    // differed has gone.
                    return self.finish(None);
                }
                State::Asking(Round::new(Stage::FirstLook, Ask::Segments(segments)))
            }
            (Stage::FirstLook, Reply::Segments(l), Reply::Segments(r)) => {
                let differing = differing_segments(&l, &r);
                self.divergence.segments_differing = differing.len();
                if differing.is_empty() {
                    return self.finish(None);
                }
                State::Pausing {
                    until: now + self.config.confirm_pause,
                    differing,
                }
            }
            (Stage::Confirm, Reply::Segments(l), Reply::Segments(r)) => {
                // Only the segments that differed at the first look were asked, so those that
                // differ now are the intersection of the two looks' differences.
                let mut confirmed = differing_segments(&l, &r);
                self.divergence.segments_confirmed = confirmed.len();
                if confirmed.is_empty() {
                    return self.finish(None);
                }
                let compared = confirmed.len().min(self.config.max_segments.get());
                self.divergence.segments_deferred = confirmed.split_off(compared).len();
                State::Asking(Round::new(Stage::Keys, Ask::Keys(confirmed)))
            }
            (Stage::Keys, Reply::Keys(l), Reply::Keys(r)) => {
                let repair = self.compare_keys(l, r);
                self.finish(Some(repair))
            }
            // Each stage asks one kind of question and `check` lets through only answers of
            // the kind asked, so no other pair reaches here; were one to, ending is safe.
            _ => self.finish(None),
        }
    }

    /// The keys to ship, from both sides' keys of the same segments; counts them.
    fn compare_keys(
        &mut self,
        local: Vec<(Key, ObjectDigest)>,
        remote: Vec<(Key, ObjectDigest)>,
    ) -> Repair {
        let local: BTreeMap<Key, ObjectDigest> = local.into_iter().collect();
        let remote: BTreeMap<Key, ObjectDigest> = remote.into_iter().collect();
        let push: Vec<Key> = local
            .iter()
            .filter(|(k, d)| remote.get(*k) != Some(*d))
            .map(|(k, _)| k.clone())
            .collect();
        let pull: Vec<Key> = remote
            .iter()
            .filter(|(k, d)| local.get(*k) != Some(*d))
            .map(|(k, _)| k.clone())
            .collect();
        let both = push.iter().filter(|k| remote.contains_key(*k)).count();
        self.divergence.keys_differing = push.len() + pull.len() - both;
        self.divergence.keys_to_push = push.len();
        self.divergence.keys_to_pull = pull.len();
        Repair {
            partition: self.partition,
            push,
            pull,
        }
    }

    /// Checks that `reply` answers `ask` and is well formed, before anything of it is kept.
    /// (The segments of an ask are ascending, as the exchange builds them: searched by halves.)
    fn check(&self, ask: &Ask, side: Side, reply: &Reply) -> Result<(), ExchangeError> {
        match (ask, reply) {
            (Ask::Root, Reply::Root(_)) => Ok(()),
            (Ask::Branches, Reply::Branches(hashes)) => {
                if hashes.len() == TictacTree::BRANCHES {
                    Ok(())
                } else {
                    Err(ExchangeError::BranchCount {
                        side,
                        got: hashes.len(),
                    })
                }
            }
            (Ask::Segments(asked), Reply::Segments(hashes)) => {
                if hashes.len() != asked.len() {
                    return Err(ExchangeError::SegmentCount {
                        side,
                        expected: asked.len(),
                        got: hashes.len(),
                    });
                }
                for ((segment, _), expected) in hashes.iter().zip(asked) {
                    if segment != expected {
                        return Err(if asked.binary_search(segment).is_ok() {
                            ExchangeError::SegmentsOutOfOrder { side }
                        } else {
                            ExchangeError::SegmentNotAsked {
                                side,
                                segment: *segment,
                            }
                        });
                    }
                }
                Ok(())
            }
            (Ask::Keys(asked), Reply::Keys(keys)) => self.check_keys(asked, side, keys),
            _ => Err(ExchangeError::WrongKind {
                side,
                asked: ask.kind(),
                got: reply.kind(),
            }),
        }
    }

    /// Checks a keys reply: bounded, every key of this partition and an asked segment, in strictly
    /// ascending (segment, key) order.
    fn check_keys(
        &self,
        asked: &[SegmentId],
        side: Side,
        keys: &[(Key, ObjectDigest)],
    ) -> Result<(), ExchangeError> {
        let (partition, q, max) = (self.partition, self.q, self.config.max_keys.get());
        if keys.len() > max {
            return Err(ExchangeError::TooManyKeys {
                side,
                max,
                got: keys.len(),
            });
        }
        let mut last: Option<(SegmentId, &Key)> = None;
        for (key, _) in keys {
            if shoal_ring::partition_for(key.as_bytes(), q) != partition {
                return Err(ExchangeError::KeyOutsidePartition {
                    side,
                    key: key.clone(),
                });
            }
            let segment = SegmentId::of(key, q);
            if asked.binary_search(&segment).is_err() {
                return Err(ExchangeError::KeyNotAsked {
                    side,
                    key: key.clone(),
                    segment,
                });
            }
            if last.is_some_and(|last| last >= (segment, key)) {
                return Err(ExchangeError::KeysOutOfOrder {
                    side,
                    key: key.clone(),
                });
            }
            last = Some((segment, key));
        }
        Ok(())
    }

    /// The finished state: the repair if it ships anything, and the divergence seen.
    fn finish(&self, repair: Option<Repair>) -> State {
        State::Finished {
            repair: repair.filter(|r| !r.push.is_empty() || !r.pull.is_empty()),
            outcome: Outcome::Compared(self.divergence),
        }
    }
}

impl Ask {
    /// The kind of question.
    pub(crate) fn kind(&self) -> ReplyKind {
        match self {
            Ask::Root => ReplyKind::Root,
            Ask::Branches => ReplyKind::Branches,
            Ask::Segments(_) => ReplyKind::Segments,
            Ask::Keys(_) => ReplyKind::Keys,
        }
    }
}

impl Reply {
    /// The kind of answer.
    pub(crate) fn kind(&self) -> ReplyKind {
        match self {
            Reply::Root(_) => ReplyKind::Root,
            Reply::Branches(_) => ReplyKind::Branches,
            Reply::Segments(_) => ReplyKind::Segments,
            Reply::Keys(_) => ReplyKind::Keys,
        }
    }
}

impl Round {
    fn new(stage: Stage, ask: Ask) -> Self {
        Round {
            stage,
            ask,
            local: Answer::Unasked,
            remote: Answer::Unasked,
        }
    }

    /// The next side still to be asked: the remote first, so its answer travels while the local
    /// one is read.
    fn next_ask(&mut self) -> Option<Step> {
        for side in [Side::Remote, Side::Local] {
            let answer = self.answer_mut(side);
            if matches!(answer, Answer::Unasked) {
                *answer = Answer::Waiting;
                return Some(Step::Ask {
                    side,
                    ask: self.ask.clone(),
                });
            }
        }
        None
    }

    /// The round's stage and both answers, if both are in; else the round, still waiting.
    fn replies(self) -> Result<(Stage, Reply, Reply), Round> {
        match (self.local, self.remote) {
            (Answer::Replied(local), Answer::Replied(remote)) => Ok((self.stage, local, remote)),
            (local, remote) => Err(Round {
                local,
                remote,
                ..self
            }),
        }
    }

    fn answer(&self, side: Side) -> &Answer {
        match side {
            Side::Local => &self.local,
            Side::Remote => &self.remote,
        }
    }

    fn answer_mut(&mut self, side: Side) -> &mut Answer {
        match side {
            Side::Local => &mut self.local,
            Side::Remote => &mut self.remote,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Remote => "remote",
        })
    }
}

/// The segments of branch `branch`, in order.
fn segments_of(branch: usize) -> impl Iterator<Item = SegmentId> {
    let start = branch * TictacTree::SEGMENTS_PER_BRANCH;
    (start..start + TictacTree::SEGMENTS_PER_BRANCH)
        // Below SEGMENTS (1024) for a branch below BRANCHES, so in range of u16 and of SegmentId.
        .filter_map(|i| u16::try_from(i).ok().and_then(SegmentId::new))
}

/// The segments whose hashes differ between two replies to the same (checked) segments ask.
fn differing_segments(
    local: &[(SegmentId, [u8; 16])],
    remote: &[(SegmentId, [u8; 16])],
) -> Vec<SegmentId> {
    local
        .iter()
        .zip(remote)
        .filter(|((_, l), (_, r))| l != r)
        .map(|((segment, _), _)| *segment)
        .collect()
}
