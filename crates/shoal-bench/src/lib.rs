//! Shoal's load generator, behind `shoal bench`: it answers "what p99 will my application see, at
//! what throughput, and what happens when a node fails?" with numbers that can be trusted.
//!
//! - Load: closed loop (a fixed number of requests in flight, latency from each request's start)
//!   or open loop (requests start on a fixed schedule, each in its own task, up to a cap on
//!   requests in flight; latency from each request's *scheduled* start whenever the system held
//!   it up, so a stall counts against every request it delays — no coordinated omission — but
//!   not the timer's own millisecond of slack); a step profile of open-loop rates; a
//!   read/update mix; uniform or zipfian keys ([`Zipfian`], YCSB's generator); warm-up, then a
//!   duration or an exact number of operations ([`PhaseSpec`]).
//! - Attempts: each request may be given an attempt timeout and a number of attempts
//!   ([`AttemptPolicy`]): a timed-out attempt is abandoned (its future dropped) and sent again
//!   at once, as external load generators and client drivers do, the same for every target.
//! - Records: HDR histograms per operation (p50/p99/p99.9/max, the whole percentile spectrum),
//!   errors per kind, attempts per request, a per-second timeline, around a fault the latency
//!   before and after, per step goodput and the time to recover ([`PhaseReport`]); the
//!   servers' own counters and CPU time when they can be watched ([`ServerWatch`]). A live
//!   progress line shows throughput and p99 of the last second.
//! - Output: [`BenchReport`] as tables, as JSON ([`BenchReport::to_json`]) and as an SVG chart
//!   ([`plot::svg`]).
//! - Workloads: the standard W1 of WORKLOADS.md ([`W1`]: phases A, B and C, C killing a node
//!   through a [`Fault`] the caller supplies, and starting it again if the [`FaultPlan`] says
//!   how), the overload step profile ([`Overload`]), or one
//!   phase as given.
//! - Targets: anything implementing [`Target`]; [`ShoalTarget`] drives a Shoal cluster through
//!   `shoal-client`, [`EtcdTarget`] an etcd 3.4 cluster through its JSON gateway and, with the
//!   `etcd-grpc` feature, `EtcdGrpcTarget` through its native gRPC API, for side-by-side
//!   comparisons.
//!
//! Not here: starting or stopping clusters and killing processes (the `shoal` binary's `bench`
//! command does that, for `--dev` clusters or through `--kill-cmd`), command-line parsing, and
//! any timing assertion: the figures are reported, never checked.
//!
//! Main types and functions: [`run`], [`run_phase`], [`preload`], [`Workload`], [`PhaseSpec`],
//! [`W1`], [`Overload`], [`AttemptPolicy`], [`Target`], [`BenchReport`], [`Fault`],
//! [`FaultPlan`], [`ServerWatch`], [`BenchError`].

mod driver;
mod error;
mod etcd;
#[cfg(feature = "etcd-grpc")]
mod etcd_grpc;
mod keys;
pub mod plot;
mod progress;
mod recorder;
pub mod report;
pub mod servers;
mod shoal;
pub mod spec;
pub mod target;
pub mod zipf;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use driver::{Fault, FaultPlan, Injected, preload, run_phase};
pub use error::BenchError;
pub use etcd::EtcdTarget;
#[cfg(feature = "etcd-grpc")]
pub use etcd_grpc::EtcdGrpcTarget;
pub use keys::key_name;
pub use progress::Progress;
pub use report::{
    AttemptReport, BenchReport, Machine, OpenLoopReport, PhaseReport, PreloadReport,
    RecoveryReport, StepReport, TargetInfo,
};
pub use servers::{SCRAPED_METRICS, ServerWatch, ServerWindow, WatchedNode};
pub use shoal::ShoalTarget;
pub use spec::{AttemptPolicy, Distribution, Limit, Load, Overload, PhaseSpec, RateStep, W1};
pub use target::{Found, KeyRef, Op, OpError, Target};
pub use zipf::Zipfian;

/// What [`run`] runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// One phase as given (its fault, if it names a time, is the one passed to [`run`]).
    Custom(PhaseSpec),
    /// Phases of W1, in the order A, B, C.
    W1 {
        /// The workload's knobs.
        w1: W1,
        /// Which phases to run.
        phases: Vec<W1Phase>,
        /// Phase B's rate; by default half of phase A's measured throughput (then A must run).
        phase_b_rate: Option<f64>,
    },
    /// The overload step profile: a capacity phase (closed loop) unless the capacity is given,
    /// then the steps.
    Overload {
        /// The workload's knobs.
        overload: Overload,
        /// The capacity in ops/s; by default the capacity phase's throughput.
        capacity: Option<f64>,
    },
}

/// A phase of W1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum W1Phase {
    /// Closed loop.
    A,
    /// Open loop at half of A's throughput.
    B,
    /// As A, with a node killed.
    C,
}

impl Workload {
    /// Whether a phase of it injects a fault (so [`run`] needs one).
    pub fn needs_fault(&self) -> bool {
        match self {
            Workload::Custom(spec) => spec.fault_at.is_some(),
            Workload::W1 { phases, .. } => phases.contains(&W1Phase::C),
            Workload::Overload { .. } => false,
        }
    }

    /// Checks every phase's settings before anything runs (a preload takes a while).
    pub fn validate(&self) -> Result<(), BenchError> {
        match self {
            Workload::Custom(spec) => spec.validate(),
            Workload::W1 {
                w1,
                phases,
                phase_b_rate,
            } => {
                if phases.is_empty() {
                    return Err(BenchError::InvalidSpec("no phase to run".into()));
                }
                if phases.contains(&W1Phase::B)
                    && !phases.contains(&W1Phase::A)
                    && phase_b_rate.is_none()
                {
                    return Err(BenchError::InvalidSpec(
                        "phase B runs at half of phase A's throughput: run A too, or give --rate"
                            .into(),
                    ));
                }
                w1.phase_a().validate()?;
                w1.phase_b_at(phase_b_rate.unwrap_or(1.0)).validate()?;
                w1.phase_c().validate()
            }
            Workload::Overload { overload, capacity } => {
                if let Some(c) = capacity
                    && !(c.is_finite() && *c > 0.0)
                {
                    return Err(BenchError::InvalidSpec(format!(
                        "the capacity must be a positive number of ops/s, not {c}"
                    )));
                }
                overload.validate()
            }
        }
    }
}

/// Runs `workload`'s phases against `target` (already preloaded, if it should be), handing
/// `fault` to the phase that injects one, sampling `servers` (if given) around each phase.
pub async fn run<T: Target>(
    target: Arc<T>,
    workload: &Workload,
    mut fault: Option<FaultPlan>,
    progress: Progress,
    servers: Option<&Arc<ServerWatch>>,
) -> Result<Vec<PhaseReport>, BenchError> {
    workload.validate()?;
    if workload.needs_fault() && fault.is_none() {
        return Err(BenchError::InvalidSpec(
            "this workload kills a node: it needs a fault (--dev, or --kill-cmd)".into(),
        ));
    }
    match workload {
        Workload::Custom(spec) => {
            let fault = if spec.fault_at.is_some() {
                fault.take()
            } else {
                None
            };
            Ok(vec![
                run_phase(target, spec, fault, progress, servers).await?,
            ])
        }
        Workload::W1 {
            w1,
            phases,
            phase_b_rate,
        } => {
            let mut phases = phases.clone();
            phases.sort();
            phases.dedup();
            let mut reports: Vec<PhaseReport> = Vec::new();
            for phase in phases {
                let (spec, fault) = match phase {
                    W1Phase::A => (w1.phase_a(), None),
                    W1Phase::B => {
                        let half_a = reports
                            .iter()
                            .find(|r| r.name == "A")
                            .map(|r| (r.throughput / 2.0).max(1.0));
                        // Validated: either A ran before or a rate was given.
                        let rate = phase_b_rate.or(half_a).unwrap_or(1.0);
                        (w1.phase_b_at(rate), None)
                    }
                    W1Phase::C => (w1.phase_c(), fault.take()),
                };
                let report = run_phase(target.clone(), &spec, fault, progress, servers).await?;
                reports.push(report);
            }
            Ok(reports)
        }
        Workload::Overload { overload, capacity } => {
            let mut reports = Vec::new();
            let capacity = match capacity {
                Some(c) => *c,
                None => {
                    let spec = overload.capacity_phase();
                    let report = run_phase(target.clone(), &spec, None, progress, servers).await?;
                    // Successful operations per second: what the system can deliver.
                    let ok = report.read.latency.count + report.update.latency.count;
                    let capacity = ok as f64 / report.seconds.max(1e-9);
                    reports.push(report);
                    capacity.max(1.0)
                }
            };
            let spec = overload.steps_phase(capacity);
            reports.push(run_phase(target, &spec, None, progress, servers).await?);
            Ok(reports)
        }
    }
}

impl Machine {
    /// This machine: CPUs, CPU model, kernel (what Linux's /proc says; "unknown" elsewhere).
    pub fn detect() -> Machine {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpus,
            cpu_model,
            kernel,
        }
    }

    /// The filesystem holding `path` and its device (`ext4 on /dev/vda`), from /proc/mounts:
    /// the longest mount point that contains it; "unknown filesystem" elsewhere.
    pub fn filesystem_of(path: &std::path::Path) -> String {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && path.starts_with(f[1]))
                    .then(|| (f[1].len(), format!("{} on {}", f[2], f[0])))
            })
            .max()
            .map_or_else(|| "unknown filesystem".into(), |(_, fs)| fs)
    }
}
