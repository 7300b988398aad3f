//! Scuttlebutt gossip of the member records and heartbeats (chitchat's exchange:
//! `Syn{digest}` / `SynAck{digest, delta}` / `Ack{delta}`), as a sans-IO state machine.
//!
//! Every [`GossipConfig::interval`] a node bumps its own heartbeat and sends a `Syn` with its
//! digest — for every member it knows, the (generation, version) of its record and its latest
//! heartbeat — to [`GossipConfig::fanout`] peers drawn at random (now and then one judged down, so that a healed
//! partition is noticed). The peer answers with its own digest and what the sender lacks; the
//! sender answers with what the peer lacks. So each exchange pulls and pushes only what is newer,
//! in one round trip and a half. A heartbeat of a member newer than any seen before counts as an
//! arrival for that member's failure detector, whoever relayed it.
//!
//! Deltas carry at most [`GossipConfig::max_members_per_message`] records and heartbeats;
//! whatever did not fit goes in a later round. Not here: addresses to reach a peer by (the
//! driver maps node ids), the ring document (a node that sees a newer epoch fetches it itself),
//! and deciding who may join (the server checks certificates).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_protocol::{Delta, DigestEntry, GossipMessage, MemberRecord};
use shoal_types::NodeId;

use crate::{FailureDetector, Membership, PhiConfig, Verdict};

/// Gossip settings. [`GossipConfig::default`] is what a node runs with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GossipConfig {
    /// How often a node starts exchanges. Default 1 s.
    pub interval: Duration,
    /// With how many peers each round (distinct, drawn at random). Default 3, as Serf's.
    pub fanout: usize,
    /// Most member records, and most heartbeats, one delta carries. Default 256.
    pub max_members_per_message: usize,
    /// The chance that a round goes to a peer judged down rather than a live one (when there
    /// are both). Default 0.1.
    pub down_peer_probability: f64,
    /// The failure detector's settings.
    pub phi: PhiConfig,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval: Duration::from_secs(1),
            fanout: 3,
            max_members_per_message: 256,
            down_peer_probability: 0.1,
            phi: PhiConfig::default(),
        }
    }
}

/// A message to send: to `to`, the driver finds its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The peer.
    pub to: NodeId,
    /// The message.
    pub message: GossipMessage,
}

/// One node's gossip: its membership document, the heartbeats it knows, its failure detector.
#[derive(Debug)]
pub struct Gossip {
    me: NodeId,
    /// This node's own record (also in `doc`).
    record: MemberRecord,
    config: GossipConfig,
    doc: Membership,
    /// Latest (generation, heartbeat) per member.
    heartbeats: BTreeMap<NodeId, (u64, u64)>,
    detector: FailureDetector,
    rng: StdRng,
    next_round: Instant,
    outgoing: Vec<Outgoing>,
    /// Whether the last merge saw a record conflicting with one known (two processes, one id).
    conflicts: Vec<NodeId>,
}

impl Gossip {
    /// A node whose own record is `me`, knowing `known` records (seeds and itself included or
    /// not), starting at `now`; `seed` drives the choice of peers.
    pub fn new(
        now: Instant,
        me: MemberRecord,
        known: &[MemberRecord],
        config: GossipConfig,
        seed: u64,
    ) -> Self {
        let mut doc = Membership::new();
        let mut heartbeats = BTreeMap::new();
        for r in known.iter().chain(std::iter::once(&me)) {
            doc.merge_record(r.clone());
            heartbeats.entry(r.id.clone()).or_insert((r.generation, 0));
        }
        Gossip {
            me: me.id.clone(),
            record: me.clone(),
            config,
            doc,
            heartbeats,
            detector: FailureDetector::new(config.phi),
            rng: StdRng::seed_from_u64(seed),
            next_round: now,
            outgoing: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    /// The membership document as this node knows it.
    pub fn membership(&self) -> &Membership {
        &self.doc
    }

    /// The failure detector's view.
    pub fn detector(&self) -> &FailureDetector {
        &self.detector
    }

    /// Member ids whose records conflicted with a known one since the last call.
    pub fn take_conflicts(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.conflicts)
    }

    /// When [`Gossip::tick`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_round
    }

    /// The next message to send, if any.
    pub fn poll_output(&mut self) -> Option<Outgoing> {
        if self.outgoing.is_empty() {
            None
        } else {
            Some(self.outgoing.remove(0))
        }
    }

    /// Time passed to `now`: when a round is due, bumps this node's heartbeat, starts an
    /// exchange with a peer, and judges every peer. Returns the verdicts that changed.
    pub fn tick(&mut self, now: Instant) -> Vec<(NodeId, Verdict)> {
        if now < self.next_round {
            return Vec::new();
        }
        self.next_round = now + self.config.interval;
        if let Some(hb) = self.heartbeats.get_mut(&self.me) {
            hb.1 += 1;
        }
        let mut picked: Vec<NodeId> = Vec::new();
        for _ in 0..self.config.fanout {
            match self.pick_peer(&picked) {
                Some(to) => picked.push(to),
                None => break,
            }
        }
        for to in picked {
            let message = GossipMessage::Syn {
                from: self.me.clone(),
                digest: self.digest(),
            };
            self.outgoing.push(Outgoing { to, message });
        }
        self.detector.check(now)
    }

    /// A message arrived at `now`; the answer it calls for, if any, is queued for
    /// [`Gossip::poll_output`].
    pub fn handle(&mut self, now: Instant, message: GossipMessage) {
        let to = message.from().clone();
        if let Some(message) = self.answer(now, message) {
            self.outgoing.push(Outgoing { to, message });
        }
    }

    /// A message arrived at `now`; returns the answer it calls for (to its sender): a
    /// `SynAck` to a `Syn`, an `Ack` to a `SynAck`, nothing to an `Ack`. For a driver whose
    /// transport pairs requests with responses.
    pub fn answer(&mut self, now: Instant, message: GossipMessage) -> Option<GossipMessage> {
        match message {
            GossipMessage::Syn { digest, .. } => Some(GossipMessage::SynAck {
                from: self.me.clone(),
                digest: self.digest(),
                delta: self.delta_for(&digest),
            }),
            GossipMessage::SynAck { digest, delta, .. } => {
                self.apply(now, delta);
                Some(GossipMessage::Ack {
                    from: self.me.clone(),
                    delta: self.delta_for(&digest),
                })
            }
            GossipMessage::Ack { delta, .. } => {
                self.apply(now, delta);
                None
            }
        }
    }

    /// Evidence from the driver: a connection to `peer` could not be made at `now` (see
    /// [`FailureDetector::unreachable`]). Returns whether this made the peer down.
    pub fn unreachable(&mut self, peer: &NodeId, now: Instant) -> bool {
        peer != &self.me && self.detector.unreachable(peer, now)
    }

    /// `peer` answered or sent a request directly: it is there now.
    pub fn reached(&mut self, peer: &NodeId) {
        self.detector.reached(peer);
    }

    /// Whether `peer` is judged down (never this node itself).
    pub fn is_down(&self, peer: &NodeId) -> bool {
        self.detector.is_down(peer)
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// This node's own record.
    pub fn record(&self) -> &MemberRecord {
        &self.record
    }

    /// The latest heartbeat of `id` this node knows: (generation, count).
    pub fn heartbeat(&self, id: &NodeId) -> Option<(u64, u64)> {
        self.heartbeats.get(id).copied()
    }

    fn digest(&self) -> Vec<DigestEntry> {
        self.doc
            .members()
            .map(|r| DigestEntry {
                id: r.id.clone(),
                generation: r.generation,
                version: r.version,
                heartbeat: self
                    .heartbeats
                    .get(&r.id)
                    .filter(|(g, _)| *g == r.generation)
                    .map_or(0, |(_, hb)| *hb),
            })
            .collect()
    }

    /// What a peer with `digest` lacks, up to the caps.
    fn delta_for(&self, digest: &[DigestEntry]) -> Delta {
        let theirs: BTreeMap<&NodeId, &DigestEntry> = digest.iter().map(|d| (&d.id, d)).collect();
        let cap = self.config.max_members_per_message;
        let mut delta = Delta::default();
        for r in self.doc.members() {
            let known = theirs.get(&r.id);
            let newer_record =
                known.is_none_or(|d| (r.generation, r.version) > (d.generation, d.version));
            if newer_record && delta.records.len() < cap {
                delta.records.push(r.clone());
            }
            if let Some(&(generation, hb)) = self.heartbeats.get(&r.id) {
                let newer_heartbeat =
                    known.is_none_or(|d| (generation, hb) > (d.generation, d.heartbeat));
                if newer_heartbeat && hb > 0 && delta.heartbeats.len() < cap {
                    delta.heartbeats.push((r.id.clone(), generation, hb));
                }
            }
        }
        delta
    }

    fn apply(&mut self, now: Instant, delta: Delta) {
        let cap = self.config.max_members_per_message;
        for record in delta.records.into_iter().take(cap) {
            if record.id == self.me {
                // Only this node writes its record; a different one under its id is someone
                // else claiming it.
                if self
                    .doc
                    .get(&self.me)
                    .is_some_and(|mine| mine.conflicts_with(&record))
                {
                    self.conflicts.push(record.id.clone());
                }
                continue;
            }
            let id = record.id.clone();
            if self.doc.merge_record(record).conflict {
                self.conflicts.push(id);
            }
        }
        for (id, generation, hb) in delta.heartbeats.into_iter().take(cap) {
            if id == self.me {
                continue;
            }
            let known = self.heartbeats.entry(id.clone()).or_insert((generation, 0));
            if (generation, hb) > *known {
                *known = (generation, hb);
                self.detector.heartbeat(&id, now);
            }
        }
    }

    /// A peer for this round not in `picked`: a live one, or now and then one judged down.
    fn pick_peer(&mut self, picked: &[NodeId]) -> Option<NodeId> {
        let (down, live): (Vec<&NodeId>, Vec<&NodeId>) = self
            .doc
            .members()
            .map(|r| &r.id)
            .filter(|id| **id != self.me && !picked.contains(id))
            .partition(|id| self.detector.is_down(id));
        let pool = if live.is_empty()
            || (!down.is_empty() && self.rng.random_bool(self.config.down_peer_probability))
        {
            down
        } else {
            live
        };
        if pool.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..pool.len());
        Some(pool[i].clone())
    }
}
