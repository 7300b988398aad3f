//! What reads see (`values`, `is_deleted`) and the sibling cap.

// Test code, helpers included: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{NO_CAP, actor, value_of};
use shoal_causality::{CausalContext, CausalityError, Object, Sibling, VersionVector};

fn blind(object: &Object, value: &'static [u8], by: usize) -> Object {
    object
        .update(
            &CausalContext::empty(),
            Sibling::Value(Bytes::from_static(value)),
            &actor(by),
            NO_CAP,
        )
        .unwrap()
}

#[test]
fn identical_concurrent_values_are_returned_once() {
    let a = blind(&Object::new(), b"same", 0);
    let b = blind(&Object::new(), b"same", 1);
    let c = blind(&Object::new(), b"other", 2);
    let merged = a.merge(&b).merge(&c);
    assert_eq!(merged.siblings().len(), 3);
    assert_eq!(
        merged.values(),
        vec![Bytes::from_static(b"same"), Bytes::from_static(b"other")]
    );
    // Same at one coordinator.
    let twice = blind(&blind(&Object::new(), b"x", 0), b"x", 0);
    assert_eq!(twice.siblings().len(), 2);
    assert_eq!(twice.values(), vec![Bytes::from_static(b"x")]);
}

#[test]
fn a_key_that_was_never_written_has_no_values_and_is_not_deleted() {
    let o = Object::new();
    assert!(o.values().is_empty());
    assert!(o.is_empty());
    assert!(!o.is_deleted());
}

#[test]
fn a_deleted_key_has_no_values_and_is_deleted() {
    let written = blind(&Object::new(), b"v", 0);
    let deleted = written
        .update(&written.context(), Sibling::Tombstone, &actor(1), NO_CAP)
        .unwrap();
    assert_eq!(deleted.siblings().len(), 1);
    assert!(deleted.values().is_empty());
    assert!(deleted.is_deleted());
    assert!(!deleted.is_empty());
    // Two concurrent deletes: still deleted, still no values.
    let other = written
        .update(&written.context(), Sibling::Tombstone, &actor(2), NO_CAP)
        .unwrap();
    let both = deleted.merge(&other);
    assert_eq!(both.siblings().len(), 2);
    assert!(both.values().is_empty());
    assert!(both.is_deleted());
    // The delete replicates over the value it saw: no resurrection.
    assert_eq!(written.merge(&both), both);
}

#[test]
fn a_write_concurrent_with_a_delete_survives_it() {
    let written = blind(&Object::new(), b"v", 0);
    let deleted = written
        .update(&written.context(), Sibling::Tombstone, &actor(1), NO_CAP)
        .unwrap();
    let rewritten = blind(&written, b"w", 0);
    let merged = deleted.merge(&rewritten);
    assert!(!merged.is_deleted());
    assert_eq!(merged.values(), vec![Bytes::from_static(b"w")]);
    assert_eq!(merged.siblings().len(), 2);
}

#[test]
fn a_write_beyond_the_sibling_cap_is_refused_and_changes_nothing() {
    const MAX: usize = 4;
    let mut o = Object::new();
    for i in 0..MAX {
        o = o
            .update(
                &CausalContext::empty(),
                Sibling::Value(value_of(i as u64)),
                &actor(i % 3),
                MAX,
            )
            .unwrap();
    }
    assert_eq!(o.siblings().len(), MAX);
    let before = o.clone();
    for sibling in [Sibling::Value(value_of(99)), Sibling::Tombstone] {
        let refused = o.update(&CausalContext::empty(), sibling, &actor(0), MAX);
        assert_eq!(
            refused,
            Err(CausalityError::TooManySiblings {
                siblings: MAX + 1,
                max: MAX
            })
        );
        assert_eq!(o, before);
    }
    // A write whose context covers one sibling fits; one whose context covers all resolves.
    let mut first = VersionVector::new();
    first.witness(&actor(0), 1);
    let partial = o
        .update(
            &CausalContext::from(first),
            Sibling::Value(value_of(100)),
            &actor(1),
            MAX,
        )
        .unwrap();
    assert_eq!(partial.siblings().len(), MAX);
    let resolved = o
        .update(&o.context(), Sibling::Value(value_of(101)), &actor(1), MAX)
        .unwrap();
    assert_eq!(resolved.values(), vec![value_of(101)]);
    // A cap of zero refuses every write.
    assert_eq!(
        Object::new().update(&CausalContext::empty(), Sibling::Tombstone, &actor(0), 0),
        Err(CausalityError::TooManySiblings {
            siblings: 1,
            max: 0
        })
    );
}
