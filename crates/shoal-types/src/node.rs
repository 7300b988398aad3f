use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::TypesError;

/// The name of one node, chosen by the operator (`shoal server --node-id n1`) and written into its
/// certificate. Cheap to clone: preference lists and version vectors copy node ids a lot.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// The longest node id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Parses a node id: 1 to 64 characters from `[A-Za-z0-9._-]`.
    pub fn new(id: &str) -> Result<Self, TypesError> {
        if is_valid_name(id) {
            Ok(NodeId(Arc::from(id)))
        } else {
            Err(TypesError::InvalidNodeId(id.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    /// Checked like `NodeId::new`; borrows the text when the decoder can, so decoding a node id
    /// allocates once (node ids are in every dot and version-vector entry on the wire).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeId, E> {
                NodeId::new(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl std::str::FromStr for NodeId {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, TypesError> {
        NodeId::new(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

/// A random number chosen once when a node's data directory is created, and kept in it.
///
/// A node that lost its disk comes back under the same `NodeId` with a new incarnation, so the
/// write events (dots) it makes can never collide with the ones it made before (Riak's kv679).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(u64);

impl Incarnation {
    /// Wraps a number chosen at random by the caller.
    pub const fn new(n: u64) -> Self {
        Incarnation(n)
    }

    /// The number itself.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Incarnation({:016x})", self.0)
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A failure domain (rack, availability zone). Preference lists spread over distinct zones
/// whenever there are at least N of them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Zone(Arc<str>);

impl Zone {
    /// The zone of a node started without `--zone`.
    pub fn default_zone() -> Self {
        Zone(Arc::from("default"))
    }

    /// Parses a zone name, with the same rules as a node id.
    pub fn new(name: &str) -> Result<Self, TypesError> {
        if is_valid_name(name) {
            Ok(Zone(Arc::from(name)))
        } else {
            Err(TypesError::InvalidZone(name.to_owned()))
        }
    }

    /// The zone as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone::default_zone()
    }
}

impl TryFrom<String> for Zone {
    type Error = TypesError;
    fn try_from(s: String) -> Result<Self, TypesError> {
        Zone::new(&s)
    }
}

impl From<Zone> for String {
    fn from(z: Zone) -> String {
        z.0.to_string()
    }
}

impl std::str::FromStr for Zone {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, TypesError> {
        Zone::new(s)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.0)
    }
}

/// A node's relative weight when partitions are claimed: a node of capacity 2 owns twice the
/// partitions of a node of capacity 1. Between 1 and 1,000.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Capacity(NonZeroU32);

impl Capacity {
    /// The largest weight.
    pub const MAX: u32 = 1000;
    /// The weight of a node started without one.
    pub const ONE: Capacity = Capacity(NonZeroU32::MIN);

    /// Parses a weight between 1 and 1,000.
    pub fn new(weight: u32) -> Result<Self, TypesError> {
        match NonZeroU32::new(weight) {
            Some(w) if weight <= Self::MAX => Ok(Capacity(w)),
            _ => Err(TypesError::InvalidCapacity(weight)),
        }
    }

    /// The weight itself.
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity::ONE
    }
}

impl TryFrom<u32> for Capacity {
    type Error = TypesError;
    fn try_from(w: u32) -> Result<Self, TypesError> {
        Capacity::new(w)
    }
}

impl From<Capacity> for u32 {
    fn from(c: Capacity) -> u32 {
        c.get()
    }
}

impl fmt::Debug for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capacity({})", self.0)
    }
}

fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NodeId::MAX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_accepts_simple_names_and_refuses_others() {
        assert!(NodeId::new("n1").is_ok());
        assert!(NodeId::new("shoal-node_2.east").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!(NodeId::new("n1=127.0.0.1").is_err());
        assert!(NodeId::new(&"x".repeat(65)).is_err());
        assert!(NodeId::new(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn node_id_deserialisation_is_checked() {
        let bytes = rmp_serde::to_vec(&"bad id").unwrap();
        assert!(rmp_serde::from_slice::<NodeId>(&bytes).is_err());
        let good = rmp_serde::to_vec(&NodeId::new("n1").unwrap()).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<NodeId>(&good).unwrap().as_str(),
            "n1"
        );
    }

    #[test]
    fn capacity_is_bounded() {
        assert!(Capacity::new(0).is_err());
        assert!(Capacity::new(1001).is_err());
        assert_eq!(Capacity::new(7).unwrap().get(), 7);
        let bytes = rmp_serde::to_vec(&0u32).unwrap();
        assert!(rmp_serde::from_slice::<Capacity>(&bytes).is_err());
    }
}
