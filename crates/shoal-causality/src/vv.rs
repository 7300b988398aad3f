use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_types::{Incarnation, NodeId};

use crate::CausalityError;

/// Who makes write events: a node in one incarnation of its data directory.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The node that coordinated the write.
    pub node: NodeId,
    /// The incarnation of that node's data directory when it did.
    pub incarnation: Incarnation,
}

impl Actor {
    /// The actor of `node` in `incarnation`.
    pub fn new(node: NodeId, incarnation: Incarnation) -> Self {
        Actor { node, incarnation }
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:04x}", self.node, self.incarnation.get() >> 48)
    }
}

/// One write event: the `counter`-th write to a key coordinated by `actor`. Counters start at 1.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// Who made the event.
    pub actor: Actor,
    /// Its sequence number for that actor and key, from 1.
    pub counter: u64,
}

impl fmt::Debug for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:?},{})", self.actor, self.counter)
    }
}

/// A version vector: for each actor, how many of its events have been seen (all of 1..=n).
///
/// Entries are sorted by actor and counters are positive, so equal vectors are equal values and
/// encode to equal bytes.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(Actor, u64)>", into = "Vec<(Actor, u64)>")]
pub struct VersionVector {
    entries: Vec<(Actor, u64)>,
}

impl VersionVector {
    /// The vector that has seen nothing.
    pub fn new() -> Self {
        VersionVector::default()
    }

    /// Builds a vector from entries, checking they are sorted by actor, unique and positive.
    pub fn from_entries(entries: Vec<(Actor, u64)>) -> Result<Self, CausalityError> {
        if entries.iter().any(|(_, c)| *c == 0) {
            return Err(CausalityError::Invalid(
                "version vector entry with counter 0",
            ));
        }
        if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(CausalityError::Invalid(
                "version vector entries not sorted by actor or repeated",
            ));
        }
        Ok(VersionVector { entries })
    }

    /// How many events of `actor` have been seen.
    pub fn get(&self, actor: &Actor) -> u64 {
        match self.entries.binary_search_by(|(a, _)| a.cmp(actor)) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Whether the event `dot` has been seen.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// Records that every event of `actor` up to `counter` has been seen.
    pub fn witness(&mut self, actor: &Actor, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.entries.binary_search_by(|(a, _)| a.cmp(actor)) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(counter),
            Err(i) => self.entries.insert(i, (actor.clone(), counter)),
        }
    }

    /// The pointwise maximum of two vectors: everything either has seen.
    pub fn join(&self, other: &VersionVector) -> VersionVector {
        let mut out = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.entries, &other.entries);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                Ordering::Less => {
                    out.push(a[i].clone());
                    i += 1;
                }
                Ordering::Greater => {
                    out.push(b[j].clone());
                    j += 1;
                }
                Ordering::Equal => {
                    out.push((a[i].0.clone(), a[i].1.max(b[j].1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        VersionVector { entries: out }
    }

    /// Whether this vector has seen everything `other` has (`self >= other` pointwise).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(a, c)| self.get(a) >= *c)
    }

    /// The entries, sorted by actor.
    pub fn entries(&self) -> &[(Actor, u64)] {
        &self.entries
    }

    /// How many actors the vector names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the vector has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl TryFrom<Vec<(Actor, u64)>> for VersionVector {
    type Error = CausalityError;
    fn try_from(entries: Vec<(Actor, u64)>) -> Result<Self, CausalityError> {
        VersionVector::from_entries(entries)
    }
}

impl From<VersionVector> for Vec<(Actor, u64)> {
    fn from(vv: VersionVector) -> Self {
        vv.entries
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (a, c)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{a:?}:{c}")?;
        }
        f.write_str("]")
    }
}

/// Most explicit dots a [`CausalContext`] lists beside its vector. A put's answer adds its own
/// dot (and, when it is not contiguous with the vector, keeps it listed); past this many, the
/// oldest (lowest counter) is dropped, which only ever makes the context cover less.
pub const MAX_CONTEXT_DOTS: usize = 16;

/// Most entries (vector entries plus listed dots) a context a node accepts from a client may
/// hold: an honest context is an object's vector plus at most [`MAX_CONTEXT_DOTS`] dots, and a
/// write folds the context's vector into the object's, so one request must not be able to grow
/// an object's vector towards the decoders' cap (256 entries).
pub const MAX_CONTEXT_ENTRIES: usize = 128;

/// The highest counter a context may raise an object's vector to: no key sees 2^62 writes by one
/// actor, so a larger counter the object has not reached itself is hostile (and `u64::MAX`,
/// which would leave no fresh dot after it, cannot be sent). Real writes may still count past
/// it, one at a time.
pub const MAX_PLAUSIBLE_COUNTER: u64 = 1 << 62;

/// The most entries an object's vector may reach by actors it learns from clients' contexts
/// (rather than from the writes it holds): a context that names actors the coordinator's object
/// does not know is accepted only while the object's vector, with them, stays within this. So
/// clients can grow a key's vector by at most this much per primary, and the merged vector stays
/// under the decoders' cap (N × 64 plus the actors that really coordinated writes).
pub const MAX_ENTRIES_FROM_CONTEXTS: usize = 64;

/// What a client has seen of a key, handed back on the next write so that the write supersedes
/// exactly what was seen. Opaque to applications.
///
/// A *dotted* context: a version vector (every event of each actor up to a counter) plus a
/// short sorted list of single events the vector does not cover. A read answers with the merged
/// object's vector; a put answers with the writer's own context plus the dot it just made
/// ([`CausalContext::with_dot`]), so a put's context never covers a sibling the writer did not
/// see (the whole object's vector would: it covers concurrent writes made by others).
///
/// Invariants, also after decoding: the vector's own; dots sorted and unique, each with a
/// positive counter, none covered by the vector and none extending it contiguously (that one
/// would be folded into the vector), at most [`MAX_CONTEXT_DOTS`] of them. So a context is in
/// one canonical form: equal coverage is an equal value and equal bytes.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawContext", into = "RawContext")]
pub struct CausalContext {
    vv: VersionVector,
    dots: Vec<Dot>,
}

impl CausalContext {
    /// The context of a client that has seen nothing: a write with it supersedes nothing.
    pub fn empty() -> Self {
        CausalContext::default()
    }

    /// Builds a context from parts, checking the invariants (used by decoders).
    pub fn from_parts(vv: VersionVector, dots: Vec<Dot>) -> Result<Self, CausalityError> {
        if dots.len() > MAX_CONTEXT_DOTS {
            return Err(CausalityError::Invalid(
                "context lists more dots than MAX_CONTEXT_DOTS",
            ));
        }
        if dots.iter().any(|d| d.counter == 0) {
            return Err(CausalityError::Invalid("context dot with counter 0"));
        }
        if dots.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CausalityError::Invalid(
                "context dots not sorted or a dot repeated",
            ));
        }
        if dots.iter().any(|d| vv.covers(d)) {
            return Err(CausalityError::Invalid(
                "context dot already covered by its vector",
            ));
        }
        if dots.iter().any(|d| vv.get(&d.actor) + 1 == d.counter) {
            return Err(CausalityError::Invalid(
                "context dot contiguous with its vector (not folded)",
            ));
        }
        Ok(CausalContext { vv, dots })
    }

    /// The vector inside: every event of each actor up to its counter.
    pub fn vector(&self) -> &VersionVector {
        &self.vv
    }

    /// The single events listed beside the vector, sorted.
    pub fn dots(&self) -> &[Dot] {
        &self.dots
    }

    /// Whether this context has seen the event `dot`.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.vv.covers(dot) || self.dots.binary_search(dot).is_ok()
    }

    /// The highest counter of `actor` the context names (in the vector or listed), 0 if none.
    pub fn counter_of(&self, actor: &Actor) -> u64 {
        let listed = self
            .dots
            .iter()
            .filter(|d| d.actor == *actor)
            .map(|d| d.counter)
            .max()
            .unwrap_or(0);
        self.vv.get(actor).max(listed)
    }

    /// The highest counter anywhere in the context, 0 if it is empty.
    pub fn max_counter(&self) -> u64 {
        let vv = self.vv.entries().iter().map(|(_, c)| *c);
        let dots = self.dots.iter().map(|d| d.counter);
        vv.chain(dots).max().unwrap_or(0)
    }

    /// Vector entries plus listed dots: what a context costs to send and store.
    pub fn len(&self) -> usize {
        self.vv.len() + self.dots.len()
    }

    /// Whether this context has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.dots.is_empty()
    }

    /// This context plus the event `dot`: what a writer has seen after its write made `dot`.
    ///
    /// The dot is folded into the vector when contiguous with it (then any listed dots that
    /// became contiguous are folded too); otherwise it is listed. When more than
    /// [`MAX_CONTEXT_DOTS`] would be listed, the lowest-counter dot other than `dot` is dropped:
    /// the context then covers less (a later write may leave a sibling it could have
    /// superseded), never more. The result covers `dot` and nothing this context did not.
    pub fn with_dot(&self, dot: &Dot) -> CausalContext {
        if dot.counter == 0 || self.covers(dot) {
            return self.clone();
        }
        let mut out = self.clone();
        let at = out.dots.partition_point(|d| d < dot);
        out.dots.insert(at, dot.clone());
        out.fold();
        if out.dots.len() > MAX_CONTEXT_DOTS {
            let oldest = out
                .dots
                .iter()
                .enumerate()
                .filter(|(_, d)| *d != dot)
                .min_by_key(|(_, d)| d.counter)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                out.dots.remove(i);
            }
        }
        out
    }

    /// Folds listed dots that are covered by, or contiguous with, the vector into it. Dots are
    /// sorted by actor then counter, so one pass folds a whole run.
    fn fold(&mut self) {
        let vv = &mut self.vv;
        self.dots.retain(|d| {
            let seen = vv.get(&d.actor);
            if d.counter <= seen {
                false
            } else if d.counter == seen + 1 {
                vv.witness(&d.actor, d.counter);
                false
            } else {
                true
            }
        });
    }
}

impl From<VersionVector> for CausalContext {
    fn from(vv: VersionVector) -> Self {
        CausalContext {
            vv,
            dots: Vec::new(),
        }
    }
}

impl fmt::Debug for CausalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ctx{:?}", self.vv)?;
        if !self.dots.is_empty() {
            write!(f, "+{:?}", self.dots)?;
        }
        Ok(())
    }
}

/// The encoded shape of a [`CausalContext`], before its checks.
#[derive(Serialize, Deserialize)]
struct RawContext {
    vv: VersionVector,
    dots: Vec<Dot>,
}

impl TryFrom<RawContext> for CausalContext {
    type Error = CausalityError;
    fn try_from(raw: RawContext) -> Result<Self, CausalityError> {
        CausalContext::from_parts(raw.vv, raw.dots)
    }
}

impl From<CausalContext> for RawContext {
    fn from(c: CausalContext) -> Self {
        RawContext {
            vv: c.vv,
            dots: c.dots,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(n: &str) -> Actor {
        Actor::new(NodeId::new(n).unwrap(), Incarnation::new(1))
    }

    #[test]
    fn witness_and_join_take_maximums() {
        let mut a = VersionVector::new();
        a.witness(&actor("b"), 2);
        a.witness(&actor("a"), 5);
        a.witness(&actor("a"), 3);
        assert_eq!(a.get(&actor("a")), 5);
        let mut b = VersionVector::new();
        b.witness(&actor("b"), 4);
        b.witness(&actor("c"), 1);
        let j = a.join(&b);
        assert_eq!(j.get(&actor("a")), 5);
        assert_eq!(j.get(&actor("b")), 4);
        assert_eq!(j.get(&actor("c")), 1);
        assert!(j.descends(&a) && j.descends(&b));
        assert!(!a.descends(&b));
    }

    #[test]
    fn unsorted_or_zero_entries_are_refused() {
        assert!(VersionVector::from_entries(vec![(actor("b"), 1), (actor("a"), 1)]).is_err());
        assert!(VersionVector::from_entries(vec![(actor("a"), 1), (actor("a"), 2)]).is_err());
        assert!(VersionVector::from_entries(vec![(actor("a"), 0)]).is_err());
        let bytes = rmp_serde::to_vec(&vec![(actor("b"), 1u64), (actor("a"), 1u64)]).unwrap();
        assert!(rmp_serde::from_slice::<VersionVector>(&bytes).is_err());
    }
}
