//! Liveness: which peers to send to. A peer whose connection failed is considered unreachable
//! for a back-off period that doubles while it stays unreachable (250 ms up to 5 s); after the
//! period the next request probes it again. Every `ping_interval` the node pings every other
//! member (one ping in flight per peer, so a dead peer is not piled up on), so reachability stays
//! fresh when no requests flow and a peer that came back is noticed.
//!
//! A peer this node has never heard from is *unknown*, not down: nodes of a cluster start
//! together, and the first pings of one may reach a peer before it listens. An unknown peer's
//! failures are not backed off for [`UNKNOWN_GRACE`] after its first one, so requests keep
//! trying it (a failed connection to a live host fails fast) instead of answering `Unavailable`
//! for the first back-off; a peer still never reached after that is treated as any other.
//!
//! A peer that answers — with anything, a refusal or a reset saying a frame was too large
//! included — is there: only a failed connection marks it unreachable. A message this node did
//! not send because it was over the frame limit says nothing about the peer.
//!
//! The node feeds this part the outcome of every message it sends, whichever part sent it, and
//! every peer request it receives. It stands in for the phi-accrual detector of the membership
//! crate, which will replace it behind the same questions (`is_reachable`, `status`).
//!
//! Not here: the transport's own dead-port check (a refused port fails a connection at once),
//! which reaches this part as `SendError::Unreachable`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shoal_protocol::{PeerMessage, PeerResponse, PeerStatus, Response};
use shoal_types::NodeId;

use crate::SendError;
use crate::effects::{InboundId, Priority, Purpose, Shared};
use crate::timers::Timer;

/// The first back-off of a peer found unreachable.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a peer never heard from is tried despite failing, from its first failure: long
/// enough for the nodes of a cluster started together to come up (one ping interval).
const UNKNOWN_GRACE: Duration = Duration::from_secs(1);

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    down: BTreeMap<NodeId, Down>,
    /// Peers this node has heard from at least once in this run.
    heard: BTreeSet<NodeId>,
    /// Peers never heard from, and when their first failure was.
    unknown_failing: BTreeMap<NodeId, Instant>,
    /// Peers with a ping in flight.
    pinging: BTreeSet<NodeId>,
}

#[derive(Debug)]
struct Down {
    until: Instant,
    backoff: Duration,
}

impl Liveness {
    /// Liveness for a node started at `now`: the first pings go out at once.
    pub(crate) fn new(now: Instant, shared: &mut Shared) -> Liveness {
        shared.timers.schedule(now, Timer::Ping);
        Liveness::default()
    }

    /// Whether requests should be sent to `node` now (this node always is).
    pub(crate) fn is_reachable(&self, shared: &Shared, node: &NodeId, now: Instant) -> bool {
        node == shared.id() || self.down.get(node).is_none_or(|d| now >= d.until)
    }

    /// A message to `to` ended with `result` (whichever part sent it).
    pub(crate) fn observed(
        &mut self,
        to: &NodeId,
        result: &Result<PeerResponse, SendError>,
        now: Instant,
    ) {
        match result {
            // It answered, if only to say a frame was too large: it is there.
            Ok(_)
            | Err(SendError::Refused(_) | SendError::FrameRefused | SendError::AnswerTooLarge) => {
                self.heard_from(to)
            }
            Err(SendError::Unreachable) => {
                if !self.heard.contains(to) {
                    let first = *self.unknown_failing.entry(to.clone()).or_insert(now);
                    if now.saturating_duration_since(first) < UNKNOWN_GRACE {
                        return;
                    }
                }
                self.mark_unreachable(to, now)
            }
            // Not sent (over our frame limit), or no answer: says nothing about the peer.
            Err(SendError::Lost | SendError::TooLarge { .. }) => {}
        }
    }

    /// `node` sent us something: it is there.
    pub(crate) fn heard_from(&mut self, node: &NodeId) {
        self.down.remove(node);
        self.unknown_failing.remove(node);
        if !self.heard.contains(node) {
            self.heard.insert(node.clone());
        }
    }

    /// The answer to this part's ping of `to` came (its outcome was already `observed`).
    pub(crate) fn response(&mut self, to: &NodeId) {
        self.pinging.remove(to);
    }

    /// Answers a peer's ping.
    pub(crate) fn serve_ping(&self, shared: &mut Shared, id: InboundId) {
        shared.reply(id, Response::Peer(PeerResponse::Pong));
    }

    /// [`Timer::Ping`] fired: ping every other member that has no ping in flight.
    pub(crate) fn ping_timer(&mut self, shared: &mut Shared, now: Instant) {
        shared
            .timers
            .schedule(now + shared.config.ping_interval, Timer::Ping);
        let others: Vec<NodeId> = shared
            .ring
            .members()
            .iter()
            .map(|m| m.id.clone())
            .filter(|id| id != shared.id())
            .collect();
        for to in others {
            if !self.pinging.contains(&to) {
                shared.send(
                    Purpose::Ping,
                    to.clone(),
                    PeerMessage::Ping,
                    Priority::Normal,
                    None,
                );
                self.pinging.insert(to);
            }
        }
    }

    /// Every other member and whether it is reachable, for the admin status.
    pub(crate) fn status(&self, shared: &Shared, now: Instant) -> Vec<PeerStatus> {
        shared
            .ring
            .members()
            .iter()
            .filter(|m| m.id != *shared.id())
            .map(|m| PeerStatus {
                node: m.id.clone(),
                reachable: self.is_reachable(shared, &m.id, now),
            })
            .collect()
    }

    fn mark_unreachable(&mut self, node: &NodeId, now: Instant) {
        let backoff = self
            .down
            .get(node)
            .map_or(FIRST_BACKOFF, |d| (d.backoff * 2).min(MAX_BACKOFF));
        self.down.insert(
            node.clone(),
            Down {
                until: now + backoff,
                backoff,
            },
        );
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test needs one real instant to start from
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use shoal_ring::{Member, Ring};
    use shoal_types::{Incarnation, PartitionCount, ReplicationFactor};

    use super::*;
    use crate::effects::OutboundId;
    use crate::{NodeConfig, Output};

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn shared() -> Shared {
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
        let config = NodeConfig::new(node("n1"), Incarnation::new(1));
        Shared::new(config, ring, StdRng::seed_from_u64(1))
    }

    fn pings(shared: &mut Shared) -> Vec<(OutboundId, NodeId)> {
        std::iter::from_fn(|| shared.poll_output())
            .filter_map(|o| match o {
                Output::Send { id, to, .. } => Some((id, to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_unreachable_peer_is_skipped_for_a_back_off_that_doubles() {
        let mut shared = shared();
        let now = Instant::now();
        let mut l = Liveness::new(now, &mut shared);
        let n2 = node("n2");
        l.heard_from(&n2);
        let unreachable = Err(SendError::Unreachable);
        l.observed(&n2, &unreachable, now);
        assert!(!l.is_reachable(&shared, &n2, now));
        assert!(l.is_reachable(&shared, &n2, now + FIRST_BACKOFF));
        l.observed(&n2, &unreachable, now + FIRST_BACKOFF);
        assert!(!l.is_reachable(&shared, &n2, now + FIRST_BACKOFF * 2));
        assert!(l.is_reachable(&shared, &n2, now + FIRST_BACKOFF * 3));
        l.observed(&n2, &Ok(PeerResponse::Pong), now);
        assert!(l.is_reachable(&shared, &n2, now), "an answer clears it");
        assert!(l.is_reachable(&shared, &node("n1"), now), "itself, always");
    }

    #[test]
    fn a_lost_message_says_nothing_about_reachability() {
        let mut shared = shared();
        let now = Instant::now();
        let mut l = Liveness::new(now, &mut shared);
        l.observed(&node("n2"), &Err(SendError::Lost), now);
        assert!(l.is_reachable(&shared, &node("n2"), now));
    }

    #[test]
    fn pings_go_to_every_other_member_with_one_in_flight_per_peer() {
        let mut shared = shared();
        let now = Instant::now();
        let mut l = Liveness::new(now, &mut shared);
        assert_eq!(shared.timers.expire(now), Some(Timer::Ping));
        l.ping_timer(&mut shared, now);
        let first = pings(&mut shared);
        let targets: Vec<&NodeId> = first.iter().map(|(_, to)| to).collect();
        assert_eq!(targets, [&node("n2"), &node("n3")]);
        let next = now + shared.config.ping_interval;
        assert_eq!(shared.timers.next(), Some(next));
        // n2 answers, n3 does not: the next round pings n2 only.
        let sent = shared.answered(first[0].0).expect("a ping was sent");
        assert_eq!(sent.purpose, Purpose::Ping);
        l.response(&sent.to);
        assert_eq!(shared.timers.expire(next), Some(Timer::Ping));
        l.ping_timer(&mut shared, next);
        let second: Vec<NodeId> = pings(&mut shared).into_iter().map(|(_, to)| to).collect();
        assert_eq!(second, [node("n2")]);
    }

    #[test]
    fn a_peer_never_heard_from_is_tried_while_the_cluster_starts() {
        let mut shared = shared();
        let now = Instant::now();
        let mut l = Liveness::new(now, &mut shared);
        let n2 = node("n2");
        // The first ping reached n2 before it listened.
        l.observed(&n2, &Err(SendError::Unreachable), now);
        assert!(l.is_reachable(&shared, &n2, now), "unknown, so tried");
        let soon = now + FIRST_BACKOFF / 2;
        l.observed(&n2, &Err(SendError::Unreachable), soon);
        assert!(l.is_reachable(&shared, &n2, soon));
        // Never reached for longer than the grace: a peer like any other.
        let late = now + UNKNOWN_GRACE;
        l.observed(&n2, &Err(SendError::Unreachable), late);
        assert!(!l.is_reachable(&shared, &n2, late));
        assert!(l.is_reachable(&shared, &n2, late + FIRST_BACKOFF));
    }

    #[test]
    fn a_peer_that_answered_once_is_backed_off_at_its_first_failure() {
        let mut shared = shared();
        let now = Instant::now();
        let mut l = Liveness::new(now, &mut shared);
        let n2 = node("n2");
        l.observed(&n2, &Ok(PeerResponse::Pong), now);
        l.observed(&n2, &Err(SendError::Unreachable), now);
        assert!(!l.is_reachable(&shared, &n2, now));
    }

    #[test]
    fn a_size_refusal_is_not_taken_for_an_absent_peer() {
        let mut shared = shared();
        let now = Instant::now();
        let mut l = Liveness::new(now, &mut shared);
        let n2 = node("n2");
        l.heard_from(&n2);
        for result in [
            Err(SendError::TooLarge {
                len: 20 << 20,
                max: 16 << 20,
            }),
            Err(SendError::FrameRefused),
            Err(SendError::AnswerTooLarge),
        ] {
            l.observed(&n2, &result, now);
            assert!(l.is_reachable(&shared, &n2, now), "{result:?}");
        }
        // And a size refusal from a peer backed off clears the back-off: it answered.
        l.observed(&n2, &Err(SendError::Unreachable), now);
        assert!(!l.is_reachable(&shared, &n2, now));
        l.observed(&n2, &Err(SendError::AnswerTooLarge), now);
        assert!(l.is_reachable(&shared, &n2, now));
    }
}
