//! The accept task: turns the transport's requests into decoded, authorised requests for the
//! node task, and answers everything it refuses itself, so bad or forbidden input never costs
//! the node task anything. Client requests and peer messages go to the node task through
//! channels of their own, so a flood of clients cannot crowd out the replication other nodes'
//! quorums wait for; a full channel refuses with `Overloaded`.
//! An undecodable request is also reported to the transport as malformed, so that it counts
//! toward closing its connection like a bad frame.
//!
//! Peer messages are admitted only from ring members, as themselves, under this node's ring
//! epoch ([`authorise`]): a valid node certificate of the cluster's CA is not enough to
//! replicate into this ring, and a message placed by another ring is refused rather than filed
//! where this ring's reads never look.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shoal_protocol::{DecodeLimits, PeerMessage, Refusal, Request, Response, decode, encode};
use shoal_ring::Ring;
use shoal_transport::{Incoming, PeerIdentity, Responder};
use shoal_types::{NodeId, RingEpoch};
use tokio::sync::{mpsc, watch};

use crate::inbox::{Class, Queued};
use crate::metrics::{Metrics, Op, Shed};

/// Frames at most this long are decoded in the accept loop; longer ones in a task of their own,
/// so one large value does not hold up the requests behind it.
const INLINE_DECODE_BYTES: usize = 16 * 1024;

/// A request that passed decoding and authorisation, on its way to the node task.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) request: Request,
    pub(crate) responder: Responder,
    pub(crate) op: Op,
    /// When the request was read, for latency.
    pub(crate) received: Instant,
}

impl Queued for Accepted {
    fn arrived(&self) -> Instant {
        self.received
    }
}

/// The node task's two input channels.
#[derive(Clone, Debug)]
pub(crate) struct ToNode {
    /// Client and admin requests.
    pub(crate) client: mpsc::Sender<Accepted>,
    /// Peer messages.
    pub(crate) peer: mpsc::Sender<Accepted>,
}

/// What the accept task knows of the ring to admit peer messages: its epoch and members. The
/// ring is static for now; a ring that changes will hand the accept task each new one.
#[derive(Clone, Debug)]
pub(crate) struct RingView {
    epoch: RingEpoch,
    members: Arc<BTreeSet<NodeId>>,
}

impl RingView {
    pub(crate) fn of(ring: &Ring) -> RingView {
        RingView {
            epoch: ring.epoch(),
            members: Arc::new(ring.members().iter().map(|m| m.id.clone()).collect()),
        }
    }
}

/// What the accept task shares with the per-request decoding tasks.
#[derive(Clone, Debug)]
struct Gate {
    limits: DecodeLimits,
    ring: RingView,
    node: ToNode,
    shutting_down: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

/// Reads requests until the endpoint closes.
pub(crate) async fn run(
    mut incoming: Incoming,
    limits: DecodeLimits,
    ring: RingView,
    node: ToNode,
    shutting_down: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let gate = Gate {
        limits,
        ring,
        node,
        shutting_down,
        metrics,
    };
    while let Some(request) = incoming.next().await {
        let received = Instant::now();
        let (peer, remote, frame, responder) = request.into_parts();
        if frame.len() <= INLINE_DECODE_BYTES {
            gate.admit(&peer, remote, &frame, responder, received);
        } else {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit(&peer, remote, &frame, responder, received) });
        }
    }
    tracing::debug!("accept task done: the endpoint is closed");
}

impl Gate {
    /// Decodes and authorises one request, then hands it to the node task or refuses it.
    fn admit(
        &self,
        peer: &PeerIdentity,
        remote: std::net::SocketAddr,
        frame: &Bytes,
        responder: Responder,
        received: Instant,
    ) {
        if *self.shutting_down.borrow() {
            return self.refuse(responder, Refusal::ShuttingDown);
        }
        let request = match decode::<Request>(frame, &self.limits) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(%peer, %remote, %error, "undecodable request");
                // Counted with the connection's bad frames: a peer that keeps sending them
                // is disconnected.
                responder.report_malformed();
                return self.refuse(responder, Refusal::BadRequest(error.to_string()));
            }
        };
        if let Err(refusal) = authorise(peer, &request, &self.ring) {
            tracing::warn!(%peer, %remote, %refusal, "refusing request");
            return self.refuse(responder, refusal);
        }
        let accepted = Accepted {
            op: Op::of(&request),
            request,
            responder,
            received,
        };
        let (class, channel) = match &accepted.request {
            Request::Peer(_) => (Class::Peer, &self.node.peer),
            Request::Client(_) | Request::Admin(_) => (Class::Client, &self.node.client),
        };
        match channel.try_send(accepted) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(accepted)) => {
                self.metrics.shed(class, Shed::QueueFull);
                self.refuse(accepted.responder, Refusal::Overloaded)
            }
            Err(mpsc::error::TrySendError::Closed(accepted)) => {
                self.refuse(accepted.responder, Refusal::ShuttingDown)
            }
        }
    }

    fn refuse(&self, responder: Responder, refusal: Refusal) {
        self.metrics.refused(&refusal);
        respond(responder, &Response::Refused(refusal));
    }
}

/// Whether the certificate's holder may send `request`: by role, and for peer messages, the
/// claimed sender must be the certificate's node, that node a member of the ring (but for
/// gossip and pings, by which a joining node becomes known), and the message of the ring's
/// epoch. The ring is static for now, so any other epoch is another ring.
pub(crate) fn authorise(
    peer: &PeerIdentity,
    request: &Request,
    ring: &RingView,
) -> Result<(), Refusal> {
    let role = peer.role;
    if !request.allowed_for(role) {
        return Err(Refusal::Unauthorized {
            required: request.required_role().to_owned(),
            role,
        });
    }
    if let Request::Peer(r) = request {
        if peer.node() != Some(&r.from) {
            return Err(Refusal::WrongSender {
                claimed: r.from.to_string(),
                certified: peer.name.to_string(),
            });
        }
        // Gossip and pings are how a node outside the ring (joining) becomes known: its node
        // certificate from this cluster's CA is what admits it. Everything else needs a member.
        let membership = matches!(r.message, PeerMessage::Gossip(_) | PeerMessage::Ping);
        if !membership && !ring.members.contains(&r.from) {
            return Err(Refusal::NotAMember {
                node: r.from.to_string(),
            });
        }
        if r.epoch != ring.epoch {
            return Err(Refusal::WrongEpoch {
                ours: ring.epoch,
                theirs: r.epoch,
            });
        }
    }
    Ok(())
}

/// Encodes and sends a response; a response that cannot be encoded (a bug) is logged and the
/// stream reset by dropping the responder.
pub(crate) fn respond(responder: Responder, response: &Response) {
    match encode(response) {
        Ok(frame) => responder.respond(frame),
        Err(error) => tracing::error!(%error, "cannot encode a response; resetting the stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::{ClientRequest, PeerMessage, PeerRequest, Role};
    use shoal_types::{NodeId, RingEpoch};

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn peer(role: Role, name: &str) -> PeerIdentity {
        PeerIdentity {
            role,
            name: id(name),
        }
    }

    fn ping_from(from: &str) -> Request {
        ping_in(from, RingEpoch::INITIAL)
    }

    fn ping_in(from: &str, epoch: RingEpoch) -> Request {
        Request::Peer(PeerRequest {
            from: id(from),
            epoch,
            budget: None,
            message: PeerMessage::Ping,
        })
    }

    /// A ring of n1 and n2, at the initial epoch.
    fn ring() -> RingView {
        let members = ["n1", "n2"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 7001 + i as u16));
                shoal_ring::Member::new(id(n), addr)
            })
            .collect();
        let ring = Ring::new(
            members,
            shoal_types::PartitionCount::new(16).unwrap(),
            shoal_types::ReplicationFactor::new(2).unwrap(),
        )
        .unwrap();
        RingView::of(&ring)
    }

    #[test]
    fn only_nodes_send_replica_messages_and_only_as_themselves() {
        assert_eq!(
            authorise(&peer(Role::Node, "n1"), &ping_from("n1"), &ring()),
            Ok(())
        );
        assert!(matches!(
            authorise(&peer(Role::Node, "n1"), &ping_from("n2"), &ring()),
            Err(Refusal::WrongSender { .. })
        ));
        // A client named like a node is still a client.
        assert!(matches!(
            authorise(&peer(Role::Client, "n1"), &ping_from("n1"), &ring()),
            Err(Refusal::Unauthorized {
                role: Role::Client,
                ..
            })
        ));
        assert!(matches!(
            authorise(&peer(Role::Admin, "n1"), &ping_from("n1"), &ring()),
            Err(Refusal::Unauthorized { .. })
        ));
    }

    #[test]
    fn only_an_admin_certificate_may_ask_for_a_repair() {
        let repair = Request::Admin(shoal_protocol::AdminRequest::Repair {
            partition: None,
            node: None,
        });
        assert_eq!(
            authorise(&peer(Role::Admin, "ops"), &repair, &ring()),
            Ok(())
        );
        for role in [Role::Client, Role::Node] {
            assert!(
                matches!(
                    authorise(&peer(role, "n1"), &repair, &ring()),
                    Err(Refusal::Unauthorized { .. })
                ),
                "{role:?}"
            );
        }
    }

    #[test]
    fn every_role_may_send_client_requests() {
        for role in [Role::Node, Role::Client, Role::Admin] {
            let request = Request::Client(ClientRequest::Ring);
            assert_eq!(authorise(&peer(role, "x"), &request, &ring()), Ok(()));
        }
    }

    #[test]
    fn a_node_certificate_outside_the_ring_may_only_gossip() {
        // n3 holds a valid node certificate of the cluster's CA, but is not a member: it may
        // not send replica messages...
        let read = Request::Peer(PeerRequest {
            from: id("n3"),
            epoch: RingEpoch::INITIAL,
            budget: None,
            message: PeerMessage::Replica(shoal_protocol::ReplicaMessage::Read {
                partition: shoal_types::PartitionId::from_index_unchecked(0),
                key: shoal_types::Key::new("k").unwrap(),
            }),
        });
        assert_eq!(
            authorise(&peer(Role::Node, "n3"), &read, &ring()),
            Err(Refusal::NotAMember { node: "n3".into() })
        );
        // ...but it may gossip and ping: that is how a joining node becomes known.
        assert_eq!(
            authorise(&peer(Role::Node, "n3"), &ping_from("n3"), &ring()),
            Ok(())
        );
        // Client requests need no membership.
        let request = Request::Client(ClientRequest::Ring);
        assert_eq!(
            authorise(&peer(Role::Node, "n3"), &request, &ring()),
            Ok(())
        );
    }

    #[test]
    fn a_peer_message_of_another_ring_epoch_is_refused_naming_both() {
        let other = RingEpoch::INITIAL.next();
        assert_eq!(
            authorise(&peer(Role::Node, "n2"), &ping_in("n2", other), &ring()),
            Err(Refusal::WrongEpoch {
                ours: RingEpoch::INITIAL,
                theirs: other,
            })
        );
    }
}
