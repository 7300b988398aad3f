//! Who is at the other end: roles, the identity a certificate carries, and the peer a caller
//! expects when it connects.

use std::fmt;

use rustls::pki_types::{CertificateDer, ServerName};
use shoal_types::{NodeId, Role};

use crate::der;
use crate::error::CertError;

/// The DNS suffix under which every Shoal identity is named.
pub(crate) const DOMAIN: &str = "shoal";

/// The extra DNS name every node certificate carries, so a caller that does not know a node's id
/// yet can still require "some node of this cluster".
pub(crate) const ANY_NODE_NAME: &str = "node.shoal";

/// The DNS name a certificate of `role` and `name` carries: `<name>.<role>.shoal`.
pub(crate) fn dns_name(role: Role, name: &NodeId) -> String {
    format!("{name}.{}.{DOMAIN}", role.as_str())
}

/// The identity a verified peer certificate carries: its role and name.
///
/// The name follows `NodeId`'s rules for every role; for a node it is the node id, for a client
/// or an admin it is just that holder's name. Use [`PeerIdentity::node`] to get a node id, so a
/// client's name is never taken for one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// What the certificate allows.
    pub role: Role,
    /// The holder's name.
    pub name: NodeId,
}

impl PeerIdentity {
    /// The node id, if the peer is a node.
    pub fn node(&self) -> Option<&NodeId> {
        match self.role {
            Role::Node => Some(&self.name),
            Role::Client | Role::Admin => None,
        }
    }

    /// Reads the identity from a certificate: its one subjectAltName DNS name of the form
    /// `<name>.<role>.shoal` (the extra `node.shoal` of node certificates is skipped).
    ///
    /// This does not verify the certificate; the TLS handshake does that before the transport
    /// calls it.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<PeerIdentity, CertError> {
        let names = der::subject_alt_dns_names(cert.as_ref())
            .map_err(|e| CertError::NoIdentity(format!("unreadable certificate: {}", e.0)))?;
        let mut found: Option<PeerIdentity> = None;
        for dns_name in names.iter().filter(|n| n.as_str() != ANY_NODE_NAME) {
            let Some(identity) = parse_dns_name(dns_name) else {
                continue;
            };
            match &found {
                Some(other) if *other != identity => {
                    return Err(CertError::NoIdentity(format!(
                        "it names both {} and {}",
                        other.dns_name(),
                        identity.dns_name()
                    )));
                }
                _ => found = Some(identity),
            }
        }
        found.ok_or_else(|| {
            CertError::NoIdentity(format!(
                "no DNS name of the form NAME.ROLE.shoal among {names:?}"
            ))
        })
    }

    /// The identity's DNS name, `<name>.<role>.shoal`.
    pub fn dns_name(&self) -> String {
        dns_name(self.role, &self.name)
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// The server a caller expects at an address. The TLS handshake checks it against the server's
/// certificate, and the transport checks the name once more, exactly (DNS matching ignores case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExpectedPeer {
    /// This node and no other.
    Node(NodeId),
    /// Any node of the cluster (seed addresses, a client's first contact).
    AnyNode,
}

impl ExpectedPeer {
    /// The TLS server name to ask for.
    pub(crate) fn server_name(&self) -> String {
        match self {
            ExpectedPeer::Node(id) => dns_name(Role::Node, id),
            ExpectedPeer::AnyNode => ANY_NODE_NAME.to_owned(),
        }
    }

    /// Whether a verified peer identity is what was expected.
    pub fn accepts(&self, peer: &PeerIdentity) -> bool {
        match self {
            ExpectedPeer::Node(id) => peer.node() == Some(id),
            ExpectedPeer::AnyNode => peer.role == Role::Node,
        }
    }
}

impl fmt::Display for ExpectedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedPeer::Node(id) => write!(f, "node {id}"),
            ExpectedPeer::AnyNode => f.write_str("any node"),
        }
    }
}

/// Checks that a name can be put in a certificate: a valid `NodeId` whose
/// `<name>.<role>.shoal` is a valid DNS name.
pub(crate) fn certificate_name(name: &str) -> Result<NodeId, CertError> {
    let invalid = |reason| CertError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let id = NodeId::new(name).map_err(|_| invalid("not a valid node id"))?;
    if name.split('.').any(|label| label.len() > 63) {
        return Err(invalid("a DNS label is longer than 63 characters"));
    }
    // The role label is the longest suffix; the same name is valid for every role.
    match ServerName::try_from(dns_name(Role::Client, &id)) {
        Ok(ServerName::DnsName(_)) => Ok(id),
        _ => Err(invalid("not a valid DNS label sequence")),
    }
}

fn parse_dns_name(dns_name: &str) -> Option<PeerIdentity> {
    let rest = dns_name.strip_suffix(DOMAIN)?.strip_suffix('.')?;
    let (name, role) = rest.rsplit_once('.')?;
    let role = role.parse().ok()?;
    let name = NodeId::new(name).ok()?;
    Some(PeerIdentity { role, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn dns_names_parse_back_into_role_and_name() {
        for role in Role::ALL {
            for name in ["n1", "a.b", "x_y-z", "N1"] {
                let dns = dns_name(role, &id(name));
                assert_eq!(
                    parse_dns_name(&dns),
                    Some(PeerIdentity {
                        role,
                        name: id(name)
                    })
                );
            }
        }
        assert_eq!(parse_dns_name("node.shoal"), None);
        assert_eq!(parse_dns_name("n1.root.shoal"), None);
        assert_eq!(parse_dns_name("n1.node.example"), None);
        assert_eq!(parse_dns_name("n1.nodeshoal"), None);
    }

    #[test]
    fn names_must_be_node_ids_and_dns_labels() {
        assert!(certificate_name("n1").is_ok());
        assert!(certificate_name("east.n_1").is_ok());
        assert!(certificate_name("").is_err());
        assert!(certificate_name("a b").is_err());
        assert!(certificate_name("-n1").is_err());
        assert!(certificate_name("n1-").is_err());
        assert!(certificate_name("a..b").is_err());
        assert!(certificate_name(".a").is_err());
        assert!(certificate_name(&"x".repeat(64)).is_err());
        assert!(certificate_name(&"x".repeat(63)).is_ok());
    }

    #[test]
    fn expected_node_accepts_only_that_node_exactly() {
        let n1 = PeerIdentity {
            role: Role::Node,
            name: id("n1"),
        };
        let upper = PeerIdentity {
            role: Role::Node,
            name: id("N1"),
        };
        let client = PeerIdentity {
            role: Role::Client,
            name: id("n1"),
        };
        assert!(ExpectedPeer::Node(id("n1")).accepts(&n1));
        assert!(!ExpectedPeer::Node(id("n1")).accepts(&upper));
        assert!(!ExpectedPeer::Node(id("n2")).accepts(&n1));
        assert!(!ExpectedPeer::Node(id("n1")).accepts(&client));
        assert!(ExpectedPeer::AnyNode.accepts(&n1));
        assert!(!ExpectedPeer::AnyNode.accepts(&client));
    }
}
