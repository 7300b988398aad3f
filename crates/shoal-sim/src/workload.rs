//! What clients do: the operations of each workload, one client at a time, with values the
//! [checker](crate::checker) can trace back to the write that made them.
//!
//! A [`Workload`] hands a client its next [`Step`] (the request to send and what to record in
//! the [`History`](crate::history::History)), and learns the outcome with
//! [`Workload::completed`]. It does no I/O and keeps no clock, so the simulator and the
//! real-cluster harness drive the same workloads. Every write's context comes from a read the
//! same client recorded just before (or is empty), which is what the checker's rules assume.
//!
//! The workloads ([`WorkloadKind`]):
//! - **set-add** — Jepsen's Riak test: read, union the siblings' sets, add a unique element,
//!   write back with the read's context.
//! - **blind writes** — unique values with an empty context, spread over the keys and capped
//!   per key so siblings stay under the limit.
//! - **single writer** — each key belongs to one client, which reads and then writes with the
//!   read's context, strictly in sequence: there must never be siblings.
//! - **put/delete** — read, then put a new value or delete, both with the read's context.

use std::collections::BTreeSet;

use bytes::Bytes;
use rand::RngExt;
use rand::rngs::StdRng;
use shoal_causality::CausalContext;
use shoal_protocol::{ClientRequest, ClientResponse};
use shoal_types::{Key, RequestOptions};

use crate::history::{Atom, ClientId, OpId, OpKind, Value};

/// Which workload clients run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    /// Read-modify-write set adds (Jepsen's Riak test).
    SetAdd,
    /// Unique values written with an empty context.
    BlindWrites,
    /// One sequential read-then-write client per key.
    SingleWriter,
    /// Reads followed by puts or deletes with the read's context.
    PutDelete,
    /// Chains of puts, each written with the context the previous put of the chain returned
    /// (`Written { context }`), started blind or after a read: a put's answer must cover only
    /// what its writer saw plus its own write, or a chained put drops other writers' values.
    PutChains,
}

/// How a workload is set up.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadConfig {
    /// Which workload.
    pub kind: WorkloadKind,
    /// How many keys (named `k0`, `k1`, …). Single writer needs at least one per client.
    pub keys: usize,
    /// How many clients.
    pub clients: usize,
    /// Most blind writes per key, below the cluster's sibling limit.
    pub max_blind_writes_per_key: u32,
    /// Of the writes, the fraction that are deletes (put/delete workload).
    pub delete_fraction: f64,
    /// The cluster's N, to build requests with an impossible W.
    pub replication: u8,
    /// The cluster's value limit, to build values over it.
    pub max_value_bytes: usize,
    /// Reads ask PR and writes PW of a majority of N, so that PR + PW > N: every read meets
    /// every acknowledged write on a primary, even when writes went to fallbacks. What a single
    /// writer needs for I3 under sloppy quorums; with the default PR = PW = 0 a read can miss a
    /// write held only by fallbacks, and a write built on that read is concurrent with it
    /// (`docs/hints.md`). On by default for the single-writer workload.
    pub primary_quorums: bool,
}

/// The request a client sends next, and what to record of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The key.
    pub key: Key,
    /// What to send to a node.
    pub request: ClientRequest,
    /// What to record in the history.
    pub kind: OpKind,
}

/// Clients' workload state. See the module docs.
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    keys: Vec<Key>,
    clients: Vec<ClientState>,
    next_atom: u64,
    blind_writes: Vec<u32>,
    poison_fraction: f64,
}

/// What one client is in the middle of.
#[derive(Debug, Clone)]
enum ClientState {
    /// Next: a read (or a blind write).
    Idle,
    /// The read `op` of key `key` is in flight.
    Reading { key: usize, op: OpId },
    /// The read `op` returned; next: the write that follows it.
    Read {
        key: usize,
        op: OpId,
        values: Vec<Bytes>,
        context: CausalContext,
    },
    /// The put `op` of key `key` is in flight (put chains only).
    Writing { key: usize, op: OpId },
    /// The put `op` was acknowledged with `context`; next, maybe, a put chained on it.
    Wrote {
        key: usize,
        op: OpId,
        context: CausalContext,
    },
}

impl WorkloadConfig {
    /// A workload over `keys` keys and `clients` clients, for a cluster with N=3 and the given
    /// value limit.
    pub fn new(kind: WorkloadKind, keys: usize, clients: usize) -> Self {
        WorkloadConfig {
            kind,
            keys: keys.max(clients).max(1),
            clients: clients.max(1),
            max_blind_writes_per_key: 48,
            delete_fraction: 0.3,
            replication: 3,
            max_value_bytes: 16 * 1024,
            primary_quorums: kind == WorkloadKind::SingleWriter,
        }
    }
}

impl Workload {
    /// A workload in its initial state.
    pub fn new(config: WorkloadConfig) -> Self {
        let keys = (0..config.keys)
            .filter_map(|i| Key::new(Bytes::from(format!("k{i}"))).ok())
            .collect::<Vec<_>>();
        Workload {
            clients: vec![ClientState::Idle; config.clients],
            blind_writes: vec![0; keys.len()],
            keys,
            config,
            next_atom: 1,
            poison_fraction: 0.0,
        }
    }

    /// The keys the workload uses.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Makes this fraction of writes requests that must fail definitely (an impossible W, or a
    /// value over the limit), to test that such failures are applied nowhere (I6). Zero by
    /// default; set it to zero for healthy windows, where every request must succeed.
    pub fn set_poison_fraction(&mut self, fraction: f64) {
        self.poison_fraction = fraction.clamp(0.0, 1.0);
    }

    /// The next request of `client`.
    pub fn next(&mut self, client: ClientId, rng: &mut StdRng) -> Step {
        let c = client.0 as usize % self.clients.len();
        if let ClientState::Read {
            key,
            op,
            values,
            context,
        } = self.clients[c].clone()
        {
            self.clients[c] = ClientState::Idle;
            return self.write_after_read(key, op, &values, context, rng);
        }
        if let ClientState::Wrote { key, op, context } = self.clients[c].clone() {
            self.clients[c] = ClientState::Idle;
            if rng.random_bool(0.7) {
                let atom = self.atom();
                let value = self.plain_value(atom, rng);
                return self.put(key, value, atom, Some(op), context, rng);
            }
        }
        let key = match self.config.kind {
            WorkloadKind::SingleWriter => {
                let owned: Vec<usize> = (0..self.keys.len())
                    .filter(|k| k % self.clients.len() == c)
                    .collect();
                owned[rng.random_range(0..owned.len())]
            }
            _ => rng.random_range(0..self.keys.len()),
        };
        let blind_share = match self.config.kind {
            WorkloadKind::BlindWrites => 0.7,
            WorkloadKind::PutChains => 0.5,
            _ => 0.0,
        };
        if blind_share > 0.0 && rng.random_bool(blind_share) {
            let open: Vec<usize> = (0..self.keys.len())
                .filter(|k| self.blind_writes[*k] < self.config.max_blind_writes_per_key)
                .collect();
            if !open.is_empty() {
                let key = open[rng.random_range(0..open.len())];
                self.blind_writes[key] += 1;
                let atom = self.atom();
                let value = self.plain_value(atom, rng);
                return self.put(key, value, atom, None, CausalContext::empty(), rng);
            }
        }
        Step {
            key: self.keys[key].clone(),
            request: ClientRequest::Get {
                key: self.keys[key].clone(),
                options: self.options(),
            },
            kind: OpKind::Read,
        }
    }

    /// Tells the workload that `client` invoked `step` as operation `op` (call right after
    /// recording it).
    pub fn invoked(&mut self, client: ClientId, op: OpId, step: &Step) {
        let c = client.0 as usize % self.clients.len();
        let Some(key) = self.keys.iter().position(|k| *k == step.key) else {
            return;
        };
        match step.kind {
            OpKind::Read => self.clients[c] = ClientState::Reading { key, op },
            OpKind::Put { .. } if self.config.kind == WorkloadKind::PutChains => {
                self.clients[c] = ClientState::Writing { key, op }
            }
            _ => {}
        }
    }

    /// Tells the workload how `client`'s operation `op` ended: the node's answer, or `None`
    /// when none came.
    pub fn completed(&mut self, client: ClientId, op: OpId, answer: Option<&ClientResponse>) {
        let c = client.0 as usize % self.clients.len();
        if let ClientState::Writing { key, op: writing } = self.clients[c] {
            if writing == op {
                self.clients[c] = match answer {
                    Some(ClientResponse::Written { context }) => ClientState::Wrote {
                        key,
                        op,
                        context: context.clone(),
                    },
                    _ => ClientState::Idle,
                };
            }
            return;
        }
        let ClientState::Reading { key, op: reading } = self.clients[c] else {
            return;
        };
        if reading != op {
            return;
        }
        self.clients[c] = match answer {
            // Blind writers only read to observe; their writes never carry a context.
            _ if self.config.kind == WorkloadKind::BlindWrites => ClientState::Idle,
            Some(ClientResponse::Read { values, context }) => ClientState::Read {
                key,
                op,
                values: values.clone(),
                context: context.clone(),
            },
            _ => ClientState::Idle,
        };
    }

    /// The options of every request: the cluster's defaults, or a majority of primaries.
    fn options(&self) -> RequestOptions {
        if !self.config.primary_quorums {
            return RequestOptions::default();
        }
        let majority = self.config.replication / 2 + 1;
        RequestOptions {
            pr: Some(majority),
            pw: Some(majority),
            ..RequestOptions::default()
        }
    }

    fn write_after_read(
        &mut self,
        key: usize,
        read: OpId,
        values: &[Bytes],
        context: CausalContext,
        rng: &mut StdRng,
    ) -> Step {
        let atom = self.atom();
        match self.config.kind {
            WorkloadKind::SetAdd => {
                let mut union: BTreeSet<Atom> = values
                    .iter()
                    .filter_map(|v| Value::parse(v))
                    .flat_map(|v| v.atoms().to_vec())
                    .collect();
                union.insert(atom);
                let value = Value::Set(union.into_iter().collect()).encode();
                self.put(key, value, atom, Some(read), context, rng)
            }
            WorkloadKind::PutDelete
                if !values.is_empty() && rng.random_bool(self.config.delete_fraction) =>
            {
                let k = self.keys[key].clone();
                Step {
                    key: k.clone(),
                    request: ClientRequest::Delete {
                        key: k,
                        context,
                        options: self.options(),
                    },
                    kind: OpKind::Delete { read: Some(read) },
                }
            }
            _ => {
                let value = self.plain_value(atom, rng);
                self.put(key, value, atom, Some(read), context, rng)
            }
        }
    }

    /// A put, possibly turned into one that must fail definitely.
    fn put(
        &mut self,
        key: usize,
        mut value: Bytes,
        atom: Atom,
        read: Option<OpId>,
        context: CausalContext,
        rng: &mut StdRng,
    ) -> Step {
        let mut options = self.options();
        if self.poison_fraction > 0.0 && rng.random_bool(self.poison_fraction) {
            if rng.random_bool(0.5) {
                options.w = Some(self.config.replication.saturating_add(1));
            } else {
                value = Value::plain_padded(atom, self.config.max_value_bytes + 1);
            }
        }
        let k = self.keys[key].clone();
        Step {
            key: k.clone(),
            request: ClientRequest::Put {
                key: k,
                value: value.clone(),
                context,
                options,
            },
            kind: OpKind::Put { value, atom, read },
        }
    }

    fn plain_value(&self, atom: Atom, rng: &mut StdRng) -> Bytes {
        let padding = if rng.random_bool(0.1) {
            rng.random_range(0..512)
        } else {
            0
        };
        Value::plain_padded(atom, padding)
    }

    fn atom(&mut self) -> Atom {
        let atom = Atom(self.next_atom);
        self.next_atom += 1;
        atom
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use shoal_protocol::RequestError;

    use super::*;

    fn answer_read(w: &mut Workload, client: ClientId, op: OpId, values: Vec<Bytes>) {
        let response = ClientResponse::Read {
            values,
            context: CausalContext::empty(),
        };
        w.completed(client, op, Some(&response));
    }

    #[test]
    fn set_add_writes_the_union_of_what_it_read_plus_a_new_atom() {
        let mut w = Workload::new(WorkloadConfig::new(WorkloadKind::SetAdd, 4, 1));
        let mut rng = StdRng::seed_from_u64(1);
        let c = ClientId(0);
        let read = w.next(c, &mut rng);
        assert_eq!(read.kind, OpKind::Read);
        w.invoked(c, OpId(0), &read);
        let a = Value::Set(vec![Atom(100), Atom(101)]).encode();
        let b = Value::Set(vec![Atom(102)]).encode();
        answer_read(&mut w, c, OpId(0), vec![a, b]);
        let write = w.next(c, &mut rng);
        assert_eq!(write.key, read.key);
        let OpKind::Put { value, atom, read } = write.kind else {
            panic!("expected a put, got {:?}", write.kind);
        };
        assert_eq!(read, Some(OpId(0)));
        let set = Value::parse(&value).unwrap();
        assert_eq!(set.atoms(), &[atom, Atom(100), Atom(101), Atom(102)]);
    }

    #[test]
    fn a_failed_read_is_not_followed_by_a_write() {
        let mut w = Workload::new(WorkloadConfig::new(WorkloadKind::PutDelete, 4, 1));
        let mut rng = StdRng::seed_from_u64(2);
        let c = ClientId(0);
        let read = w.next(c, &mut rng);
        w.invoked(c, OpId(0), &read);
        let failed = ClientResponse::Failed(RequestError::Timeout {
            required: 2,
            answered: 1,
        });
        w.completed(c, OpId(0), Some(&failed));
        assert_eq!(w.next(c, &mut rng).kind, OpKind::Read);
    }

    #[test]
    fn single_writers_only_touch_their_own_keys() {
        let mut w = Workload::new(WorkloadConfig::new(WorkloadKind::SingleWriter, 9, 3));
        let mut rng = StdRng::seed_from_u64(3);
        for client in 0..3u32 {
            for _ in 0..20 {
                let step = w.next(ClientId(client), &mut rng);
                let index: usize = std::str::from_utf8(&step.key.as_bytes()[1..])
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(index % 3, client as usize);
            }
        }
    }

    #[test]
    fn blind_writes_stop_at_the_per_key_cap_and_atoms_are_unique() {
        let mut config = WorkloadConfig::new(WorkloadKind::BlindWrites, 2, 1);
        config.max_blind_writes_per_key = 3;
        let mut w = Workload::new(config);
        let mut rng = StdRng::seed_from_u64(4);
        let mut atoms = BTreeSet::new();
        for _ in 0..200 {
            if let OpKind::Put { atom, read, .. } = w.next(ClientId(0), &mut rng).kind {
                assert_eq!(read, None);
                assert!(atoms.insert(atom), "atom {atom} reused");
            }
        }
        assert_eq!(atoms.len(), 6, "two keys, three writes each");
    }

    #[test]
    fn poisoned_writes_break_a_limit() {
        let mut w = Workload::new(WorkloadConfig::new(WorkloadKind::BlindWrites, 4, 1));
        w.set_poison_fraction(1.0);
        let mut rng = StdRng::seed_from_u64(5);
        let mut seen = 0;
        for _ in 0..50 {
            if let ClientRequest::Put { value, options, .. } = w.next(ClientId(0), &mut rng).request
            {
                assert!(options.w == Some(4) || value.len() > 16 * 1024);
                seen += 1;
            }
        }
        assert!(seen > 0);
    }
}
