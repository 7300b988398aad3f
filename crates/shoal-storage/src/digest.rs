use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_causality::Object;

/// The identity of an object's contents: `xxh3_128` of its canonical rmp-serde encoding, as
/// 16 big-endian bytes.
///
/// `Object` is canonical (sorted vector entries and siblings), so equal objects have equal
/// digests on every node. Anti-entropy exchanges digests to find the keys that differ.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectDigest([u8; 16]);

impl ObjectDigest {
    /// The digest of `object`.
    pub fn of(object: &Object) -> ObjectDigest {
        ObjectDigest::of_encoded(&encode_object(object))
    }

    /// Wraps 16 digest bytes (received from a peer, or stored).
    pub const fn from_bytes(bytes: [u8; 16]) -> ObjectDigest {
        ObjectDigest(bytes)
    }

    /// The digest's bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The digest of an already encoded object.
    pub(crate) fn of_encoded(encoded: &[u8]) -> ObjectDigest {
        ObjectDigest(xxhash_rust::xxh3::xxh3_128(encoded).to_be_bytes())
    }
}

impl fmt::Debug for ObjectDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectDigest(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The canonical encoding of an object: rmp-serde, structs as arrays.
pub(crate) fn encode_object(object: &Object) -> Vec<u8> {
    // Cannot fail: the writer is a Vec (no I/O), and Object's derived Serialize emits only
    // sequences of known length, byte strings, strings, integers and enum variants, all of which
    // rmp-serde encodes unconditionally.
    #[allow(clippy::expect_used)]
    rmp_serde::to_vec(object).expect("an Object always encodes")
}

/// Decodes an object read from disk. `None` when the bytes are not a valid object.
pub(crate) fn decode_object(bytes: &[u8]) -> Option<Object> {
    rmp_serde::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use shoal_causality::{Actor, CausalContext, Sibling};
    use shoal_types::{Incarnation, NodeId};

    #[test]
    fn equal_objects_have_equal_digests_and_round_trip() {
        let actor = Actor::new(NodeId::new("n1").unwrap(), Incarnation::new(7));
        let a = Object::new()
            .update(
                &CausalContext::empty(),
                Sibling::Value(Bytes::from_static(b"v")),
                &actor,
                64,
            )
            .unwrap();
        let b = a.clone();
        assert_eq!(ObjectDigest::of(&a), ObjectDigest::of(&b));
        assert_ne!(ObjectDigest::of(&a), ObjectDigest::of(&Object::new()));
        assert_eq!(decode_object(&encode_object(&a)), Some(a));
        assert_eq!(decode_object(b"\xc1garbage"), None);
    }

    /// Digests are compared between nodes, which may run different builds: the encoding they
    /// hash must not drift. A change here is a storage and anti-entropy format change.
    #[test]
    fn the_canonical_encoding_is_pinned() {
        let actor = Actor::new(NodeId::new("n1").unwrap(), Incarnation::new(7));
        let one = Object::new()
            .update(
                &CausalContext::empty(),
                Sibling::Value(Bytes::from_static(b"v")),
                &actor,
                64,
            )
            .unwrap();
        let two = one
            .update(&CausalContext::empty(), Sibling::Tombstone, &actor, 64)
            .unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&encode_object(&Object::new())), "929090");
        assert_eq!(
            hex(&encode_object(&one)),
            concat!(
                "92",                                   // [vv, siblings]
                "919292a26e310701",                     // vv: [[["n1", 7], 1]]
                "91",                                   // one sibling:
                "929292a26e31070181a556616c7565c40176", // [[["n1", 7], 1], {"Value": b"v"}]
            )
        );
        assert_eq!(
            hex(&encode_object(&two)),
            concat!(
                "92919292a26e310702",
                "92",
                "929292a26e31070181a556616c7565c40176",
                "929292a26e310702a9546f6d6273746f6e65"
            )
        );
        assert_eq!(
            hex(&ObjectDigest::of(&one).to_bytes()),
            "552cd7824c3bb6035e475c40ae14e01a"
        );
    }
}
