//! The reaper: causal tombstone reaping (issue 15). A delete leaves a tombstone sibling so that
//! it replicates and wins over what it saw; once **every primary of the key durably holds the
//! tombstone and nothing newer**, the tombstone has done its work and is replaced, on each
//! primary, by a small *reaping record* (storage's `Write::Reap`): the tombstone's version
//! vector, outside the tictac tree, which every later store of the key is merged into first, so
//! no sibling the tombstone superseded can come back (read repair, hints, anti-entropy,
//! handoff), while anything newer is stored as usual. Never by wall-clock age alone.
//!
//! Three ways in, one round:
//! - **After a delete.** The delete's coordinator, once its write is done and N *primaries*
//!   (not fallbacks) acked it durably, asks every primary to reap ([`ReapMessage`], itself
//!   included, locally). A delete with fewer primary acks is queued for a check instead.
//! - **From anti-entropy.** An exchange that ships or receives an object holding no value hands
//!   the key over (`Shared::hand_to_reaper`): it is queued for a check. That is how a tombstone
//!   written while a primary was down gets reaped once anti-entropy brought it there, and how a
//!   primary whose reap ask was lost gets reaped (its tombstone keeps its trees differing).
//! - **A check** (paced, [`ReaperConfig::check_interval`], a bounded queue): every primary's
//!   durable replica is read (`ReplicaMessage::Read`); if none holds a value, the vector is the
//!   join of theirs and every primary is asked to reap. A primary still holding an older value
//!   (the tombstone has not reached it) sends the key back to the queue, with backoff; one
//!   holding a value the tombstone has not seen ends the check: the key is live again.
//!
//! A reap ask is a compare-and-set in the receiver's commit thread: it applies only where the
//! replica holds no value and the vector descends it; a write racing the reap survives on the
//! primary that took it, and anti-entropy spreads it (the records elsewhere do not cover its
//! dot). The answer ([`ReapResponse`]) is read from storage once the ask is durable.
//!
//! **Forgetting.** A reaping record is kept [`ReaperConfig::retention`] (default 4 h: the hint
//! window, 3 h, plus an hour), the bound on how long an older copy of the key may still be
//! somewhere: hints older than the window are dropped unsent, replica messages die with their
//! deadline. A sweep of the records, a batch per [`ReaperConfig::sweep_interval`], drops the
//! older ones (`Write::ForgetReaped`). Times are `NodeConfig::unix_ms_at_start` plus the time
//! since the node started (the part reads no clock).
//!
//! Not here: the record's rules (`shoal-storage`'s `Write::Reap`), which objects differ
//! (anti-entropy), and a slow sweep of old tombstones never handed over (a coordinator that
//! crashed between its acks and its reap asks, with replicas that never differ again): left,
//! see `docs/anti-entropy.md`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_causality::{CausalContext, VersionVector};
use shoal_protocol::{
    LocalRead, PeerError, PeerMessage, PeerResponse, ReapMessage, ReapResponse, ReplicaMessage,
    ReplicaResponse, Response, StorageFault,
};
use shoal_storage::{CommitError, Storage, Write, WriteBatch};
use shoal_types::{Key, NodeId, PartitionId};

use crate::SendError;
use crate::durability::Durability;
use crate::effects::{self, Inbound, InboundId, Part, Priority, ReapCandidate, Shared, Waiter};
use crate::replica::refuse_peer_write;
use crate::timers::Timer;

/// Reaping settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaperConfig {
    /// Whether this node reaps the tombstones of the deletes it coordinates and of the keys
    /// anti-entropy hands over. Off, it still answers its peers' reap asks. Default on.
    pub enabled: bool,
    /// How long a reaping record is kept after the reap: longer than any older copy of the key
    /// can still arrive (hints are dropped after `HintsConfig::max_hint_window`). Default 4 h.
    pub retention: Duration,
    /// How often queued keys are checked. Default 1 s.
    pub check_interval: Duration,
    /// Checks started per `check_interval` at most. Default 256.
    pub checks_per_interval: usize,
    /// Keys queued for a check at most; beyond, a key is dropped (anti-entropy hands it back
    /// when it next repairs it). Default 100,000.
    pub max_queued: usize,
    /// How often the reaping records are swept for ones past their retention (a batch of
    /// `SWEEP_BATCH` each time; after a full batch the sweep goes on one `check_interval`
    /// later). Default 10 s.
    pub sweep_interval: Duration,
}

impl Default for ReaperConfig {
    fn default() -> Self {
        ReaperConfig {
            enabled: true,
            retention: Duration::from_secs(4 * 3600),
            check_interval: Duration::from_secs(1),
            checks_per_interval: 256,
            max_queued: 100_000,
            sweep_interval: Duration::from_secs(10),
        }
    }
}

/// Reaping records looked at per sweep.
const SWEEP_BATCH: usize = 1024;
/// Checks of one key before it is dropped from the queue (anti-entropy hands it back).
const MAX_TRIES: u32 = 30;
/// How long a reap ask or a check's read may take.
const ASK_BUDGET: Duration = Duration::from_secs(5);

/// What a message this part sent was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A read of a primary's replica for the check of round `round`.
    Check { round: u64 },
    /// A reap ask of round `round`.
    Reap { round: u64 },
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Reaper {
    config: ReaperConfig,
    started: Instant,
    unix_ms_at_start: u64,
    /// Keys waiting for a check, with what is known of them.
    queue: BTreeMap<(PartitionId, Key), Queued>,
    /// Rounds under way, by token (a check or a reap).
    rounds: BTreeMap<u64, Round>,
    /// Reap asks applied here, waiting for their persist: by token.
    serving: BTreeMap<u64, Serving>,
    /// When the timer is set for, if it is.
    timer: Option<Instant>,
    next_sweep: Instant,
    /// The sweep goes on after this record.
    sweep_after: Option<(PartitionId, Key)>,
}

#[derive(Debug)]
struct Queued {
    vv: VersionVector,
    /// When the key was first handed over: a tombstone's lifetime counts from here.
    since: Instant,
    /// Not checked before this.
    not_before: Instant,
    tries: u32,
}

#[derive(Debug)]
struct Round {
    partition: PartitionId,
    key: Key,
    vv: VersionVector,
    since: Instant,
    tries: u32,
    phase: Phase,
    /// Answers still awaited.
    waiting: usize,
    /// Some primary holds a value the vector has not seen (a check) or refused the reap.
    newer: bool,
    /// Some primary could not answer, or holds an older value still: check again later.
    again: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Checking,
    Reaping,
}

/// A reap applied here: for a peer's ask, or for this node's own round.
#[derive(Debug)]
struct Serving {
    partition: PartitionId,
    key: Key,
    vv: VersionVector,
    ask: Asker,
}

#[derive(Debug)]
enum Asker {
    Peer(InboundId),
    Round(u64),
}

impl Reaper {
    pub(crate) fn new(now: Instant, shared: &mut Shared) -> Self {
        let config = shared.config.reaper;
        Reaper {
            config,
            started: now,
            unix_ms_at_start: shared.config.unix_ms_at_start,
            queue: BTreeMap::new(),
            rounds: BTreeMap::new(),
            serving: BTreeMap::new(),
            timer: None,
            next_sweep: now + config.sweep_interval,
            sweep_after: None,
        }
        .armed(now, shared)
    }

    fn armed(mut self, now: Instant, shared: &mut Shared) -> Self {
        self.arm(shared, now);
        self
    }

    /// Keys waiting for a check.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Keys handed over by other parts (see [`ReapCandidate`]).
    pub(crate) fn hand_over<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        candidates: Vec<ReapCandidate>,
    ) {
        if !self.config.enabled {
            return;
        }
        for c in candidates {
            let busy = self
                .rounds
                .values()
                .any(|r| r.partition == c.partition && r.key == c.key);
            if busy {
                continue;
            }
            if c.confirmed {
                self.queue.remove(&(c.partition, c.key.clone()));
                self.start_reap(shared, durability, now, c.partition, c.key, c.vv, now, 0);
            } else {
                self.enqueue(shared, now, c.partition, c.key, c.vv, now, 0, now);
            }
        }
        self.arm(shared, now);
    }

    /// A peer's reap ask.
    pub(crate) fn serve<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        inbound: Inbound,
        message: ReapMessage,
    ) {
        let id = inbound.id;
        if shared.refuse_expired(&inbound, now) {
            return;
        }
        let expected = shared.ring.partition_for_key(&message.key);
        if message.partition != expected {
            let error = PeerError::WrongPartition {
                expected,
                got: message.partition,
            };
            return shared.refuse(id, error);
        }
        if !shared
            .ring
            .primaries(message.partition)
            .contains(shared.id())
        {
            return shared.refuse(id, PeerError::NotPrimary(message.partition));
        }
        if let Some(error) = refuse_peer_write(shared, durability) {
            return shared.refuse(id, error);
        }
        let vv = message.context.vector().clone();
        self.reap_here(
            shared,
            durability,
            now,
            message.partition,
            message.key,
            vv,
            Asker::Peer(id),
        );
    }

    /// The persist of a reap applied here ended.
    pub(crate) fn persisted<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        token: u64,
        result: &Result<(), CommitError>,
    ) {
        let Some(serving) = self.serving.remove(&token) else {
            return;
        };
        let answer = match result {
            Err(_) => Err(PeerError::Storage(StorageFault::CommitFailed)),
            Ok(()) => match durability.storage().reaped(serving.partition, &serving.key) {
                Ok(Some(r)) if r.vv.descends(&serving.vv) => Ok(ReapResponse::Reaped),
                Ok(_) => Ok(ReapResponse::Newer),
                Err(_) => Err(PeerError::Storage(StorageFault::Unreadable)),
            },
        };
        match serving.ask {
            Asker::Peer(id) => match answer {
                Ok(r) => shared.reply(id, Response::Peer(PeerResponse::Reap(r))),
                Err(e) => shared.refuse(id, e),
            },
            Asker::Round(round) => self.reap_answered(shared, durability, now, round, answer.ok()),
        }
    }

    /// The outcome of a message this part sent.
    pub(crate) fn answered<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        purpose: Purpose,
        result: Result<PeerResponse, SendError>,
    ) {
        match purpose {
            Purpose::Reap { round } => {
                let answer = match result {
                    Ok(PeerResponse::Reap(r)) => Some(r),
                    _ => None,
                };
                self.reap_answered(shared, durability, now, round, answer);
            }
            Purpose::Check { round } => {
                let read = match result {
                    Ok(PeerResponse::Replica(ReplicaResponse::Replica(read))) => Some(read),
                    _ => None,
                };
                self.check_answered(shared, durability, now, round, read);
            }
        }
    }

    /// [`Timer::Reap`] fired: start the checks that are due, and sweep if it is time.
    pub(crate) fn timer<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
    ) {
        self.timer = None;
        let due: Vec<(PartitionId, Key)> = self
            .queue
            .iter()
            .filter(|(_, q)| q.not_before <= now)
            .take(self.config.checks_per_interval)
            .map(|(slot, _)| slot.clone())
            .collect();
        for slot in due {
            if let Some(q) = self.queue.remove(&slot) {
                self.start_check(shared, durability, now, slot.0, slot.1, q);
            }
        }
        if now >= self.next_sweep {
            // A full batch: more records wait, so the sweep goes on after one check interval
            // (about 1,000 records a second) instead of the sweep interval.
            let more = self.sweep(shared, durability, now);
            let pause = match more {
                true => self.config.check_interval,
                false => self.config.sweep_interval,
            };
            self.next_sweep = now + pause;
        }
        self.arm(shared, now);
    }

    /// Drops the reaping records past their retention, a batch at a time, and refreshes the
    /// gauge of records held. Returns whether the batch was full (more records follow).
    fn sweep<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
    ) -> bool {
        let storage = durability.storage();
        if let Ok(count) = storage.reaped_count() {
            shared.metrics.reaping_records = count;
        }
        let after = self.sweep_after.as_ref().map(|(p, k)| (*p, k));
        let Ok(records) = storage.reaped_records(after, SWEEP_BATCH) else {
            return false;
        };
        let more = records.len() == SWEEP_BATCH;
        self.sweep_after = match records.last() {
            Some((p, k, _)) if more => Some((*p, k.clone())),
            _ => None,
        };
        let retention = u64::try_from(self.config.retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff = self.unix_ms(now).saturating_sub(retention);
        let batch: WriteBatch = records
            .into_iter()
            .filter(|(_, _, r)| r.reaped_at_unix_ms < cutoff)
            .map(|(partition, key, _)| Write::ForgetReaped {
                partition,
                key,
                reaped_before_unix_ms: cutoff,
            })
            .collect();
        if batch.is_empty() || durability.failed().is_some() {
            return more;
        }
        shared.metrics.reaping_records_forgotten += batch.len() as u64;
        durability.persist_writes(shared, batch, None);
        more
    }

    /// Reads every primary's durable replica of the key.
    fn start_check<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        partition: PartitionId,
        key: Key,
        queued: Queued,
    ) {
        let round = shared.new_id();
        let primaries = shared.ring.primaries(partition).to_vec();
        self.rounds.insert(
            round,
            Round {
                partition,
                key: key.clone(),
                vv: queued.vv,
                since: queued.since,
                tries: queued.tries + 1,
                phase: Phase::Checking,
                waiting: primaries.len(),
                newer: false,
                again: false,
            },
        );
        for primary in primaries {
            if primary == *shared.id() {
                let read = durability.durable_read(&mut shared.metrics, partition, &key);
                self.check_answered(shared, durability, now, round, Some(read));
            } else {
                let message = PeerMessage::Replica(ReplicaMessage::Read {
                    partition,
                    key: key.clone(),
                });
                let purpose = effects::Purpose::Reaper(Purpose::Check { round });
                shared.send(purpose, primary, message, Priority::Bulk, Some(ASK_BUDGET));
            }
        }
    }

    fn check_answered<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        round: u64,
        read: Option<LocalRead>,
    ) {
        let Some(r) = self.rounds.get_mut(&round) else {
            return;
        };
        r.waiting = r.waiting.saturating_sub(1);
        match read {
            Some(LocalRead::Found(o)) if o.holds_no_value() => r.vv = r.vv.join(o.version_vector()),
            Some(LocalRead::Found(o)) => {
                // A value the tombstone covers: the delete has not reached this primary yet
                // (anti-entropy will bring it). One it does not cover: the key lives again.
                let older = o.siblings().iter().all(|(d, _)| r.vv.covers(d));
                if older {
                    r.again = true;
                } else {
                    r.newer = true;
                }
            }
            Some(LocalRead::NotFound) => {}
            Some(LocalRead::Corrupted | LocalRead::TooLarge { .. }) | None => r.again = true,
        }
        if r.waiting > 0 {
            return;
        }
        let Some(r) = self.rounds.remove(&round) else {
            return;
        };
        if r.newer {
            shared.metrics.reaps_refused += 1;
        } else if r.again {
            self.retry(shared, now, r);
        } else {
            self.start_reap(
                shared,
                durability,
                now,
                r.partition,
                r.key,
                r.vv,
                r.since,
                r.tries,
            );
        }
        self.arm(shared, now);
    }

    /// Asks every primary to reap the key with `vv`.
    #[allow(clippy::too_many_arguments)]
    fn start_reap<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        partition: PartitionId,
        key: Key,
        vv: VersionVector,
        since: Instant,
        tries: u32,
    ) {
        let round = shared.new_id();
        let primaries: Vec<NodeId> = shared.ring.primaries(partition).to_vec();
        self.rounds.insert(
            round,
            Round {
                partition,
                key: key.clone(),
                vv: vv.clone(),
                since,
                tries,
                phase: Phase::Reaping,
                waiting: primaries.len(),
                newer: false,
                again: false,
            },
        );
        for primary in primaries {
            if primary == *shared.id() {
                if durability.failed().is_some() {
                    self.reap_answered(shared, durability, now, round, None);
                } else {
                    let asker = Asker::Round(round);
                    self.reap_here(
                        shared,
                        durability,
                        now,
                        partition,
                        key.clone(),
                        vv.clone(),
                        asker,
                    );
                }
            } else {
                let message = PeerMessage::Reap(ReapMessage {
                    partition,
                    key: key.clone(),
                    context: CausalContext::from(vv.clone()),
                });
                let purpose = effects::Purpose::Reaper(Purpose::Reap { round });
                shared.send(purpose, primary, message, Priority::Bulk, Some(ASK_BUDGET));
            }
        }
    }

    /// Applies a reap to the local replica; answered once durable ([`Reaper::persisted`]).
    #[allow(clippy::too_many_arguments)]
    fn reap_here<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        partition: PartitionId,
        key: Key,
        vv: VersionVector,
        ask: Asker,
    ) {
        shared.metrics.reap_asks_served += 1;
        let token = shared.new_id();
        let write = Write::Reap {
            partition,
            key: key.clone(),
            vv: vv.clone(),
            reaped_at_unix_ms: self.unix_ms(now),
        };
        self.serving.insert(
            token,
            Serving {
                partition,
                key,
                vv,
                ask,
            },
        );
        let waiter = Waiter {
            part: Part::Reaper,
            token,
        };
        durability.persist_writes(shared, WriteBatch::from(write), Some(waiter));
    }

    fn reap_answered<S: Storage>(
        &mut self,
        shared: &mut Shared,
        _durability: &mut Durability<S>,
        now: Instant,
        round: u64,
        answer: Option<ReapResponse>,
    ) {
        let Some(r) = self.rounds.get_mut(&round) else {
            return;
        };
        debug_assert_eq!(r.phase, Phase::Reaping);
        r.waiting = r.waiting.saturating_sub(1);
        match answer {
            Some(ReapResponse::Reaped) => {}
            Some(ReapResponse::Newer) => r.newer = true,
            None => r.again = true,
        }
        if r.waiting > 0 {
            return;
        }
        let Some(r) = self.rounds.remove(&round) else {
            return;
        };
        if r.newer {
            // A write raced the reap: it stays where it went, and anti-entropy spreads it.
            shared.metrics.reaps_refused += 1;
        } else if r.again {
            self.retry(shared, now, r);
        } else {
            let ms = u64::try_from(now.saturating_duration_since(r.since).as_millis())
                .unwrap_or(u64::MAX);
            shared.metrics.tombstone_lived(ms);
        }
        self.arm(shared, now);
    }

    /// Queues a round's key for another check, later.
    fn retry(&mut self, shared: &mut Shared, now: Instant, r: Round) {
        let backoff = self.config.check_interval * r.tries.clamp(1, 8);
        self.enqueue(
            shared,
            now,
            r.partition,
            r.key,
            r.vv,
            r.since,
            r.tries,
            now + backoff,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        shared: &mut Shared,
        _now: Instant,
        partition: PartitionId,
        key: Key,
        vv: VersionVector,
        since: Instant,
        tries: u32,
        not_before: Instant,
    ) {
        if tries >= MAX_TRIES {
            shared.metrics.reap_checks_dropped += 1;
            return;
        }
        let full = self.queue.len() >= self.config.max_queued;
        match self.queue.get_mut(&(partition, key.clone())) {
            Some(q) => {
                q.vv = q.vv.join(&vv);
                q.since = q.since.min(since);
            }
            None if full => {
                shared.metrics.reap_checks_dropped += 1;
            }
            None => {
                self.queue.insert(
                    (partition, key),
                    Queued {
                        vv,
                        since,
                        not_before,
                        tries,
                    },
                );
            }
        }
    }

    /// Sets the timer for the next check (one interval on, while keys are queued) or the next
    /// sweep, whichever is first.
    fn arm(&mut self, shared: &mut Shared, now: Instant) {
        let at = match self.queue.is_empty() {
            true => self.next_sweep,
            false => (now + self.config.check_interval).min(self.next_sweep),
        };
        if let Some(old) = self.timer {
            if old <= at && old > now {
                return;
            }
            shared.timers.cancel(old, Timer::Reap);
        }
        shared.timers.schedule(at, Timer::Reap);
        self.timer = Some(at);
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.started).as_millis();
        self.unix_ms_at_start
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}
