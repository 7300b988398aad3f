//! What clients did and saw: every operation as invoke → ok / fail / indeterminate, with what
//! a read returned and which read a write took its context from.
//!
//! A history is filled by whoever drives the clients — the simulator, or the real-cluster fault
//! harness from real processes — and read by the [checker](crate::checker). Times are offsets
//! from the start of the run; only their order and differences matter.
//!
//! Values follow the format of [`Value`], so that the checker can tell which write every value
//! it sees came from: each write adds one unique [`Atom`].

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use shoal_protocol::{ClientResponse, RequestError};
use shoal_types::Key;

/// Names one operation in a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Names one client: its operations are sequential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

/// The unique element a write adds. Every write of a run gets its own atom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Atom(pub u64);

/// Everything a run's clients did, in invocation order.
#[derive(Clone, Debug, Default)]
pub struct History {
    ops: Vec<Op>,
}

/// One client operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// Its name (its index in the history).
    pub id: OpId,
    /// Who invoked it.
    pub client: ClientId,
    /// The key it is about.
    pub key: Key,
    /// What it asked.
    pub kind: OpKind,
    /// When it was invoked.
    pub invoked: Duration,
    /// When its outcome was known (`None` while pending).
    pub completed: Option<Duration>,
    /// What came of it.
    pub outcome: Outcome,
    /// Whether it was invoked in a healthy window (faults healed): it must then succeed (I7).
    pub healthy: bool,
}

/// What an operation asked.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// A get.
    Read,
    /// A put of `value`, which adds `atom`.
    Put {
        /// The value written (see [`Value`]).
        value: Bytes,
        /// The atom this write adds.
        atom: Atom,
        /// The read whose context the write carried; `None` for a blind write (empty context).
        read: Option<OpId>,
    },
    /// A delete.
    Delete {
        /// The read whose context the delete carried; `None` for an empty context.
        read: Option<OpId>,
    },
}

/// What came of an operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Not known yet. Checked as indeterminate.
    Pending,
    /// Succeeded. For a read, the distinct values it returned (empty: not found).
    Ok(Vec<Bytes>),
    /// Failed definitely: the request was applied nowhere (I6).
    Failed(String),
    /// Failed with an unknown outcome: a write may have been applied (`QuorumFailed`,
    /// `Timeout`, no reply, connection lost after sending).
    Indeterminate(String),
}

/// A value in the format every workload writes: the checker parses what it reads with it.
///
/// - `p<atom>` — a plain value, optionally followed by `.` and padding (ignored).
/// - `s<atom>,<atom>,…` — a set of atoms (the set-add workload); `s` alone is the empty set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// One write's value.
    Plain(Atom),
    /// A grow-only set, the union of what the writer read plus its own atom.
    Set(Vec<Atom>),
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// Records the invocation of an operation and returns its id.
    pub fn invoke(
        &mut self,
        client: ClientId,
        key: Key,
        kind: OpKind,
        at: Duration,
        healthy: bool,
    ) -> OpId {
        let id = OpId(self.ops.len() as u64);
        self.ops.push(Op {
            id,
            client,
            key,
            kind,
            invoked: at,
            completed: None,
            outcome: Outcome::Pending,
            healthy,
        });
        id
    }

    /// Records the outcome of operation `id`. A second completion of the same operation is
    /// ignored: the first outcome a client saw is the one it acted on.
    pub fn complete(&mut self, id: OpId, at: Duration, outcome: Outcome) {
        if let Some(op) = self.ops.get_mut(id.0 as usize)
            && op.outcome == Outcome::Pending
        {
            op.completed = Some(at);
            op.outcome = outcome;
        }
    }

    /// Operation `id`, if it exists.
    pub fn op(&self, id: OpId) -> Option<&Op> {
        self.ops.get(id.0 as usize)
    }

    /// Every operation, in invocation order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// How many operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing was invoked.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl Op {
    /// Whether this is a put or a delete.
    pub fn is_write(&self) -> bool {
        !matches!(self.kind, OpKind::Read)
    }

    /// The read this write took its context from.
    pub fn context_read(&self) -> Option<OpId> {
        match &self.kind {
            OpKind::Read => None,
            OpKind::Put { read, .. } | OpKind::Delete { read } => *read,
        }
    }

    /// The atom a put adds.
    pub fn atom(&self) -> Option<Atom> {
        match &self.kind {
            OpKind::Put { atom, .. } => Some(*atom),
            _ => None,
        }
    }

    /// Whether it succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// Whether it failed definitely.
    pub fn is_definite_failure(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }

    /// Whether its outcome is unknown (indeterminate or still pending).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self.outcome, Outcome::Indeterminate(_) | Outcome::Pending)
    }

    /// What a successful read returned.
    pub fn read_values(&self) -> Option<&[Bytes]> {
        match (&self.kind, &self.outcome) {
            (OpKind::Read, Outcome::Ok(values)) => Some(values),
            _ => None,
        }
    }
}

impl Outcome {
    /// Classifies a node's answer to a client request: definite errors are those after which
    /// nothing was applied (see [`RequestError::is_indeterminate`]).
    pub fn from_response(response: &ClientResponse) -> Outcome {
        match response {
            ClientResponse::Read { values, .. } => Outcome::Ok(values.clone()),
            ClientResponse::Written { .. } => Outcome::Ok(Vec::new()),
            ClientResponse::Failed(error) => Outcome::from_error(error),
            other => Outcome::Failed(format!("unexpected answer {other:?}")),
        }
    }

    /// Classifies a request error.
    pub fn from_error(error: &RequestError) -> Outcome {
        if error.is_indeterminate() {
            Outcome::Indeterminate(error.to_string())
        } else {
            Outcome::Failed(error.to_string())
        }
    }
}

impl Value {
    /// The bytes of the value.
    pub fn encode(&self) -> Bytes {
        Bytes::from(self.to_string())
    }

    /// A plain value carrying `padding` filler bytes (to make values large).
    pub fn plain_padded(atom: Atom, padding: usize) -> Bytes {
        let mut s = format!("p{}", atom.0);
        if padding > 0 {
            s.push('.');
            s.extend(std::iter::repeat_n('x', padding));
        }
        Bytes::from(s)
    }

    /// Parses a value; `None` when it is not in the format (so never written by a workload).
    pub fn parse(bytes: &[u8]) -> Option<Value> {
        let text = std::str::from_utf8(bytes).ok()?;
        if let Some(rest) = text.strip_prefix('p') {
            let number = rest.split_once('.').map_or(rest, |(n, _)| n);
            return number.parse().ok().map(|n| Value::Plain(Atom(n)));
        }
        let rest = text.strip_prefix('s')?;
        if rest.is_empty() {
            return Some(Value::Set(Vec::new()));
        }
        let atoms: Option<Vec<Atom>> = rest.split(',').map(|n| n.parse().ok().map(Atom)).collect();
        atoms.map(Value::Set)
    }

    /// The atoms the value holds.
    pub fn atoms(&self) -> &[Atom] {
        match self {
            Value::Plain(a) => std::slice::from_ref(a),
            Value::Set(atoms) => atoms,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Plain(a) => write!(f, "p{}", a.0),
            Value::Set(atoms) => {
                f.write_str("s")?;
                for (i, a) in atoms.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}", a.0)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_does_not_parse() {
        let plain = Value::Plain(Atom(42));
        assert_eq!(Value::parse(&plain.encode()), Some(plain));
        let set = Value::Set(vec![Atom(1), Atom(7), Atom(9)]);
        assert_eq!(Value::parse(&set.encode()), Some(set));
        assert_eq!(Value::parse(b"s"), Some(Value::Set(Vec::new())));
        assert_eq!(
            Value::parse(&Value::plain_padded(Atom(5), 10)),
            Some(Value::Plain(Atom(5)))
        );
        assert_eq!(Value::parse(b"garbage"), None);
        assert_eq!(Value::parse(b"s1,,2"), None);
        assert_eq!(Value::parse(b"p"), None);
    }

    #[test]
    fn a_second_completion_is_ignored() {
        let mut h = History::new();
        let key = Key::new(&b"k"[..]).unwrap();
        let id = h.invoke(ClientId(0), key, OpKind::Read, Duration::ZERO, false);
        h.complete(id, Duration::from_millis(1), Outcome::Ok(Vec::new()));
        h.complete(id, Duration::from_millis(2), Outcome::Failed("late".into()));
        assert!(h.op(id).unwrap().is_ok());
        assert_eq!(h.op(id).unwrap().completed, Some(Duration::from_millis(1)));
    }
}
