//! Which incarnation a node runs under: the one its data directory was created with, for as long
//! as the directory keeps what the node wrote.
//!
//! A node's dots are (node id, incarnation, counter), and the next counter for a key is one past
//! the highest the local replica names. Coordinators send a dot out only inside an object that is
//! already durable on their own disk (`shoal-coordinator`, local first), so after any restart,
//! clean or not, the disk holds every dot of the node that exists anywhere, and counting on from
//! it never makes a dot twice. So every restart keeps the incarnation, and version vectors gain
//! no entry per restart. The incarnation changes only when that knowledge is lost: a new data
//! directory (a wiped disk), or a record found corrupted, which the coordinator renews the
//! incarnation for, in the batch that replaces the record
//! ([`crate::WriteBatch::renew_incarnation`]).
//!
//! The run state still records whether the last run stopped cleanly, for the operator and the
//! logs: a recovery after a crash is reported as such.

use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_types::Incarnation;

/// How the last run on a database ended, as its identity record says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RunState {
    /// A run began and has not stopped cleanly (yet). Also what records written before the run
    /// state existed read as.
    #[default]
    Running,
    /// The run stopped cleanly: every commit finished without error after the node stopped
    /// taking requests.
    Clean,
}

/// How a run began. Only a new directory takes a new incarnation (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStart {
    /// A new data directory: the candidate incarnation.
    Created,
    /// The previous run stopped cleanly.
    Kept,
    /// The previous run did not stop cleanly (a crash, `kill -9`, a failed write): the node
    /// recovers from what its disk holds, under the same incarnation.
    Recovered,
}

impl RunStart {
    /// Whether the previous run on this directory ended without a clean stop.
    pub fn after_unclean_stop(&self) -> bool {
        matches!(self, RunStart::Recovered)
    }
}

impl fmt::Display for RunStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunStart::Created => f.write_str("new data directory"),
            RunStart::Kept => f.write_str("kept after a clean stop"),
            RunStart::Recovered => f.write_str("kept, recovering after a stop that was not clean"),
        }
    }
}

/// The rule: the incarnation a run uses, given what the directory recorded (`None` when it is
/// new) and a fresh random `candidate` (used only for a new directory).
pub(crate) fn begin(
    recorded: Option<(Incarnation, RunState)>,
    candidate: Incarnation,
) -> (Incarnation, RunStart) {
    match recorded {
        None => (candidate, RunStart::Created),
        Some((incarnation, RunState::Clean)) => (incarnation, RunStart::Kept),
        Some((incarnation, RunState::Running)) => (incarnation, RunStart::Recovered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_new_directory_takes_a_new_incarnation() {
        let (old, new) = (Incarnation::new(1), Incarnation::new(2));
        assert_eq!(begin(None, new), (new, RunStart::Created));
        assert_eq!(
            begin(Some((old, RunState::Clean)), new),
            (old, RunStart::Kept)
        );
        assert_eq!(
            begin(Some((old, RunState::Running)), new),
            (old, RunStart::Recovered)
        );
    }
}
