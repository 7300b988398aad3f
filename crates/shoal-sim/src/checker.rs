//! The history checker: given what clients did and saw ([`History`]) and what the replicas hold
//! once faults have stopped ([`FinalState`]), it counts every breach of Shoal's promises
//! (DESIGN §12, I1–I7) and reports one figure per promise.
//!
//! It needs no simulator: the real-cluster fault harness records a history from real processes,
//! reads every replica of every key (`GetLocal` on each primary), and calls [`check`].
//!
//! How a missing value is judged. Every write adds a unique [`Atom`](crate::history::Atom), and
//! every write's context comes from a recorded read (or is empty). A write's context covers a
//! dot only if some read saw that dot's value first: the first write whose context covered it
//! took that context from a read of an object still holding it (a dot leaves an object only when
//! a write whose context covers it supersedes it). So an atom may be absent from the final state
//! only if some write that was applied read it and wrote a value without it (a plain put or a
//! delete; a set-add carries what it read forward): an acknowledged write, or an indeterminate
//! put whose own value was seen somewhere (applied, so its supersession took effect). An
//! indeterminate delete leaves no value to prove it, so it still excuses what it read.
//! A context may also come from a put's answer (`Written { context }`, the put-chain workload):
//! it covers what that put's context covered plus the put's own value, back along the chain to
//! a read or a blind put — exactly what a put must answer (issue 11, item 1); an answer that
//! covered more (the whole stored object's context) shows here as acknowledged writes lost.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use shoal_causality::Object;
use shoal_types::{Key, NodeId, PartitionId};

use crate::history::{Atom, History, Op, OpKind, Value};

/// What the replicas hold after heal: every replica of every key the history touched.
#[derive(Clone, Debug, Default)]
pub struct FinalState {
    keys: BTreeMap<Key, Vec<(NodeId, Option<Object>)>>,
    trees: BTreeMap<PartitionId, Vec<(NodeId, [u8; 16])>>,
    /// What each primary held once the faults stopped, before any read that repairs: how far
    /// the replicas converged without help (only anti-entropy would close this gap).
    before_repair: BTreeMap<Key, Vec<(NodeId, Option<Object>)>>,
    /// Per node, whether it still held hints for another node at the end (when given).
    hints: BTreeMap<NodeId, bool>,
}

/// How strict the liveness figure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// An operation invoked in a healthy window must succeed within this time (I7).
    pub liveness_deadline: Duration,
}

/// Which promise a figure measures, and so whether a non-zero value fails the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promise {
    /// A safety invariant (I1–I6): any breach fails the run.
    Safety(&'static str),
    /// Liveness (I7): any breach fails the run.
    Liveness,
    /// Measured and reported, never failed (stale reads are not promised).
    Information,
}

/// One line of a report: `name: value of total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figure {
    /// What is counted.
    pub name: &'static str,
    /// How many breaches (or events, for information).
    pub value: u64,
    /// Out of how many.
    pub total: u64,
    /// What the figure checks.
    pub promise: Promise,
}

/// What the checker found in one history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// I1, I2: acknowledged values missing from the final state without a write that superseded
    /// them. Total: acknowledged puts.
    pub acknowledged_writes_lost: Figure,
    /// I3: keys written by one sequential read-then-write client, none of whose writes may
    /// have been applied without its knowing (indeterminate puts are fine if their value was
    /// never seen: they were applied nowhere), on which a read or the final state showed
    /// siblings.
    pub single_writer_siblings: Figure,
    /// I4: distinct values read (or held by a replica) that no operation ever wrote.
    pub values_never_written: Figure,
    /// I4: acknowledged deletes some of whose superseded values are back in the final state.
    pub deletes_undone: Figure,
    /// I5: keys whose replicas differ after heal.
    pub unconverged_keys: Figure,
    /// I5: partitions whose tictac trees differ among their replicas (when trees were given).
    pub unconverged_trees: Option<Figure>,
    /// I5: nodes still holding hints after the heal (when hint queues were given).
    pub hints_left: Option<Figure>,
    /// Information: keys whose replicas differed after the heal, before any repairing read
    /// (when that state was given). Not a promise until anti-entropy exists: reported, never
    /// failed; `unconverged_keys` is measured after the final reads repaired.
    pub unconverged_before_repair: Option<Figure>,
    /// I6: puts refused with a definite error whose value appears anywhere.
    pub definite_failures_applied: Figure,
    /// I7: operations invoked in a healthy window that did not succeed within the deadline.
    pub stuck_requests: Figure,
    /// Information: reads that missed a write acknowledged before they started, or showed a
    /// value an acknowledged delete had superseded.
    pub stale_reads: Figure,
    /// Information: puts answered indeterminate whose value was seen.
    pub indeterminate_applied: Figure,
    /// A few breaches spelled out, for the failure message.
    pub examples: Vec<String>,
}

/// Figures summed over many runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Runs added.
    pub runs: u64,
    /// The summed figures, in report order.
    pub figures: Vec<Figure>,
}

/// How many examples a report keeps.
const MAX_EXAMPLES: usize = 20;

impl FinalState {
    /// An empty final state.
    pub fn new() -> Self {
        FinalState::default()
    }

    /// Records what `node` holds for `key` (`None`: nothing).
    pub fn add_replica(&mut self, key: Key, node: NodeId, object: Option<Object>) {
        self.keys.entry(key).or_default().push((node, object));
    }

    /// Records whether `node` still holds hints for any other node.
    pub fn add_hints(&mut self, node: NodeId, holds_hints: bool) {
        self.hints.insert(node, holds_hints);
    }

    /// Records the root of `node`'s tictac tree for `partition`.
    pub fn add_tree(&mut self, partition: PartitionId, node: NodeId, root: [u8; 16]) {
        self.trees.entry(partition).or_default().push((node, root));
    }

    /// Records what `node` held for `key` before any repairing read (`None`: nothing).
    pub fn add_replica_before_repair(&mut self, key: Key, node: NodeId, object: Option<Object>) {
        self.before_repair
            .entry(key)
            .or_default()
            .push((node, object));
    }

    /// The replicas recorded for `key`.
    pub fn replicas(&self, key: &Key) -> &[(NodeId, Option<Object>)] {
        self.keys.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every replica of `key` merged: what the key converges to.
    pub fn merged(&self, key: &Key) -> Object {
        self.replicas(key)
            .iter()
            .filter_map(|(_, o)| o.as_ref())
            .fold(Object::new(), |acc, o| acc.merge(o))
    }
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            liveness_deadline: Duration::from_secs(5),
        }
    }
}

impl Report {
    /// Every figure, in the order they are printed.
    pub fn figures(&self) -> Vec<&Figure> {
        let mut all = vec![
            &self.acknowledged_writes_lost,
            &self.single_writer_siblings,
            &self.values_never_written,
            &self.deletes_undone,
        ];
        all.extend(self.unconverged_before_repair.as_ref());
        all.push(&self.unconverged_keys);
        all.extend(self.unconverged_trees.as_ref());
        all.extend(self.hints_left.as_ref());
        all.extend([
            &self.definite_failures_applied,
            &self.stuck_requests,
            &self.stale_reads,
            &self.indeterminate_applied,
        ]);
        all
    }

    /// The figures that break a promise (safety or liveness) with a non-zero value.
    pub fn violations(&self) -> Vec<&Figure> {
        self.figures()
            .into_iter()
            .filter(|f| f.is_violation())
            .collect()
    }

    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.violations().is_empty()
    }
}

impl Figure {
    fn new(name: &'static str, promise: Promise) -> Figure {
        Figure {
            name,
            value: 0,
            total: 0,
            promise,
        }
    }

    /// Whether this figure breaks a promise.
    pub fn is_violation(&self) -> bool {
        self.value > 0 && self.promise != Promise::Information
    }
}

impl Summary {
    /// An empty summary.
    pub fn new() -> Self {
        Summary::default()
    }

    /// Adds one run's figures.
    pub fn add(&mut self, report: &Report) {
        self.runs += 1;
        for figure in report.figures() {
            match self.figures.iter_mut().find(|f| f.name == figure.name) {
                Some(sum) => {
                    sum.value += figure.value;
                    sum.total += figure.total;
                }
                None => self.figures.push(figure.clone()),
            }
        }
    }

    /// The summed figure called `name`.
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }

    /// Whether every promise held in every run.
    pub fn passed(&self) -> bool {
        self.figures.iter().all(|f| !f.is_violation())
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} of {}", self.name, self.value, self.total)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for figure in self.figures() {
            writeln!(f, "{figure}")?;
        }
        for example in &self.examples {
            writeln!(f, "  {example}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for figure in &self.figures {
            writeln!(f, "{figure} over {} seeds", self.runs)?;
        }
        Ok(())
    }
}

/// Checks a history against the final state. See the module docs for the rules.
pub fn check(history: &History, final_state: &FinalState, options: &CheckOptions) -> Report {
    let mut checker = Checker::new(history, final_state);
    let mut report = Report {
        acknowledged_writes_lost: Figure::new("acknowledged writes lost", Promise::Safety("I1")),
        single_writer_siblings: Figure::new("siblings from single writers", Promise::Safety("I3")),
        values_never_written: Figure::new("values never written", Promise::Safety("I4")),
        deletes_undone: Figure::new("deletes undone", Promise::Safety("I4")),
        unconverged_keys: Figure::new("unconverged keys after heal", Promise::Safety("I5")),
        unconverged_trees: None,
        hints_left: None,
        unconverged_before_repair: None,
        definite_failures_applied: Figure::new(
            "definite failures found applied",
            Promise::Safety("I6"),
        ),
        stuck_requests: Figure::new("stuck requests in healthy windows", Promise::Liveness),
        stale_reads: Figure::new("stale reads", Promise::Information),
        indeterminate_applied: Figure::new(
            "indeterminate writes found applied",
            Promise::Information,
        ),
        examples: Vec::new(),
    };
    checker.lost_writes(&mut report);
    checker.single_writer_siblings(&mut report);
    checker.never_written(&mut report);
    checker.deletes_undone(&mut report);
    checker.convergence(&mut report);
    checker.definite_failures(&mut report);
    checker.stuck(&mut report, options);
    checker.stale_reads(&mut report);
    checker.indeterminate_applied(&mut report);
    report.examples = std::mem::take(&mut checker.examples);
    report
}

/// What the checks share: the history indexed by key, and the final state digested.
struct Checker<'a> {
    history: &'a History,
    final_state: &'a FinalState,
    by_key: BTreeMap<&'a Key, Vec<&'a Op>>,
    /// Per key: the atoms of the merged final object.
    final_atoms: BTreeMap<&'a Key, BTreeSet<Atom>>,
    /// Per key: the distinct values of the merged final object.
    final_values: BTreeMap<&'a Key, BTreeSet<Bytes>>,
    /// Per key: every atom seen anywhere (reads, any replica).
    seen_atoms: BTreeMap<&'a Key, BTreeSet<Atom>>,
    /// Per key: atoms a write that may have been applied read and did not carry forward.
    superseded: BTreeMap<&'a Key, BTreeSet<Atom>>,
    /// Every atom a put was invoked with, and the key it was for.
    written: BTreeMap<Atom, &'a Key>,
    examples: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(history: &'a History, final_state: &'a FinalState) -> Self {
        let mut by_key: BTreeMap<&Key, Vec<&Op>> = BTreeMap::new();
        let mut written = BTreeMap::new();
        for op in history.ops() {
            by_key.entry(&op.key).or_default().push(op);
            if let Some(atom) = op.atom() {
                written.insert(atom, &op.key);
            }
        }
        let mut checker = Checker {
            history,
            final_state,
            by_key,
            final_atoms: BTreeMap::new(),
            final_values: BTreeMap::new(),
            seen_atoms: BTreeMap::new(),
            superseded: BTreeMap::new(),
            written,
            examples: Vec::new(),
        };
        checker.digest();
        checker
    }

    fn digest(&mut self) {
        let keys: Vec<&Key> = self.by_key.keys().copied().collect();
        for key in keys {
            let merged = self.final_state.merged(key);
            let values: BTreeSet<Bytes> = merged.values().into_iter().collect();
            let atoms = values.iter().flat_map(|v| atoms_of(v)).collect();
            self.final_atoms.insert(key, atoms);
            self.final_values.insert(key, values);
            let mut seen = BTreeSet::new();
            for (_, object) in self.final_state.replicas(key) {
                for value in object.iter().flat_map(Object::values) {
                    seen.extend(atoms_of(&value));
                }
            }
            for op in &self.by_key[key] {
                if let Some(values) = op.read_values() {
                    seen.extend(values.iter().flat_map(|v| atoms_of(v)));
                }
            }
            let mut superseded = BTreeSet::new();
            for op in &self.by_key[key] {
                if op.is_definite_failure() {
                    continue;
                }
                // An indeterminate put may never have been applied: it excuses what it read only
                // if it provably was — its own atom seen in a read or on a replica (applied, its
                // value stays until a write that read it supersedes it, so it was seen).
                if op.is_indeterminate() && op.atom().is_some_and(|a| !seen.contains(&a)) {
                    continue;
                }
                let Some(read) = self.context_values(op) else {
                    continue;
                };
                let kept: BTreeSet<Atom> = match &op.kind {
                    OpKind::Put { value, .. } => atoms_of(value).into_iter().collect(),
                    _ => BTreeSet::new(),
                };
                for value in read {
                    superseded.extend(atoms_of(&value).into_iter().filter(|a| !kept.contains(a)));
                }
            }
            self.seen_atoms.insert(key, seen);
            self.superseded.insert(key, superseded);
        }
    }

    /// The values a write's context covers (same key only): what the read it took its context
    /// from returned, or, for a context a put's answer returned, that put's own value plus what
    /// its context covered, back along the chain to a read or a blind put.
    fn context_values(&self, op: &Op) -> Option<Vec<Bytes>> {
        let mut covered = Vec::new();
        let mut source = self.history.op(op.context_read()?)?;
        loop {
            if source.key != op.key {
                return None;
            }
            match &source.kind {
                OpKind::Read => {
                    covered.extend(source.read_values()?.iter().cloned());
                    return Some(covered);
                }
                OpKind::Put { value, read, .. } => {
                    covered.push(value.clone());
                    match read {
                        Some(r) => source = self.history.op(*r)?,
                        None => return Some(covered),
                    }
                }
                OpKind::Delete { read } => match read {
                    Some(r) => source = self.history.op(*r)?,
                    None => return Some(covered),
                },
            }
        }
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(text);
        }
    }

    fn lost_writes(&mut self, report: &mut Report) {
        let mut lost = Vec::new();
        for (key, ops) in &self.by_key {
            for op in ops {
                let (Some(atom), true) = (op.atom(), op.is_ok()) else {
                    continue;
                };
                report.acknowledged_writes_lost.total += 1;
                let present = self.final_atoms[key].contains(&atom);
                let superseded = self.superseded[key].contains(&atom);
                if !present && !superseded {
                    report.acknowledged_writes_lost.value += 1;
                    lost.push(format!(
                        "I1: {} ({atom}) on key {key:?} was acknowledged and is missing from the final state",
                        op.id
                    ));
                }
            }
        }
        lost.into_iter().for_each(|e| self.example(e));
    }

    fn single_writer_siblings(&mut self, report: &mut Report) {
        let mut found = Vec::new();
        for (key, ops) in &self.by_key {
            let writes: Vec<&&Op> = ops.iter().filter(|o| o.is_write()).collect();
            let Some(first) = writes.first() else {
                continue;
            };
            // An indeterminate write excuses the key only if it may have been applied: a put
            // whose value was seen somewhere (applied, perhaps late, beside the next write), or a
            // delete (which leaves no value to tell). A put never seen was applied nowhere.
            let seen = &self.seen_atoms[*key];
            let single = writes.iter().all(|w| {
                w.client == first.client
                    && w.context_read().is_some()
                    && (!w.is_indeterminate() || w.atom().is_some_and(|a| !seen.contains(&a)))
            });
            if !single {
                continue;
            }
            report.single_writer_siblings.total += 1;
            let read_siblings = ops.iter().find(|o| {
                o.read_values()
                    .is_some_and(|v| v.iter().collect::<BTreeSet<_>>().len() > 1)
            });
            let final_siblings = self.final_values[key].len() > 1;
            if read_siblings.is_some() || final_siblings {
                report.single_writer_siblings.value += 1;
                let at = read_siblings.map_or("the final state".to_owned(), |o| o.id.to_string());
                found.push(format!(
                    "I3: key {key:?} has one writer ({:?}) and siblings in {at}",
                    first.client
                ));
            }
        }
        found.into_iter().for_each(|e| self.example(e));
    }

    fn never_written(&mut self, report: &mut Report) {
        let mut seen: BTreeSet<(&Key, Bytes)> = BTreeSet::new();
        for (key, ops) in &self.by_key {
            for op in ops {
                for value in op.read_values().unwrap_or(&[]) {
                    seen.insert((key, value.clone()));
                }
            }
            for (_, object) in self.final_state.replicas(key) {
                for value in object.iter().flat_map(Object::values) {
                    seen.insert((key, value));
                }
            }
        }
        let mut found = Vec::new();
        for (key, value) in &seen {
            report.values_never_written.total += 1;
            let written = match Value::parse(value) {
                Some(v) => v.atoms().iter().all(|a| self.written.get(a) == Some(key)),
                None => false,
            };
            if !written {
                report.values_never_written.value += 1;
                found.push(format!(
                    "I4: value {value:?} on key {key:?} was never written"
                ));
            }
        }
        found.into_iter().for_each(|e| self.example(e));
    }

    fn deletes_undone(&mut self, report: &mut Report) {
        let mut found = Vec::new();
        for (key, ops) in &self.by_key {
            for op in ops {
                if !matches!(op.kind, OpKind::Delete { .. }) || !op.is_ok() {
                    continue;
                }
                report.deletes_undone.total += 1;
                let deleted = self.context_values(op).unwrap_or_default();
                if let Some(back) = deleted.iter().find(|v| self.final_values[key].contains(*v)) {
                    report.deletes_undone.value += 1;
                    found.push(format!(
                        "I4: {} deleted {back:?} on key {key:?}; it is back in the final state",
                        op.id
                    ));
                }
            }
        }
        found.into_iter().for_each(|e| self.example(e));
    }

    fn convergence(&mut self, report: &mut Report) {
        if !self.final_state.before_repair.is_empty() {
            let mut before = Figure::new("unconverged keys before repair", Promise::Information);
            for key in self.by_key.keys() {
                before.total += 1;
                let replicas = self
                    .final_state
                    .before_repair
                    .get(key)
                    .map_or(&[][..], Vec::as_slice);
                if !identical(replicas) {
                    before.value += 1;
                }
            }
            report.unconverged_before_repair = Some(before);
        }
        let mut found = Vec::new();
        for key in self.by_key.keys() {
            report.unconverged_keys.total += 1;
            let replicas = self.final_state.replicas(key);
            if !identical(replicas) {
                report.unconverged_keys.value += 1;
                let holders: Vec<String> = replicas
                    .iter()
                    .map(|(n, o)| format!("{n}: {:?}", o.as_ref().map(Object::values)))
                    .collect();
                found.push(format!(
                    "I5: key {key:?} differs between replicas: {}",
                    holders.join("; ")
                ));
            }
        }
        if !self.final_state.trees.is_empty() {
            let mut trees = Figure::new("unconverged partition trees", Promise::Safety("I5"));
            for (partition, roots) in &self.final_state.trees {
                trees.total += 1;
                if roots.windows(2).any(|w| w[0].1 != w[1].1) {
                    trees.value += 1;
                    found.push(format!("I5: tictac trees of {partition} differ"));
                }
            }
            report.unconverged_trees = Some(trees);
        }
        if !self.final_state.hints.is_empty() {
            let mut left = Figure::new("hint queues left after heal", Promise::Safety("I5"));
            for (node, holds) in &self.final_state.hints {
                left.total += 1;
                if *holds {
                    left.value += 1;
                    found.push(format!("I5: {node} still holds hints after the heal"));
                }
            }
            report.hints_left = Some(left);
        }
        found.into_iter().for_each(|e| self.example(e));
    }

    fn definite_failures(&mut self, report: &mut Report) {
        let mut found = Vec::new();
        for (key, ops) in &self.by_key {
            for op in ops {
                let (Some(atom), true) = (op.atom(), op.is_definite_failure()) else {
                    continue;
                };
                report.definite_failures_applied.total += 1;
                if self.seen_atoms[key].contains(&atom) {
                    report.definite_failures_applied.value += 1;
                    found.push(format!(
                        "I6: {} on key {key:?} failed definitely ({:?}) and {atom} was seen",
                        op.id, op.outcome
                    ));
                }
            }
        }
        found.into_iter().for_each(|e| self.example(e));
    }

    fn stuck(&mut self, report: &mut Report, options: &CheckOptions) {
        let mut found = Vec::new();
        for op in self.history.ops().iter().filter(|o| o.healthy) {
            report.stuck_requests.total += 1;
            let in_time = op
                .completed
                .is_some_and(|c| c.saturating_sub(op.invoked) <= options.liveness_deadline);
            if !(op.is_ok() && in_time) {
                report.stuck_requests.value += 1;
                found.push(format!(
                    "I7: {} on key {:?} invoked at {:?} in a healthy window: {:?} at {:?}",
                    op.id, op.key, op.invoked, op.outcome, op.completed
                ));
            }
        }
        found.into_iter().for_each(|e| self.example(e));
    }

    fn stale_reads(&self, report: &mut Report) {
        for ops in self.by_key.values() {
            // When each atom was first possibly superseded: the invocation of the earliest
            // write (not definitely failed) that read it and wrote a value without it.
            let mut superseded_at: BTreeMap<Atom, Duration> = BTreeMap::new();
            for w in ops
                .iter()
                .filter(|w| w.is_write() && !w.is_definite_failure())
            {
                let kept: BTreeSet<Atom> = match &w.kind {
                    OpKind::Put { value, .. } => atoms_of(value).into_iter().collect(),
                    _ => BTreeSet::new(),
                };
                for value in self.context_values(w).unwrap_or_default() {
                    for atom in atoms_of(&value).into_iter().filter(|a| !kept.contains(a)) {
                        let at = superseded_at.entry(atom).or_insert(w.invoked);
                        *at = (*at).min(w.invoked);
                    }
                }
            }
            // Acknowledged puts (atom, completion) and deletes (values deleted, completion).
            let acked_puts: Vec<(Atom, Duration)> = ops
                .iter()
                .filter(|w| w.is_ok())
                .filter_map(|w| Some((w.atom()?, w.completed?)))
                .collect();
            let acked_deletes: Vec<(Vec<Bytes>, Duration)> = ops
                .iter()
                .filter(|d| d.is_ok() && matches!(d.kind, OpKind::Delete { .. }))
                .filter_map(|d| Some((self.context_values(d)?, d.completed?)))
                .collect();
            for read in ops.iter() {
                let Some(values) = read.read_values() else {
                    continue;
                };
                report.stale_reads.total += 1;
                let (started, ended) = (read.invoked, read.completed.unwrap_or(Duration::MAX));
                let atoms: BTreeSet<Atom> = values.iter().flat_map(|v| atoms_of(v)).collect();
                let missed = acked_puts.iter().any(|(atom, acked)| {
                    *acked < started
                        && !atoms.contains(atom)
                        && superseded_at.get(atom).is_none_or(|at| *at >= ended)
                });
                let resurrected = acked_deletes.iter().any(|(deleted, acked)| {
                    *acked < started && deleted.iter().any(|v| values.contains(v))
                });
                if missed || resurrected {
                    report.stale_reads.value += 1;
                }
            }
        }
    }

    fn indeterminate_applied(&self, report: &mut Report) {
        for (key, ops) in &self.by_key {
            for op in ops {
                let (Some(atom), true) = (op.atom(), op.is_indeterminate()) else {
                    continue;
                };
                report.indeterminate_applied.total += 1;
                if self.seen_atoms[key].contains(&atom) {
                    report.indeterminate_applied.value += 1;
                }
            }
        }
    }
}

/// The atoms of a value; none when it does not parse (reported by the never-written check).
fn atoms_of(value: &[u8]) -> Vec<Atom> {
    Value::parse(value).map_or_else(Vec::new, |v| v.atoms().to_vec())
}

/// Whether every replica holds the same object (none recorded: not converged).
fn identical(replicas: &[(NodeId, Option<Object>)]) -> bool {
    match replicas.split_first() {
        Some(((_, first), rest)) => rest.iter().all(|(_, o)| o == first),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use shoal_causality::{Actor, CausalContext, Sibling};
    use shoal_types::Incarnation;

    use super::*;
    use crate::history::{ClientId, OpId, Outcome};

    const MS: Duration = Duration::from_millis(1);

    fn key(k: &str) -> Key {
        Key::new(Bytes::from(k.to_owned())).unwrap()
    }

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn plain(atom: u64) -> Bytes {
        Value::Plain(Atom(atom)).encode()
    }

    /// Builds histories step by step, with a clock that ticks per call.
    struct Builder {
        history: History,
        now: Duration,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                history: History::new(),
                now: Duration::ZERO,
            }
        }

        fn tick(&mut self) -> Duration {
            self.now += MS;
            self.now
        }

        fn read(&mut self, client: u32, k: &str, values: Vec<Bytes>) -> OpId {
            let at = self.tick();
            let id = self
                .history
                .invoke(ClientId(client), key(k), OpKind::Read, at, false);
            let done = self.tick();
            self.history.complete(id, done, Outcome::Ok(values));
            id
        }

        fn put(
            &mut self,
            client: u32,
            k: &str,
            value: Bytes,
            atom: u64,
            read: Option<OpId>,
            outcome: Outcome,
        ) -> OpId {
            let at = self.tick();
            let kind = OpKind::Put {
                value,
                atom: Atom(atom),
                read,
            };
            let id = self
                .history
                .invoke(ClientId(client), key(k), kind, at, false);
            let done = self.tick();
            self.history.complete(id, done, outcome);
            id
        }

        fn delete(&mut self, client: u32, k: &str, read: Option<OpId>, outcome: Outcome) -> OpId {
            let at = self.tick();
            let kind = OpKind::Delete { read };
            let id = self
                .history
                .invoke(ClientId(client), key(k), kind, at, false);
            let done = self.tick();
            self.history.complete(id, done, outcome);
            id
        }
    }

    fn ok() -> Outcome {
        Outcome::Ok(Vec::new())
    }

    /// An object holding `values` as concurrent siblings (each written blind by its own actor).
    fn object(values: &[Bytes]) -> Object {
        let mut o = Object::new();
        for (i, v) in values.iter().enumerate() {
            let actor = Actor::new(node(&format!("n{i}")), Incarnation::new(1));
            o = o
                .update(
                    &CausalContext::empty(),
                    Sibling::Value(v.clone()),
                    &actor,
                    64,
                )
                .unwrap();
        }
        o
    }

    fn deleted() -> Object {
        let actor = Actor::new(node("n0"), Incarnation::new(1));
        Object::new()
            .update(&CausalContext::empty(), Sibling::Tombstone, &actor, 64)
            .unwrap()
    }

    /// Every key of the history held identically by three replicas.
    fn converged(k: &str, o: Object) -> FinalState {
        let mut f = FinalState::new();
        for n in ["n1", "n2", "n3"] {
            f.add_replica(key(k), node(n), Some(o.clone()));
        }
        f
    }

    fn run(b: &Builder, f: &FinalState) -> Report {
        check(&b.history, f, &CheckOptions::default())
    }

    #[test]
    fn replicas_that_differed_before_repair_are_reported_but_do_not_fail() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        let mut f = converged("k", object(&[plain(1)]));
        // Before the final reads, one primary had missed the write.
        f.add_replica_before_repair(key("k"), node("n1"), Some(object(&[plain(1)])));
        f.add_replica_before_repair(key("k"), node("n2"), Some(object(&[plain(1)])));
        f.add_replica_before_repair(key("k"), node("n3"), None);
        let report = run(&b, &f);
        let before = report.unconverged_before_repair.as_ref().unwrap();
        assert_eq!((before.value, before.total), (1, 1));
        assert_eq!(report.unconverged_keys.value, 0);
        assert!(report.passed(), "{report}");
        // The same replicas, identical before repair: nothing to report.
        let mut f = converged("k", object(&[plain(1)]));
        for n in ["n1", "n2", "n3"] {
            f.add_replica_before_repair(key("k"), node(n), Some(object(&[plain(1)])));
        }
        assert_eq!(run(&b, &f).unconverged_before_repair.unwrap().value, 0);
    }

    #[test]
    fn a_clean_history_passes() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        let r = b.read(0, "k", vec![plain(1)]);
        b.put(0, "k", plain(2), 2, Some(r), ok());
        let report = run(&b, &converged("k", object(&[plain(2)])));
        assert!(report.passed(), "{report}");
        assert_eq!(report.acknowledged_writes_lost.total, 2);
        assert_eq!(
            report.single_writer_siblings.total, 0,
            "the blind write disqualifies the key"
        );
    }

    #[test]
    fn a_lost_acknowledged_write_is_reported() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        b.put(1, "k", plain(2), 2, None, ok());
        let report = run(&b, &converged("k", object(&[plain(2)])));
        assert_eq!(report.acknowledged_writes_lost.value, 1, "{report}");
        assert!(!report.passed());
    }

    #[test]
    fn a_value_superseded_by_a_write_that_read_it_is_not_lost() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        let r = b.read(1, "k", vec![plain(1)]);
        // Indeterminate, yet it may have been applied: it excuses the missing value.
        let timeout = Outcome::Indeterminate("timeout".into());
        b.put(1, "k", plain(2), 2, Some(r), timeout);
        let report = run(&b, &converged("k", object(&[plain(2)])));
        assert_eq!(report.acknowledged_writes_lost.value, 0, "{report}");
        assert_eq!(report.indeterminate_applied.value, 1);
    }

    #[test]
    fn an_indeterminate_put_never_seen_excuses_nothing() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        let r = b.read(1, "k", vec![plain(1)]);
        // It timed out and its value is nowhere: nothing shows it was applied, so it cannot
        // explain why the acknowledged value is gone.
        let timeout = Outcome::Indeterminate("timeout".into());
        b.put(1, "k", plain(2), 2, Some(r), timeout);
        let report = run(&b, &converged("k", deleted()));
        assert_eq!(report.acknowledged_writes_lost.value, 1, "{report}");
        assert_eq!(report.indeterminate_applied.value, 0);
    }

    #[test]
    fn a_definitely_failed_write_excuses_nothing() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        let r = b.read(1, "k", vec![plain(1)]);
        b.delete(1, "k", Some(r), Outcome::Failed("unavailable".into()));
        let report = run(&b, &converged("k", deleted()));
        assert_eq!(report.acknowledged_writes_lost.value, 1, "{report}");
    }

    #[test]
    fn an_element_missing_from_the_final_set_union_is_lost() {
        let mut b = Builder::new();
        let set = |atoms: &[u64]| Value::Set(atoms.iter().map(|a| Atom(*a)).collect()).encode();
        b.put(0, "k", set(&[1]), 1, None, ok());
        let r = b.read(1, "k", vec![set(&[1])]);
        b.put(1, "k", set(&[1, 2]), 2, Some(r), ok());
        b.put(2, "k", set(&[3]), 3, None, ok());
        // A set-add carries what it read forward, so reading atom 1 excuses nothing.
        let report = run(&b, &converged("k", object(&[set(&[2, 3])])));
        assert_eq!(report.acknowledged_writes_lost.value, 1, "{report}");
        let fine = run(&b, &converged("k", object(&[set(&[1, 2]), set(&[3])])));
        assert_eq!(fine.acknowledged_writes_lost.value, 0, "{fine}");
    }

    #[test]
    fn a_resurrected_delete_is_reported() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        let r = b.read(0, "k", vec![plain(1)]);
        b.delete(0, "k", Some(r), ok());
        let report = run(&b, &converged("k", object(&[plain(1)])));
        assert_eq!(report.deletes_undone.value, 1, "{report}");
        assert_eq!(report.deletes_undone.total, 1);
        assert!(!report.passed());
        let fine = run(&b, &converged("k", deleted()));
        assert!(fine.passed(), "{fine}");
    }

    #[test]
    fn a_single_writer_key_stays_checked_after_an_indeterminate_put_applied_nowhere() {
        let mut b = Builder::new();
        let r0 = b.read(0, "k", vec![]);
        b.put(0, "k", plain(1), 1, Some(r0), ok());
        let r1 = b.read(0, "k", vec![plain(1)]);
        // Timed out, and its value is nowhere: applied nowhere, so it cannot explain siblings.
        b.put(
            0,
            "k",
            plain(2),
            2,
            Some(r1),
            Outcome::Indeterminate("timeout".into()),
        );
        let r2 = b.read(0, "k", vec![plain(1)]);
        b.put(0, "k", plain(3), 3, Some(r2), ok());
        b.read(0, "k", vec![plain(1), plain(3)]);
        let report = run(&b, &converged("k", object(&[plain(3)])));
        assert_eq!(report.single_writer_siblings.total, 1, "{report}");
        assert_eq!(report.single_writer_siblings.value, 1, "{report}");
        // Had its value been seen, it may have been applied late, beside the next write.
        let mut b = Builder::new();
        let r0 = b.read(0, "k", vec![]);
        b.put(0, "k", plain(1), 1, Some(r0), ok());
        let r1 = b.read(0, "k", vec![plain(1)]);
        b.put(
            0,
            "k",
            plain(2),
            2,
            Some(r1),
            Outcome::Indeterminate("timeout".into()),
        );
        let r2 = b.read(0, "k", vec![plain(1)]);
        b.put(0, "k", plain(3), 3, Some(r2), ok());
        let report = run(&b, &converged("k", object(&[plain(2), plain(3)])));
        assert_eq!(report.single_writer_siblings.total, 0, "{report}");
    }

    #[test]
    fn a_sibling_from_a_single_writer_is_reported() {
        let mut b = Builder::new();
        let r0 = b.read(0, "k", vec![]);
        b.put(0, "k", plain(1), 1, Some(r0), ok());
        let r1 = b.read(0, "k", vec![plain(1)]);
        b.put(0, "k", plain(2), 2, Some(r1), ok());
        b.read(0, "k", vec![plain(1), plain(2)]);
        let report = run(&b, &converged("k", object(&[plain(2)])));
        assert_eq!(report.single_writer_siblings.value, 1, "{report}");
        assert_eq!(report.single_writer_siblings.total, 1);
        // Siblings in the final state count too.
        let mut b2 = Builder::new();
        let r0 = b2.read(0, "k", vec![]);
        b2.put(0, "k", plain(1), 1, Some(r0), ok());
        let report = run(&b2, &converged("k", object(&[plain(1), plain(1)])));
        assert_eq!(
            report.single_writer_siblings.value, 0,
            "identical values are one"
        );
    }

    #[test]
    fn a_definite_failure_that_was_applied_is_reported() {
        let mut b = Builder::new();
        b.put(
            0,
            "k",
            plain(1),
            1,
            None,
            Outcome::Failed("unavailable".into()),
        );
        b.read(1, "k", vec![plain(1)]);
        let report = run(&b, &converged("k", Object::new()));
        assert_eq!(report.definite_failures_applied.value, 1, "{report}");
        assert_eq!(report.definite_failures_applied.total, 1);
        // Seen only on one replica is applied too.
        let mut b2 = Builder::new();
        b2.put(
            0,
            "k",
            plain(1),
            1,
            None,
            Outcome::Failed("too many siblings".into()),
        );
        let mut f = FinalState::new();
        f.add_replica(key("k"), node("n1"), Some(object(&[plain(1)])));
        f.add_replica(key("k"), node("n2"), None);
        let report = run(&b2, &f);
        assert_eq!(report.definite_failures_applied.value, 1, "{report}");
        assert_eq!(report.unconverged_keys.value, 1);
    }

    #[test]
    fn values_nobody_wrote_are_reported() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        b.read(1, "k", vec![plain(1), Bytes::from_static(b"garbage")]);
        // A real atom, but written to another key.
        b.put(0, "j", plain(2), 2, None, ok());
        b.read(1, "k", vec![plain(2)]);
        let mut f = converged("k", object(&[plain(1)]));
        for n in ["n1", "n2", "n3"] {
            f.add_replica(key("j"), node(n), Some(object(&[plain(2)])));
        }
        let report = run(&b, &f);
        assert_eq!(report.values_never_written.value, 2, "{report}");
    }

    #[test]
    fn unhealthy_or_slow_operations_in_healthy_windows_are_stuck() {
        let mut h = History::new();
        let k = key("k");
        let a = h.invoke(ClientId(0), k.clone(), OpKind::Read, MS, true);
        h.complete(a, 2 * MS, Outcome::Ok(Vec::new()));
        let b = h.invoke(ClientId(1), k.clone(), OpKind::Read, MS, true);
        h.complete(b, 3 * MS, Outcome::Failed("unavailable".into()));
        let c = h.invoke(ClientId(2), k.clone(), OpKind::Read, MS, true);
        h.complete(c, Duration::from_secs(60), Outcome::Ok(Vec::new()));
        h.invoke(ClientId(3), k.clone(), OpKind::Read, MS, true);
        let report = check(&h, &converged("k", Object::new()), &CheckOptions::default());
        assert_eq!(report.stuck_requests.value, 3, "{report}");
        assert_eq!(report.stuck_requests.total, 4);
    }

    #[test]
    fn a_read_missing_an_earlier_acknowledged_write_is_stale_but_not_a_violation() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        b.read(1, "k", vec![]);
        let report = run(&b, &converged("k", object(&[plain(1)])));
        assert_eq!(report.stale_reads.value, 1, "{report}");
        assert!(report.passed());
    }

    #[test]
    fn differing_trees_are_reported() {
        let b = Builder::new();
        let mut f = FinalState::new();
        let p = shoal_types::PartitionCount::new(16)
            .unwrap()
            .partitions()
            .next()
            .unwrap();
        f.add_tree(p, node("n1"), [0; 16]);
        f.add_tree(p, node("n2"), [1; 16]);
        let report = run(&b, &f);
        assert_eq!(report.unconverged_trees.as_ref().unwrap().value, 1);
        assert!(!report.passed());
    }

    #[test]
    fn summaries_add_figures_over_runs() {
        let mut b = Builder::new();
        b.put(0, "k", plain(1), 1, None, ok());
        let report = run(&b, &converged("k", object(&[plain(1)])));
        let mut s = Summary::new();
        s.add(&report);
        s.add(&report);
        let lost = s.figure("acknowledged writes lost").unwrap();
        assert_eq!((lost.value, lost.total), (0, 2));
        assert!(
            s.to_string()
                .contains("acknowledged writes lost: 0 of 2 over 2 seeds")
        );
        assert!(s.passed());
    }
}
