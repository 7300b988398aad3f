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
    /// the client's `context` covers and keeping the rest as concurrent siblings.
    ///
    /// The new dot is `(actor, max(vv[actor], context[actor]) + 1)`: only `actor` makes dots
    /// for itself, and it always holds its own latest write, so the dot is fresh. The context is
    /// folded into the vector so that a replica still holding a superseded sibling drops it on
    /// merge. Refused, with no change, when more than `max_siblings` siblings would remain.
    pub fn update(
        &self,
        context: &CausalContext,
        value: Sibling,
        actor: &Actor,
        max_siblings: usize,
    ) -> Result<Object, CausalityError> {
        let ctx = context.vector();
        let kept = self.siblings.iter().filter(|(d, _)| !ctx.covers(d)).count();
        if kept + 1 > max_siblings {
            return Err(CausalityError::TooManySiblings {
                siblings: kept + 1,
                max: max_siblings,
            });
        }
        let counter = self.vv.get(actor).max(ctx.get(actor)).saturating_add(1);
        let dot = Dot {
            actor: actor.clone(),
            counter,
        };
        let mut siblings = Vec::with_capacity(kept + 1);
        siblings.extend(
            self.siblings
                .iter()
                .filter(|(d, _)| !ctx.covers(d))
                .cloned(),
        );
        let at = siblings.partition_point(|(d, _)| *d < dot);
        siblings.insert(at, (dot, value));
        let mut vv = self.vv.join(ctx);
        vv.witness(actor, counter);
        Ok(Object { vv, siblings })
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

    /// What a client must send back to supersede what it read here.
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
