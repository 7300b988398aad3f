//! Claim: which member owns each partition after a membership change.
//!
//! Works on member indices (members sorted by id, so an index names the same node on every
//! machine) and is deterministic: no hashing, no randomness, every tie broken by index or
//! partition number.
//!
//! What a good assignment looks like. A preference list takes the first N distinct nodes (over
//! distinct zones) walking the ring, so replicas spread evenly when (1) no node appears twice
//! within N consecutive partitions, (2) no zone appears twice within min(N, zones) consecutive
//! partitions, and (3) each zone's partitions are evenly spaced: with no more zones than N, a
//! node holds a replica of each partition between one of its own and the previous one of its
//! zone, so even gaps make replicas proportional to ownership. The [`Score`] of an assignment
//! counts these three, compared in that order.
//!
//! Steps:
//!
//! 1. **Targets.** Member i owns ⌊Q·cᵢ/C⌋ or ⌈Q·cᵢ/C⌉ partitions. The Q − Σ⌊…⌋ rounded-up places
//!    go first to members that already own more than the floor (so they need not give one up),
//!    then to members whose floor is 0 (so that they own something), then by the larger fraction.
//! 2. **Fresh ring:** deal partitions in ring order, each to the zone whose next turn is due
//!    soonest (zone i's k-th partition is due at (k + ½)·Q/Tᵢ, Tᵢ its target) unless that zone
//!    is already within the zone window and not yet overdue, and within the zone to the member
//!    due soonest (then with the fewest replicas so far) that does not repeat within N
//!    partitions. This spaces every zone and every member evenly.
//! 3. **Changed ring:** keep every partition whose owner is still a member. Hand out orphans (the
//!    partitions of departed members) in ring order, each to the member below target that scores
//!    best there. Then each member below target, furthest behind first, takes one partition at a
//!    time from a member above target: the one that improves the score most, then the one
//!    furthest from its own partitions, then from the donor with the largest excess. This moves
//!    exactly the partitions the targets force to move.
//! 4. **Repair** by swapping the owners of two partitions when that improves the score: node
//!    conflicts first, then partitions closer to another of their zone than the zone's even
//!    spacing. A changed ring spends at most [`movement_allowance`] extra moves on this; every
//!    repair is bounded in work.
//!
//! Cost: a fresh ring O(Q·S); a change O(Q · partitions moved) plus a repair bounded by
//! `REPAIR_WORK_PER_PARTITION · Q` swap evaluations. A join to 64 nodes takes about 7 ms at
//! Q = 4096 and 0.7 s at Q = 65536 (release build).

use std::cmp::Ordering;
use std::ops::{Add, Sub};

use crate::member::Member;

/// The owner of a partition not yet handed out.
pub(crate) const NO_OWNER: u16 = u16::MAX;

/// Repair passes over the ring per stage; a pass that changes nothing ends the stage.
const REPAIR_PASSES: usize = 4;

/// Partitions after a badly placed one that repair considers swapping with.
const REPAIR_SCAN: usize = 256;

/// Swap evaluations one repair may spend, per partition of the ring. Bounds claim's running
/// time on rings where not every conflict can be removed (few nodes or zones, skewed
/// capacities).
const REPAIR_WORK_PER_PARTITION: usize = 16;

/// How many extra moves (beyond those the new targets force) a changed ring may spend on
/// repair: an eighth of the forced moves (none when nothing has to move, so claiming an
/// unchanged membership changes nothing).
pub(crate) fn movement_allowance(forced_moves: usize) -> usize {
    forced_moves / 8
}

/// The owners (member indices) of Q partitions for `members` (sorted by id, unique, at most
/// `Ring::MAX_MEMBERS`, at least one), starting from `previous` owners (indices into `members`,
/// `NO_OWNER` where the old owner left) or from nothing for a fresh ring.
pub(crate) fn claim(members: &[Member], q: usize, n: usize, previous: Option<&[u16]>) -> Vec<u16> {
    let owners = match previous {
        Some(prev) => prev.to_vec(),
        None => vec![NO_OWNER; q],
    };
    let mut count = vec![0u32; members.len()];
    for &o in &owners {
        if o != NO_OWNER {
            count[usize::from(o)] += 1;
        }
    }
    let target = targets(members, q, &count);
    let (zone, zones) = zone_indices(members);
    let mut zone_target = vec![0u32; zones];
    for (i, &t) in target.iter().enumerate() {
        zone_target[usize::from(zone[i])] += t;
    }
    let mut zone_count = vec![0u32; zones];
    for (i, &c) in count.iter().enumerate() {
        zone_count[usize::from(zone[i])] += c;
    }
    let owning = target.iter().filter(|&&t| t > 0).count();
    let owning_zones = zone_target.iter().filter(|&&t| t > 0).count();
    let mut placement = Placement {
        q,
        owners,
        zone,
        zone_target,
        target,
        count,
        zone_count,
        // With N or fewer owning nodes every preference list holds all of them, so where each
        // node sits cannot change who holds what; only zones are spread.
        node_window: if owning > n { n } else { 1 },
        zone_window: n.min(owning_zones),
    };
    match previous {
        None => {
            placement.deal();
            placement.repair(None, usize::MAX);
        }
        Some(prev) => {
            placement.hand_out_orphans();
            placement.rebalance();
            let forced = moved(prev, &placement.owners);
            placement.repair(Some(prev), forced + movement_allowance(forced));
        }
    }
    debug_assert!(placement.owners.iter().all(|&o| o != NO_OWNER));
    debug_assert_eq!(placement.count, placement.target);
    placement.owners
}

/// How many partitions change owner between two assignments.
pub(crate) fn moved(old: &[u16], new: &[u16]) -> usize {
    old.iter().zip(new).filter(|(a, b)| a != b).count()
}

/// The partition count each member should own: ⌊Q·c/C⌋ or ⌈Q·c/C⌉, summing to Q.
pub(crate) fn targets(members: &[Member], q: usize, current: &[u32]) -> Vec<u32> {
    let total: u64 = members.iter().map(|m| u64::from(m.capacity.get())).sum();
    let q64 = q as u64;
    let mut target = Vec::with_capacity(members.len());
    let mut fraction = Vec::with_capacity(members.len());
    for m in members {
        let share = q64 * u64::from(m.capacity.get());
        // share / total <= q <= 65536: fits u32.
        target.push((share / total) as u32);
        fraction.push(share % total);
    }
    let assigned: u64 = target.iter().map(|&t| u64::from(t)).sum();
    let extra = (q64 - assigned) as usize;
    // Only members with a fractional share may round up; there are always at least `extra` of
    // them, since extra · C = Σ fractions and each fraction is below C.
    let mut order: Vec<usize> = (0..members.len()).filter(|&i| fraction[i] > 0).collect();
    order.sort_by(|&a, &b| {
        let keeps = |i: usize| current[i] > target[i];
        keeps(b)
            .cmp(&keeps(a))
            .then((target[b] == 0).cmp(&(target[a] == 0)))
            .then(fraction[b].cmp(&fraction[a]))
            .then(a.cmp(&b))
    });
    for i in order.into_iter().take(extra) {
        target[i] += 1;
    }
    target
}

/// Each member's zone as an index into the sorted distinct zones, and how many zones there are.
fn zone_indices(members: &[Member]) -> (Vec<u16>, usize) {
    let mut zones: Vec<&shoal_types::Zone> = members.iter().map(|m| &m.zone).collect();
    zones.sort_unstable();
    zones.dedup();
    let index = members
        .iter()
        // Every member's zone is in `zones`, and there are no more zones than members.
        .map(|m| zones.binary_search(&&m.zone).unwrap_or(0) as u16)
        .collect();
    (index, zones.len())
}

/// Orders "k-th turn of a series of `total`" by due time (k + ½)/total.
fn due(done_a: u32, total_a: u32, done_b: u32, total_b: u32) -> Ordering {
    let a = (2 * u64::from(done_a) + 1) * u64::from(total_b);
    let b = (2 * u64::from(done_b) + 1) * u64::from(total_a);
    a.cmp(&b)
}

/// The quality of an assignment, or a change in it; lower is better, compared field by field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Score {
    /// Node conflicts: Σ over pairs of one node's partitions d < N apart of (N − d).
    node: i64,
    /// Zone conflicts: Σ over pairs of one zone's partitions d < `zone_window` apart of
    /// (`zone_window` − d).
    crowding: i64,
    /// Σ over zones of the squared gaps between consecutive partitions of the zone.
    spacing: i64,
}

impl Add for Score {
    type Output = Score;
    fn add(self, other: Score) -> Score {
        Score {
            node: self.node + other.node,
            crowding: self.crowding + other.crowding,
            spacing: self.spacing + other.spacing,
        }
    }
}

impl Sub for Score {
    type Output = Score;
    fn sub(self, other: Score) -> Score {
        Score {
            node: self.node - other.node,
            crowding: self.crowding - other.crowding,
            spacing: self.spacing - other.spacing,
        }
    }
}

/// What repair may still spend.
struct Budget {
    /// Partitions whose owner differs from the previous ring.
    moves: usize,
    /// The most `moves` may reach.
    max_moves: usize,
    /// Swap evaluations left.
    work: usize,
}

/// Which flaws a repair pass looks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// A node twice within N partitions.
    NodeConflict,
    /// A partition closer to another of its zone than the zone's even spacing.
    ZoneCrowding,
}

/// An assignment being built, with the bookkeeping claim needs.
struct Placement {
    q: usize,
    owners: Vec<u16>,
    /// Zone index of each member.
    zone: Vec<u16>,
    /// Partitions each zone will own.
    zone_target: Vec<u32>,
    target: Vec<u32>,
    count: Vec<u32>,
    /// Partitions each zone owns now.
    zone_count: Vec<u32>,
    node_window: usize,
    /// min(N, zones owning partitions): how close two partitions of a zone may be.
    zone_window: usize,
}

impl Placement {
    fn assign(&mut self, p: usize, node: u16) {
        let old = self.owners[p];
        if old != NO_OWNER {
            self.count[usize::from(old)] -= 1;
            let z = usize::from(self.zone_of(old));
            self.zone_count[z] -= 1;
        }
        self.owners[p] = node;
        self.count[usize::from(node)] += 1;
        let z = usize::from(self.zone_of(node));
        self.zone_count[z] += 1;
    }

    fn zone_of(&self, node: u16) -> u16 {
        self.zone[usize::from(node)]
    }

    fn deficit(&self, i: usize) -> u32 {
        self.target[i].saturating_sub(self.count[i])
    }

    /// True if member `a` is further behind its target than `b`, in proportion to the targets.
    fn further_behind(&self, a: usize, b: usize) -> bool {
        u64::from(self.deficit(a)) * u64::from(self.target[b])
            > u64::from(self.deficit(b)) * u64::from(self.target[a])
    }

    /// The member below target that is furthest behind (lowest index on ties).
    fn neediest(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for i in 0..self.target.len() {
            if self.deficit(i) > 0 && best.is_none_or(|b| self.further_behind(i, b)) {
                best = Some(i);
            }
        }
        best
    }

    /// Node conflicts of `node` at partition `p` with the owners of the partitions around it.
    fn node_cost(&self, node: u16, p: usize) -> i64 {
        let (q, w) = (self.q, self.node_window.min(self.q));
        let mut cost = 0;
        for d in 1..w {
            for r in [(p + d) % q, (p + q - d) % q] {
                if self.owners[r] == node {
                    cost += (w - d) as i64;
                }
            }
        }
        cost
    }

    /// Zone conflicts of a partition of `zone` at `p` with the partitions around it.
    fn zone_cost(&self, zone: u16, p: usize) -> i64 {
        let (q, w) = (self.q, self.zone_window.min(self.q));
        let mut cost = 0;
        for d in 1..w {
            for r in [(p + d) % q, (p + q - d) % q] {
                let o = self.owners[r];
                if o != NO_OWNER && self.zone_of(o) == zone {
                    cost += (w - d) as i64;
                }
            }
        }
        cost
    }

    /// Distances back and on from `p` to the nearest other partitions owned in `zone` (the same
    /// partition both ways if there is one), or `None` if there is no other.
    fn zone_gaps(&self, zone: u16, p: usize) -> Option<(u32, u32)> {
        let q = self.q;
        // Without a partition elsewhere in the zone there is nothing to find; this also bounds
        // the scans below by the zone's spacing rather than by Q.
        let here = usize::from(self.owners[p] != NO_OWNER && self.zone_of(self.owners[p]) == zone);
        if self.zone_count[usize::from(zone)] as usize <= here {
            return None;
        }
        let in_zone = |r: usize| {
            let o = self.owners[r];
            o != NO_OWNER && self.zone_of(o) == zone
        };
        let back = (1..q).find(|&d| in_zone((p + q - d) % q))?;
        let on = (1..q).find(|&d| in_zone((p + d) % q))?;
        Some((back as u32, on as u32))
    }

    /// Change in the zone score when a partition of `zone` appears between gaps `back` and
    /// `on` (`None`: the zone had no partition, and gains a gap of Q).
    fn zone_gain(&self, gaps: Option<(u32, u32)>) -> i64 {
        match gaps {
            Some((back, on)) => -2 * i64::from(back) * i64::from(on),
            None => (self.q as i64) * (self.q as i64),
        }
    }

    /// Change in the score if partition `p` passed from its owner to `node`. Reads the
    /// neighbourhood only, so it does not depend on the current owner of `p` itself.
    fn change_at(&self, p: usize, node: u16) -> Score {
        let owner = self.owners[p];
        let to = self.zone_of(node);
        let mut change = Score {
            node: self.node_cost(node, p),
            crowding: self.zone_cost(to, p),
            spacing: self.zone_gain(self.zone_gaps(to, p)),
        };
        if owner == NO_OWNER {
            return change;
        }
        let from = self.zone_of(owner);
        if from == to {
            change.crowding = 0;
            change.spacing = 0;
        } else {
            change.crowding -= self.zone_cost(from, p);
            change.spacing -= self.zone_gain(self.zone_gaps(from, p));
        }
        change.node -= self.node_cost(owner, p);
        change
    }

    /// Fresh ring: deals partitions in ring order to the zone, then the member, due soonest.
    /// Members of a zone due at the same time are taken by fewest replicas so far (a member
    /// holds a replica of each partition between its own and the previous one of its zone), so
    /// that the occasional longer gap of a zone does not fall to the same member every time.
    fn deal(&mut self) {
        let q = self.q;
        let zones = self.zone_target.len();
        let mut zone_dealt = vec![0u32; zones];
        let mut zone_last: Vec<Option<usize>> = vec![None; zones];
        let mut replicas = vec![0u64; self.target.len()];
        let mut by_zone: Vec<Vec<usize>> = vec![Vec::new(); zones];
        for i in 0..self.target.len() {
            by_zone[usize::from(self.zone[i])].push(i);
        }
        let mut zone_order: Vec<usize> = (0..zones).collect();
        for p in 0..q {
            zone_order.retain(|&z| zone_dealt[z] < self.zone_target[z]);
            zone_order.sort_by(|&a, &b| {
                due(
                    zone_dealt[a],
                    self.zone_target[a],
                    zone_dealt[b],
                    self.zone_target[b],
                )
                .then(a.cmp(&b))
            });
            // Within a zone: the member due soonest, then with the fewest replicas so far.
            let member_before = |a: usize, b: usize| {
                due(self.count[a], self.target[a], self.count[b], self.target[b])
                    .then(
                        (replicas[a] * u64::from(self.target[b]))
                            .cmp(&(replicas[b] * u64::from(self.target[a]))),
                    )
                    .then(a.cmp(&b))
                    == Ordering::Less
            };
            let first_in = |z: usize, free: bool| {
                let mut first: Option<usize> = None;
                for &i in &by_zone[z] {
                    if self.deficit(i) == 0 || first.is_some_and(|f| !member_before(i, f)) {
                        continue;
                    }
                    if !free || self.node_cost(i as u16, p) == 0 {
                        first = Some(i);
                    }
                }
                first
            };
            // A zone crowds p if it has a partition within `zone_window` and is not yet overdue.
            let crowds = |z: usize| {
                let due_at = (2 * u64::from(zone_dealt[z]) + 1) * (q as u64);
                let overdue = due_at < 2 * (p as u64 + 1) * u64::from(self.zone_target[z]);
                !overdue && self.zone_cost(z as u16, p) > 0
            };
            // The first due that repeats neither a node nor a zone that may wait; else the first
            // that repeats no node; else the first.
            let pick = zone_order
                .iter()
                .filter(|&&z| !crowds(z))
                .find_map(|&z| first_in(z, true))
                .or_else(|| zone_order.iter().find_map(|&z| first_in(z, true)))
                .or_else(|| zone_order.iter().find_map(|&z| first_in(z, false)));
            // None is unreachable: the targets sum to Q.
            let Some(i) = pick else { break };
            self.assign(p, i as u16);
            let z = usize::from(self.zone[i]);
            zone_dealt[z] += 1;
            let spacing = q / self.zone_target[z].max(1) as usize;
            replicas[i] += zone_last[z].map_or(spacing, |last| p - last) as u64;
            zone_last[z] = Some(p);
        }
    }

    /// Gives every partition without an owner to the member below target that scores best
    /// there (ties: the member furthest behind).
    fn hand_out_orphans(&mut self) {
        // Per orphan, the zone part of the change for each zone (members of a zone share it).
        let mut zone_change: Vec<Option<(i64, i64)>> = vec![None; self.zone_target.len()];
        for p in 0..self.q {
            if self.owners[p] != NO_OWNER {
                continue;
            }
            zone_change.fill(None);
            let mut best: Option<(Score, usize)> = None;
            for i in 0..self.target.len() {
                if self.deficit(i) == 0 {
                    continue;
                }
                let z = self.zone[i];
                let (crowding, spacing) = *zone_change[usize::from(z)].get_or_insert_with(|| {
                    (self.zone_cost(z, p), self.zone_gain(self.zone_gaps(z, p)))
                });
                let score = Score {
                    node: self.node_cost(i as u16, p),
                    crowding,
                    spacing,
                };
                let better = match best {
                    None => true,
                    Some((s, b)) => score < s || (score == s && self.further_behind(i, b)),
                };
                if better {
                    best = Some((score, i));
                }
            }
            match best {
                Some((_, i)) => self.assign(p, i as u16),
                // Unreachable: the targets sum to Q, so the deficits cover every orphan.
                None => break,
            }
        }
    }

    /// Moves partitions from members above target to members below it, one at a time.
    fn rebalance(&mut self) {
        let q = self.q;
        // For the current taker: the distance from each partition to its nearest own one, and
        // the node and crowding parts of the change if it took the partition. Recomputed when
        // the taker changes, patched around each partition taken.
        let mut distance = vec![0u32; q];
        let mut local_change = vec![(0i64, 0i64); q];
        let mut current = None;
        while let Some(taker) = self.neediest() {
            let t = taker as u16;
            let tz = self.zone_of(t);
            if current != Some(t) {
                self.distance_to_own(t, &mut distance);
                for (p, c) in local_change.iter_mut().enumerate() {
                    *c = self.local_change(t, p);
                }
                current = Some(t);
            }
            // (score change, -distance to own, -donor excess, partition)
            let mut best: Option<(Score, i64, i64, usize)> = None;
            for p in 0..q {
                let o = self.owners[p];
                let d = usize::from(o);
                if o == NO_OWNER || o == t || self.count[d] <= self.target[d] {
                    continue;
                }
                let oz = self.zone_of(o);
                let (node, crowding) = local_change[p];
                let mut score = Score {
                    node,
                    crowding,
                    spacing: 0,
                };
                if oz != tz {
                    // The spacing part needs a scan; skip it where the rest already loses.
                    if best.is_some_and(|(b, ..)| (node, crowding) > (b.node, b.crowding)) {
                        continue;
                    }
                    score.spacing = self.zone_gain(self.zone_gaps(tz, p))
                        - self.zone_gain(self.zone_gaps(oz, p));
                }
                let key = (
                    score,
                    -i64::from(distance[p]),
                    -i64::from(self.count[d] - self.target[d]),
                    p,
                );
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
            // None is unreachable: deficits and excesses are equal once orphans are handed out.
            let Some((_, _, _, p)) = best else { break };
            self.assign(p, t);
            for d in 0..self.node_window.max(self.zone_window).min(q) {
                for x in [(p + d) % q, (p + q - d) % q] {
                    local_change[x] = self.local_change(t, x);
                }
            }
            for d in 0..=q / 2 {
                let mut improved = false;
                for x in [(p + d) % q, (p + q - d) % q] {
                    if distance[x] > d as u32 {
                        distance[x] = d as u32;
                        improved = true;
                    }
                }
                if !improved {
                    break;
                }
            }
        }
    }

    /// The node and crowding parts of the change if `taker` took partition `p` from its owner.
    fn local_change(&self, taker: u16, p: usize) -> (i64, i64) {
        let owner = self.owners[p];
        if owner == NO_OWNER || owner == taker {
            return (0, 0);
        }
        let node = self.node_cost(taker, p) - self.node_cost(owner, p);
        let (tz, oz) = (self.zone_of(taker), self.zone_of(owner));
        if tz == oz {
            return (node, 0);
        }
        (node, self.zone_cost(tz, p) - self.zone_cost(oz, p))
    }

    /// Fills `distance[p]` with the ring distance from p to the nearest partition `node` owns
    /// (Q when it owns none).
    fn distance_to_own(&self, node: u16, distance: &mut [u32]) {
        let q = self.q;
        distance.fill(q as u32);
        let mut last = None;
        for i in 0..2 * q {
            if self.owners[i % q] == node {
                last = Some(i);
            }
            if let Some(l) = last {
                let d = &mut distance[i % q];
                *d = (*d).min((i - l) as u32);
            }
        }
        let mut next = None;
        for i in (0..2 * q).rev() {
            if self.owners[i % q] == node {
                next = Some(i);
            }
            if let Some(nx) = next {
                let d = &mut distance[i % q];
                *d = (*d).min((nx - i) as u32);
            }
        }
    }

    /// Swaps owners of partition pairs while that improves the score, keeping the number of
    /// partitions that differ from `previous` at most `max_moves`: node conflicts first, so the
    /// allowance goes where it matters most, then zone crowding.
    fn repair(&mut self, previous: Option<&[u16]>, max_moves: usize) {
        let mut budget = Budget {
            moves: previous.map_or(0, |prev| moved(prev, &self.owners)),
            max_moves,
            work: REPAIR_WORK_PER_PARTITION.saturating_mul(self.q),
        };
        for flaw in [Flaw::NodeConflict, Flaw::ZoneCrowding] {
            for _ in 0..REPAIR_PASSES {
                if !self.repair_pass(previous, flaw, &mut budget) {
                    break;
                }
            }
        }
    }

    /// How badly a partition of `zone` at `p` would be crowded (lower is better): its zone
    /// conflicts, then how near the nearest other partition of the zone is.
    fn zone_fit(&self, zone: u16, p: usize) -> (i64, u32) {
        let nearest = self
            .zone_gaps(zone, p)
            .map_or(u32::MAX, |(back, on)| back.min(on));
        (self.zone_cost(zone, p), u32::MAX - nearest)
    }

    /// True if partition `p` shows `flaw`.
    fn has_flaw(&self, p: usize, flaw: Flaw) -> bool {
        let owner = self.owners[p];
        match flaw {
            Flaw::NodeConflict => self.node_cost(owner, p) > 0,
            Flaw::ZoneCrowding => {
                let z = self.zone_of(owner);
                let spacing = (self.q as u32 / self.zone_target[usize::from(z)].max(1)).max(1);
                self.zone_gaps(z, p)
                    .is_some_and(|(back, on)| back.min(on) < spacing)
            }
        }
    }

    /// One pass over the ring, trying to mend each partition showing `flaw` by a swap. True if
    /// any swap was made.
    fn repair_pass(&mut self, previous: Option<&[u16]>, flaw: Flaw, budget: &mut Budget) -> bool {
        let q = self.q;
        let changed = |p: usize, owner: u16| previous.is_some_and(|prev| prev[p] != owner);
        let mut improved = false;
        // The node cost of each member, and the crowding and nearest neighbour of each zone, at
        // the partition being mended, memoised.
        let mut cost_here: Vec<Option<i64>> = vec![None; self.target.len()];
        let mut zone_here: Vec<Option<(i64, u32)>> = vec![None; self.zone_target.len()];
        // Partitions already moved: once the allowance is nearly spent, a swap pays for itself
        // only with one of these.
        let mut moved_here: Vec<usize> = (0..q).filter(|&r| changed(r, self.owners[r])).collect();
        let mut candidates: Vec<usize> = Vec::new();
        for p in 0..q {
            if !self.has_flaw(p, flaw) {
                continue;
            }
            let a = self.owners[p];
            let cost_a = self.node_cost(a, p);
            cost_here.fill(None);
            zone_here.fill(None);
            let fit_a = self.zone_fit(self.zone_of(a), p);
            candidates.clear();
            let room = budget.max_moves.saturating_sub(budget.moves);
            if room < 2 && !changed(p, a) {
                candidates.extend(moved_here.iter().copied().filter(|&r| r != p));
            } else {
                candidates.extend((1..q.min(REPAIR_SCAN + 1)).map(|offset| (p + offset) % q));
            }
            for &r in &candidates {
                let b = self.owners[r];
                if b == a || (flaw == Flaw::ZoneCrowding && self.zone_of(b) == self.zone_of(a)) {
                    continue;
                }
                let extra = usize::from(changed(p, b)) + usize::from(changed(r, a));
                let saved = usize::from(changed(p, a)) + usize::from(changed(r, b));
                if budget.moves + extra > budget.max_moves.saturating_add(saved) {
                    continue;
                }
                // Only a member no worse at p can make the swap pay off at p; swaps that pay off
                // at r are found when r's turn comes.
                let cost_b = *cost_here[usize::from(b)].get_or_insert_with(|| self.node_cost(b, p));
                if cost_b > cost_a || (flaw == Flaw::NodeConflict && cost_b == cost_a) {
                    continue;
                }
                // Mending zone crowding at p needs a zone that is less crowded there.
                if flaw == Flaw::ZoneCrowding {
                    let zb = usize::from(self.zone_of(b));
                    let fit_b = match zone_here[zb] {
                        Some(fit) => fit,
                        None => *zone_here[zb].insert(self.zone_fit(zb as u16, p)),
                    };
                    if fit_b >= fit_a {
                        continue;
                    }
                }
                if budget.work == 0 {
                    return false;
                }
                budget.work -= 1;
                let first = self.change_at(p, b);
                self.assign(p, b);
                let second = self.change_at(r, a);
                self.assign(r, a);
                if first + second < Score::default() {
                    budget.moves = budget.moves + extra - saved;
                    moved_here.extend([p, r]);
                    moved_here.sort_unstable();
                    moved_here.dedup();
                    improved = true;
                    break;
                }
                self.assign(p, a);
                self.assign(r, b);
            }
        }
        improved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::{Capacity, NodeId, Zone};

    fn member(i: usize, zone: &str, capacity: u32) -> Member {
        Member::new(
            NodeId::new(&format!("n{i:02}")).unwrap(),
            "127.0.0.1:7000".parse().unwrap(),
        )
        .in_zone(Zone::new(zone).unwrap())
        .with_capacity(Capacity::new(capacity).unwrap())
    }

    #[test]
    fn targets_round_up_for_members_that_already_hold_more() {
        let members: Vec<Member> = (0..3).map(|i| member(i, "z", 1)).collect();
        // 10 partitions over 3 members: 3, 3, 3 plus one rounded up.
        assert_eq!(targets(&members, 10, &[0, 0, 0]), vec![4, 3, 3]);
        assert_eq!(targets(&members, 10, &[3, 3, 4]), vec![3, 3, 4]);
    }

    #[test]
    fn targets_follow_capacity() {
        let members = vec![member(0, "z", 1), member(1, "z", 3)];
        assert_eq!(targets(&members, 64, &[0, 0]), vec![16, 48]);
    }

    #[test]
    fn a_fresh_ring_of_equal_nodes_is_dealt_round_robin() {
        let members: Vec<Member> = (0..4).map(|i| member(i, "z", 1)).collect();
        let owners = claim(&members, 8, 3, None);
        assert_eq!(owners, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn a_fresh_ring_alternates_zones() {
        let members = vec![
            member(0, "a", 1),
            member(1, "a", 1),
            member(2, "b", 1),
            member(3, "b", 1),
            member(4, "c", 1),
            member(5, "c", 1),
        ];
        let owners = claim(&members, 12, 3, None);
        let zones: Vec<u16> = owners.iter().map(|&o| o / 2).collect();
        assert_eq!(zones, vec![0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn claim_of_an_unchanged_membership_moves_nothing() {
        let members: Vec<Member> = (0..5).map(|i| member(i, "z", 1)).collect();
        let owners = claim(&members, 64, 3, None);
        assert_eq!(claim(&members, 64, 3, Some(&owners)), owners);
    }
}
