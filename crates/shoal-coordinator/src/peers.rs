//! Which peers to skip: a peer whose connection failed is considered unreachable for a
//! back-off period that doubles while it stays unreachable. After the period the next request
//! probes it again. Stands in for the phi-accrual detector of the membership crate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_types::NodeId;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct Peers {
    down: BTreeMap<NodeId, Down>,
}

#[derive(Debug)]
struct Down {
    until: Instant,
    backoff: Duration,
}

impl Peers {
    /// Whether requests should be sent to `node` now.
    pub(crate) fn is_reachable(&self, node: &NodeId, now: Instant) -> bool {
        self.down.get(node).is_none_or(|d| now >= d.until)
    }

    /// A connection to `node` could not be made.
    pub(crate) fn mark_unreachable(&mut self, node: &NodeId, now: Instant) {
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

    /// `node` answered.
    pub(crate) fn mark_reachable(&mut self, node: &NodeId) {
        self.down.remove(node);
    }
}
