//! Shoal's deterministic simulator, and the workloads and history checker it shares with the
//! real-cluster fault tests (DESIGN §12).
//!
//! - [`sim`] runs 3–7 real [`shoal_coordinator::Node`]s in one thread over a simulated network
//!   (every message through the real codec; drops, duplicates, delays, one- and two-way
//!   partitions), simulated disks (fsync latency, batches durable in order, crashes lose what
//!   was pending, failed fsyncs), simulated clocks (offsets, jumps, rates) and pauses. One seed
//!   drives everything, so a failing run is replayed exactly with `SHOAL_SEED=<seed>`, and each
//!   run's trace hash proves it.
//! - [`workload`] is what clients do: set-adds (Jepsen's Riak test), blind writes, single
//!   writers, put/delete mixes. No I/O, so the real-cluster harness drives the same workloads.
//! - [`history`] records every operation as invoke → ok / fail / indeterminate.
//! - [`checker`] judges a history against the replicas' final state and reports one figure per
//!   promise (I1–I7), `name: value of total`. It needs no simulator.
//!
//! Not here: anti-entropy, hinted handoff and membership do not exist in the coordinator yet,
//! so convergence after heal relies on the final R = N read's read repair; the simulator does
//! not run quinn (the message level is the workhorse; see DESIGN §12), and storage crash
//! consistency below the batch level (torn writes) is the storage crash tier's job.
//!
//! Main types: [`sim::SimConfig`], [`sim::run`], [`sim::RunResult`], [`sim::FaultMix`],
//! [`workload::Workload`], [`history::History`], [`checker::check`], [`checker::Report`],
//! [`checker::Summary`].

pub mod checker;
pub mod history;
pub mod sim;
pub mod workload;
