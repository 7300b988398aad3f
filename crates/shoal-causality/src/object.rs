use std::cmp::Ordering;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Actor, CausalContext, CausalityError, Dot, VersionVector};

/// What one sibling holds: a value, or the record that the key was deleted.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sibling {
    /// A value written by a put.
    Value(Bytes),
    /// A delete. Kept as a sibling so the delete replicates and wins over what it saw.
    Tombstone,
}

impl Sibling {
    /// The value, unless this is a tombstone.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Sibling::Value(v) => Some(v),
            Sibling::Tombstone => None,
        }
    }

    /// Bytes this sibling holds.
    pub fn len(&self) -> usize {
        self.value().map_or(0, Bytes::len)
    }

    /// Whether this sibling holds no bytes (a tombstone or an empty value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Sibling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sibling::Value(v) if v.len() <= 32 => write!(f, "{v:?}"),
            Sibling::Value(v) => write!(f, "<{} bytes>", v.len()),
            Sibling::Tombstone => f.write_str("<tombstone>"),
        }
    }
}

/// The stored state of one key: a dotted-version-vector sibling set.
///
/// `vv` is everything the object has seen; `siblings` are the concurrent writes that nothing seen
/// has superseded, each named by its dot. See the crate docs for the invariants.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawObject", into = "RawObject")]
pub struct Object {
    vv: VersionVector,
    siblings: Vec<(Dot, Sibling)>,
}

impl Object {
    /// The object of a key nobody has written: no siblings, nothing seen.
    pub fn new() -> Self {
        Object::default()
    }

    /// An object with no siblings that has seen `vv`: what a key whose tombstone was reaped
    /// reads as (every dot `vv` covers is superseded, so a merge drops any sibling it covers,
    /// exactly as it would against the tombstone).
    pub fn reaped(vv: VersionVector) -> Self {
        Object {
            vv,
            siblings: Vec::new(),
        }
    }

    /// Builds an object from parts, checking the invariants (used by decoders).
    pub fn from_parts(
        vv: VersionVector,
        siblings: Vec<(Dot, Sibling)>,
    ) -> Result<Self, CausalityError> {
        if siblings.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(CausalityError::Invalid(
                "siblings not sorted by dot or a dot repeated",
            ));
        }
        if siblings
            .iter()
            .any(|(d, _)| d.counter == 0 || !vv.covers(d))
        {
            return Err(CausalityError::Invalid(
                "a sibling's dot is not covered by the object's version vector",
            ));
        }
        Ok(Object { vv, siblings })
    }

    /// A coordinator's write: a new sibling `value` made by `actor`, superseding every sibling
    /// the client's `context` covers and keeping the rest as concurrent siblings. See
    /// [`Object::update_with_dot`], which also returns the new dot.
    pub fn update(
        &self,
        context: &CausalContext,
        value: Sibling,
        actor: &Actor,
        max_siblings: usize,
    ) -> Result<Object, CausalityError> {
        self.update_with_dot(context, value, actor, max_siblings)
            .map(|(object, _)| object)
    }

    /// [`Object::update`], returning the new object and the dot it made (what a put's answer
    /// adds to the writer's context, [`CausalContext::with_dot`]).
    ///
    /// The new dot is `(actor, n + 1)` where `n` is the highest counter of `actor` the object
    /// or the context names: only `actor` makes dots for itself, and it always holds its own
    /// latest write, so the dot is fresh. (A context naming more of `actor` than the object has
    /// is dishonest or a sign of lost state; coordinators refuse it before calling this.) The
    /// context's vector is folded into the object's, so that a replica still holding a
    /// superseded sibling drops it on merge; a listed dot is folded only when it is exact (the
    /// object's vector already reaches the counter before it), never over a gap: an unfolded dot
    /// may let a superseded sibling come back from another replica as a sibling (safe), where a
    /// widened vector would drop a write nobody saw (a loss).
    ///
    /// Refused, with no change, when more than `max_siblings` siblings would remain, or when
    /// no counter is left for `actor` (`u64::MAX` named).
    pub fn update_with_dot(
        &self,
        context: &CausalContext,
        value: Sibling,
        actor: &Actor,
        max_siblings: usize,
    ) -> Result<(Object, Dot), CausalityError> {
        let kept = self
            .siblings
            .iter()
            .filter(|(d, _)| !context.covers(d))
            .count();
        if kept + 1 > max_siblings {
            return Err(CausalityError::TooManySiblings {
                siblings: kept + 1,
                max: max_siblings,
            });
        }
        let counter = self
            .vv
            .get(actor)
            .max(context.counter_of(actor))
            .checked_add(1)
            .ok_or(CausalityError::CountersExhausted)?;
        let dot = Dot {
            actor: actor.clone(),
            counter,
        };
        let mut siblings = Vec::with_capacity(kept + 1);
        siblings.extend(
            self.siblings
                .iter()
                .filter(|(d, _)| !context.covers(d))
                .cloned(),
        );
        let at = siblings.partition_point(|(d, _)| *d < dot);
        siblings.insert(at, (dot.clone(), value));
        let mut vv = self.vv.join(context.vector());
        // Sorted by actor then counter: a run of exact dots folds in one pass.
        for d in context.dots() {
            if vv.get(&d.actor) + 1 == d.counter {
                vv.witness(&d.actor, d.counter);
            }
        }
        vv.witness(actor, counter);
        Ok((Object { vv, siblings }, dot))
    }

    /// Everything both objects know: a sibling survives if the other side holds it too or has
    /// never seen its dot. Commutative, associative and idempotent.
    pub fn merge(&self, other: &Object) -> Object {
        let (a, b) = (&self.siblings, &other.siblings);
        let mut siblings = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match order {
                Ordering::Equal => {
                    // One dot names one write, so both sides normally hold the same sibling.
                    // When they differ (a dot reused: a node restored from an old backup with its
                    // incarnation, or a faulty peer), keep the greater, so that merge stays
                    // commutative and replicas still converge.
                    let keep = if sibling_rank(&b[j].1) > sibling_rank(&a[i].1) {
                        &b[j]
                    } else {
                        &a[i]
                    };
                    siblings.push(keep.clone());
                    i += 1;
                    j += 1;
                }
                Ordering::Less => {
                    if !other.vv.covers(&a[i].0) {
                        siblings.push(a[i].clone());
                    }
                    i += 1;
                }
                Ordering::Greater => {
                    if !self.vv.covers(&b[j].0) {
                        siblings.push(b[j].clone());
                    }
                    j += 1;
                }
            }
        }
        Object {
            vv: self.vv.join(&other.vv),
            siblings,
        }
    }

    /// What a client must send back to supersede what it read here: the whole vector (a read
    /// has seen every sibling). A put answers with less ([`CausalContext::with_dot`]).
    pub fn context(&self) -> CausalContext {
        CausalContext::from(self.vv.clone())
    }

    /// The live values, each distinct value once, in dot order. Empty when the key was never
    /// written or every sibling is a tombstone: the key is not found.
    pub fn values(&self) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = Vec::with_capacity(self.siblings.len());
        for (_, s) in &self.siblings {
            if let Sibling::Value(v) = s
                && !out.contains(v)
            {
                out.push(v.clone());
            }
        }
        out
    }

    /// Every sibling with its dot, tombstones included, sorted by dot.
    pub fn siblings(&self) -> &[(Dot, Sibling)] {
        &self.siblings
    }

    /// Everything this object has seen.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// Whether merging `other` into this object would change nothing: `self.merge(other) ==
    /// *self`, without building the merge.
    pub fn descends(&self, other: &Object) -> bool {
        let held =
            |obj: &Object, dot: &Dot| obj.siblings.binary_search_by(|x| x.0.cmp(dot)).is_ok();
        self.vv.descends(&other.vv)
            && other
                .siblings
                .iter()
                .all(|(d, _)| held(self, d) || self.vv.covers(d))
            && self
                .siblings
                .iter()
                .all(|(d, _)| held(other, d) || !other.vv.covers(d))
    }

    /// Whether nothing was ever written (no siblings and an empty vector).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.vv.is_empty()
    }

    /// Whether every sibling is a tombstone (and there is at least one): a deleted key.
    pub fn is_deleted(&self) -> bool {
        !self.siblings.is_empty()
            && self
                .siblings
                .iter()
                .all(|(_, s)| matches!(s, Sibling::Tombstone))
    }

    /// Whether no sibling holds a value (every sibling is a tombstone, or there is none): the
    /// key reads as not found, and its replica may be reaped.
    pub fn holds_no_value(&self) -> bool {
        self.siblings
            .iter()
            .all(|(_, s)| matches!(s, Sibling::Tombstone))
    }

    /// Bytes of all sibling values: what a write of this object costs to store and send.
    pub fn value_bytes(&self) -> usize {
        self.siblings.iter().map(|(_, s)| s.len()).sum()
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("vv", &self.vv)
            .field("siblings", &self.siblings)
            .finish()
    }
}

/// A total order on siblings (tombstones first, then values by their bytes), used only to pick
/// one of two different siblings that carry the same dot.
fn sibling_rank(s: &Sibling) -> (bool, &[u8]) {
    match s {
        Sibling::Tombstone => (false, &[]),
        Sibling::Value(v) => (true, v),
    }
}

#[derive(Serialize, Deserialize)]
struct RawObject {
    vv: VersionVector,
    siblings: Vec<(Dot, Sibling)>,
}

impl TryFrom<RawObject> for Object {
    type Error = CausalityError;
    fn try_from(raw: RawObject) -> Result<Self, CausalityError> {
        Object::from_parts(raw.vv, raw.siblings)
    }
}

impl From<Object> for RawObject {
    fn from(o: Object) -> Self {
        RawObject {
            vv: o.vv,
            siblings: o.siblings,
        }
    }
}
