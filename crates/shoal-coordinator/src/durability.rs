//! The local replica and its durability overlay: what this node holds of each key, seen two ways.
//!
//! - **Durable** ([`Durability::durable_read`]): what storage has committed. Reads answer this, so
//!   no reader ever sees a dot that a crash could take back.
//! - **For writing** ([`Durability::read_for_write`]): the newest object handed out to persist,
//!   durable or not (the overlay, then storage), so that the next write to a key builds on the
//!   last one even while its commit is in flight.
//!
//! Writes leave as [`Output::Persist`](crate::Output::Persist) batches; each names the
//! [`Waiter`]s to tell once it is durable (or failed), and the node routes each to the part that
//! waits. A failed commit marks the node's storage failed for the rest of the run: the disk may
//! be failing, and what it holds may differ from what this part believes (a failed commit may
//! have reached it anyway), so the node stops coordinating and storing writes until a restart
//! reads the disk afresh.
//!
//! **Only durable dots leave.** Reads answer [`Durability::durable_read`]; a coordinator sends
//! its write to the other replicas only once it is durable here (`client::put`). So the disk
//! holds, after any crash, every dot of this node that exists anywhere else, and the node counts
//! on from it under the same incarnation. Every later part that ships objects (hints,
//! anti-entropy, handoff) must ship them from durable storage too.
//!
//! **Whose dots are whose.** This part also holds the node's [`Actor`], the name its dots are
//! made under, because only the local replica knows which dots the node has made: a new dot is
//! one past the highest the local replica names. A record found corrupted loses that knowledge
//! for its key: the dots it named may live on other replicas (whole, or as a version-vector
//! entry that covers them), and an older copy put in its place would let the node make them
//! again for other values (Riak's kv679). So when a corrupted record is replaced, or an incoming
//! object holds a dot of the current actor that the local replica lacks (a record lost some
//! other way), the node *renews its incarnation*: the batch that replaces the record also
//! records a fresh incarnation ([`WriteBatch::renew_incarnation`]), and every dot from then on
//! is made under the new actor, which no replica has seen. A record that cannot be read (an I/O
//! error) is not replaced at all: the write that would replace it is refused, so the node
//! never overwrites a record it merely failed to read.
//!
//! Not here: deciding what to write (the client-requests and replica parts do), and doing I/O
//! (storage's commit thread does, driven by the server).

use std::collections::BTreeMap;

use rand::RngExt;
use shoal_causality::{Actor, Object};
use shoal_protocol::{LocalRead, PeerError, StorageFault};
use shoal_storage::{CommitError, HintEntry, ReadError, ReadOutcome, Storage, Write, WriteBatch};
use shoal_types::{Incarnation, Key, NodeId, PartitionId};

use crate::NodeMetrics;
use crate::effects::{InboundId, Part, PersistId, Shared, Waiter};

/// The local replica, as the parts of the node see it. See the module docs.
#[derive(Debug)]
pub(crate) struct Durability<S> {
    storage: S,
    /// The name this node's dots are made under: its id and current incarnation.
    actor: Actor,
    /// Objects handed to storage but not yet durable, newest per key.
    overlay: BTreeMap<(PartitionId, Key), (Object, PersistId)>,
    persists: BTreeMap<PersistId, PendingPersist>,
    /// The commit failure of this run, if one happened.
    failed: Option<CommitError>,
}

#[derive(Debug)]
struct PendingPersist {
    keys: Vec<(PartitionId, Key)>,
    waiters: Vec<Waiter>,
}

/// The local replica of a key, as a write sees it.
#[derive(Debug)]
pub(crate) enum Local {
    Found(Object),
    NotFound,
    Corrupted,
}

/// What [`Durability::store`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The merged object was durable already: nothing was written, nobody will be told.
    AlreadyDurable,
    /// A persist is in flight (new, or one that already carried the merged object); the
    /// waiter, if any, is told when it ends.
    Pending,
    /// The local record could not be read (an I/O error): nothing was written, since writing
    /// would replace a record that may be intact. The waiter is not kept.
    Unreadable,
}

/// Batches of objects from peers (a hint handoff, an anti-entropy push), each stored through
/// [`Durability::store`] and answered once every object in it is durable, or once one failed.
/// The part that received a batch says what the answer is; this keeps the waiting.
#[derive(Debug, Default)]
pub(crate) struct Receipts {
    /// By the token their persists wait under.
    waiting: BTreeMap<u64, Receipt>,
}

/// One batch waiting for its persists.
#[derive(Debug)]
struct Receipt {
    /// The message to answer.
    id: InboundId,
    waiting: usize,
    failed: Option<PeerError>,
}

/// A batch that is done: the message to answer, and whether every object is durable.
pub(crate) type Received = (InboundId, Result<(), PeerError>);

impl Receipts {
    /// Stores `objects` for the peer message `id`, the persists waiting under a new token of
    /// `part`. The outcome at once if nothing is left to wait for; `None` if something is (then
    /// [`Receipts::persisted`] gives it).
    pub(crate) fn store_all<'a, S: Storage>(
        &mut self,
        shared: &mut Shared,
        durability: &mut Durability<S>,
        part: Part,
        id: InboundId,
        objects: impl IntoIterator<Item = (PartitionId, &'a Key, &'a Object)>,
    ) -> Option<Received> {
        let token = shared.new_id();
        let waiter = Waiter { part, token };
        let mut receipt = Receipt {
            id,
            waiting: 0,
            failed: None,
        };
        for (partition, key, object) in objects {
            match durability.store(shared, partition, key, object, Some(waiter)) {
                Stored::AlreadyDurable => {}
                Stored::Pending => receipt.waiting += 1,
                Stored::Unreadable => {
                    receipt.failed = Some(PeerError::Storage(StorageFault::Unreadable));
                }
            }
        }
        if receipt.waiting == 0 {
            return Some(receipt.done());
        }
        self.waiting.insert(token, receipt);
        None
    }

    /// A persist that waited under `token` ended: `None` if no batch waits under it, else
    /// whether that batch is now done (`Some(None)`: it still waits).
    pub(crate) fn persisted(
        &mut self,
        token: u64,
        result: &Result<(), CommitError>,
    ) -> Option<Option<Received>> {
        let receipt = self.waiting.get_mut(&token)?;
        receipt.waiting = receipt.waiting.saturating_sub(1);
        if result.is_err() {
            receipt.failed = Some(PeerError::Storage(StorageFault::CommitFailed));
        }
        if receipt.waiting > 0 {
            return Some(None);
        }
        Some(self.waiting.remove(&token).map(Receipt::done))
    }
}

impl Receipt {
    fn done(self) -> Received {
        (self.id, self.failed.map_or(Ok(()), Err))
    }
}

impl<S: Storage> Durability<S> {
    pub(crate) fn new(storage: S, actor: Actor) -> Self {
        Durability {
            storage,
            actor,
            overlay: BTreeMap::new(),
            persists: BTreeMap::new(),
            failed: None,
        }
    }

    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    pub(crate) fn into_storage(self) -> S {
        self.storage
    }

    /// The actor of the dots this node makes now.
    pub(crate) fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The commit failure of this run, if one happened.
    pub(crate) fn failed(&self) -> Option<&CommitError> {
        self.failed.as_ref()
    }

    /// Batches handed out and not yet reported durable.
    pub(crate) fn pending(&self) -> usize {
        self.persists.len()
    }

    /// The local replica as durable storage holds it: what reads answer.
    pub(crate) fn durable_read(
        &self,
        metrics: &mut NodeMetrics,
        partition: PartitionId,
        key: &Key,
    ) -> LocalRead {
        match self.storage.object(partition, key) {
            Ok(ReadOutcome::Found(o)) => LocalRead::Found(o),
            Ok(ReadOutcome::NotFound) => LocalRead::NotFound,
            Ok(ReadOutcome::Corrupted) | Err(_) => {
                metrics.corrupt_reads += 1;
                LocalRead::Corrupted
            }
        }
    }

    /// The local replica including writes not yet durable: what a new write builds on.
    pub(crate) fn read_for_write(
        &self,
        metrics: &mut NodeMetrics,
        partition: PartitionId,
        key: &Key,
    ) -> Result<Local, ReadError> {
        if let Some((o, _)) = self.overlay.get(&(partition, key.clone())) {
            return Ok(Local::Found(o.clone()));
        }
        match self.storage.object(partition, key)? {
            ReadOutcome::Found(o) => Ok(Local::Found(o)),
            ReadOutcome::NotFound => Ok(Local::NotFound),
            ReadOutcome::Corrupted => {
                metrics.corrupt_reads += 1;
                Ok(Local::Corrupted)
            }
        }
    }

    /// Hands `object` out to be stored under the key (replacing what is there), visible to
    /// writes at once and to reads once durable; `waiter` is told when it is.
    pub(crate) fn persist(
        &mut self,
        shared: &mut Shared,
        partition: PartitionId,
        key: &Key,
        object: Object,
        waiter: Option<Waiter>,
    ) {
        self.persist_renewing(shared, partition, key, object, waiter, None);
    }

    /// [`Durability::persist`], the batch also renewing the incarnation when `renewal` is set.
    fn persist_renewing(
        &mut self,
        shared: &mut Shared,
        partition: PartitionId,
        key: &Key,
        object: Object,
        waiter: Option<Waiter>,
        renewal: Option<Incarnation>,
    ) {
        let id = PersistId(shared.new_id());
        self.overlay
            .insert((partition, key.clone()), (object.clone(), id));
        self.persists.insert(
            id,
            PendingPersist {
                keys: vec![(partition, key.clone())],
                waiters: waiter.into_iter().collect(),
            },
        );
        let mut batch = WriteBatch::from(Write::Object {
            partition,
            key: key.clone(),
            object,
        });
        if let Some(incarnation) = renewal {
            batch.renew_incarnation(incarnation);
        }
        shared.persist(id, batch);
    }

    /// Hands out `batch` (hints held for other nodes, or their removal: nothing a read or write
    /// of this node's own replicas sees) to be made durable; `waiter` is told when it is.
    pub(crate) fn persist_writes(
        &mut self,
        shared: &mut Shared,
        batch: WriteBatch,
        waiter: Option<Waiter>,
    ) {
        let id = PersistId(shared.new_id());
        self.persists.insert(
            id,
            PendingPersist {
                keys: Vec::new(),
                waiters: waiter.into_iter().collect(),
            },
        );
        shared.persist(id, batch);
    }

    /// The hint this node holds for `primary` of the key, as durable storage holds it: what a
    /// fallback answers a read with.
    pub(crate) fn hint_read(
        &self,
        metrics: &mut NodeMetrics,
        primary: &NodeId,
        partition: PartitionId,
        key: &Key,
    ) -> LocalRead {
        match self.storage.hint(primary, partition, key) {
            Ok(Some(HintEntry::Found(h))) => LocalRead::Found(h.object),
            Ok(None) => LocalRead::NotFound,
            Ok(Some(HintEntry::Corrupted { .. })) | Err(_) => {
                metrics.corrupt_reads += 1;
                LocalRead::Corrupted
            }
        }
    }

    /// Merges `incoming` into the local replica and makes the result durable; `waiter` is told
    /// once the merged state is durable, unless it already was ([`Stored::AlreadyDurable`]:
    /// the caller answers at once) or the local record could not be read
    /// ([`Stored::Unreadable`]). A corrupted record is replaced by `incoming`, renewing the
    /// incarnation (see the module docs).
    pub(crate) fn store(
        &mut self,
        shared: &mut Shared,
        partition: PartitionId,
        key: &Key,
        incoming: &Object,
        waiter: Option<Waiter>,
    ) -> Stored {
        let (base, pending, corrupted) = match self.overlay.get(&(partition, key.clone())) {
            Some((o, pid)) => (Some(o.clone()), Some(*pid), false),
            None => match self.storage.object(partition, key) {
                Ok(ReadOutcome::Found(o)) => (Some(o), None, false),
                Ok(ReadOutcome::NotFound) => (None, None, false),
                Ok(ReadOutcome::Corrupted) => {
                    shared.metrics.corrupt_reads += 1;
                    (None, None, true)
                }
                Err(_) => {
                    shared.metrics.corrupt_reads += 1;
                    return Stored::Unreadable;
                }
            },
        };
        let merged = match &base {
            Some(b) => b.merge(incoming),
            None => incoming.clone(),
        };
        if base.as_ref() == Some(&merged) {
            return match pending {
                Some(pid) => {
                    if let (Some(p), Some(waiter)) = (self.persists.get_mut(&pid), waiter) {
                        p.waiters.push(waiter);
                    }
                    Stored::Pending
                }
                None => Stored::AlreadyDurable,
            };
        }
        let lost = corrupted || self.lacks_own_dot(base.as_ref(), incoming);
        let renewal = lost.then(|| self.renew(shared));
        self.persist_renewing(shared, partition, key, merged, waiter, renewal);
        Stored::Pending
    }

    /// Whether `incoming` holds a dot of the current actor that the local replica has not
    /// seen: the node made it, so its replica must have held it; it lost the record some way
    /// that left no trace.
    fn lacks_own_dot(&self, local: Option<&Object>, incoming: &Object) -> bool {
        let seen = |d| local.is_some_and(|o| o.version_vector().covers(d));
        incoming
            .siblings()
            .iter()
            .any(|(d, _)| d.actor == self.actor && !seen(d))
    }

    /// Takes a fresh incarnation for every dot made from now on, and returns it for the batch
    /// that must record it.
    fn renew(&mut self, shared: &mut Shared) -> Incarnation {
        let previous = self.actor.incarnation;
        let mut fresh = Incarnation::new(shared.rng.random());
        if fresh == previous {
            fresh = Incarnation::new(fresh.get().wrapping_add(1));
        }
        tracing::warn!(
            node = %self.actor.node,
            %previous,
            incarnation = %fresh,
            "a local record was lost: new incarnation, so no dot it named is made again"
        );
        shared.metrics.incarnation_renewals += 1;
        self.actor = Actor::new(self.actor.node.clone(), fresh);
        fresh
    }

    /// Persist `id` ended: its objects leave the overlay (unless a newer write replaced them),
    /// and its waiters are handed back to be told. A failure marks the storage failed.
    pub(crate) fn persisted(
        &mut self,
        id: PersistId,
        result: &Result<(), CommitError>,
    ) -> Vec<Waiter> {
        let Some(persist) = self.persists.remove(&id) else {
            return Vec::new();
        };
        for k in &persist.keys {
            if self.overlay.get(k).is_some_and(|(_, pid)| *pid == id) {
                self.overlay.remove(k);
            }
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "storage write failed; this node stops coordinating writes");
            self.failed = Some(e.clone());
        }
        persist.waiters
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use shoal_causality::{Actor, CausalContext, Sibling};
    use shoal_ring::{Member, Ring};
    use shoal_storage::MemoryStorage;
    use shoal_types::{Incarnation, NodeId, PartitionCount, ReplicationFactor};

    use super::*;
    use crate::effects::Part;
    use crate::{NodeConfig, Output};

    fn setup() -> (Durability<MemoryStorage>, Shared, PartitionId, Key) {
        let id = NodeId::new("n1").unwrap();
        let member = Member::new(id.clone(), "127.0.0.1:7001".parse().unwrap());
        let ring = Ring::new(
            vec![member],
            PartitionCount::new(16).unwrap(),
            ReplicationFactor::new(1).unwrap(),
        )
        .unwrap();
        let key = Key::new(Bytes::from_static(b"k")).unwrap();
        let partition = ring.partition_for_key(&key);
        let storage = MemoryStorage::new(ring.q());
        let config = NodeConfig::new(id.clone(), Incarnation::new(1));
        let shared = Shared::new(config, ring, StdRng::seed_from_u64(1));
        let actor = Actor::new(id, Incarnation::new(1));
        (Durability::new(storage, actor), shared, partition, key)
    }

    fn object(value: &str) -> Object {
        let actor = Actor::new(NodeId::new("n1").unwrap(), Incarnation::new(1));
        Object::new()
            .update(
                &CausalContext::empty(),
                Sibling::Value(Bytes::from(value.to_owned())),
                &actor,
                64,
            )
            .unwrap()
    }

    /// Carries out the persists queued so far, as a driver would.
    fn commit_all(d: &mut Durability<MemoryStorage>, shared: &mut Shared) -> Vec<Waiter> {
        let mut told = Vec::new();
        while let Some(output) = shared.poll_output() {
            if let Output::Persist { id, batch } = output {
                d.storage().write(batch).unwrap();
                told.extend(d.persisted(id, &Ok(())));
            }
        }
        told
    }

    #[test]
    fn writes_see_an_object_before_it_is_durable_and_reads_only_after() {
        let (mut d, mut shared, p, k) = setup();
        let waiter = Waiter {
            part: Part::Client,
            token: 7,
        };
        d.persist(&mut shared, p, &k, object("v"), Some(waiter));
        let mut metrics = NodeMetrics::default();
        assert!(matches!(
            d.read_for_write(&mut metrics, p, &k),
            Ok(Local::Found(_))
        ));
        assert_eq!(d.durable_read(&mut metrics, p, &k), LocalRead::NotFound);
        assert_eq!(commit_all(&mut d, &mut shared), vec![waiter]);
        assert!(matches!(
            d.durable_read(&mut metrics, p, &k),
            LocalRead::Found(_)
        ));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn storing_what_is_already_durable_writes_nothing() {
        let (mut d, mut shared, p, k) = setup();
        let o = object("v");
        assert_eq!(d.store(&mut shared, p, &k, &o, None), Stored::Pending);
        commit_all(&mut d, &mut shared);
        assert_eq!(
            d.store(&mut shared, p, &k, &o, None),
            Stored::AlreadyDurable
        );
        assert!(shared.poll_output().is_none(), "no second persist");
    }

    #[test]
    fn a_store_of_an_object_in_flight_waits_for_that_persist() {
        let (mut d, mut shared, p, k) = setup();
        let o = object("v");
        d.store(&mut shared, p, &k, &o, None);
        let waiter = Waiter {
            part: Part::Replica,
            token: 3,
        };
        assert_eq!(
            d.store(&mut shared, p, &k, &o, Some(waiter)),
            Stored::Pending
        );
        assert_eq!(commit_all(&mut d, &mut shared), vec![waiter]);
    }

    #[test]
    fn a_failed_commit_marks_the_storage_failed_and_still_tells_the_waiters() {
        let (mut d, mut shared, p, k) = setup();
        let waiter = Waiter {
            part: Part::Client,
            token: 1,
        };
        d.persist(&mut shared, p, &k, object("v"), Some(waiter));
        let Some(Output::Persist { id, .. }) = shared.poll_output() else {
            panic!("a persist was queued");
        };
        let error = CommitError::Closed;
        assert_eq!(d.persisted(id, &Err(error)), vec![waiter]);
        assert!(d.failed().is_some());
        let mut metrics = NodeMetrics::default();
        assert!(
            matches!(d.read_for_write(&mut metrics, p, &k), Ok(Local::NotFound)),
            "the failed write left the overlay"
        );
    }

    /// The batch the next persist carries.
    fn next_batch(shared: &mut Shared) -> WriteBatch {
        match shared.poll_output() {
            Some(Output::Persist { batch, .. }) => batch,
            other => panic!("expected a persist, got {other:?}"),
        }
    }

    #[test]
    fn replacing_a_corrupted_record_renews_the_incarnation_in_the_same_batch() {
        let (mut d, mut shared, p, k) = setup();
        // This node's own write, as a put persists it.
        d.persist(&mut shared, p, &k, object("mine"), None);
        commit_all(&mut d, &mut shared);
        let before = d.actor().clone();
        assert!(d.storage().corrupt(p, &k));
        // An older copy from a peer arrives (read repair, a replica write): it replaces the
        // record, and the node must never again make the dots the lost record named.
        assert_eq!(
            d.store(
                &mut shared,
                p,
                &k,
                &Object::new().merge(&object("older")),
                None
            ),
            Stored::Pending
        );
        let batch = next_batch(&mut shared);
        let renewed = batch
            .renewal()
            .expect("the replacing batch renews the incarnation");
        assert_ne!(renewed, before.incarnation);
        assert_eq!(d.actor().incarnation, renewed);
        assert_eq!(d.actor().node, before.node);
        assert_eq!(shared.metrics.incarnation_renewals, 1);
    }

    #[test]
    fn a_record_that_cannot_be_read_is_never_stored_over() {
        let (mut d, mut shared, p, k) = setup();
        // This node's own write, as a put persists it.
        d.persist(&mut shared, p, &k, object("mine"), None);
        commit_all(&mut d, &mut shared);
        d.storage().fail_reads(1);
        let waiter = Waiter {
            part: Part::Replica,
            token: 9,
        };
        assert_eq!(
            d.store(&mut shared, p, &k, &object("other"), Some(waiter)),
            Stored::Unreadable
        );
        assert!(shared.poll_output().is_none(), "nothing written");
        assert_eq!(shared.metrics.incarnation_renewals, 0);
        let mut metrics = NodeMetrics::default();
        assert_eq!(
            d.durable_read(&mut metrics, p, &k),
            LocalRead::Found(object("mine")),
            "the record is intact once reads work again"
        );
    }

    #[test]
    fn an_incoming_dot_of_our_own_that_we_lack_renews_the_incarnation() {
        let (mut d, mut shared, p, k) = setup();
        // `object` is made by this node's actor (n1, incarnation 1); the local replica has
        // never held it: a record lost without a trace.
        d.store(&mut shared, p, &k, &object("ours"), None);
        let batch = next_batch(&mut shared);
        assert!(batch.renewal().is_some());
        assert_eq!(shared.metrics.incarnation_renewals, 1);
    }

    #[test]
    fn merging_what_we_already_know_keeps_the_incarnation() {
        let (mut d, mut shared, p, k) = setup();
        let o = object("v");
        d.persist(&mut shared, p, &k, o.clone(), None);
        commit_all(&mut d, &mut shared);
        let other = Actor::new(NodeId::new("n2").unwrap(), Incarnation::new(5));
        let theirs = o
            .update(
                &o.context(),
                Sibling::Value(Bytes::from_static(b"n2's")),
                &other,
                64,
            )
            .unwrap();
        d.store(&mut shared, p, &k, &theirs, None);
        assert_eq!(next_batch(&mut shared).renewal(), None);
        assert_eq!(d.actor().incarnation, Incarnation::new(1));
    }
}
