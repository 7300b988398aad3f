//! Who holds a certificate: a node, a client or an admin. One type for the whole system: the
//! transport reads it from certificates, the protocol says which role may send which message,
//! and the server checks one against the other.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TypesError;

/// What a certificate allows its holder to do; the server enforces it per message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// A cluster node: serves requests, and may send peer messages (replication, liveness,
    /// gossip) as itself.
    Node,
    /// An application: may get, put and delete.
    Client,
    /// An operator: may also inspect and change the cluster.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Node, Role::Client, Role::Admin];

    /// The role's name in certificates, file names and messages: `node`, `client` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, TypesError> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| TypesError::InvalidRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_parses_from_its_name_and_nothing_else_does() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!(matches!(
            "root".parse::<Role>(),
            Err(TypesError::InvalidRole(_))
        ));
    }
}
