use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_types::{Capacity, NodeId, Zone};

/// One node as the ring knows it: its id, where to reach it, its failure domain and its weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id.
    pub id: NodeId,
    /// The address peers and clients connect to.
    pub addr: SocketAddr,
    /// The node's failure domain; preference lists spread over zones.
    pub zone: Zone,
    /// The node's weight when partitions are claimed.
    pub capacity: Capacity,
}

impl Member {
    /// A member in the default zone with capacity 1.
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        Member {
            id,
            addr,
            zone: Zone::default_zone(),
            capacity: Capacity::ONE,
        }
    }

    /// The same member in `zone`.
    pub fn in_zone(mut self, zone: Zone) -> Self {
        self.zone = zone;
        self
    }

    /// The same member with weight `capacity`.
    pub fn with_capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }
}
