//! The member-record merge is a semilattice join: commutative, associative, idempotent, and
//! indifferent to the order records arrive in; the greater generation, then version, wins, and
//! two different records under one (generation, version) are reported as a conflict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use proptest::prelude::*;
use shoal_membership::{MemberRecord, MemberStatus, Membership};
use shoal_types::{Capacity, Incarnation, NodeId, Zone};

const STATUSES: [MemberStatus; 5] = [
    MemberStatus::Joining,
    MemberStatus::Valid,
    MemberStatus::Leaving,
    MemberStatus::Exiting,
    MemberStatus::Removed,
];

fn record(id: u8, generation: u64, version: u64, port: u16, status: usize) -> MemberRecord {
    MemberRecord {
        generation,
        version,
        id: NodeId::new(&format!("n{id}")).unwrap(),
        incarnation: Incarnation::new(generation * 7 + 1),
        addr: SocketAddr::from(([127, 0, 0, 1], 7000 + port)),
        zone: Zone::new(if port.is_multiple_of(2) { "a" } else { "b" }).unwrap(),
        capacity: Capacity::new(1 + u32::from(port % 3)).unwrap(),
        status: STATUSES[status % STATUSES.len()],
    }
}

/// Records of up to 4 nodes with small generations and versions, so that equal (generation,
/// version) pairs with different contents — conflicts — come up often.
fn records() -> impl Strategy<Value = Vec<MemberRecord>> {
    proptest::collection::vec(
        (0u8..4, 0u64..3, 0u64..3, 0u16..3, 0usize..5)
            .prop_map(|(id, g, v, port, s)| record(id, g, v, port, s)),
        0..12,
    )
}

fn document(records: &[MemberRecord]) -> Membership {
    let mut m = Membership::new();
    for r in records {
        m.merge_record(r.clone());
    }
    m
}

fn join(a: &Membership, b: &Membership) -> Membership {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #[test]
    fn merge_is_commutative(a in records(), b in records()) {
        let (a, b) = (document(&a), document(&b));
        prop_assert_eq!(join(&a, &b), join(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in records(), b in records(), c in records()) {
        let (a, b, c) = (document(&a), document(&b), document(&c));
        prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
    }

    #[test]
    fn merge_is_idempotent(a in records()) {
        let a = document(&a);
        prop_assert_eq!(join(&a, &a), a);
    }

    #[test]
    fn the_order_records_arrive_in_does_not_matter(rs in records(), seed in any::<u64>()) {
        let mut shuffled = rs.clone();
        // A deterministic shuffle from the seed (Fisher–Yates with an LCG).
        let mut x = seed;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(document(&rs), document(&shuffled));
    }

    #[test]
    fn each_member_ends_with_its_greatest_record(rs in records()) {
        let doc = document(&rs);
        for r in &rs {
            let kept = doc.get(&r.id).unwrap();
            prop_assert!(kept >= r);
            prop_assert!(rs.contains(kept), "the merge invents nothing");
        }
    }
}

#[test]
fn a_higher_generation_replaces_any_version_of_a_lower_one() {
    let mut m = Membership::new();
    assert!(m.merge_record(record(1, 0, 9, 0, 1)).changed);
    let reborn = record(1, 1, 0, 1, 0);
    let merged = m.merge_record(reborn.clone());
    assert!(merged.changed && !merged.conflict);
    assert_eq!(m.get(&reborn.id), Some(&reborn));
    // An older record arriving late changes nothing.
    assert!(!m.merge_record(record(1, 0, 10, 0, 1)).changed);
}

#[test]
fn two_records_under_one_generation_and_version_are_a_conflict_resolved_alike_everywhere() {
    let (x, y) = (record(1, 2, 3, 0, 1), record(1, 2, 3, 1, 1));
    let mut a = Membership::new();
    a.merge_record(x.clone());
    let merged = a.merge_record(y.clone());
    assert!(merged.conflict);
    let mut b = Membership::new();
    b.merge_record(y);
    assert!(b.merge_record(x).conflict);
    assert_eq!(a, b, "both sides keep the same one");
    assert!(
        !a.merge_record(a.get(&NodeId::new("n1").unwrap()).unwrap().clone())
            .conflict
    );
}
