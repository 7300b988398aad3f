use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use shoal_types::{Key, NodeId, PartitionCount, PartitionId, ReplicationFactor, RingEpoch};

use crate::RingError;
use crate::claim::{self, NO_OWNER};
use crate::member::Member;
use crate::partitioner::partition_for;
use crate::preference::{Fallbacks, PreferenceList, Target, Walk};

/// The cluster map: which member owns each of the Q partitions, at which epoch, for which N.
///
/// This is the document gossip carries. Invariants, also after decoding untrusted bytes: at
/// least one and at most [`Ring::MAX_MEMBERS`] members, sorted by id with unique ids; exactly Q
/// owners, each a member. Equal rings encode to equal bytes.
///
/// Alongside the document, the ring keeps each partition's primaries (the zone-aware walk
/// described on [`Ring::preference_list`]), so a lookup is a slice access. That cache is derived,
/// rebuilt on decode and never serialised.
#[derive(Clone)]
pub struct Ring {
    epoch: RingEpoch,
    q: PartitionCount,
    n: ReplicationFactor,
    members: Vec<Member>,
    /// Owner of each partition, as an index into `members`.
    owners: Vec<u16>,
    /// Partitions owned per member, by index.
    owned: Vec<u32>,
    /// Primaries per partition: min(N, members owning a partition).
    width: usize,
    /// The primaries of partition p are `primaries[p * width..(p + 1) * width]`.
    primaries: Vec<NodeId>,
    /// The same primaries as member indices.
    primary_indices: Vec<u16>,
}

impl Ring {
    /// The most members a ring holds (owners are stored as 16-bit member indices).
    pub const MAX_MEMBERS: usize = 1024;

    /// The ring of a fresh cluster at [`RingEpoch::INITIAL`]: partitions claimed from nothing.
    /// `members` may come in any order.
    pub fn new(
        members: Vec<Member>,
        q: PartitionCount,
        n: ReplicationFactor,
    ) -> Result<Ring, RingError> {
        let members = canonical_members(members)?;
        let owners = claim::claim(&members, q.get() as usize, n.count(), None);
        Ok(Ring::build(RingEpoch::INITIAL, q, n, members, owners))
    }

    /// The ring for a new membership (joins, leaves, zone or capacity changes) at the next
    /// epoch. Every member owns ⌊Q·c/C⌋ or ⌈Q·c/C⌉ partitions (c its capacity, C the total);
    /// partitions move only where the new shares force them to, plus at most an eighth more
    /// spent on spreading replicas (see `docs/ring.md`); the same ring and membership give the
    /// same result on every node, whatever the order of `members`.
    pub fn claim(&self, members: Vec<Member>) -> Result<Ring, RingError> {
        let members = canonical_members(members)?;
        // Old member index -> new member index, NO_OWNER for members that left.
        let renumber: Vec<u16> = self
            .members
            .iter()
            .map(|old| {
                members
                    .binary_search_by(|m| m.id.cmp(&old.id))
                    .map_or(NO_OWNER, |i| i as u16)
            })
            .collect();
        let previous: Vec<u16> = self
            .owners
            .iter()
            .map(|&o| renumber[usize::from(o)])
            .collect();
        let owners = claim::claim(
            &members,
            self.q.get() as usize,
            self.n.count(),
            Some(&previous),
        );
        Ok(Ring::build(
            self.epoch.next(),
            self.q,
            self.n,
            members,
            owners,
        ))
    }

    /// Builds a ring from its parts, checking every invariant: members sorted by id and unique,
    /// one owner per partition, every owner a member. This is how a stored or received ring is
    /// rebuilt.
    pub fn from_parts(
        epoch: RingEpoch,
        q: PartitionCount,
        n: ReplicationFactor,
        members: Vec<Member>,
        owners: &[NodeId],
    ) -> Result<Ring, RingError> {
        check_members(&members)?;
        let owners = owners
            .iter()
            .enumerate()
            .map(|(p, id)| {
                members
                    .binary_search_by(|m| m.id.cmp(id))
                    .map(|i| i as u16)
                    .map_err(|_| RingError::UnknownOwner {
                        partition: p as u32,
                    })
            })
            .collect::<Result<Vec<u16>, RingError>>()?;
        Ring::from_indices(epoch, q, n, members, owners)
    }

    /// The ring's version.
    pub fn epoch(&self) -> RingEpoch {
        self.epoch
    }

    /// Q.
    pub fn q(&self) -> PartitionCount {
        self.q
    }

    /// N.
    pub fn n(&self) -> ReplicationFactor {
        self.n
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with this id, if any.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.member_index(id).map(|i| &self.members[i])
    }

    /// The owner of `partition`: the first node of its preference list.
    ///
    /// # Panics
    ///
    /// If `partition` is not below Q (partition ids come from this ring's `q()`).
    pub fn owner(&self, partition: PartitionId) -> &NodeId {
        &self.members[usize::from(self.owners[partition.index() as usize])].id
    }

    /// Every partition's owner, in partition order.
    pub fn owners(&self) -> impl ExactSizeIterator<Item = (PartitionId, &NodeId)> + '_ {
        self.owners.iter().enumerate().map(|(p, &o)| {
            (
                PartitionId::from_index_unchecked(p as u32),
                &self.members[usize::from(o)].id,
            )
        })
    }

    /// How many partitions `node` owns (0 for a node that is not a member).
    pub fn partitions_owned_by(&self, node: &NodeId) -> usize {
        self.member_index(node)
            .map_or(0, |i| self.owned[i] as usize)
    }

    /// The partition of `key` in this ring.
    pub fn partition_for_key(&self, key: &Key) -> PartitionId {
        partition_for(key.as_bytes(), self.q)
    }

    /// The primaries of `partition`, borrowed: the owner of p, then the owners of p+1, p+2, …
    /// skipping nodes already chosen and, while a zone not yet chosen remains on the ring, nodes
    /// of zones already chosen, until N nodes (or every owning node, if fewer than N) are
    /// chosen. When there are fewer zones than N, the remaining places go to distinct nodes in
    /// ring order. Nothing is allocated.
    ///
    /// # Panics
    ///
    /// If `partition` is not below Q.
    pub fn primaries(&self, partition: PartitionId) -> &[NodeId] {
        let start = partition.index() as usize * self.width;
        &self.primaries[start..start + self.width]
    }

    /// The preference list of `partition`: its primaries (see [`Ring::primaries`]).
    pub fn preference_list(&self, partition: PartitionId) -> PreferenceList {
        PreferenceList {
            partition,
            primaries: self.primaries(partition).to_vec(),
        }
    }

    /// The preference list of the partition `key` falls in.
    pub fn preference_list_for_key(&self, key: &Key) -> PreferenceList {
        self.preference_list(self.partition_for_key(key))
    }

    /// Where a sloppy quorum sends a request for `partition`: each reachable primary (in
    /// preference-list order), then, for each unreachable primary in order, the next reachable
    /// fallback, which stands in for it (and will hold a hint for it). At most N targets;
    /// fewer when not enough nodes are reachable.
    pub fn sloppy_preference_list(
        &self,
        partition: PartitionId,
        is_unreachable: impl Fn(&NodeId) -> bool,
    ) -> Vec<Target> {
        let primaries = self.primaries(partition);
        let mut targets = Vec::with_capacity(primaries.len());
        for node in primaries {
            if !is_unreachable(node) {
                targets.push(Target {
                    node: node.clone(),
                    stands_in_for: None,
                });
            }
        }
        if targets.len() == primaries.len() {
            return targets;
        }
        let mut fallbacks = self.fallbacks(partition);
        for primary in primaries.iter().filter(|node| is_unreachable(node)) {
            match fallbacks.find(|node| !is_unreachable(node)) {
                Some(node) => targets.push(Target {
                    node: node.clone(),
                    stands_in_for: Some(primary.clone()),
                }),
                None => break,
            }
        }
        targets
    }

    /// The nodes after the primaries of `partition`, in ring order from p: every other node that
    /// owns a partition, in the order it first appears, each once. Nothing is allocated.
    pub fn fallbacks(&self, partition: PartitionId) -> Fallbacks<'_> {
        let start = partition.index() as usize * self.width;
        let mut fallbacks = Fallbacks::new(self, partition);
        for &i in &self.primary_indices[start..start + self.width] {
            fallbacks.skip_member(usize::from(i));
        }
        fallbacks
    }

    /// The full walk of `partition`: its primaries, then its fallbacks.
    pub fn walk(&self, partition: PartitionId) -> Walk<'_> {
        Walk::new(self.primaries(partition).iter(), self.fallbacks(partition))
    }

    /// True if `node` is one of the primaries of `partition`.
    pub fn is_primary(&self, node: &NodeId, partition: PartitionId) -> bool {
        self.primaries(partition).contains(node)
    }

    pub(crate) fn member_index(&self, id: &NodeId) -> Option<usize> {
        self.members.binary_search_by(|m| m.id.cmp(id)).ok()
    }

    /// Owner of partition index `p` as a member index (for the walk iterators).
    pub(crate) fn owner_index(&self, p: usize) -> usize {
        usize::from(self.owners[p])
    }

    pub(crate) fn partition_len(&self) -> usize {
        self.owners.len()
    }

    /// Checks a ring given by member indices and builds its caches.
    fn from_indices(
        epoch: RingEpoch,
        q: PartitionCount,
        n: ReplicationFactor,
        members: Vec<Member>,
        owners: Vec<u16>,
    ) -> Result<Ring, RingError> {
        check_members(&members)?;
        if owners.len() != q.get() as usize {
            return Err(RingError::WrongOwnerCount {
                expected: q.get() as usize,
                found: owners.len(),
            });
        }
        if let Some(p) = owners.iter().position(|&o| usize::from(o) >= members.len()) {
            return Err(RingError::UnknownOwner {
                partition: p as u32,
            });
        }
        Ok(Ring::build(epoch, q, n, members, owners))
    }

    /// Builds the caches of a ring whose invariants hold.
    fn build(
        epoch: RingEpoch,
        q: PartitionCount,
        n: ReplicationFactor,
        members: Vec<Member>,
        owners: Vec<u16>,
    ) -> Ring {
        let mut owned = vec![0u32; members.len()];
        for &o in &owners {
            owned[usize::from(o)] += 1;
        }
        let (width, primary_indices) = primary_walks(&members, &owners, n.count());
        let primaries = primary_indices
            .iter()
            .map(|&i| members[usize::from(i)].id.clone())
            .collect();
        Ring {
            epoch,
            q,
            n,
            members,
            owners,
            owned,
            width,
            primaries,
            primary_indices,
        }
    }
}

impl PartialEq for Ring {
    /// Rings are equal when their documents are; the caches follow from the document.
    fn eq(&self, other: &Ring) -> bool {
        self.epoch == other.epoch
            && self.q == other.q
            && self.n == other.n
            && self.members == other.members
            && self.owners == other.owners
    }
}

impl Eq for Ring {}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owned: Vec<(&str, u32)> = self
            .members
            .iter()
            .zip(&self.owned)
            .map(|(m, &c)| (m.id.as_str(), c))
            .collect();
        f.debug_struct("Ring")
            .field("epoch", &self.epoch)
            .field("q", &self.q)
            .field("n", &self.n)
            .field("partitions_owned", &owned)
            .finish()
    }
}

impl Serialize for Ring {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawRingRef {
            epoch: self.epoch,
            q: self.q,
            n: self.n,
            members: &self.members,
            owners: &self.owners,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ring {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ring, D::Error> {
        let raw = RawRing::deserialize(deserializer)?;
        Ring::from_indices(raw.epoch, raw.q, raw.n, raw.members.0, raw.owners.0)
            .map_err(de::Error::custom)
    }
}

/// The wire form of a ring, as written. Owners are member indices: compact, and meaningful
/// only together with the member list in the same document.
#[derive(Clone, Copy, Serialize)]
pub(crate) struct RawRingRef<'a> {
    pub(crate) epoch: RingEpoch,
    pub(crate) q: PartitionCount,
    pub(crate) n: ReplicationFactor,
    pub(crate) members: &'a [Member],
    pub(crate) owners: &'a [u16],
}

/// The wire form of a ring, as read: lengths bounded before anything is allocated, checked by
/// `Ring::from_indices` before a `Ring` exists.
#[derive(Deserialize)]
struct RawRing {
    epoch: RingEpoch,
    q: PartitionCount,
    n: ReplicationFactor,
    members: BoundedVec<Member, { Ring::MAX_MEMBERS }>,
    owners: BoundedVec<u16, { PartitionCount::MAX as usize }>,
}

/// A sequence decoded only while it holds at most `MAX` elements.
struct BoundedVec<T, const MAX: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedVec<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(BoundedVecVisitor::<T, MAX>(PhantomData))
    }
}

struct BoundedVecVisitor<T, const MAX: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVecVisitor<T, MAX> {
    type Value = BoundedVec<T, MAX>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {MAX} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let hint = seq.size_hint().unwrap_or(0);
        if hint > MAX {
            return Err(de::Error::invalid_length(hint, &self));
        }
        let mut items = Vec::with_capacity(hint);
        while let Some(item) = seq.next_element()? {
            if items.len() == MAX {
                return Err(de::Error::invalid_length(MAX + 1, &self));
            }
            items.push(item);
        }
        Ok(BoundedVec(items))
    }
}

/// Sorts members by id and checks them.
fn canonical_members(mut members: Vec<Member>) -> Result<Vec<Member>, RingError> {
    members.sort_by(|a, b| a.id.cmp(&b.id));
    check_members(&members)?;
    Ok(members)
}

/// At least one member, at most `MAX_MEMBERS`, sorted by id, ids unique.
fn check_members(members: &[Member]) -> Result<(), RingError> {
    if members.is_empty() {
        return Err(RingError::NoMembers);
    }
    if members.len() > Ring::MAX_MEMBERS {
        return Err(RingError::TooManyMembers {
            count: members.len(),
            max: Ring::MAX_MEMBERS,
        });
    }
    for pair in members.windows(2) {
        match pair[0].id.cmp(&pair[1].id) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                return Err(RingError::DuplicateMember(pair[0].id.clone()));
            }
            std::cmp::Ordering::Greater => return Err(RingError::MembersNotSorted),
        }
    }
    Ok(())
}

/// Every partition's primaries as member indices, `width` per partition, where width =
/// min(N, members owning a partition).
///
/// The walk from p chooses the owner at the first occurrence of each zone, zones in order of
/// first occurrence, then distinct nodes in order of first occurrence. Sweeping p downwards
/// over two turns of the ring while keeping each node's and each zone's next occurrence in an
/// ordered set finds every walk in O(Q · (log S + N)), whatever the zone layout.
fn primary_walks(members: &[Member], owners: &[u16], n: usize) -> (usize, Vec<u16>) {
    let q = owners.len();
    let mut zones: Vec<&shoal_types::Zone> = members.iter().map(|m| &m.zone).collect();
    zones.sort_unstable();
    zones.dedup();
    let zone_of: Vec<usize> = members
        .iter()
        .map(|m| zones.binary_search(&&m.zone).unwrap_or(0))
        .collect();
    let mut owning = vec![false; members.len()];
    for &o in owners {
        owning[usize::from(o)] = true;
    }
    let width = n.min(owning.iter().filter(|&&o| o).count());

    const NOT_SEEN: usize = usize::MAX;
    let mut next_node = vec![NOT_SEEN; members.len()];
    let mut next_zone = vec![NOT_SEEN; zones.len()];
    // (position on the doubled ring, node or zone index), ordered by position.
    let mut node_order: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut zone_order: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut walks = vec![0u16; q * width];
    for i in (0..2 * q).rev() {
        let o = usize::from(owners[i % q]);
        let z = zone_of[o];
        if next_node[o] != NOT_SEEN {
            node_order.remove(&(next_node[o], o));
        }
        next_node[o] = i;
        node_order.insert((i, o));
        if next_zone[z] != NOT_SEEN {
            zone_order.remove(&(next_zone[z], z));
        }
        next_zone[z] = i;
        zone_order.insert((i, z));
        if i >= q {
            continue;
        }
        let walk = &mut walks[i * width..(i + 1) * width];
        let mut chosen = 0;
        for &(pos, _) in zone_order.iter().take(width) {
            walk[chosen] = owners[pos % q];
            chosen += 1;
        }
        for &(_, node) in &node_order {
            if chosen == width {
                break;
            }
            let node = node as u16;
            if !walk[..chosen].contains(&node) {
                walk[chosen] = node;
                chosen += 1;
            }
        }
    }
    (width, walks)
}
