//! Hints: the writes this node holds for primaries that were judged down when the writes were
//! made (it stood in for them: a sloppy quorum's fallback), and their handoff home (Dynamo
//! §4.6, `../shared/DESIGN.md` §6).
//!
//! Three roles, one part:
//! - **Fallback.** A `HintMessage::Store` is merged (DVV) into the hint held for
//!   (primary, partition, key) in storage's `hints` table, through the same group commit as
//!   objects, and answered `Stored` only once durable. Many writes to one key while its primary
//!   is down stay one hint. A `HintMessage::Read` is answered with the durable hint.
//! - **Holder.** While any hints are held, [`Timer::HintReplay`] fires every
//!   `HintsConfig::check_interval`; a target the failure detector judges reachable gets its
//!   hints in batches (`HintMessage::Handoff`, at most `replay_batch_bytes` and
//!   [`MAX_HANDOFF_OBJECTS`] each, one batch in flight per target, [`Priority::Bulk`], paced to
//!   `replay_rate` bytes a second over all targets). Each hint is removed only after the
//!   target's answer says the batch is durable there, and only if it did not change since it
//!   was sent (`Write::RemoveHint` with its digest). A batch that fails is sent again from the
//!   same place at the next check, so an interrupted replay resumes where it stood.
//! - **Primary.** A `HintMessage::Handoff` is merged into the local replicas like a read
//!   repair (no new dot), and answered `HandedOff` once every object is durable.
//!
//! **Bounded.** Per target, a fallback holds at most `max_hint_bytes`; a store beyond it is
//! refused (`PeerError::HintsFull`: the write then has one ack fewer, counted as a failed target
//! by its coordinator) and counted as dropped. Hints older than `max_hint_window` are removed,
//! also while the target is down (a sweep of its hints once its oldest passes the window), and
//! counted as dropped: anti-entropy repairs what they held. The byte and key counts are kept as
//! hints come and go, from a count of what storage holds when the node starts; a hint merged
//! into one held is counted at the larger of the two sizes.
//!
//! Times: a hint's age is from `NodeConfig::unix_ms_at_start` plus the time since the node
//! started (the part reads no clock), so it survives restarts as well as the wall clock does.
//!
//! Not here: choosing fallbacks (`client`, from the ring's sloppy preference list and
//! `membership`), and a ring that moved while a hint waited (ring changes are not built yet: a
//! hint goes to the node it names, which refuses it if it no longer holds the partition).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_causality::Object;
use shoal_protocol::{
    HandedOff, HintMessage, HintResponse, MAX_HANDOFF_OBJECTS, PeerError, PeerMessage,
    PeerResponse, Response, StorageFault,
};
use shoal_storage::{CommitError, HintEntry, ObjectDigest, Storage, Write, WriteBatch};
use shoal_types::{Key, NodeId, PartitionId};

use crate::SendError;
use crate::durability::{Durability, Receipts, Received};
use crate::effects::{self, Inbound, InboundId, OutboundId, Part, Priority, Shared, Waiter};
use crate::membership::Membership;
use crate::replica::{refuse_peer_write, sendable};
use crate::timers::Timer;

/// Hinted-handoff settings. Defaults after Cassandra's and Riak's, tighter where they lose
/// hints: 1 GiB and 3 h per target, replay checked four times a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintsConfig {
    /// Whether this node writes hints at all: fallbacks standing in for primaries judged down
    /// (sloppy quorums), and a coordinator's own hint for a primary that did not ack. Off
    /// (`shoal server --no-hints`, for tests of anti-entropy alone), a write goes to the
    /// reachable primaries only; the node still serves and hands off hints it holds. Default on.
    pub enabled: bool,
    /// Most bytes (keys and values) held for one target; beyond, new hints are refused.
    pub max_hint_bytes: u64,
    /// Hints older than this are dropped (anti-entropy repairs what they held).
    pub max_hint_window: Duration,
    /// Most bytes of objects in one handoff batch.
    pub replay_batch_bytes: usize,
    /// Handoff bytes a second, over all targets: what replay may take from foreground traffic.
    pub replay_rate: u64,
    /// How often, while hints are held, the node looks for targets that are reachable again
    /// (and for hints past the window).
    pub check_interval: Duration,
}

impl Default for HintsConfig {
    fn default() -> Self {
        HintsConfig {
            enabled: true,
            max_hint_bytes: 1 << 30,
            max_hint_window: Duration::from_secs(3 * 3600),
            replay_batch_bytes: 256 * 1024,
            replay_rate: 4 * 1024 * 1024,
            check_interval: Duration::from_millis(250),
        }
    }
}

/// What a message this part sent was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A handoff batch to a target (which target: the message's destination).
    Handoff,
}

/// What this node holds for one target, and where its replay stands.
#[derive(Debug, Default)]
struct Held {
    keys: u64,
    bytes: u64,
    /// When the oldest hint held was stored (Unix ms); exact after a full sweep, otherwise
    /// the oldest since the target's hints were last all gone.
    oldest_unix_ms: Option<u64>,
    /// Replay and sweeps go on after this hint (in storage order); `None`: from the start.
    cursor: Option<(PartitionId, Key)>,
    /// The batch out to the target, if one is.
    in_flight: Option<Batch>,
    /// Whether the pass under way found a hint to keep or hand off.
    pass_found: bool,
    /// Whether a hint became durable since the last pass ended: it may lie behind the
    /// cursor, so another pass must look.
    dirty: bool,
    /// While a sweep pass is under way: the oldest hint it kept so far.
    pass_oldest: Option<u64>,
    /// Hints handed off to this target in this run.
    replayed: u64,
}

impl Held {
    /// Whether there is anything to do for this target: hints counted, or a pass under way
    /// (which ends by confirming what is left).
    fn active(&self) -> bool {
        self.keys > 0 || self.pass_found || self.dirty || self.cursor.is_some()
    }
}

/// A handoff batch awaiting the target's answer.
#[derive(Debug)]
struct Batch {
    /// The message.
    id: OutboundId,
    /// When it left: past its budget (and a margin) the batch is given up and sent again.
    sent_at: Instant,
    hints: Vec<Sent>,
    /// Where the cursor stands once the batch is handed off.
    last: (PartitionId, Key),
}

/// One hint of a batch: what removing it needs, and its size for the counts.
#[derive(Debug)]
struct Sent {
    partition: PartitionId,
    key: Key,
    digest: ObjectDigest,
    bytes: u64,
}

/// A hint for `primary` waiting for its persist, and the fallback's store to answer once it
/// is durable (`None`: the coordinator's own hint, which nobody waits for).
#[derive(Debug)]
struct PendingStore {
    primary: NodeId,
    reply: Option<InboundId>,
}

/// One target's hints as the status shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Queue {
    pub(crate) target: NodeId,
    pub(crate) keys: u64,
    pub(crate) bytes: u64,
    pub(crate) oldest_unix_ms: Option<u64>,
    pub(crate) replaying: bool,
    pub(crate) replayed: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Hints {
    config: HintsConfig,
    started: Instant,
    unix_ms_at_start: u64,
    held: BTreeMap<NodeId, Held>,
    stores: BTreeMap<u64, PendingStore>,
    /// Persist waits of this part are named by tokens from `Shared::new_id`, unique within
    /// the run, so a hint's store and a received handoff never share one.
    receiving: Receipts,
    /// When [`Timer::HintReplay`] is set for, if it is.
    timer: Option<Instant>,
    /// No handoff batch leaves before this (the pacing of `replay_rate`).
    next_send: Instant,
}

/// How many hints one listing of storage takes.
const LIST_BATCH: usize = 64;

/// How long the target has to answer a handoff batch.
const HANDOFF_BUDGET: Duration = Duration::from_secs(10);

/// What a hint counts for against `max_hint_bytes`.
fn hint_bytes(key: &Key, object: &Object) -> u64 {
    (key.len() + object.value_bytes() + 64) as u64
}

impl Hints {
    /// The hints part of a node started at `now`, counting what storage holds for each ring
    /// member.
    pub(crate) fn new<S: Storage>(now: Instant, shared: &mut Shared, storage: &S) -> Hints {
        let mut hints = Hints {
            config: shared.config.hints,
            started: now,
            unix_ms_at_start: shared.config.unix_ms_at_start,
            held: BTreeMap::new(),
            stores: BTreeMap::new(),
            receiving: Receipts::default(),
            timer: None,
            next_send: now,
        };
        let targets: Vec<NodeId> = shared
            .ring
            .members()
            .iter()
            .map(|m| m.id.clone())
            .filter(|id| id != shared.id())
            .collect();
        for target in targets {
            let held = hints.count(storage, &target);
            if held.keys > 0 {
                hints.held.insert(target, held);
            }
        }
        hints.arm(shared, now);
        hints
    }

    /// Counts the hints storage holds for `target`.
    fn count<S: Storage>(&self, storage: &S, target: &NodeId) -> Held {
        let mut held = Held::default();
        let mut after: Option<(PartitionId, Key)> = None;
        loop {
            let page = match storage.hints(target, after.as_ref().map(|(p, k)| (*p, k)), 256) {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(%target, error = %e, "could not count the hints held");
                    break;
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(match last {
                HintEntry::Found(h) => (h.partition, h.key.clone()),
                HintEntry::Corrupted { partition, key } => (*partition, key.clone()),
            });
            for entry in &page {
                held.keys += 1;
                if let HintEntry::Found(h) = entry {
                    held.bytes += hint_bytes(&h.key, &h.object);
                    let oldest = held.oldest_unix_ms.unwrap_or(u64::MAX);
                    held.oldest_unix_ms = Some(oldest.min(h.stored_at_unix_ms));
                }
            }
            if page.len() < 256 {
                break;
            }
        }
        held
    }

    /// The wall-clock time at `now`, in Unix milliseconds, as far as this node knows it.
    fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.started).as_millis();
        self.unix_ms_at_start
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Every target with hints held, for the status.
    pub(crate) fn queues(&self) -> Vec<Queue> {
        self.held
            .iter()
            .filter(|(_, h)| h.keys > 0 || h.in_flight.is_some())
            .map(|(target, h)| Queue {
                target: target.clone(),
                keys: h.keys,
                bytes: h.bytes,
                oldest_unix_ms: h.oldest_unix_ms,
                replaying: h.in_flight.is_some(),
                replayed: h.replayed,
            })
            .collect()
    }

    /// Hints held, over all targets.
    pub(crate) fn pending(&self) -> (u64, u64) {
        self.held
            .values()
            .fold((0, 0), |(k, b), h| (k + h.keys, b + h.bytes))
    }

    /// A peer's hint message.
    pub(crate) fn serve<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        inbound: Inbound,
        message: HintMessage,
    ) {
        let id = inbound.id;
        if shared.refuse_expired(&inbound, now) {
            return;
        }
        match message {
            HintMessage::Store {
                primary,
                partition,
                key,
                object,
            } => self.store(shared, durability, now, id, primary, partition, key, object),
            HintMessage::Read {
                primary,
                partition,
                key,
            } => {
                let read = durability.hint_read(&mut shared.metrics, &primary, partition, &key);
                let read = sendable(read, shared.config.limits.max_object_bytes());
                reply(shared, id, HintResponse::Held(read));
            }
            HintMessage::Handoff { objects } => self.receive(shared, durability, id, objects),
        }
    }

    /// A fallback is asked to hold `object` for `primary`.
    #[allow(clippy::too_many_arguments)]
    fn store<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        id: InboundId,
        primary: NodeId,
        partition: PartitionId,
        key: Key,
        object: Object,
    ) {
        let expected = shared.ring.partition_for_key(&key);
        if partition != expected {
            let error = PeerError::WrongPartition {
                expected,
                got: partition,
            };
            return shared.refuse(id, error);
        }
        if let Some(error) = refuse_peer_write(shared, durability) {
            return shared.refuse(id, error);
        }
        let token = shared.new_id();
        let held = self.hold(
            shared, durability, now, token, primary, partition, key, object,
        );
        match (held, self.stores.get_mut(&token)) {
            (Ok(()), Some(store)) => store.reply = Some(id),
            (Ok(()), None) => reply(shared, id, HintResponse::Stored),
            (Err(error), _) => shared.refuse(id, error),
        }
    }

    /// The coordinator of a write holds it for `primary` itself: a primary it sent the write
    /// to did not take it (it failed, or did not answer in time) and no fallback could stand
    /// in. As Cassandra's coordinator does, it keeps a hint, replayed like any other; nobody
    /// waits for it, and it counts toward no quorum. Refused (and counted dropped) at the
    /// bound, as a fallback's store is.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hold_for<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        primary: NodeId,
        partition: PartitionId,
        key: Key,
        object: Object,
    ) {
        if !shared.config.hints.enabled {
            return;
        }
        let token = shared.new_id();
        if let Err(error) = self.hold(
            shared, durability, now, token, primary, partition, key, object,
        ) {
            tracing::debug!(%error, "a coordinator's own hint was not kept");
        }
    }

    /// Stores `object` as the hint held for `primary`, counted against its bound; its persist
    /// is named by `token` (in `stores`).
    #[allow(clippy::too_many_arguments)]
    fn hold<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        now: Instant,
        token: u64,
        primary: NodeId,
        partition: PartitionId,
        key: Key,
        object: Object,
    ) -> Result<(), PeerError> {
        if durability.failed().is_some() {
            return Err(PeerError::Storage(StorageFault::RunFailed));
        }
        // What the hint adds to the count: a new key, or a held one grown to the larger size.
        let size = hint_bytes(&key, &object);
        let (new_key, added) = match durability.storage().hint(&primary, partition, &key) {
            Ok(Some(HintEntry::Found(h))) => {
                (false, size.saturating_sub(hint_bytes(&h.key, &h.object)))
            }
            Ok(Some(HintEntry::Corrupted { .. })) => (false, size),
            Ok(None) => (true, size),
            Err(_) => {
                shared.metrics.corrupt_reads += 1;
                return Err(PeerError::Storage(StorageFault::Unreadable));
            }
        };
        let stored_at = self.unix_ms(now);
        let held = self.held.entry(primary.clone()).or_default();
        if held.bytes.saturating_add(added) > self.config.max_hint_bytes {
            shared.metrics.hints_dropped += 1;
            return Err(PeerError::HintsFull { primary });
        }
        held.keys += u64::from(new_key);
        held.bytes += added;
        held.oldest_unix_ms = Some(held.oldest_unix_ms.unwrap_or(stored_at).min(stored_at));
        shared.metrics.hints_stored += 1;
        self.stores.insert(
            token,
            PendingStore {
                primary: primary.clone(),
                reply: None,
            },
        );
        let batch = WriteBatch::from(Write::Hint {
            target: primary,
            partition,
            key,
            object,
            stored_at_unix_ms: stored_at,
        });
        let waiter = Waiter {
            part: Part::Hints,
            token,
        };
        durability.persist_writes(shared, batch, Some(waiter));
        self.arm(shared, now);
        Ok(())
    }

    /// A holder hands `objects` to this node, a primary of each.
    fn receive<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        id: InboundId,
        objects: Vec<HandedOff>,
    ) {
        // Check every object before storing any, so a refusal applies nothing.
        for o in &objects {
            let expected = shared.ring.partition_for_key(&o.key);
            if o.partition != expected {
                let error = PeerError::WrongPartition {
                    expected,
                    got: o.partition,
                };
                return shared.refuse(id, error);
            }
            if !shared.ring.is_primary(shared.id(), o.partition) {
                return shared.refuse(id, PeerError::NotPrimary(o.partition));
            }
        }
        if let Some(error) = refuse_peer_write(shared, durability) {
            return shared.refuse(id, error);
        }
        shared.metrics.hints_received += objects.len() as u64;
        let objects = objects.iter().map(|o| (o.partition, &o.key, &o.object));
        if let Some(done) = self
            .receiving
            .store_all(shared, durability, Part::Hints, id, objects)
        {
            finish_receiving(shared, done);
        }
    }

    /// A persist that waiter `token` of this part waited for ended.
    pub(crate) fn persisted(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        token: u64,
        result: &Result<(), CommitError>,
    ) {
        if let Some(store) = self.stores.remove(&token) {
            if result.is_ok() {
                self.held.entry(store.primary).or_default().dirty = true;
                self.arm(shared, now);
            }
            if let Some(id) = store.reply {
                match result {
                    Ok(()) => reply(shared, id, HintResponse::Stored),
                    Err(_) => shared.refuse(id, PeerError::Storage(StorageFault::CommitFailed)),
                }
            }
            return;
        }
        if let Some(Some(done)) = self.receiving.persisted(token, result) {
            finish_receiving(shared, done);
        }
    }

    /// [`Timer::HintReplay`] fired: hand off to every reachable target, sweep aged hints.
    pub(crate) fn timer<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        membership: &Membership,
        now: Instant,
    ) {
        self.timer = None;
        // A batch whose answer never came (the driver lost it) is given up, to be sent again.
        for held in self.held.values_mut() {
            if let Some(batch) = &held.in_flight
                && now >= batch.sent_at + HANDOFF_BUDGET * 2
            {
                shared.abandon(batch.id);
                shared.metrics.hint_replay_failures += 1;
                held.in_flight = None;
            }
        }
        if durability.failed().is_none() {
            let targets: Vec<NodeId> = self.held.keys().cloned().collect();
            for target in targets {
                self.advance(shared, durability, membership, now, &target);
            }
        }
        self.held
            .retain(|_, h| h.active() || h.in_flight.is_some() || h.replayed > 0);
        self.arm(shared, now);
    }

    /// One step for `target`: the next handoff batch if it is reachable, or a page of the
    /// sweep of aged hints if its oldest passed the window.
    ///
    /// Replay and sweeps walk the target's hints in storage order, a page at a time, in
    /// passes. A pass that found nothing to keep or hand off ends with the target's counts set
    /// to zero: that, not the counts kept along the way, is what says it holds nothing more.
    fn advance<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        membership: &Membership,
        now: Instant,
        target: &NodeId,
    ) {
        let window = u64::try_from(self.config.max_hint_window.as_millis()).unwrap_or(u64::MAX);
        let cutoff = self.unix_ms(now).saturating_sub(window);
        let Some(held) = self.held.get_mut(target) else {
            return;
        };
        if !held.active() || held.in_flight.is_some() {
            return;
        }
        let reachable = membership.is_reachable(target);
        let aged = held.oldest_unix_ms.is_some_and(|t| t < cutoff);
        if reachable && now < self.next_send {
            // Paced: the timer is set for when the next batch may leave.
            return;
        }
        if !reachable && !aged {
            return;
        }
        let after = held.cursor.as_ref().map(|(p, k)| (*p, k));
        let page = match durability.storage().hints(target, after, LIST_BATCH) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(%target, error = %e, "could not list the hints held");
                return;
            }
        };
        let complete = page.len() < LIST_BATCH;
        let mut removals = WriteBatch::new();
        let mut objects: Vec<HandedOff> = Vec::new();
        let mut sent: Vec<Sent> = Vec::new();
        let mut batch_bytes = 0usize;
        for entry in page {
            let hint = match entry {
                HintEntry::Corrupted { partition, key } => {
                    shared.metrics.hints_dropped += 1;
                    held.keys = held.keys.saturating_sub(1);
                    held.cursor = Some((partition, key.clone()));
                    removals.push(Write::RemoveHint {
                        target: target.clone(),
                        partition,
                        key,
                        if_digest: None,
                    });
                    continue;
                }
                HintEntry::Found(hint) => hint,
            };
            let bytes = hint_bytes(&hint.key, &hint.object);
            if hint.stored_at_unix_ms < cutoff {
                shared.metrics.hints_dropped += 1;
                held.keys = held.keys.saturating_sub(1);
                held.bytes = held.bytes.saturating_sub(bytes);
                held.cursor = Some((hint.partition, hint.key.clone()));
                removals.push(Write::RemoveHint {
                    target: target.clone(),
                    partition: hint.partition,
                    key: hint.key,
                    if_digest: Some(hint.digest),
                });
                continue;
            }
            held.pass_found = true;
            if !reachable {
                // A sweep: the hint stays; note how old it is.
                let oldest = held.pass_oldest.unwrap_or(u64::MAX);
                held.pass_oldest = Some(oldest.min(hint.stored_at_unix_ms));
                held.cursor = Some((hint.partition, hint.key));
                continue;
            }
            let size = hint.object.value_bytes();
            if !objects.is_empty()
                && (batch_bytes + size > self.config.replay_batch_bytes
                    || objects.len() >= MAX_HANDOFF_OBJECTS)
            {
                break;
            }
            batch_bytes += size;
            sent.push(Sent {
                partition: hint.partition,
                key: hint.key.clone(),
                digest: hint.digest,
                bytes,
            });
            objects.push(HandedOff {
                partition: hint.partition,
                key: hint.key,
                object: hint.object,
            });
        }
        if !removals.is_empty() {
            durability.persist_writes(shared, removals, None);
        }
        if let Some(last) = objects.last() {
            let last = (last.partition, last.key.clone());
            let pace = batch_bytes as f64 / self.config.replay_rate.max(1) as f64;
            self.next_send = now + Duration::from_secs_f64(pace);
            let message = PeerMessage::Hint(HintMessage::Handoff { objects });
            let purpose = effects::Purpose::Hints(Purpose::Handoff);
            let budget = Some(HANDOFF_BUDGET);
            let id = shared.send(purpose, target.clone(), message, Priority::Bulk, budget);
            held.in_flight = Some(Batch {
                id,
                sent_at: now,
                hints: sent,
                last,
            });
            return;
        }
        if complete {
            // The pass is over; the next starts from the first hint again.
            held.cursor = None;
            if held.pass_found || held.dirty {
                // Something is still held: there is another pass to make.
                held.keys = held.keys.max(1);
                if let Some(oldest) = held.pass_oldest {
                    held.oldest_unix_ms = Some(oldest);
                }
            } else {
                held.keys = 0;
                held.bytes = 0;
                held.oldest_unix_ms = None;
            }
            held.pass_found = false;
            held.dirty = false;
            held.pass_oldest = None;
        }
    }

    /// The answer to a handoff batch sent to `to` ([`Purpose::Handoff`]).
    pub(crate) fn handoff_answered<S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        membership: &Membership,
        now: Instant,
        to: NodeId,
        result: Result<PeerResponse, SendError>,
    ) {
        let Some(held) = self.held.get_mut(&to) else {
            return;
        };
        let Some(batch) = held.in_flight.take() else {
            return;
        };
        match result {
            Ok(PeerResponse::Hint(HintResponse::HandedOff)) => {
                let mut removals = WriteBatch::new();
                for hint in batch.hints {
                    held.keys = held.keys.saturating_sub(1);
                    held.bytes = held.bytes.saturating_sub(hint.bytes);
                    held.replayed += 1;
                    shared.metrics.hints_replayed += 1;
                    removals.push(Write::RemoveHint {
                        target: to.clone(),
                        partition: hint.partition,
                        key: hint.key,
                        if_digest: Some(hint.digest),
                    });
                }
                held.cursor = Some(batch.last);
                durability.persist_writes(shared, removals, None);
                // Go on at once, or when the pacing allows: the target is there.
                self.advance(shared, durability, membership, now, &to);
            }
            other => {
                // Sent again from the same place at a later check.
                shared.metrics.hint_replay_failures += 1;
                tracing::debug!(target = %to, outcome = ?other, "a handoff batch was not taken");
            }
        }
        self.arm(shared, now);
    }

    /// Sets [`Timer::HintReplay`] while hints are held — for the next check, or sooner when
    /// the pacing lets the next batch leave sooner — and clears it when none are, so that a
    /// node with no hints is never woken for them.
    fn arm(&mut self, shared: &mut Shared, now: Instant) {
        let busy = self.held.values().any(Held::active);
        let want = busy.then(|| {
            let check = now + self.config.check_interval;
            let paced = self
                .held
                .values()
                .any(|h| h.active() && h.in_flight.is_none());
            if paced && self.next_send > now {
                check.min(self.next_send)
            } else {
                check
            }
        });
        match (self.timer, want) {
            (Some(at), Some(want)) if want >= at => {}
            (None, None) => {}
            (set, want) => {
                if let Some(at) = set {
                    shared.timers.cancel(at, Timer::HintReplay);
                }
                if let Some(at) = want {
                    shared.timers.schedule(at, Timer::HintReplay);
                }
                self.timer = want;
            }
        }
    }
}

/// Answers a received handoff once its last object is durable (or one failed).
fn finish_receiving(shared: &mut Shared, (id, outcome): Received) {
    match outcome {
        Ok(()) => reply(shared, id, HintResponse::HandedOff),
        Err(error) => shared.refuse(id, error),
    }
}

fn reply(shared: &mut Shared, id: InboundId, response: HintResponse) {
    shared.reply(id, Response::Peer(PeerResponse::Hint(response)));
}
