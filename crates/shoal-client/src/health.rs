//! What the client believes about each node, so that requests stop waiting on a node that
//! died: nothing (it answers), *suspect* (a read to it went unanswered past the hedge delay) or
//! *down* (a request to it failed in the network, or a probe did).
//!
//! Beliefs only order targets — a suspect or down node is tried after the others, never refused
//! — and each belief is checked by one background probe (a ring request) that clears it as soon
//! as the node answers. Until then the node stays behind the others: a request never waits on a
//! handshake with a node known to be down while another could serve it, and a node that comes
//! back is used again within a probe interval.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use shoal_transport::{Endpoint, TransportError};
use tokio::sync::watch;

use crate::routing::Target;

/// How long a probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two probes of a node that did not answer.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The beliefs, shared by the client and its probes.
#[derive(Debug, Default)]
pub(crate) struct Health {
    nodes: Mutex<HashMap<SocketAddr, Belief>>,
}

#[derive(Debug, Clone, Copy)]
struct Belief {
    /// Failed in the network (not merely slow).
    down: bool,
    /// The probe checking it; a probe whose number is no longer here stops.
    probe: u64,
}

/// A probe to start, with its number (unique in the process).
#[derive(Debug)]
pub(crate) struct StartProbe(u64);

impl Health {
    /// Whether requests should try `addr` after the others.
    pub(crate) fn avoid(&self, addr: SocketAddr) -> bool {
        self.nodes().contains_key(&addr)
    }

    /// Whether any node is believed down (the ring may have changed).
    pub(crate) fn any_down(&self) -> bool {
        self.nodes().values().any(|b| b.down)
    }

    /// `addr` answered: it is up.
    pub(crate) fn answered(&self, addr: SocketAddr) {
        let mut nodes = self.nodes();
        if !nodes.is_empty() {
            nodes.remove(&addr);
        }
    }

    /// A read to `addr` is late: suspect it, and probe it unless a probe runs.
    pub(crate) fn suspect(&self, addr: SocketAddr) -> Option<StartProbe> {
        self.believe(addr, false)
    }

    /// A request to `addr` failed in the network: it is down until a probe says otherwise.
    pub(crate) fn down(&self, addr: SocketAddr) -> Option<StartProbe> {
        self.believe(addr, true)
    }

    fn believe(&self, addr: SocketAddr, down: bool) -> Option<StartProbe> {
        let mut nodes = self.nodes();
        if let Some(belief) = nodes.get_mut(&addr) {
            belief.down |= down;
            return None;
        }
        let probe = next_probe_number();
        nodes.insert(addr, Belief { down, probe });
        Some(StartProbe(probe))
    }

    /// Probe `probe` of `addr` got no answer; whether it should go on.
    fn probe_failed(&self, addr: SocketAddr, probe: u64) -> bool {
        match self.nodes().get_mut(&addr) {
            Some(belief) if belief.probe == probe => {
                belief.down = true;
                true
            }
            _ => false,
        }
    }

    fn still_probing(&self, addr: SocketAddr, probe: u64) -> bool {
        self.nodes().get(&addr).is_some_and(|b| b.probe == probe)
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<SocketAddr, Belief>> {
        // Every update is one insert, remove or field store: a poisoned map is still consistent.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Probes `target` until it answers (then clears its belief), the belief is cleared or replaced
/// by someone else, or the client is gone (`alive` closes).
pub(crate) async fn probe(
    health: Arc<Health>,
    endpoint: Endpoint,
    target: Target,
    start: StartProbe,
    frame: Bytes,
    mut alive: watch::Receiver<()>,
) {
    let StartProbe(number) = start;
    loop {
        let request = endpoint.request(
            target.addr,
            target.expected_peer(),
            frame.clone(),
            PROBE_TIMEOUT,
        );
        let outcome = tokio::select! {
            outcome = request => outcome,
            _ = alive.changed() => return,
        };
        match outcome {
            Ok(_) => {
                if health.still_probing(target.addr, number) {
                    health.answered(target.addr);
                }
                tracing::debug!(node = %target.addr, "node answers again");
                return;
            }
            Err(TransportError::Closed) => return,
            Err(error) => {
                tracing::debug!(node = %target.addr, %error, "probe got no answer");
                if !health.probe_failed(target.addr, number) {
                    return;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = alive.changed() => return,
        }
        if !health.still_probing(target.addr, number) {
            return;
        }
    }
}

fn next_probe_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn one_probe_per_belief_and_an_answer_clears_it() {
        let health = Health::default();
        assert!(!health.avoid(addr(1)));
        let first = health.suspect(addr(1)).expect("a probe starts");
        assert!(health.avoid(addr(1)) && !health.any_down());
        assert!(health.down(addr(1)).is_none(), "one probe at a time");
        assert!(health.any_down());
        assert!(health.still_probing(addr(1), first.0));
        health.answered(addr(1));
        assert!(!health.avoid(addr(1)));
        assert!(
            !health.probe_failed(addr(1), first.0),
            "a cleared belief stops its probe"
        );
    }

    #[test]
    fn a_stale_probe_stops_when_a_new_belief_replaces_its_own() {
        let health = Health::default();
        let old = health.down(addr(2)).unwrap();
        health.answered(addr(2));
        let new = health.down(addr(2)).unwrap();
        assert!(!health.still_probing(addr(2), old.0));
        assert!(health.probe_failed(addr(2), new.0));
    }
}
