//! What a run measured, as plain data: serialised as the `--json` file, printed as tables, drawn
//! by [`crate::plot`]. Latencies are in microseconds, from HDR histograms (3 significant digits).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::servers::ServerWindow;
use crate::spec::PhaseSpec;

/// Everything one `shoal bench` run produced: the settings, the machine, the preload and each
/// phase.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The command line that produced it.
    pub command: String,
    /// What was driven.
    pub target: TargetInfo,
    /// The workload's name (`w1`), if a standard one was run.
    pub workload: Option<String>,
    /// Where it ran.
    pub machine: Machine,
    /// The load generator's async worker threads.
    pub client_threads: usize,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    /// The preload, when keys were written before timing.
    pub preload: Option<PreloadReport>,
    /// The phases, in the order they ran.
    pub phases: Vec<PhaseReport>,
}

/// The store a run drove.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    /// `shoal` or `etcd`.
    pub kind: String,
    /// The addresses first contacted.
    pub endpoints: Vec<String>,
    /// How reads and writes were asked for, e.g. "R=2 W=2" or "linearizable range, put".
    pub consistency: String,
}

/// The machine, for the report's reader.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// The kernel release.
    pub kernel: String,
}

/// The keys written before timing.
#[derive(Debug, Clone, Serialize)]
pub struct PreloadReport {
    /// Keys written.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Writes in flight.
    pub concurrency: usize,
    /// Wall time.
    pub seconds: f64,
    /// Keys per second.
    pub throughput: f64,
    /// Latency of the preload's writes.
    pub latency: LatencySummary,
}

/// One phase: settings, throughput, per-operation latency and errors, the fault's before and
/// after, and a per-second timeline.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// "A", "B", "C" or "run".
    pub name: String,
    /// The settings in words.
    pub description: String,
    /// The settings.
    pub spec: PhaseSpec,
    /// Seconds from the end of warm-up to the end of the last measured request.
    pub seconds: f64,
    /// Measured requests, failed ones included.
    pub ops: u64,
    /// Measured requests per second.
    pub throughput: f64,
    /// Failed measured requests.
    pub errors: u64,
    /// Attempts of the measured requests, reads and updates together.
    pub attempts: AttemptReport,
    /// Reads.
    pub read: OpReport,
    /// Updates.
    pub update: OpReport,
    /// The fault, if one was injected.
    pub fault: Option<FaultReport>,
    /// How an open loop kept its schedule (none for a closed loop).
    pub open_loop: Option<OpenLoopReport>,
    /// A step profile's steps (empty for other loads).
    pub steps: Vec<StepReport>,
    /// A step profile's time to recover.
    pub recovery: Option<RecoveryReport>,
    /// The servers' own figures over the measured run, when the bench could watch them.
    pub server: Option<ServerWindow>,
    /// Per second of the measured run (by completion time; `started` and `in_flight_max` by
    /// start time).
    pub timeline: Vec<SecondReport>,
}

/// How many attempts requests took ([`crate::AttemptPolicy`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttemptReport {
    /// Attempts sent, first attempts included.
    pub sent: u64,
    /// Attempts the generator abandoned at the attempt timeout (their futures dropped).
    pub abandoned: u64,
    /// Attempts after the first (`sent` minus requests).
    pub retries: u64,
    /// Successful requests by the attempt that succeeded: `[first, second, …]`.
    pub succeeded_on: Vec<u64>,
}

/// How an open loop kept its schedule.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopReport {
    /// The cap on requests in flight.
    pub max_in_flight: u64,
    /// The most requests in flight at once (measured run).
    pub peak_in_flight: u64,
    /// Requests that started late because the cap was reached; their latency counts from
    /// their scheduled start.
    pub held_starts: u64,
    /// How late the generator sent requests that the cap did not hold (the timer's
    /// granularity and the generator's own load; not counted in latencies). A p99 of
    /// milliseconds means the generator kept its schedule.
    pub generator_lag: LatencySummary,
}

/// One step of a step profile: requests counted by the step their slot was scheduled in.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// E.g. "150%".
    pub label: String,
    /// The rate offered, requests per second.
    pub rate: f64,
    /// When it started, in seconds from the end of warm-up.
    pub start_s: f64,
    /// How long it lasted.
    pub seconds: f64,
    /// Requests scheduled in it.
    pub offered: u64,
    /// Of those, the successful ones.
    pub ok: u64,
    /// `ok` per second of the step: of what was offered, what succeeded.
    pub goodput: f64,
    /// Successful requests that *completed* within the step, per second, whenever they were
    /// scheduled: what the system delivered meanwhile.
    pub delivered: f64,
    /// Failed requests per kind (`attempt_timeout`: every attempt timed out).
    pub errors: BTreeMap<String, u64>,
    /// Latency of the successful ones, reads and updates together, from their schedule.
    pub latency: LatencySummary,
    /// Their attempts.
    pub attempts: AttemptReport,
    /// The servers' figures over the step.
    pub server: Option<ServerWindow>,
}

/// Whether latency came back after the last step began: the first second from which every
/// second's p99 (reads and updates together) stays within [`RecoveryReport::FACTOR`] times the
/// baseline, the p99 of the first step at the last step's rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// The step whose p99 is the baseline (0-based).
    pub baseline_step: usize,
    /// Its p99.
    pub baseline_p99_us: u64,
    /// `FACTOR` × the baseline.
    pub threshold_us: u64,
    /// When the last step started, seconds from the end of warm-up.
    pub last_step_start_s: f64,
    /// The timeline's second from which every second was within the threshold; `None`: it
    /// did not recover.
    pub recovered_at_second: Option<u32>,
    /// From the start of the last step to that second.
    pub time_to_recover_s: Option<f64>,
}

impl RecoveryReport {
    /// How far above the baseline a second's p99 may be and still count as recovered.
    pub const FACTOR: u64 = 2;
    /// The share of a second's requests that may fail and it still count as recovered (a
    /// second in which requests fail fast is not a recovered one, whatever its successes'
    /// p99); a second without any success never counts.
    pub const MAX_ERROR_SHARE: f64 = 0.01;
}

/// One operation's figures in a phase.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    /// Requests, failed ones included.
    pub count: u64,
    /// Requests per second.
    pub throughput: f64,
    /// Latency of the successful requests.
    pub latency: LatencySummary,
    /// Failed requests per kind of error.
    pub errors: BTreeMap<String, u64>,
    /// Latency of the failed requests (how long a failure took to come back), if any failed.
    pub failed_latency: Option<LatencySummary>,
    /// Reads that found no value (after a preload there should be none).
    pub not_found: u64,
    /// Attempts of these requests.
    pub attempts: AttemptReport,
    /// The latency percentile spectrum: (percentile, µs) from 0 to 99.999, then 100 (the max).
    pub spectrum: Vec<SpectrumPoint>,
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// One point of a percentile spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpectrumPoint {
    /// 0 ..= 100.
    pub percentile: f64,
    /// Latency at that percentile.
    pub us: u64,
}

/// The fault and the latency around it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    /// What was done ("SIGKILL to node n3, pid 1234").
    pub action: String,
    /// When, in seconds from the end of warm-up.
    pub at_s: f64,
    /// How long after `at_s` it had taken full effect (the killed process was gone), if the
    /// fault could tell.
    pub took_effect_ms: Option<f64>,
    /// Requests completed before the fault.
    pub before: WindowReport,
    /// Requests completed after it (until it was undone, if it was).
    pub after: WindowReport,
    /// The fault's undoing, if the phase undid it.
    pub heal: Option<HealReport>,
}

/// The undoing of a fault (the killed nodes started again) and the latency after it.
#[derive(Debug, Clone, Serialize)]
pub struct HealReport {
    /// What was done ("started node n4 again (pid 1240)").
    pub action: String,
    /// When it started, in seconds from the end of warm-up.
    pub at_s: f64,
    /// How long after `at_s` it had taken effect (the nodes answered), if it could tell.
    pub took_effect_ms: Option<f64>,
    /// Requests completed after it started.
    pub after: WindowReport,
    /// The backlog the fault left (hints held for the killed nodes), if the bench watched the
    /// servers and they export it.
    pub backlog: Option<BacklogReport>,
}

/// A fault's backlog: `shoal_hints_pending_keys` summed over the nodes, sampled every second.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogReport {
    /// The gauge.
    pub metric: String,
    /// Its largest total from the fault to the end of the phase.
    pub peak: f64,
    /// Its total over the nodes that answered at the last sample before the restart.
    pub at_restart: Option<f64>,
    /// Seconds from the restart's start to the first sample at which every node answered and
    /// it was 0; `None`: not within the phase.
    pub cleared_after_s: Option<f64>,
    /// p99 of the successful requests (reads and updates) that completed while it drained:
    /// in the seconds of the timeline from the restart's to the one it was cleared in.
    pub p99_draining_us: Option<u64>,
    /// The same over the seconds before the fault's, for comparison.
    pub p99_before_fault_us: Option<u64>,
}

/// Requests completed in a window of a phase.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    /// The window's length.
    pub seconds: f64,
    /// Reads.
    pub read: WindowOp,
    /// Updates.
    pub update: WindowOp,
}

/// One operation in a window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WindowOp {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Of `errors` after a fault, those of requests started before it (in flight when it
    /// struck).
    pub errors_in_flight: u64,
    /// Of `errors` after a fault, those of requests started after it was injected but before
    /// it had taken effect (sent to a killed process that was still exiting); the rest
    /// started after that.
    pub errors_before_effect: u64,
    /// Latency of the successful ones.
    pub latency: LatencySummary,
}

/// One second of a phase's measured run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SecondReport {
    /// Seconds since the end of warm-up at the start of this second.
    pub second: u32,
    /// Successful requests completed in it, reads and updates.
    pub ok: u64,
    /// Failed requests completed in it.
    pub errors: u64,
    /// 99th percentile of the successful ones, reads and updates together (0 when none).
    pub p99_us: u64,
    /// Attempts abandoned at their timeout by the requests completed in it.
    pub abandoned: u64,
    /// Open loop: requests started in it.
    pub started: u64,
    /// Open loop: the most requests in flight when one started in it.
    pub in_flight_max: Option<u64>,
    /// Reads completed in it.
    pub read: SecondOp,
    /// Updates completed in it.
    pub update: SecondOp,
}

/// One operation in one second.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SecondOp {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// 99th percentile of the successful ones (0 when none).
    pub p99_us: u64,
}

impl LatencySummary {
    /// The summary of a histogram of microseconds (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The spectrum of a histogram: 20 points per decade of `1 / (1 - q)` up to 99.999%, then the max.
pub(crate) fn spectrum(h: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<SpectrumPoint> = (0..=100)
        .map(|k| {
            let q = 1.0 - 10f64.powf(-f64::from(k) / 20.0);
            SpectrumPoint {
                percentile: q * 100.0,
                us: h.value_at_quantile(q),
            }
        })
        .collect();
    points.push(SpectrumPoint {
        percentile: 100.0,
        us: h.max(),
    });
    points
}

/// The time to recover of a step profile (see [`RecoveryReport`]); `None` without steps.
pub(crate) fn recovery(steps: &[StepReport], timeline: &[SecondReport]) -> Option<RecoveryReport> {
    let last = steps.last()?;
    let baseline_step = steps
        .iter()
        .position(|s| (s.rate - last.rate).abs() <= 1e-9 * last.rate.max(1.0))
        .unwrap_or(0);
    let baseline_p99_us = steps.get(baseline_step)?.latency.p99_us;
    let threshold_us = baseline_p99_us.saturating_mul(RecoveryReport::FACTOR);
    let first = last.start_s.ceil() as u64;
    let good = |s: &SecondReport| {
        let total = s.ok + s.errors;
        s.ok > 0
            && s.p99_us <= threshold_us
            && (s.errors as f64) <= RecoveryReport::MAX_ERROR_SHARE * total as f64
    };
    // The first second of the last step from which every later one is good.
    let mut recovered: Option<u32> = None;
    for s in timeline.iter().filter(|s| u64::from(s.second) >= first) {
        if good(s) {
            recovered.get_or_insert(s.second);
        } else {
            recovered = None;
        }
    }
    Some(RecoveryReport {
        baseline_step,
        baseline_p99_us,
        threshold_us,
        last_step_start_s: last.start_s,
        recovered_at_second: recovered,
        time_to_recover_s: recovered.map(|s| (f64::from(s) - last.start_s).max(0.0)),
    })
}

impl BenchReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The tables printed at the end of a run.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "target: {} at {} ({}); client: {} async thread(s)",
            self.target.kind,
            self.target.endpoints.join(","),
            self.target.consistency,
            self.client_threads
        );
        if let Some(p) = &self.preload {
            let _ = writeln!(
                out,
                "preload: {} keys of {} B in {:.1} s ({:.0} keys/s, p50 {} µs, p99 {} µs)",
                p.keys, p.value_size, p.seconds, p.throughput, p.latency.p50_us, p.latency.p99_us
            );
        }
        for phase in &self.phases {
            out.push('\n');
            out.push_str(&phase.to_text());
        }
        out
    }
}

impl PhaseReport {
    /// The phase as a small table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "phase {}: {}", self.name, self.description);
        let _ = writeln!(
            out,
            "  {:.0} ops/s over {:.1} s, {} ops, {} errors",
            self.throughput, self.seconds, self.ops, self.errors
        );
        let _ = writeln!(
            out,
            "  {:<7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "op", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "mean µs", "errors"
        );
        for (name, op) in [("read", &self.read), ("update", &self.update)] {
            let l = &op.latency;
            let errors: u64 = op.errors.values().sum();
            let _ = writeln!(
                out,
                "  {name:<7} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>9.0} {:>7}",
                op.throughput, l.p50_us, l.p99_us, l.p999_us, l.max_us, l.mean_us, errors
            );
            for (kind, n) in &op.errors {
                let _ = writeln!(out, "          {n} × {kind}");
            }
            if op.not_found > 0 {
                let _ = writeln!(out, "          {} reads found nothing", op.not_found);
            }
        }
        if let Some(f) = &self.fault {
            let effect = f
                .took_effect_ms
                .map(|ms| format!("; it took effect {ms:.1} ms later"))
                .unwrap_or_default();
            let _ = writeln!(out, "  fault at {:.1} s: {}{effect}", f.at_s, f.action);
            let mut windows = vec![("before", &f.before), ("after", &f.after)];
            if let Some(h) = &f.heal {
                let effect = h
                    .took_effect_ms
                    .map(|ms| format!("; it took effect {ms:.1} ms later"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  undone at {:.1} s: {}{effect}", h.at_s, h.action);
                if let Some(b) = &h.backlog {
                    let at_restart = b.at_restart.map_or("n/a".into(), |n| format!("{n:.0}"));
                    let cleared = b.cleared_after_s.map_or_else(
                        || "not cleared within the phase".to_owned(),
                        |s| format!("0 on every node {s:.1} s after the restart"),
                    );
                    let _ = writeln!(
                        out,
                        "    backlog ({}, all nodes, sampled every second): peak {:.0}, {at_restart} \
                         at the restart, {cleared}",
                        b.metric, b.peak
                    );
                    if let (Some(draining), Some(before)) =
                        (b.p99_draining_us, b.p99_before_fault_us)
                    {
                        let _ = writeln!(
                            out,
                            "    p99 while it drained {draining} µs, {:.2}× the p99 before the \
                             fault ({before} µs; reads and updates, by the second)",
                            draining as f64 / before.max(1) as f64
                        );
                    }
                }
                windows.push(("undone", &h.after));
            }
            for (label, w) in windows {
                let errors = w.read.errors + w.update.errors;
                let in_flight = w.read.errors_in_flight + w.update.errors_in_flight;
                let before_effect = w.read.errors_before_effect + w.update.errors_before_effect;
                let after = errors - in_flight - before_effect;
                // Only errors after the fault (or its undoing) are split by when their request
                // started.
                let (event, took_effect) = match &f.heal {
                    Some(h) if label == "undone" => ("the restart", h.took_effect_ms),
                    _ => ("the fault", f.took_effect_ms),
                };
                let split = match (label, errors, took_effect) {
                    ("before", _, _) | (_, 0, _) => String::new(),
                    (_, _, None) => {
                        format!(" ({in_flight} in flight at {event}, {after} started after it)")
                    }
                    (_, _, Some(_)) => format!(
                        " ({in_flight} in flight at {event}, {before_effect} started before \
                         it took effect, {after} after)"
                    ),
                };
                let _ = writeln!(
                    out,
                    "    {label:<6} ({:>4.1} s): read p99 {} µs, update p99 {} µs, errors {errors}{split}",
                    w.seconds, w.read.latency.p99_us, w.update.latency.p99_us,
                );
            }
        }
        let policy = &self.spec.attempts;
        if policy.timeout.is_some() || policy.attempts.get() > 1 {
            out.push_str(
                &self
                    .attempts
                    .to_text(&format!("  attempts ({}): ", policy.describe())),
            );
            out.push('\n');
        }
        if let Some(o) = &self.open_loop {
            let _ = writeln!(
                out,
                "  open loop: at most {} in flight (cap {}); {} requests started late because \
                 the cap was reached; generator lag p99 {} µs, max {} µs",
                o.peak_in_flight,
                o.max_in_flight,
                o.held_starts,
                o.generator_lag.p99_us,
                o.generator_lag.max_us
            );
        }
        if !self.steps.is_empty() {
            out.push_str(&steps_table(&self.steps));
        }
        if let Some(r) = &self.recovery {
            let _ = match (r.recovered_at_second, r.time_to_recover_s) {
                (Some(second), Some(t)) => writeln!(
                    out,
                    "  time to recover: {t:.1} s (from second {second}, every second's p99 \
                     within {}× step {}'s {} µs, at most {:.0}% failed)",
                    RecoveryReport::FACTOR,
                    r.baseline_step + 1,
                    r.baseline_p99_us,
                    RecoveryReport::MAX_ERROR_SHARE * 100.0
                ),
                _ => writeln!(
                    out,
                    "  time to recover: did not recover (after {:.0} s, no second from which \
                     every second's p99 stayed within {}× step {}'s {} µs with at most {:.0}% \
                     failed)",
                    r.last_step_start_s,
                    RecoveryReport::FACTOR,
                    r.baseline_step + 1,
                    r.baseline_p99_us,
                    RecoveryReport::MAX_ERROR_SHARE * 100.0
                ),
            };
        }
        if let Some(server) = &self.server {
            out.push_str(&server.to_text("  server: "));
        }
        out
    }
}

impl AttemptReport {
    /// "12,000 sent, 900 abandoned at the attempt timeout, 950 retries; successes by attempt:
    /// 10,000, 40, 2".
    pub fn to_text(&self, prefix: &str) -> String {
        let by_attempt: Vec<String> = self.succeeded_on.iter().map(u64::to_string).collect();
        format!(
            "{prefix}{} sent, {} abandoned at the attempt timeout, {} retries; successes by \
             attempt: {}",
            self.sent,
            self.abandoned,
            self.retries,
            if by_attempt.is_empty() {
                "none".to_owned()
            } else {
                by_attempt.join(", ")
            }
        )
    }
}

/// The steps as a table, with errors by kind under each step.
fn steps_table(steps: &[StepReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<6} {:>7} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8}",
        "step",
        "from s",
        "offered/s",
        "goodput/s",
        "deliv./s",
        "failed",
        "p50 µs",
        "p99 µs",
        "retries",
        "abandoned",
        "µs CPU/op",
        "cores"
    );
    for s in steps {
        let failed: u64 = s.errors.values().sum();
        let cpu = s.server.as_ref();
        let per_op = cpu
            .and_then(|c| c.cpu_per_op_us)
            .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"));
        let cores = cpu
            .and_then(|c| c.node_cores)
            .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(
            out,
            "  {:<6} {:>7.1} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8}",
            s.label,
            s.start_s,
            s.rate,
            s.goodput,
            s.delivered,
            failed,
            s.latency.p50_us,
            s.latency.p99_us,
            s.attempts.retries,
            s.attempts.abandoned,
            per_op,
            cores
        );
        for (kind, n) in &s.errors {
            let _ = writeln!(out, "           {n} × {kind}");
        }
        // Per step only what some node exports (the phase's line names the absent ones).
        if let Some(server) = &s.server
            && server.metrics.values().any(Option::is_some)
        {
            out.push_str(&server.metrics_text("           "));
        }
    }
    out
}

impl ServerWindow {
    /// CPU and the scraped metrics, a line each.
    pub fn to_text(&self, prefix: &str) -> String {
        let mut out = String::new();
        let f = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
        };
        let _ = writeln!(
            out,
            "{prefix}nodes {} s CPU over {:.1} s ({} cores), {} µs CPU per successful op; \
             client {} s CPU ({} cores)",
            f(self.node_cpu_seconds, 1),
            self.seconds,
            f(self.node_cores, 2),
            f(self.cpu_per_op_us, 0),
            f(self.client_cpu_seconds, 1),
            f(self.client_cores, 2)
        );
        if self.nodes_scraped > 0 {
            out.push_str(&self.metrics_text(&" ".repeat(prefix.len())));
        } else {
            let _ = writeln!(out, "{}metrics: not scraped", " ".repeat(prefix.len()));
        }
        out
    }

    /// The scraped metrics on one line: "shoal_requests_shed_total 12 (class="client" 12) …",
    /// "n/a" for a name no node exports.
    pub fn metrics_text(&self, prefix: &str) -> String {
        let figures: Vec<String> = self
            .metrics
            .iter()
            .map(|(name, figure)| match figure {
                None => format!("{name} n/a"),
                Some(m) => {
                    let what = match m.kind {
                        crate::servers::MetricKind::Counter => "+",
                        crate::servers::MetricKind::Gauge => "max ",
                    };
                    let series: Vec<String> = m
                        .series
                        .iter()
                        .filter(|(labels, _)| !labels.is_empty())
                        .map(|(labels, v)| format!("{labels} {v}"))
                        .collect();
                    if series.is_empty() {
                        format!("{name} {what}{}", m.total)
                    } else {
                        format!("{name} {what}{} ({})", m.total, series.join(", "))
                    }
                }
            })
            .collect();
        format!(
            "{prefix}metrics of {} of {} nodes: {}\n",
            self.nodes_scraped,
            self.nodes,
            figures.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_the_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 1.0, "{}", s.mean_us);
        let spectrum = spectrum(&h);
        assert_eq!(spectrum.first().map(|p| p.percentile), Some(0.0));
        assert_eq!(
            spectrum.last().map(|p| (p.percentile, p.us)),
            Some((100.0, 1000))
        );
        assert!(
            spectrum
                .windows(2)
                .all(|w| w[0].us <= w[1].us && w[0].percentile <= w[1].percentile)
        );
        assert_eq!(
            LatencySummary::of(&Histogram::new(3).unwrap()),
            LatencySummary::default()
        );
    }
}
