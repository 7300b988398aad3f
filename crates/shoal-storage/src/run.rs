//! Which incarnation a node runs under, and why: the rule that lets a coordinator send a dot to
//! other replicas before it is durable on its own disk.
//!
//! A node's dots are (node id, incarnation, counter). A run that ends without a clean stop (a
//! crash, `kill -9`, a failed storage write) may have lost dots it already sent to replicas or
//! clients; making them again for other values would give two values one dot (Riak's kv679). So
//! a run that follows anything but a clean stop takes a new incarnation, and never makes a dot of
//! an earlier run again. The cost: each unclean restart adds one version-vector entry to each key
//! the node coordinates afterwards; a clean restart adds none.

use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_types::Incarnation;

/// How the last run on a database ended, as its identity record says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RunState {
    /// A run began and has not stopped cleanly (yet). Also what records written before the run
    /// state existed read as, so their first open takes a new incarnation.
    #[default]
    Running,
    /// The run stopped cleanly: every commit finished without error after the node stopped
    /// taking requests.
    Clean,
}

/// How a run began: which incarnation it makes dots with, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStart {
    /// A new data directory: the candidate incarnation.
    Created,
    /// The previous run stopped cleanly: its incarnation is kept.
    Kept,
    /// The previous run did not stop cleanly (or predates the run state): the candidate
    /// replaces `previous`, so no dot of that run is ever made again.
    Renewed {
        /// The incarnation of the runs before.
        previous: Incarnation,
    },
}

impl RunStart {
    /// Whether the run took a new incarnation although the directory had one.
    pub fn renewed(&self) -> bool {
        matches!(self, RunStart::Renewed { .. })
    }
}

impl fmt::Display for RunStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunStart::Created => f.write_str("new data directory"),
            RunStart::Kept => f.write_str("kept after a clean stop"),
            RunStart::Renewed { previous } => {
                write!(
                    f,
                    "renewed after a stop that was not clean (was {previous})"
                )
            }
        }
    }
}

/// The rule: the incarnation a run uses, given what the directory recorded (`None` when it is
/// new) and a fresh random `candidate`.
pub(crate) fn begin(
    recorded: Option<(Incarnation, RunState)>,
    candidate: Incarnation,
) -> (Incarnation, RunStart) {
    match recorded {
        None => (candidate, RunStart::Created),
        Some((incarnation, RunState::Clean)) => (incarnation, RunStart::Kept),
        Some((previous, RunState::Running)) => {
            // A candidate equal to the old incarnation would be no renewal at all.
            let fresh = if candidate == previous {
                Incarnation::new(candidate.get().wrapping_add(1))
            } else {
                candidate
            };
            (fresh, RunStart::Renewed { previous })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clean_stop_keeps_the_incarnation() {
        let (old, new) = (Incarnation::new(1), Incarnation::new(2));
        assert_eq!(begin(None, new), (new, RunStart::Created));
        assert_eq!(
            begin(Some((old, RunState::Clean)), new),
            (old, RunStart::Kept)
        );
        assert_eq!(
            begin(Some((old, RunState::Running)), new),
            (new, RunStart::Renewed { previous: old })
        );
    }
}
