//! Membership: who is in the cluster and which peers to send to, from gossip and the
//! phi-accrual failure detector of `shoal-membership` (it replaced the ping back-off that stood
//! in for it).
//!
//! Every `gossip.interval` ([`Timer::Gossip`]) the node bumps its heartbeat and opens
//! scuttlebutt exchanges with a few peers: a `Syn` is a request whose answer is the `SynAck`,
//! and the `Ack` that closes the exchange is a request of its own. Every newer heartbeat learned,
//! directly or relayed, is an arrival for that member's detector; a member is *reachable* unless
//! the detector judges it down. The transport's fast dead-port check is evidence the detector
//! takes too: a message that could not be delivered ([`SendError::Unreachable`]) convicts its
//! peer at once, until it is heard from again (for a peer never heard from, only after the
//! detector's `unknown_grace`, since the nodes of a cluster start together). A peer that
//! answers — with anything, a refusal or a reset saying a frame was too large included — or
//! sends a request is there.
//!
//! The members are the ring's, as seeds (a record of generation 0 with the ring's address), and
//! each member's own record replaces its seed once gossip brings it. This node's record carries
//! the generation of this start (`NodeConfig::generation`), so its heartbeats count again after a
//! restart. Liveness is local and never removes a member.
//!
//! Not here: joining by address, the ring document in gossip, and ring changes (the membership
//! and ring-change issues), and the network (the driver sends what this part hands out).

use std::time::Instant;

use rand::RngExt;
use shoal_causality::Actor;
use shoal_membership::{Gossip, GossipMessage, MemberRecord, MemberStatus, Verdict};
use shoal_protocol::{PeerMessage, PeerResponse, PeerStatus, Response};
use shoal_types::{Incarnation, NodeId};

use crate::SendError;
use crate::effects::{InboundId, Priority, Purpose, Shared};
use crate::timers::Timer;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Membership {
    gossip: Gossip,
}

impl Membership {
    /// Membership for a node started at `now` as `actor`: the first gossip round is at once.
    pub(crate) fn new(now: Instant, shared: &mut Shared, actor: &Actor) -> Membership {
        let me = shared.id().clone();
        let mine = shared.ring.members().iter().find(|m| m.id == me);
        let record = MemberRecord {
            generation: shared.config.generation,
            version: 0,
            id: me.clone(),
            incarnation: actor.incarnation,
            addr: mine
                .map(|m| m.addr)
                .or(shared.config.address)
                .unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            zone: mine.map(|m| m.zone.clone()).unwrap_or_default(),
            capacity: mine.map(|m| m.capacity).unwrap_or_default(),
            status: if mine.is_some() {
                MemberStatus::Valid
            } else {
                MemberStatus::Joining
            },
        };
        let seeds: Vec<MemberRecord> = shared
            .ring
            .members()
            .iter()
            .filter(|m| m.id != me)
            .map(|m| MemberRecord {
                generation: 0,
                version: 0,
                id: m.id.clone(),
                incarnation: Incarnation::new(0),
                addr: m.addr,
                zone: m.zone.clone(),
                capacity: m.capacity,
                status: MemberStatus::Valid,
            })
            .collect();
        let seed = shared.rng.random();
        let gossip = Gossip::new(now, record, &seeds, shared.config.gossip, seed);
        shared.timers.schedule(gossip.poll_timeout(), Timer::Gossip);
        Membership { gossip }
    }

    /// Whether requests should be sent to `node` now (this node always is).
    pub(crate) fn is_reachable(&self, node: &NodeId) -> bool {
        !self.gossip.is_down(node)
    }

    /// A message to `to` ended with `result` (whichever part sent it).
    pub(crate) fn observed(
        &mut self,
        shared: &mut Shared,
        to: &NodeId,
        result: &Result<PeerResponse, SendError>,
        now: Instant,
    ) {
        match result {
            // It answered, if only to say a frame was too large: it is there.
            Ok(_)
            | Err(SendError::Refused(_) | SendError::FrameRefused | SendError::AnswerTooLarge) => {
                self.gossip.reached(to)
            }
            Err(SendError::Unreachable) => {
                if self.gossip.unreachable(to, now) {
                    shared.metrics.convictions += 1;
                }
            }
            // Not sent (over our frame limit), or no answer: says nothing about the peer.
            Err(SendError::Lost | SendError::TooLarge { .. }) => {}
        }
    }

    /// `node` sent us a request: it is there.
    pub(crate) fn heard_from(&mut self, node: &NodeId) {
        self.gossip.reached(node);
    }

    /// [`Timer::Gossip`] fired: a round of gossip, and the detector's verdicts.
    pub(crate) fn gossip_timer(&mut self, shared: &mut Shared, now: Instant) {
        for (_, verdict) in self.gossip.tick(now) {
            match verdict {
                Verdict::Down => shared.metrics.convictions += 1,
                Verdict::Alive => shared.metrics.recoveries += 1,
            }
        }
        shared.metrics.gossip_rounds += 1;
        while let Some(out) = self.gossip.poll_output() {
            send(shared, out.to, out.message);
        }
        shared
            .timers
            .schedule(self.gossip.poll_timeout(), Timer::Gossip);
    }

    /// A peer's gossip message: answered with the next message of its exchange.
    pub(crate) fn serve(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: InboundId,
        message: GossipMessage,
    ) {
        shared.metrics.gossip_bytes_received += encoded_len(&message);
        let answer = self.gossip.answer(now, message);
        if let Some(answer) = &answer {
            shared.metrics.gossip_bytes_sent += encoded_len(answer);
        }
        shared.reply(id, Response::Peer(PeerResponse::Gossip(answer)));
    }

    /// The answer to this part's message to `to` came: a `SynAck` is closed with an `Ack`.
    pub(crate) fn response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        to: NodeId,
        result: Result<PeerResponse, SendError>,
    ) {
        if let Ok(PeerResponse::Gossip(Some(message))) = result {
            shared.metrics.gossip_bytes_received += encoded_len(&message);
            if let Some(ack) = self.gossip.answer(now, message) {
                send(shared, to, ack);
            }
        }
    }

    /// Answers a peer's ping.
    pub(crate) fn serve_ping(&self, shared: &mut Shared, id: InboundId) {
        shared.reply(id, Response::Peer(PeerResponse::Pong));
    }

    /// Where `node` is reached, by its record (a member known only through gossip included).
    pub(crate) fn address_of(&self, node: &NodeId) -> Option<std::net::SocketAddr> {
        self.gossip.membership().get(node).map(|r| r.addr)
    }

    /// This node's own record.
    pub(crate) fn record(&self) -> MemberRecord {
        self.gossip.record().clone()
    }

    /// The hash of the membership document as this node holds it.
    pub(crate) fn hash(&self) -> u64 {
        self.gossip.membership().hash()
    }

    /// Every other member and how this node judges it, for the admin status.
    pub(crate) fn status(&self, now: Instant) -> Vec<PeerStatus> {
        let detector = self.gossip.detector();
        self.gossip
            .membership()
            .members()
            .filter(|r| r.id != *self.gossip.me())
            .map(|r| PeerStatus {
                node: r.id.clone(),
                reachable: self.is_reachable(&r.id),
                record: r.clone(),
                phi: detector.phi(&r.id, now),
                last_heard: detector
                    .last_heartbeat(&r.id)
                    .map(|at| now.saturating_duration_since(at)),
            })
            .collect()
    }
}

/// Sends one gossip message (no deadline: an exchange that gets no answer is simply lost).
fn send(shared: &mut Shared, to: NodeId, message: GossipMessage) {
    shared.metrics.gossip_bytes_sent += encoded_len(&message);
    let message = PeerMessage::Gossip(message);
    shared.send(Purpose::Gossip, to, message, Priority::Normal, None);
}

/// A gossip message's size as the codec encodes it (its envelope and frame header aside): what
/// the gossip traffic metrics count. A message that cannot be encoded is not sent either.
fn encoded_len(message: &GossipMessage) -> u64 {
    shoal_protocol::encode(message).map_or(0, |b| b.len() as u64)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)] // tests: one real instant to start from
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use shoal_protocol::PeerRequest;
    use shoal_ring::{Member, Ring};
    use shoal_types::{PartitionCount, ReplicationFactor};

    use super::*;
    use crate::{NodeConfig, Output};

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn shared(me: &str) -> Shared {
        let members = (1..=3)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 7000 + i).parse().unwrap();
                Member::new(node(&format!("n{i}")), addr)
            })
            .collect();
        let ring = Ring::new(
            members,
            PartitionCount::new(16).unwrap(),
            ReplicationFactor::new(3).unwrap(),
        )
        .unwrap();
        let config = NodeConfig::new(node(me), Incarnation::new(1));
        Shared::new(config, ring, StdRng::seed_from_u64(1))
    }

    fn membership(shared: &mut Shared, now: Instant) -> Membership {
        let actor = Actor::new(shared.id().clone(), Incarnation::new(1));
        Membership::new(now, shared, &actor)
    }

    /// The gossip messages handed out, with their destinations and ids.
    fn sent(shared: &mut Shared) -> Vec<(crate::OutboundId, NodeId, GossipMessage)> {
        std::iter::from_fn(|| shared.poll_output())
            .filter_map(|o| match o {
                Output::Send {
                    id,
                    to,
                    request:
                        PeerRequest {
                            message: PeerMessage::Gossip(g),
                            ..
                        },
                    ..
                } => Some((id, to, g)),
                _ => None,
            })
            .collect()
    }

    /// Carries the exchanges `a` opened with `b` (its `Syn`s to `b` in `syns`) to their end, as
    /// the node routes them.
    fn exchange(
        (ma, sa): (&mut Membership, &mut Shared),
        (mb, sb): (&mut Membership, &mut Shared),
        syns: Vec<(crate::OutboundId, NodeId, GossipMessage)>,
        now: Instant,
    ) {
        let b_id = sb.id().clone();
        for (out, to, syn) in syns.into_iter().filter(|(_, to, _)| *to == b_id) {
            mb.serve(sb, now, crate::InboundId(out.0), syn);
            let reply = std::iter::from_fn(|| sb.poll_output())
                .find_map(|o| match o {
                    Output::Reply {
                        response: Response::Peer(r),
                        ..
                    } => Some(r),
                    _ => None,
                })
                .expect("a Syn is answered");
            sa.answered(out).expect("sent");
            ma.response(sa, now, to, Ok(reply));
            for (_, _, ack) in sent(sa) {
                mb.serve(sb, now, crate::InboundId(0), ack);
                sb.poll_output();
            }
        }
    }

    #[test]
    fn a_gossip_round_opens_exchanges_with_the_other_members_and_is_set_again() {
        let mut s = shared("n1");
        let now = Instant::now();
        let mut m = membership(&mut s, now);
        assert_eq!(s.timers.expire(now), Some(Timer::Gossip));
        m.gossip_timer(&mut s, now);
        let mut to: Vec<NodeId> = sent(&mut s).into_iter().map(|(_, to, _)| to).collect();
        to.sort();
        assert_eq!(to, [node("n2"), node("n3")], "fanout 3, two others");
        assert_eq!(s.timers.next(), Some(now + s.config.gossip.interval));
        assert_eq!(s.metrics.gossip_rounds, 1);
    }

    #[test]
    fn an_exchange_brings_the_peers_record_in_place_of_its_seed() {
        let now = Instant::now();
        let (mut s1, mut s2) = (shared("n1"), shared("n2"));
        let (mut m1, mut m2) = (membership(&mut s1, now), membership(&mut s2, now));
        assert_ne!(m1.hash(), m2.hash(), "each knows only the other's seed");
        s1.timers.expire(now);
        m1.gossip_timer(&mut s1, now);
        let syns = sent(&mut s1);
        exchange((&mut m1, &mut s1), (&mut m2, &mut s2), syns, now);
        let n2 = m1
            .status(now)
            .into_iter()
            .find(|p| p.node == node("n2"))
            .unwrap();
        assert_eq!(n2.record.generation, 1, "n2's own record replaced its seed");
        let n1 = m2
            .status(now)
            .into_iter()
            .find(|p| p.node == node("n1"))
            .unwrap();
        assert_eq!(n1.record.generation, 1);
        assert_eq!(m1.hash(), m2.hash(), "n1 and n2 hold one document now");
        // n2 answered only n1; n1 also sent a Syn to n3, which nobody delivered.
        assert!(s2.metrics.gossip_bytes_sent > 0);
        assert_eq!(
            s2.metrics.gossip_bytes_sent,
            s1.metrics.gossip_bytes_received
        );
        assert!(s1.metrics.gossip_bytes_sent > s2.metrics.gossip_bytes_received);
        assert!(s2.metrics.gossip_bytes_received > 0);
        assert_eq!(
            n1.last_heard,
            Some(Duration::ZERO),
            "n1's round bumped its heartbeat, and the exchange carried it"
        );
    }

    #[test]
    fn a_peer_never_heard_from_is_tried_while_the_cluster_starts() {
        let mut s = shared("n1");
        let now = Instant::now();
        let mut m = membership(&mut s, now);
        let n2 = node("n2");
        let unreachable = Err(SendError::Unreachable);
        // Never heard from: tried while the cluster starts, convicted after the grace.
        m.observed(&mut s, &n2, &unreachable, now);
        assert!(m.is_reachable(&n2), "unknown, so tried");
        let grace = s.config.gossip.phi.unknown_grace;
        m.observed(&mut s, &n2, &unreachable, now + grace);
        assert!(!m.is_reachable(&n2));
        assert_eq!(s.metrics.convictions, 1);
        // It sends a request: there again, and the next refusal convicts at once.
        m.heard_from(&n2);
        assert!(m.is_reachable(&n2));
        m.observed(&mut s, &n2, &unreachable, now + grace);
        assert!(!m.is_reachable(&n2));
        m.observed(&mut s, &n2, &Ok(PeerResponse::Pong), now + grace);
        assert!(m.is_reachable(&n2), "an answer clears it");
    }

    #[test]
    fn a_size_refusal_is_not_taken_for_an_absent_peer() {
        let mut s = shared("n1");
        let now = Instant::now();
        let mut m = membership(&mut s, now);
        let n2 = node("n2");
        m.heard_from(&n2);
        for result in [
            Err(SendError::TooLarge {
                len: 20 << 20,
                max: 16 << 20,
            }),
            Err(SendError::FrameRefused),
            Err(SendError::AnswerTooLarge),
        ] {
            m.observed(&mut s, &n2, &result, now);
            assert!(m.is_reachable(&n2), "{result:?}");
        }
        // And a size refusal from a peer judged down clears it: it answered.
        m.observed(&mut s, &n2, &Err(SendError::Unreachable), now);
        assert!(!m.is_reachable(&n2));
        m.observed(&mut s, &n2, &Err(SendError::AnswerTooLarge), now);
        assert!(m.is_reachable(&n2));
    }

    #[test]
    fn a_lost_message_says_nothing_about_reachability() {
        let mut s = shared("n1");
        let now = Instant::now();
        let mut m = membership(&mut s, now);
        let later = now + Duration::from_secs(5);
        m.observed(&mut s, &node("n2"), &Err(SendError::Lost), later);
        assert!(m.is_reachable(&node("n2")));
        assert_eq!(s.metrics.convictions, 0);
    }

    #[test]
    fn a_member_whose_heartbeats_stop_is_convicted_by_its_phi_and_recovers_when_they_resume() {
        let now = Instant::now();
        let (mut s1, mut s2) = (shared("n1"), shared("n2"));
        let (mut m1, mut m2) = (membership(&mut s1, now), membership(&mut s2, now));
        let second = Duration::from_secs(1);
        // Twenty rounds in which both gossip with each other: n1 hears n2's heartbeats.
        for round in 0..20 {
            let t = now + second * round;
            s1.timers.expire(t);
            m1.gossip_timer(&mut s1, t);
            s2.timers.expire(t);
            m2.gossip_timer(&mut s2, t);
            let syns = sent(&mut s2);
            exchange((&mut m2, &mut s2), (&mut m1, &mut s1), syns, t);
            sent(&mut s1);
        }
        assert!(m1.is_reachable(&node("n2")));
        // n2 falls silent: n1's rounds go on, and within a few seconds phi convicts it.
        let mut t = now + second * 20;
        while m1.is_reachable(&node("n2")) {
            t += second;
            assert!(t < now + second * 40, "never convicted");
            s1.timers.expire(t);
            m1.gossip_timer(&mut s1, t);
            sent(&mut s1);
        }
        assert_eq!(s1.metrics.convictions, 1);
        let phi = m1
            .status(t)
            .into_iter()
            .find(|p| p.node == node("n2"))
            .unwrap()
            .phi;
        assert!(phi.unwrap() >= s1.config.gossip.phi.threshold);
        // n2 gossips again: n1 hears a newer heartbeat, and its next check clears it.
        t += second;
        s2.timers.expire(t);
        m2.gossip_timer(&mut s2, t);
        let syns = sent(&mut s2);
        exchange((&mut m2, &mut s2), (&mut m1, &mut s1), syns, t);
        s1.timers.expire(t + second);
        m1.gossip_timer(&mut s1, t + second);
        assert!(m1.is_reachable(&node("n2")));
        assert_eq!(s1.metrics.recoveries, 1);
    }
}
