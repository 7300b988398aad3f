//! Committing a ring change so that it can never be lost or doubled (DESIGN §4; issue 16): the
//! next ring, epoch e + 1, is chosen by single-decree Paxos among the valid members of ring e.
//!
//! Why Paxos, and not one compare-and-set round: with one round, each member records the first
//! proposal for e + 1 it sees, and a proposal recorded by a majority wins. Two admins committing
//! at once can split the votes (2 and 2 of 5, one member down) so that neither wins, and then no
//! retry can ever win either, since every member has already recorded one. Paxos' first phase
//! (prepare / promise) lets a later attempt learn what was recorded and finish it: at most one
//! proposal is ever chosen for an epoch, and once chosen it stays chosen, so an admin told
//! "committed" is never overruled; the other admin is told which plan won.
//!
//! - **Ballots** are (round, proposer node id), totally ordered and unique per proposer.
//! - An **acceptor** (every valid member of ring e) keeps, for the epoch it would move to, the
//!   highest ballot it promised and the proposal it last accepted with its ballot. That state
//!   must be durable before the reply leaves (the caller persists [`Acceptor`] after each
//!   [`Acceptor::handle`] that changed it, then sends the reply).
//! - A **proposer** (the node an admin's `commit` reached) runs prepare, then accept with the
//!   proposal of the highest ballot any promise carried, else its own. A majority of accepts
//!   chooses it: [`Outcome::Committed`] if it was its own, [`Outcome::Lost`] (naming the winner)
//!   if it finished another's. A refusal (a higher promise) starts a new round with a higher
//!   ballot, at most `max_rounds` times, after which the outcome is [`Outcome::Undecided`]:
//!   something may still be chosen; committing the same plan again tells which.
//! - A member that has moved on (its ring is already past e) answers [`CommitReply::Moved`],
//!   naming the plan that made ring e + 1 if it knows it: the proposer's outcome is then
//!   [`Outcome::Committed`] (its own plan won, e.g. another proposer finished it),
//!   [`Outcome::Lost`], or [`Outcome::Stale`] (the ring moved further than it can tell).
//!
//! Not here: the wire form of these messages, persisting the acceptor, spreading the chosen ring
//! by gossip, and the timers that call [`Proposer::retry`] (all the node's). Pure: no I/O, no
//! clock, no randomness.

use std::collections::{BTreeMap, BTreeSet};

use shoal_ring::Ring;
use shoal_types::{NodeId, RingEpoch};

use crate::PlanId;

/// A Paxos ballot: ordered by round, then by proposer id, so two proposers never share one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    /// The round.
    pub round: u64,
    /// The proposer.
    pub node: NodeId,
}

/// What a commit proposes: ring `ring` (at the parent's epoch + 1), made by plan `plan`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The plan the admin committed.
    pub plan: PlanId,
    /// The ring it makes.
    pub ring: Ring,
}

/// A proposer's message to an acceptor, for the epoch after `parent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitMessage {
    /// Phase 1: promise to accept nothing below `ballot`, and tell what you accepted.
    Prepare {
        /// The epoch the change is made from.
        parent: RingEpoch,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 2: accept `proposal` at `ballot`.
    Accept {
        /// The epoch the change is made from.
        parent: RingEpoch,
        /// The proposer's ballot.
        ballot: Ballot,
        /// What to accept.
        proposal: Proposal,
    },
}

/// An acceptor's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitReply {
    /// Promised `ballot`; `accepted` is what this acceptor accepted before, if anything.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// The last proposal accepted, with its ballot.
        accepted: Option<(Ballot, Proposal)>,
    },
    /// Accepted the proposal at `ballot`.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// Refused `ballot`: a higher one, `promised`, was promised.
    Refused {
        /// The ballot refused.
        ballot: Ballot,
        /// The higher ballot promised.
        promised: Ballot,
    },
    /// This member's ring is already at `epoch`, past the change's parent.
    Moved {
        /// Its ring's epoch.
        epoch: RingEpoch,
        /// The plan that made the ring right after the change's parent, if this member knows
        /// it (it moved there last): the proposer learns whether its own plan won.
        next_made_by: Option<PlanId>,
    },
}

/// One member's vote for the ring after `parent`: the durable state of the acceptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acceptor {
    parent: RingEpoch,
    promised: Option<Ballot>,
    accepted: Option<(Ballot, Proposal)>,
    /// The plan that made ring `parent`, when this member learnt it with the ring.
    made_by: Option<PlanId>,
}

impl Acceptor {
    /// An acceptor whose ring is at `parent`, having promised nothing.
    pub fn new(parent: RingEpoch) -> Acceptor {
        Acceptor {
            parent,
            promised: None,
            accepted: None,
            made_by: None,
        }
    }

    /// The epoch of this member's ring.
    pub fn parent(&self) -> RingEpoch {
        self.parent
    }

    /// The member adopted ring `epoch` (the chosen one, learnt by gossip or from the
    /// proposer), made by plan `made_by` if known: it votes on the epoch after that from now
    /// on. An older epoch changes nothing.
    pub fn moved_to(&mut self, epoch: RingEpoch, made_by: Option<PlanId>) {
        if epoch > self.parent {
            *self = Acceptor::new(epoch);
            self.made_by = made_by;
        }
    }

    /// Answers `message`. Returns the reply and whether the state changed (then persist it
    /// before sending the reply).
    pub fn handle(&mut self, message: &CommitMessage) -> (CommitReply, bool) {
        let (parent, ballot) = match message {
            CommitMessage::Prepare { parent, ballot }
            | CommitMessage::Accept { parent, ballot, .. } => (*parent, ballot),
        };
        if parent < self.parent {
            let next_made_by = self.made_by.filter(|_| parent.next() == self.parent);
            let reply = CommitReply::Moved {
                epoch: self.parent,
                next_made_by,
            };
            return (reply, false);
        }
        let changed_slot = parent > self.parent;
        if changed_slot {
            // A proposer on a newer ring: this member lags (gossip brings the ring). Its votes
            // for its own next epoch are about another slot; start on the proposer's.
            *self = Acceptor::new(parent);
        }
        if let Some(promised) = &self.promised
            && promised > ballot
        {
            let reply = CommitReply::Refused {
                ballot: ballot.clone(),
                promised: promised.clone(),
            };
            return (reply, changed_slot);
        }
        match message {
            CommitMessage::Prepare { ballot, .. } => {
                let changed = self.promised.as_ref() != Some(ballot);
                self.promised = Some(ballot.clone());
                let reply = CommitReply::Promise {
                    ballot: ballot.clone(),
                    accepted: self.accepted.clone(),
                };
                (reply, changed || changed_slot)
            }
            CommitMessage::Accept {
                ballot, proposal, ..
            } => {
                let accepted = Some((ballot.clone(), proposal.clone()));
                let changed = self.accepted != accepted;
                self.promised = Some(ballot.clone());
                self.accepted = accepted;
                (
                    CommitReply::Accepted {
                        ballot: ballot.clone(),
                    },
                    changed || changed_slot,
                )
            }
        }
    }
}

/// How a commit ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This proposal was chosen: the ring is at the new epoch.
    Committed,
    /// Another plan was chosen for the epoch (this proposer may have finished it).
    Lost {
        /// The plan chosen.
        winner: PlanId,
    },
    /// A member's ring is already past the parent, made by a plan it could not name: the plan
    /// was made from an old ring.
    Stale {
        /// That member's epoch.
        epoch: RingEpoch,
    },
    /// No round got a majority within `max_rounds` (contention, or members unreachable).
    /// Something may still be chosen; committing the same plan again tells which.
    Undecided,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Preparing {
        promises: BTreeMap<NodeId, Option<(Ballot, Proposal)>>,
    },
    Accepting {
        value: Proposal,
        accepts: BTreeSet<NodeId>,
    },
    Done(Outcome),
}

/// One commit attempt: the Paxos proposer for the ring after `parent`.
#[derive(Clone, Debug)]
pub struct Proposer {
    parent: RingEpoch,
    voters: BTreeSet<NodeId>,
    own: Proposal,
    ballot: Ballot,
    highest_seen: u64,
    rounds: u32,
    max_rounds: u32,
    phase: Phase,
}

impl Proposer {
    /// Starts committing `own` as the ring after `parent`, voted on by `voters` (the valid
    /// members of ring `parent`), as node `me`. Returns the proposer and the prepares to send.
    pub fn start(
        me: NodeId,
        parent: RingEpoch,
        voters: BTreeSet<NodeId>,
        own: Proposal,
        max_rounds: u32,
    ) -> (Proposer, Vec<(NodeId, CommitMessage)>) {
        let mut proposer = Proposer {
            parent,
            voters,
            own,
            ballot: Ballot { round: 0, node: me },
            highest_seen: 0,
            rounds: 0,
            max_rounds: max_rounds.max(1),
            phase: Phase::Done(Outcome::Undecided),
        };
        let messages = proposer.new_round();
        (proposer, messages)
    }

    /// The outcome, once there is one.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.phase {
            Phase::Done(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// A majority of the voters.
    fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn new_round(&mut self) -> Vec<(NodeId, CommitMessage)> {
        if self.rounds >= self.max_rounds {
            self.phase = Phase::Done(Outcome::Undecided);
            return Vec::new();
        }
        self.rounds += 1;
        self.ballot.round = self.highest_seen.max(self.ballot.round) + 1;
        self.highest_seen = self.ballot.round;
        self.phase = Phase::Preparing {
            promises: BTreeMap::new(),
        };
        let message = CommitMessage::Prepare {
            parent: self.parent,
            ballot: self.ballot.clone(),
        };
        self.voters
            .iter()
            .map(|v| (v.clone(), message.clone()))
            .collect()
    }

    /// No answer came in time: tries again with a higher ballot (or gives up, undecided, after
    /// `max_rounds`). Nothing happens once there is an outcome.
    pub fn retry(&mut self) -> Vec<(NodeId, CommitMessage)> {
        if self.outcome().is_some() {
            return Vec::new();
        }
        self.new_round()
    }

    /// `from`'s reply. Returns the messages to send next (none while waiting or when done).
    pub fn handle(&mut self, from: &NodeId, reply: CommitReply) -> Vec<(NodeId, CommitMessage)> {
        if self.outcome().is_some() || !self.voters.contains(from) {
            return Vec::new();
        }
        match reply {
            CommitReply::Moved {
                epoch,
                next_made_by,
            } => {
                let outcome = match next_made_by {
                    Some(plan) if plan == self.own.plan => Outcome::Committed,
                    Some(plan) => Outcome::Lost { winner: plan },
                    None => Outcome::Stale { epoch },
                };
                self.phase = Phase::Done(outcome);
                Vec::new()
            }
            CommitReply::Refused { ballot, promised } => {
                self.highest_seen = self.highest_seen.max(promised.round);
                if ballot == self.ballot {
                    self.new_round()
                } else {
                    Vec::new()
                }
            }
            CommitReply::Promise { ballot, accepted } => {
                if ballot != self.ballot {
                    return Vec::new();
                }
                let majority = self.majority();
                let Phase::Preparing { promises } = &mut self.phase else {
                    return Vec::new();
                };
                promises.insert(from.clone(), accepted);
                if promises.len() < majority {
                    return Vec::new();
                }
                // The proposal of the highest ballot any promise carries, else our own.
                let value = promises
                    .values()
                    .flatten()
                    .max_by(|a, b| a.0.cmp(&b.0))
                    .map_or_else(|| self.own.clone(), |(_, p)| p.clone());
                self.phase = Phase::Accepting {
                    value: value.clone(),
                    accepts: BTreeSet::new(),
                };
                let message = CommitMessage::Accept {
                    parent: self.parent,
                    ballot: self.ballot.clone(),
                    proposal: value,
                };
                self.voters
                    .iter()
                    .map(|v| (v.clone(), message.clone()))
                    .collect()
            }
            CommitReply::Accepted { ballot } => {
                if ballot != self.ballot {
                    return Vec::new();
                }
                let majority = self.majority();
                let Phase::Accepting { value, accepts } = &mut self.phase else {
                    return Vec::new();
                };
                accepts.insert(from.clone());
                if accepts.len() >= majority {
                    let outcome = if value.plan == self.own.plan {
                        Outcome::Committed
                    } else {
                        Outcome::Lost { winner: value.plan }
                    };
                    self.phase = Phase::Done(outcome);
                }
                Vec::new()
            }
        }
    }
}
