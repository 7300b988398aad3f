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

/// How deeply a stored value may nest. An object nests six levels; rmp-serde's default (1024)
/// lets a damaged record that still passes its checksum recurse deep enough to overflow a
/// thread's stack (2 MiB, in a debug build), which aborts the process instead of reading as
/// corrupted.
pub(crate) const MAX_RECORD_DEPTH: usize = 32;

/// Decodes an object read from disk. `None` when the bytes are not a valid object.
pub(crate) fn decode_object(bytes: &[u8]) -> Option<Object> {
    decode_bounded(bytes)
}

/// Decodes one rmp-serde value nested at most [`MAX_RECORD_DEPTH`] deep.
pub(crate) fn decode_bounded<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_RECORD_DEPTH);
    T::deserialize(&mut de).ok()
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

    /// Found by the corpus replay of the `object_merge` fuzz target: a thousand nested maps in an
    /// object's unknown field were skipped a thousand levels deep, which overflowed a 2 MiB test
    /// thread's stack in a debug build (an abort, not a corrupted read). Decoding now stops at
    /// `MAX_RECORD_DEPTH`.
    #[test]
    fn nesting_deeper_than_the_record_depth_is_refused() {
        // [vv: [[{"node": "n1", "incarnation": 7, "x": {"x": ... nil}}, 1]], siblings: []]
        let nested = |levels: usize| {
            let mut b = vec![0x92, 0x91, 0x92, 0x83, 0xa4];
            b.extend(b"node\xa2n1\xabincarnation\x07\xa1x");
            for _ in 0..levels {
                b.extend([0x81, 0xa1, b'x']);
            }
            b.extend([0xc0, 0x01, 0x90]);
            b
        };
        assert!(
            decode_object(&nested(2)).is_some(),
            "unknown fields are skipped"
        );
        assert_eq!(decode_object(&nested(MAX_RECORD_DEPTH)), None);
        assert_eq!(decode_object(&nested(1000)), None);
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
