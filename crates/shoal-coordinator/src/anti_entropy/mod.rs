//! Active anti-entropy: the primaries of each partition compare their tictac trees and repair,
//! key by key, what one holds and the other lacks or holds differently (Dynamo §4.7,
//! `../shared/DESIGN.md` §7, issue 15). A part of the [`Node`](crate::Node), like hints.
//!
//! - **What is compared, when** (`schedule`): every partition this node is a primary of, with
//!   each of its other primaries — never fallbacks, which hold hints, not replicas. Of each pair
//!   one node, the initiator, compares it every `AntiEntropyConfig::interval` (jittered from
//!   the node's seeded RNG); a node that starts compares every pair once, `catch_up_delay`
//!   after it starts; a peer reachable again (as membership judges it, looked at after every
//!   gossip round) has the pairs with it compared `catch_up_delay` later; and
//!   [`Node::repair`](crate::Node::repair) queues pairs on demand.
//! - **How** (`exchange`): each comparison is one [`Exchange`], the pure state machine of
//!   roots, branches, segments confirmed after a pause, and keys. This part drives it: asks
//!   of the local side are answered from storage (`Storage::tree`, `Storage::segment_keys`:
//!   durable data only); asks of the remote side go out as `PeerMessage::Exchange` at
//!   [`Priority::Bulk`], one at a time, each with a budget. At most
//!   `AntiEntropyConfig::max_exchanges` run at once; the rest wait their turn.
//! - **Repair**, once the exchange has found the keys: the local durable objects of the keys
//!   to push are sent in `Push` batches (answered once durable there); the keys to pull are
//!   fetched (`Fetch`) and merged here through `Durability::store`, the path of replica
//!   writes and read repair (DVV merge, no new dot). Pushes and fetched objects are paced
//!   together to `AntiEntropyConfig::repair_rate` bytes a second, and pulls wait while the
//!   commit queue is at the client-write limit. Once every object is durable on its side, one
//!   more root ask checks that the pair now matches (and tells the peer so). An exchange that
//!   left confirmed segments for later (beyond `max_segments`) queues its pair again at once.
//! - **Not yet.** Storage builds its trees beside serving after a start. Until this node's
//!   are built no exchange starts (the pairs due keep their turn, looked at again every
//!   `NOT_READY_RETRY`); a peer whose trees are not built refuses tree and key asks with
//!   `ExchangeFault::TreesNotReady`, and the exchange is put off and its pair compared again
//!   `NOT_READY_RETRY` later. Neither counts as a failure (`NodeMetrics::exchanges_deferred`).
//! - **Failure.** A remote ask that fails, is refused, times out, or is answered with
//!   something malformed (the exchange's checks, or this part's) ends the exchange, counted in
//!   `NodeMetrics::exchanges_failed`; its pair is compared again when next due. What it had
//!   already repaired stays repaired (every merge is idempotent).
//! - **Serving** (`serve`): the answering side, for other primaries' exchanges.
//! - **Divergence you can see** (`figures`): per partition and peer, what the last exchange
//!   found and repaired and when the pair was last known equal; [`Node::divergence`]
//!   and the admin status show it; `NodeMetrics` counts exchanges, differences and repairs.
//!
//! Not here: tombstone reaping (the `reaper` part; this one hands it value-less objects it
//! ships). Not yet: pacing by foreground latency, ring
//! changes (a pair is a pair of the current ring). Not here ever: storage reads done by the
//! exchange itself, the network and the clock.
//!
//! [`Exchange`]: exchange::Exchange
//! [`Node::divergence`]: crate::Node::divergence

pub(crate) mod exchange;
mod figures;
mod schedule;
mod serve;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests need one real instant to start from
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use shoal_protocol::{
    ExchangeFault, ExchangeMessage, ExchangeResponse, KeyObject, LocalRead, MAX_EXCHANGE_OBJECTS,
    PartitionDivergence, PeerError, PeerMessage, PeerResponse, RepairRefusal, TREE_SEGMENTS,
    TreeHash,
};
use shoal_storage::{CommitError, ObjectDigest, ReadError, SegmentId, Storage, TictacTree};
use shoal_types::{Key, NodeId, PartitionId};

use self::exchange::{Ask, Exchange, ExchangeConfig, ExchangeError, Outcome, Reply, Side, Step};
use self::figures::{Figures, Ran};
use self::schedule::{Pair, Schedule};
use self::serve::Serving;
use crate::SendError;
use crate::durability::{Durability, Stored};
use crate::effects::{self, Inbound, OutboundId, Part, Priority, Shared, Waiter};
use crate::membership::Membership;
use crate::timers::Timer;

// The wire names segments by index below the protocol's count; it must be storage's.
const _: () = assert!(TREE_SEGMENTS == TictacTree::SEGMENTS);

/// Anti-entropy settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AntiEntropyConfig {
    /// Whether this node compares on its own: the start round, the interval, peers back.
    /// Off, it still serves its peers' exchanges and runs [`Node::repair`]'s. Default on.
    ///
    /// [`Node::repair`]: crate::Node::repair
    pub enabled: bool,
    /// Each pair of primaries of a partition is compared at least this often (by its
    /// initiator; at most once in three quarters of it). At least 1 s. Default 2 min: a pair
    /// that agrees costs one root ask each way (under 100 bytes and a 16 KiB tree read from
    /// memory), so a node of 256 partitions initiating about 256 pairs spends about two
    /// such asks a second on it; divergence nobody noticed (a hint dropped at its bound, a
    /// replica write lost with its connection, a corrupted record) is found within two
    /// minutes, where Riak compares about hourly. Divergence after a fault somebody noticed (a
    /// node restarted, a peer back) is compared within `catch_up_delay`.
    pub interval: Duration,
    /// How long after the node starts, or after a peer is reachable again, its pairs are
    /// compared. Default 10 s: gossip has settled (ten rounds), and a returning peer's hints
    /// have had time to go home, so anti-entropy repairs only what they missed.
    pub catch_up_delay: Duration,
    /// Most exchanges this node runs at once. Default 8: an exchange that finds differences
    /// takes about the confirm pause (1 s) plus a few round trips, so 8 at once compare the
    /// 256 partitions of a wiped node in about 256 / 8 × 1.1 s ≈ 35 s, and with the
    /// `catch_up_delay` refill its 60,000 keys (234 a partition, one fetch each) in under
    /// 60 s; while 8 exchanges of matching replicas cost a peer 8 tree reads at a time.
    pub max_exchanges: NonZeroUsize,
    /// How long the exchange waits before it looks again at the segments that differed
    /// (only those that still differ are compared by key). Default 1 s (see the exchange).
    pub confirm_pause: Duration,
    /// Most differing segments whose keys one exchange compares; the rest wait for the next
    /// exchange of the pair. Default 256 (see the exchange).
    pub max_segments: NonZeroUsize,
    /// Value bytes a second that repair (pushes and fetched objects, over all exchanges) may
    /// take from foreground traffic. Default 8 MiB/s: 60,000 keys of W1's 1 KiB values in
    /// about 7 s, half of what hinted handoff may take.
    pub repair_rate: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        let exchange = ExchangeConfig::default();
        AntiEntropyConfig {
            enabled: true,
            interval: Duration::from_secs(120),
            catch_up_delay: Duration::from_secs(10),
            max_exchanges: DEFAULT_MAX_EXCHANGES,
            confirm_pause: exchange.confirm_pause,
            max_segments: exchange.max_segments,
            repair_rate: 8 * 1024 * 1024,
        }
    }
}

const DEFAULT_MAX_EXCHANGES: NonZeroUsize = match NonZeroUsize::new(8) {
    Some(n) => n,
    None => panic!("8 is not zero"),
};

/// Why [`Node::repair`](crate::Node::repair) queued nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RepairError {
    /// The partition is not below the ring's Q.
    #[error("partition {0} is not in the ring")]
    UnknownPartition(PartitionId),
    /// This node is not a primary of the partition: it holds no replica of it to compare.
    #[error("this node is not a primary of partition {0}")]
    NotPrimary(PartitionId),
    /// The node named is not another primary of the partitions asked.
    #[error("{0} is not another primary of the partitions asked")]
    NotAPeer(NodeId),
}

impl From<RepairError> for RepairRefusal {
    fn from(e: RepairError) -> Self {
        match e {
            RepairError::UnknownPartition(p) => RepairRefusal::UnknownPartition(p),
            RepairError::NotPrimary(p) => RepairRefusal::NotPrimary(p),
            RepairError::NotAPeer(n) => RepairRefusal::NotAPeer(n),
        }
    }
}

/// Bytes of values in one push, and in one fetch answer (or one object alone, if larger).
pub(crate) const REPAIR_BATCH_BYTES: usize = 256 * 1024;

/// Bytes of keys one key-list answer carries, about (whole segments, at least one).
pub(crate) const KEYS_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// How long a peer has to answer an ask; past twice this the ask is given up.
const ASK_BUDGET: Duration = Duration::from_secs(10);

/// How long a pair waits before it is tried again when this node's trees, or the peer's, are
/// still being built after a start (a million keys take about 1.5–2.3 s to build).
const NOT_READY_RETRY: Duration = Duration::from_secs(2);

/// How long pulls wait for the commit queue to drain below the client-write limit.
const COMMIT_BACKOFF: Duration = Duration::from_millis(50);

/// What a message this part sent was for: a step of exchange `exchange`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Purpose {
    exchange: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct AntiEntropy {
    config: AntiEntropyConfig,
    exchange: ExchangeConfig,
    schedule: Schedule,
    /// Every peer of some pair.
    peers: BTreeSet<NodeId>,
    /// Peers judged unreachable at the last look.
    unreachable: BTreeSet<NodeId>,
    /// Exchanges under way, by the token their messages and persists are named with.
    running: BTreeMap<u64, Running>,
    serving: Serving,
    figures: Figures,
    /// No push or fetch leaves before this (the pacing of `repair_rate`).
    next_transfer: Instant,
    /// When [`Timer::Exchange`] is set for, if it is.
    timer: Option<Instant>,
    /// While this node's trees are being built: when to look again whether they are ready
    /// (no exchange starts before).
    trees_wait: Option<Instant>,
}

/// One exchange under way, and its repair.
#[derive(Debug)]
struct Running {
    pair: Pair,
    exchange: Exchange,
    /// The remote ask out, if one is.
    out: Option<Out>,
    /// Nothing to do before this (the confirm pause, or the pacing).
    wake: Option<Instant>,
    /// The local root, read to go with the remote root ask; it answers the local one.
    root: Option<TreeHash>,
    /// A remote key list being gathered, answer by answer.
    keys: Option<Gathering>,
    /// How the comparison ended; the repair follows.
    outcome: Option<Outcome>,
    repair: Repairing,
    /// Whether the roots matched at the check after the repair (`None`: not checked).
    checked: Option<bool>,
}

/// A remote ask out.
#[derive(Debug)]
struct Out {
    id: OutboundId,
    /// Given up then.
    deadline: Instant,
    asked: Asked,
}

#[derive(Debug)]
enum Asked {
    /// A tree level (root, branches, segments): its answer goes to the exchange.
    Tree,
    /// Keys of the segments still to gather.
    Keys,
    /// These keys' objects.
    Fetch(Vec<Key>),
    /// A push of this many objects.
    Push(u64),
    /// The root, after the repair; this was the local one.
    Check(TreeHash),
}

/// The keys of the remote side gathered so far, and the segments still to ask.
#[derive(Debug)]
struct Gathering {
    rest: Vec<SegmentId>,
    keys: Vec<(Key, ObjectDigest)>,
}

/// Where a repair stands.
#[derive(Debug, Default)]
struct Repairing {
    push: VecDeque<Key>,
    pull: VecDeque<Key>,
    /// Pulled objects whose persists are still out.
    persists: usize,
    pushed: u64,
    pulled: u64,
}

/// Where an exchange stands after a step.
#[derive(Debug)]
enum Progress {
    Waiting,
    Done,
    Failed(Failure),
}

/// Why an exchange was dropped (for the log; the metric counts them all).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("the ask got no answer: {0:?}")]
    Send(SendError),
    #[error("the peer refused the ask: {0}")]
    Refused(PeerError),
    #[error("the peer's answer was refused: {0}")]
    Remote(ExchangeError),
    #[error("the local answer was refused: {0}")]
    Local(ExchangeError),
    #[error("the peer's answer was malformed: {0}")]
    Malformed(&'static str),
    #[error("the peer did not answer in time")]
    TimedOut,
    #[error("the local tree or keys could not be read")]
    LocalStorage,
    /// Not a failure: the trees of this side (`here`) or the peer's are still being built.
    #[error("the trees are still being built (here: {here})")]
    NotReady { here: bool },
    #[error("a pulled object's commit failed")]
    Commit,
}

/// What a step of an exchange borrows.
struct Cx<'a, S> {
    shared: &'a mut Shared,
    durability: &'a mut Durability<S>,
    next_transfer: &'a mut Instant,
    rate: u64,
    now: Instant,
}

impl AntiEntropy {
    /// The anti-entropy part of a node started at `now`.
    pub(crate) fn new(now: Instant, shared: &mut Shared) -> AntiEntropy {
        let config = shared.config.anti_entropy;
        let schedule = Schedule::new(
            now,
            &shared.ring,
            shared.id(),
            config.interval,
            config.catch_up_delay,
            config.enabled,
        );
        let peers = schedule.pairs().map(|p| p.peer.clone()).collect();
        let mut part = AntiEntropy {
            config,
            exchange: ExchangeConfig {
                confirm_pause: config.confirm_pause,
                max_segments: config.max_segments,
                ..ExchangeConfig::default()
            },
            schedule,
            peers,
            unreachable: BTreeSet::new(),
            running: BTreeMap::new(),
            serving: Serving::default(),
            figures: Figures::default(),
            next_transfer: now,
            timer: None,
            trees_wait: None,
        };
        part.arm(shared);
        part
    }

    /// What this node knows of each of its partitions' divergence, at `now`.
    pub(crate) fn divergence(&self, shared: &Shared, now: Instant) -> Vec<PartitionDivergence> {
        self.figures.status(&shared.ring, shared.id(), now)
    }

    /// A peer's exchange message.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn serve<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        inbound: Inbound,
        from: &NodeId,
        message: ExchangeMessage,
    ) {
        self.serving.serve(
            shared,
            durability,
            &mut self.figures,
            now,
            inbound,
            from,
            message,
        );
    }

    /// Queues the pairs of `partition` (or every partition this node is a primary of) with
    /// `peer` (or every other primary), whoever initiates them, and starts what it can.
    /// Returns how many pairs were asked for (one already running is not run again).
    pub(crate) fn repair<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        membership: &Membership,
        now: Instant,
        partition: Option<PartitionId>,
        peer: Option<NodeId>,
    ) -> Result<usize, RepairError> {
        if let Some(p) = partition {
            if p.index() >= shared.ring.q().get() {
                return Err(RepairError::UnknownPartition(p));
            }
            if !shared.ring.is_primary(shared.id(), p) {
                return Err(RepairError::NotPrimary(p));
            }
        }
        let pairs: Vec<Pair> = self
            .schedule
            .pairs()
            .filter(|pair| partition.is_none_or(|p| p == pair.partition))
            .filter(|pair| peer.as_ref().is_none_or(|n| *n == pair.peer))
            .cloned()
            .collect();
        if pairs.is_empty()
            && let Some(peer) = peer
        {
            return Err(RepairError::NotAPeer(peer));
        }
        let asked = pairs.len();
        for pair in pairs {
            self.schedule.queue(pair);
        }
        self.start_waiting(shared, durability, membership, now);
        self.arm(shared);
        Ok(asked)
    }

    /// Membership may have changed its judgement of some peers (a gossip round ran): a peer
    /// reachable again after it was judged unreachable has the pairs this node initiates with
    /// it compared soon.
    pub(crate) fn look_at_peers(
        &mut self,
        shared: &mut Shared,
        membership: &Membership,
        now: Instant,
    ) {
        let mut back = false;
        for peer in &self.peers {
            if membership.is_reachable(peer) {
                if self.unreachable.remove(peer) && self.config.enabled {
                    self.schedule.peer_back(now, peer);
                    back = true;
                }
            } else {
                self.unreachable.insert(peer.clone());
            }
        }
        if back {
            self.arm(shared);
        }
    }

    /// [`Timer::Exchange`] fired: pairs come due, pauses end, asks time out.
    pub(crate) fn timer<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        membership: &Membership,
        now: Instant,
    ) {
        self.timer = None;
        if self.trees_wait.is_some_and(|at| at <= now) {
            self.trees_wait = None;
        }
        self.schedule.take_due(now, &mut shared.rng);
        let tokens: Vec<u64> = self.running.keys().copied().collect();
        for token in tokens {
            let Some(run) = self.running.get_mut(&token) else {
                continue;
            };
            let progress = if run.out.as_ref().is_some_and(|o| o.deadline <= now) {
                Progress::Failed(Failure::TimedOut)
            } else if run.wake.is_some_and(|w| w <= now) {
                let mut cx = Cx {
                    shared: &mut *shared,
                    durability: &mut *durability,
                    next_transfer: &mut self.next_transfer,
                    rate: self.config.repair_rate,
                    now,
                };
                run.drive(token, &mut cx)
            } else {
                Progress::Waiting
            };
            self.settle(shared, now, token, progress);
        }
        self.start_waiting(shared, durability, membership, now);
        self.arm(shared);
    }

    /// The answer to message `id`, which this part sent for `purpose`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn answered<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        membership: &Membership,
        now: Instant,
        id: OutboundId,
        purpose: Purpose,
        result: Result<PeerResponse, SendError>,
    ) {
        let token = purpose.exchange;
        let Some(run) = self.running.get_mut(&token) else {
            return;
        };
        if run.out.as_ref().is_none_or(|o| o.id != id) {
            return;
        }
        let mut cx = Cx {
            shared: &mut *shared,
            durability: &mut *durability,
            next_transfer: &mut self.next_transfer,
            rate: self.config.repair_rate,
            now,
        };
        let progress = run.answered(token, result, &mut cx);
        self.settle(shared, now, token, progress);
        self.start_waiting(shared, durability, membership, now);
        self.arm(shared);
    }

    /// A persist that waiter `token` of this part waited for ended: a pulled object, or a
    /// push served.
    pub(crate) fn persisted<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        membership: &Membership,
        now: Instant,
        token: u64,
        result: &Result<(), CommitError>,
    ) {
        if self.serving.persisted(shared, token, result) {
            return;
        }
        let Some(run) = self.running.get_mut(&token) else {
            return;
        };
        run.repair.persists = run.repair.persists.saturating_sub(1);
        let progress = if result.is_err() {
            Progress::Failed(Failure::Commit)
        } else {
            run.repair.pulled += 1;
            let mut cx = Cx {
                shared: &mut *shared,
                durability: &mut *durability,
                next_transfer: &mut self.next_transfer,
                rate: self.config.repair_rate,
                now,
            };
            run.drive(token, &mut cx)
        };
        self.settle(shared, now, token, progress);
        self.start_waiting(shared, durability, membership, now);
        self.arm(shared);
    }

    /// Starts waiting pairs while slots are free; a pair whose peer is judged unreachable is
    /// skipped (compared when next due), and so is one already running.
    fn start_waiting<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        membership: &Membership,
        now: Instant,
    ) {
        if !durability.storage().trees_status().is_ready() {
            // Nothing to compare with until the trees are built; the pairs keep their turn.
            if self.schedule.has_waiting() {
                self.trees_wait = Some(now + NOT_READY_RETRY);
            }
            return;
        }
        while self.running.len() < self.config.max_exchanges.get() && durability.failed().is_none()
        {
            let Some(pair) = self.schedule.next_waiting() else {
                break;
            };
            if !membership.is_reachable(&pair.peer) || self.running.values().any(|r| r.pair == pair)
            {
                tracing::trace!(?pair, "anti-entropy pair skipped");
                continue;
            }
            let token = shared.new_id();
            let exchange = Exchange::new(pair.partition, shared.ring.q(), self.exchange);
            let mut run = Running {
                pair,
                exchange,
                out: None,
                wake: None,
                root: None,
                keys: None,
                outcome: None,
                repair: Repairing::default(),
                checked: None,
            };
            let mut cx = Cx {
                shared: &mut *shared,
                durability: &mut *durability,
                next_transfer: &mut self.next_transfer,
                rate: self.config.repair_rate,
                now,
            };
            let progress = run.drive(token, &mut cx);
            self.running.insert(token, run);
            self.settle(shared, now, token, progress);
        }
    }

    /// Ends exchange `token` if `progress` says it ended: its figures, or its failure.
    fn settle(&mut self, shared: &mut Shared, now: Instant, token: u64, progress: Progress) {
        let failure = match progress {
            Progress::Waiting => return,
            Progress::Done => None,
            Progress::Failed(f) => Some(f),
        };
        let Some(run) = self.running.remove(&token) else {
            return;
        };
        if let Some(failure) = failure {
            if let Some(out) = run.out {
                shared.abandon(out.id);
            }
            if let Failure::NotReady { here } = failure {
                // Not yet, on one side: the pair comes back soon, and nothing is counted
                // against it.
                shared.metrics.exchanges_deferred += 1;
                tracing::debug!(pair = ?run.pair, here, "anti-entropy exchange put off: trees still being built");
                self.schedule.retry(run.pair, now + NOT_READY_RETRY);
                return;
            }
            shared.metrics.exchanges_failed += 1;
            tracing::debug!(pair = ?run.pair, %failure, "anti-entropy exchange dropped");
            return;
        }
        let r = &run.repair;
        let ran = match run.outcome {
            Some(Outcome::Compared(d)) => {
                if d.segments_deferred > 0 {
                    // The rest of the differing segments: at once, behind those waiting.
                    self.schedule.queue(run.pair.clone());
                }
                Ran {
                    matched: d.segments_confirmed == 0,
                    verified: run.checked == Some(true),
                    segments_differing: d.segments_confirmed as u64,
                    keys_differing: d.keys_differing as u64,
                    keys_repaired: r.pushed + r.pulled,
                }
            }
            Some(Outcome::Matched) | None => {
                shared.metrics.exchanges_matched += 1;
                Ran {
                    matched: true,
                    ..Ran::default()
                }
            }
        };
        let m = &mut shared.metrics;
        m.exchanges_run += 1;
        m.exchange_segments_differing += ran.segments_differing;
        m.exchange_keys_differing += ran.keys_differing;
        m.exchange_keys_pushed += r.pushed;
        m.exchange_keys_pulled += r.pulled;
        self.figures
            .ran(run.pair.partition, &run.pair.peer, now, ran);
    }

    /// Sets [`Timer::Exchange`] for the earliest of: the next pair due, a pause or pacing that
    /// ends, an ask to give up. Cleared when there is none, so an idle part never wakes the node.
    fn arm(&mut self, shared: &mut Shared) {
        let wakes = self
            .running
            .values()
            .flat_map(|r| [r.wake, r.out.as_ref().map(|o| o.deadline)]);
        let want = wakes
            .chain([self.schedule.next_due(), self.trees_wait])
            .flatten()
            .min();
        if self.timer == want {
            return;
        }
        if let Some(at) = self.timer {
            shared.timers.cancel(at, Timer::Exchange);
        }
        if let Some(at) = want {
            shared.timers.schedule(at, Timer::Exchange);
        }
        self.timer = want;
    }
}

impl Running {
    /// Runs the exchange as far as it goes without a remote answer, then its repair.
    fn drive<S: Storage>(&mut self, token: u64, cx: &mut Cx<'_, S>) -> Progress {
        if self.wake.is_some_and(|w| w > cx.now) {
            return Progress::Waiting;
        }
        self.wake = None;
        while self.outcome.is_none() {
            let Some(step) = self.exchange.poll(cx.now) else {
                // The remote side's answer is awaited.
                return Progress::Waiting;
            };
            match step {
                Step::Ask {
                    side: Side::Remote,
                    ask,
                } => {
                    if let Err(f) = self.ask_remote(token, ask, cx) {
                        return Progress::Failed(f);
                    }
                }
                Step::Ask {
                    side: Side::Local,
                    ask,
                } => {
                    let reply = match self.answer_local(&ask, cx.durability.storage()) {
                        Ok(reply) => reply,
                        Err(f) => return Progress::Failed(f),
                    };
                    if let Err(e) = self.exchange.handle(Side::Local, reply, cx.now) {
                        return Progress::Failed(Failure::Local(e));
                    }
                }
                Step::WaitUntil(at) => {
                    self.wake = Some(at);
                    return Progress::Waiting;
                }
                Step::Repair(repair) => {
                    self.repair.push = repair.push.into();
                    self.repair.pull = repair.pull.into();
                }
                Step::Done(outcome) => self.outcome = Some(outcome),
            }
        }
        self.repair_step(token, cx)
    }

    /// The next message of the repair, or once every push is acknowledged and every pulled
    /// object durable, the root check, and then the end.
    fn repair_step<S: Storage>(&mut self, token: u64, cx: &mut Cx<'_, S>) -> Progress {
        if self.out.is_some() {
            return Progress::Waiting;
        }
        loop {
            if self.repair.push.is_empty() && self.repair.pull.is_empty() {
                if self.repair.persists > 0 {
                    return Progress::Waiting;
                }
                let differed = matches!(
                    self.outcome,
                    Some(Outcome::Compared(d)) if d.segments_confirmed > 0
                );
                if !differed || self.checked.is_some() {
                    return Progress::Done;
                }
                let partition = self.pair.partition;
                let root = match tree(cx.durability.storage(), partition) {
                    Ok(tree) => tree.root(),
                    Err(f) => return Progress::Failed(f),
                };
                let message = ExchangeMessage::Root { partition, root };
                self.send(token, message, Asked::Check(root), cx);
                return Progress::Waiting;
            }
            if cx.now < *cx.next_transfer {
                self.wake = Some(*cx.next_transfer);
                return Progress::Waiting;
            }
            if !self.repair.push.is_empty() {
                let objects = self.push_batch(cx);
                if objects.is_empty() {
                    continue;
                }
                let bytes = objects.iter().map(|o| o.object.value_bytes()).sum();
                pace(cx, bytes);
                let count = objects.len() as u64;
                let message = ExchangeMessage::Push {
                    partition: self.pair.partition,
                    objects,
                };
                self.send(token, message, Asked::Push(count), cx);
                return Progress::Waiting;
            }
            if cx.durability.pending() >= cx.shared.config.max_pending_persists {
                self.wake = Some(cx.now + COMMIT_BACKOFF);
                return Progress::Waiting;
            }
            let n = self.repair.pull.len().min(MAX_EXCHANGE_OBJECTS);
            let keys: Vec<Key> = self.repair.pull.drain(..n).collect();
            let message = ExchangeMessage::Fetch {
                partition: self.pair.partition,
                keys: keys.clone(),
            };
            self.send(token, message, Asked::Fetch(keys), cx);
            return Progress::Waiting;
        }
    }

    /// The next objects to push, read from the local durable replica: up to
    /// [`REPAIR_BATCH_BYTES`] of values and [`MAX_EXCHANGE_OBJECTS`] objects, or one larger
    /// object alone. Keys with nothing sendable are skipped.
    fn push_batch<S: Storage>(&mut self, cx: &mut Cx<'_, S>) -> Vec<KeyObject> {
        let partition = self.pair.partition;
        let max_object = cx.shared.config.limits.max_object_bytes();
        let mut objects: Vec<KeyObject> = Vec::new();
        let mut bytes = 0usize;
        while objects.len() < MAX_EXCHANGE_OBJECTS {
            let Some(key) = self.repair.push.front() else {
                break;
            };
            let object = match cx
                .durability
                .durable_read(&mut cx.shared.metrics, partition, key)
            {
                LocalRead::Found(o) if o.value_bytes() <= max_object => o,
                _ => {
                    // Gone, unreadable or too large to send: nothing to push.
                    self.repair.push.pop_front();
                    continue;
                }
            };
            if !objects.is_empty() && bytes + object.value_bytes() > REPAIR_BATCH_BYTES {
                break;
            }
            bytes += object.value_bytes();
            if let Some(key) = self.repair.push.pop_front() {
                hand_over_deleted(cx.shared, partition, &key, &object);
                objects.push(KeyObject { key, object });
            }
        }
        objects
    }

    /// Sends the remote side `ask` (a root ask carries the local root, read now).
    fn ask_remote<S: Storage>(
        &mut self,
        token: u64,
        ask: Ask,
        cx: &mut Cx<'_, S>,
    ) -> Result<(), Failure> {
        let partition = self.pair.partition;
        let (message, asked) = match ask {
            Ask::Root => {
                let root = tree(cx.durability.storage(), partition)?.root();
                self.root = Some(root);
                (ExchangeMessage::Root { partition, root }, Asked::Tree)
            }
            Ask::Branches => (ExchangeMessage::Branches { partition }, Asked::Tree),
            Ask::Segments(segments) => {
                let segments = segments.iter().map(|s| s.index()).collect();
                (
                    ExchangeMessage::Segments {
                        partition,
                        segments,
                    },
                    Asked::Tree,
                )
            }
            Ask::Keys(segments) => {
                let message = ExchangeMessage::Keys {
                    partition,
                    segments: segments.iter().map(|s| s.index()).collect(),
                };
                self.keys = Some(Gathering {
                    rest: segments,
                    keys: Vec::new(),
                });
                (message, Asked::Keys)
            }
        };
        self.send(token, message, asked, cx);
        Ok(())
    }

    /// The local side's answer to `ask`, from durable storage.
    fn answer_local<S: Storage>(&mut self, ask: &Ask, storage: &S) -> Result<Reply, Failure> {
        let partition = self.exchange.partition();
        Ok(match ask {
            Ask::Root => match self.root.take() {
                Some(root) => Reply::Root(root),
                None => Reply::Root(tree(storage, partition)?.root()),
            },
            Ask::Branches => Reply::Branches(tree(storage, partition)?.branches()),
            Ask::Segments(segments) => {
                let tree = tree(storage, partition)?;
                Reply::Segments(segments.iter().map(|s| (*s, tree.segment(*s))).collect())
            }
            Ask::Keys(segments) => {
                let mut keys = Vec::new();
                for segment in segments {
                    let listed = storage
                        .segment_keys(partition, *segment)
                        .map_err(local_failure)?;
                    keys.extend(listed);
                }
                Reply::Keys(keys)
            }
        })
    }

    /// The remote side answered the ask out.
    fn answered<S: Storage>(
        &mut self,
        token: u64,
        result: Result<PeerResponse, SendError>,
        cx: &mut Cx<'_, S>,
    ) -> Progress {
        let Some(out) = self.out.take() else {
            return Progress::Waiting;
        };
        let response = match result {
            Ok(PeerResponse::Exchange(r)) => r,
            Ok(PeerResponse::Failed(PeerError::Exchange(ExchangeFault::TreesNotReady))) => {
                return Progress::Failed(Failure::NotReady { here: false });
            }
            Ok(PeerResponse::Failed(e)) => return Progress::Failed(Failure::Refused(e)),
            Ok(_) => return Progress::Failed(Failure::Malformed("an answer of another family")),
            Err(e) => return Progress::Failed(Failure::Send(e)),
        };
        let handled = match (out.asked, response) {
            (Asked::Tree, ExchangeResponse::Root(root)) => self.remote(Reply::Root(root), cx),
            (Asked::Tree, ExchangeResponse::Branches(hashes)) => {
                self.remote(Reply::Branches(hashes), cx)
            }
            (Asked::Tree, ExchangeResponse::Segments(hashes)) => {
                let hashes: Option<Vec<(SegmentId, TreeHash)>> = hashes
                    .into_iter()
                    .map(|(s, h)| SegmentId::new(s).map(|s| (s, h)))
                    .collect();
                match hashes {
                    Some(hashes) => self.remote(Reply::Segments(hashes), cx),
                    None => Err(Failure::Malformed("a segment out of range")),
                }
            }
            (Asked::Keys, ExchangeResponse::Keys { answered, keys }) => {
                self.gather(token, answered, keys, cx)
            }
            (Asked::Fetch(asked), ExchangeResponse::Fetched(objects)) => {
                self.pulled(token, asked, objects, cx)
            }
            (Asked::Push(count), ExchangeResponse::Pushed) => {
                self.repair.pushed += count;
                Ok(())
            }
            (Asked::Check(mine), ExchangeResponse::Root(theirs)) => {
                self.checked = Some(mine == theirs);
                Ok(())
            }
            _ => Err(Failure::Malformed("an answer to another question")),
        };
        match handled {
            Ok(()) => self.drive(token, cx),
            Err(f) => Progress::Failed(f),
        }
    }

    /// Hands the exchange the remote side's answer.
    fn remote<S>(&mut self, reply: Reply, cx: &mut Cx<'_, S>) -> Result<(), Failure> {
        self.exchange
            .handle(Side::Remote, reply, cx.now)
            .map_err(Failure::Remote)
    }

    /// One answer to a key-list ask: the keys of its first `answered` segments. Once every
    /// segment is answered the exchange gets them all; until then the rest are asked again.
    fn gather<S: Storage>(
        &mut self,
        token: u64,
        answered: u32,
        keys: Vec<(Key, TreeHash)>,
        cx: &mut Cx<'_, S>,
    ) -> Result<(), Failure> {
        let max_keys = self.exchange.max_keys();
        let Some(g) = self.keys.as_mut() else {
            return Err(Failure::Malformed("a key list nobody asked for"));
        };
        let answered = usize::try_from(answered).unwrap_or(usize::MAX);
        if answered == 0 || answered > g.rest.len() {
            return Err(Failure::Malformed(
                "a key list that covers none, or more, of the segments asked",
            ));
        }
        if g.keys.len() + keys.len() > max_keys {
            return Err(Failure::Malformed("more keys than an exchange takes"));
        }
        g.keys.extend(
            keys.into_iter()
                .map(|(k, d)| (k, ObjectDigest::from_bytes(d))),
        );
        g.rest.drain(..answered);
        if g.rest.is_empty() {
            let keys = std::mem::take(&mut g.keys);
            self.keys = None;
            return self.remote(Reply::Keys(keys), cx);
        }
        let message = ExchangeMessage::Keys {
            partition: self.pair.partition,
            segments: g.rest.iter().map(|s| s.index()).collect(),
        };
        self.send(token, message, Asked::Keys, cx);
        Ok(())
    }

    /// A fetch answer: the first few of the keys `asked`, each merged into the local replica;
    /// the rest go back to the front of the pulls.
    fn pulled<S: Storage>(
        &mut self,
        token: u64,
        asked: Vec<Key>,
        objects: Vec<(Key, LocalRead)>,
        cx: &mut Cx<'_, S>,
    ) -> Result<(), Failure> {
        let in_order = objects.iter().zip(&asked).all(|((k, _), a)| k == a);
        if objects.is_empty() || objects.len() > asked.len() || !in_order {
            return Err(Failure::Malformed(
                "a fetch answer that is not the keys asked, in order",
            ));
        }
        for key in asked[objects.len()..].iter().rev() {
            self.repair.pull.push_front(key.clone());
        }
        let waiter = Waiter {
            part: Part::AntiEntropy,
            token,
        };
        let partition = self.pair.partition;
        let mut bytes = 0;
        for (key, read) in objects {
            let LocalRead::Found(object) = read else {
                // Too large to send, corrupted there, or gone: nothing to merge.
                continue;
            };
            bytes += object.value_bytes();
            hand_over_deleted(cx.shared, partition, &key, &object);
            match cx
                .durability
                .store(cx.shared, partition, &key, &object, Some(waiter))
            {
                Stored::Pending => self.repair.persists += 1,
                // Already here, or the local record unreadable (never stored over).
                Stored::AlreadyDurable | Stored::Unreadable => {}
            }
        }
        pace(cx, bytes);
        Ok(())
    }

    /// Sends `message` to the peer, at bulk priority, as this exchange's one ask out.
    fn send<S>(&mut self, token: u64, message: ExchangeMessage, asked: Asked, cx: &mut Cx<'_, S>) {
        let purpose = effects::Purpose::AntiEntropy(Purpose { exchange: token });
        let id = cx.shared.send(
            purpose,
            self.pair.peer.clone(),
            PeerMessage::Exchange(message),
            Priority::Bulk,
            Some(ASK_BUDGET),
        );
        self.out = Some(Out {
            id,
            deadline: cx.now + ASK_BUDGET * 2,
            asked,
        });
    }
}

/// The tree of `partition` in durable storage.
fn tree<S: Storage>(storage: &S, partition: PartitionId) -> Result<TictacTree, Failure> {
    storage.tree(partition).map_err(local_failure)
}

/// A local tree or key-list read that failed: "not yet" while the trees are being built.
fn local_failure(error: ReadError) -> Failure {
    match error {
        ReadError::TreesNotReady { .. } => Failure::NotReady { here: true },
        ReadError::Engine(_) => Failure::LocalStorage,
    }
}

/// Counts `bytes` of repair against the rate: the next push or fetch leaves once they would
/// have at `repair_rate`.
fn pace<S>(cx: &mut Cx<'_, S>, bytes: usize) {
    let seconds = bytes as f64 / cx.rate.max(1) as f64;
    let from = (*cx.next_transfer).max(cx.now);
    *cx.next_transfer = from + Duration::from_secs_f64(seconds);
}

/// An exchange ships or receives `object`: if it holds no value (a tombstone, or what a reaped
/// key reads as), the reaper checks whether every primary now holds it, and reaps it then.
/// Anti-entropy only hands the key over; the reaper decides.
pub(crate) fn hand_over_deleted(
    shared: &mut Shared,
    partition: PartitionId,
    key: &Key,
    object: &shoal_causality::Object,
) {
    if object.holds_no_value() && shared.config.reaper.enabled {
        shared.hand_to_reaper(effects::ReapCandidate {
            partition,
            key: key.clone(),
            vv: object.version_vector().clone(),
            confirmed: false,
        });
    }
}
