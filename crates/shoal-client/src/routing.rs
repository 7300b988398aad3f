//! Where a request may go, in the order to try: pure functions of the ring, so they are tested
//! without a network.

use std::net::SocketAddr;

use shoal_ring::Ring;
use shoal_transport::ExpectedPeer;
use shoal_types::{Key, NodeId};

/// One node a request may be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Where to send.
    pub(crate) addr: SocketAddr,
    /// Who must answer there: the ring's member, or any node for a bare address.
    pub(crate) node: Option<NodeId>,
}

impl Target {
    /// A bare address (a seed, or an address the caller named): any node may answer.
    pub(crate) fn any_node(addr: SocketAddr) -> Target {
        Target { addr, node: None }
    }

    /// The address, and the ring member expected there if the ring has one at it.
    pub(crate) fn at(ring: &Ring, addr: SocketAddr) -> Target {
        let node = ring
            .members()
            .iter()
            .find(|m| m.addr == addr)
            .map(|m| m.id.clone());
        Target { addr, node }
    }

    /// The certificate the node must present.
    pub(crate) fn expected_peer(&self) -> ExpectedPeer {
        match &self.node {
            Some(id) => ExpectedPeer::Node(id.clone()),
            None => ExpectedPeer::AnyNode,
        }
    }
}

/// The targets of a request about `key`: its primaries starting at `start` (modulo their
/// number, so consecutive requests spread over them), then the rest of the ring walk from the
/// key's partition, then any member the walk does not reach. Each member once.
pub(crate) fn key_targets(ring: &Ring, key: &Key, start: usize) -> Vec<Target> {
    let partition = ring.partition_for_key(key);
    let primaries = ring.primaries(partition);
    let mut order: Vec<&NodeId> = Vec::with_capacity(ring.members().len());
    if !primaries.is_empty() {
        let first = start % primaries.len();
        order.extend(primaries[first..].iter().chain(&primaries[..first]));
    }
    for node in ring.walk(partition) {
        if !order.contains(&node) {
            order.push(node);
        }
    }
    for member in ring.members() {
        if !order.contains(&&member.id) {
            order.push(&member.id);
        }
    }
    order
        .into_iter()
        .filter_map(|id| ring.member(id))
        .map(|m| Target {
            addr: m.addr,
            node: Some(m.id.clone()),
        })
        .collect()
}

/// The targets of a request any node can answer (the ring): every member starting at `start`,
/// then the seed addresses no member has.
pub(crate) fn any_targets(ring: &Ring, seeds: &[SocketAddr], start: usize) -> Vec<Target> {
    let members = ring.members();
    let mut targets = Vec::with_capacity(members.len() + seeds.len());
    if !members.is_empty() {
        let first = start % members.len();
        for m in members[first..].iter().chain(&members[..first]) {
            targets.push(Target {
                addr: m.addr,
                node: Some(m.id.clone()),
            });
        }
    }
    for &seed in seeds {
        if !targets.iter().any(|t| t.addr == seed) {
            targets.push(Target::any_node(seed));
        }
    }
    targets
}

/// Moves the targets believed down behind the others, keeping each group's order.
pub(crate) fn healthy_first(
    targets: Vec<Target>,
    is_down: impl Fn(SocketAddr) -> bool,
) -> Vec<Target> {
    let (up, down): (Vec<Target>, Vec<Target>) =
        targets.into_iter().partition(|t| !is_down(t.addr));
    up.into_iter().chain(down).collect()
}

#[cfg(test)]
mod tests {
    use shoal_ring::Member;
    use shoal_types::{PartitionCount, ReplicationFactor};

    use super::*;

    fn ring(nodes: usize, n: u8) -> Ring {
        let members = (1..=nodes)
            .map(|i| {
                Member::new(
                    NodeId::new(&format!("n{i}")).unwrap(),
                    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                )
            })
            .collect();
        Ring::new(
            members,
            PartitionCount::new(64).unwrap(),
            ReplicationFactor::new(n).unwrap(),
        )
        .unwrap()
    }

    fn ids(targets: &[Target]) -> Vec<String> {
        targets
            .iter()
            .map(|t| t.node.as_ref().map_or("?".into(), |n| n.to_string()))
            .collect()
    }

    #[test]
    fn key_targets_start_with_the_primaries_and_reach_every_member_once() {
        let ring = ring(5, 3);
        let key = Key::new(&b"user:1"[..]).unwrap();
        let primaries: Vec<String> = ring
            .primaries(ring.partition_for_key(&key))
            .iter()
            .map(|n| n.to_string())
            .collect();
        for start in 0..6 {
            let targets = ids(&key_targets(&ring, &key, start));
            assert_eq!(targets.len(), 5);
            let mut head = targets[..3].to_vec();
            let mut expected = primaries.clone();
            head.sort();
            expected.sort();
            assert_eq!(head, expected, "start {start}");
            assert_eq!(targets[0], primaries[start % 3], "rotation by start");
            let mut all = targets.clone();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 5, "each member once");
        }
    }

    #[test]
    fn key_targets_carry_the_member_addresses() {
        let ring = ring(3, 3);
        let key = Key::new(&b"k"[..]).unwrap();
        for t in key_targets(&ring, &key, 0) {
            let id = t.node.clone().unwrap();
            assert_eq!(ring.member(&id).unwrap().addr, t.addr);
            assert_eq!(t.expected_peer(), ExpectedPeer::Node(id));
        }
    }

    #[test]
    fn any_targets_rotate_members_then_add_unknown_seeds() {
        let ring = ring(3, 3);
        let known = SocketAddr::from(([127, 0, 0, 1], 7001));
        let unknown = SocketAddr::from(([10, 0, 0, 9], 7000));
        let targets = any_targets(&ring, &[known, unknown], 1);
        assert_eq!(ids(&targets), ["n2", "n3", "n1", "?"]);
        assert_eq!(targets[3], Target::any_node(unknown));
    }

    #[test]
    fn nodes_believed_down_are_tried_last_in_order() {
        let ring = ring(4, 3);
        let targets = any_targets(&ring, &[], 0);
        let down = [7001u16, 7003];
        let ordered = healthy_first(targets, |a| down.contains(&a.port()));
        assert_eq!(ids(&ordered), ["n2", "n4", "n1", "n3"]);
    }

    #[test]
    fn an_address_outside_the_ring_expects_any_node() {
        let ring = ring(3, 3);
        let inside = Target::at(&ring, SocketAddr::from(([127, 0, 0, 1], 7002)));
        assert_eq!(inside.node.unwrap().as_str(), "n2");
        let outside = Target::at(&ring, SocketAddr::from(([127, 0, 0, 1], 9999)));
        assert_eq!(outside.expected_peer(), ExpectedPeer::AnyNode);
    }
}
