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

/// What a client has seen of a key: the version vector of its last read, handed back on the
/// next write so that the write supersedes exactly what was read. Opaque to applications.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CausalContext(VersionVector);

impl CausalContext {
    /// The context of a client that has read nothing: a write with it supersedes nothing.
    pub fn empty() -> Self {
        CausalContext::default()
    }

    /// The vector inside.
    pub fn vector(&self) -> &VersionVector {
        &self.0
    }

    /// Whether this context has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<VersionVector> for CausalContext {
    fn from(vv: VersionVector) -> Self {
        CausalContext(vv)
    }
}

impl fmt::Debug for CausalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ctx{:?}", self.0)
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
