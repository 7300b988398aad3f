//! What a run measured, as plain data: serialised as the `--json` file, printed as tables, drawn
//! by [`crate::plot`]. Latencies are in microseconds, from HDR histograms (3 significant digits).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

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
    /// Reads.
    pub read: OpReport,
    /// Updates.
    pub update: OpReport,
    /// The fault, if one was injected.
    pub fault: Option<FaultReport>,
    /// Per second of the measured run (by completion time).
    pub timeline: Vec<SecondReport>,
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
    /// Requests completed after it.
    pub after: WindowReport,
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
            for (label, w) in [("before", &f.before), ("after", &f.after)] {
                let errors = w.read.errors + w.update.errors;
                let in_flight = w.read.errors_in_flight + w.update.errors_in_flight;
                let before_effect = w.read.errors_before_effect + w.update.errors_before_effect;
                let after = errors - in_flight - before_effect;
                // Only errors after the fault are split by when their request started.
                let split = match (label, errors, f.took_effect_ms) {
                    ("before", _, _) | (_, 0, _) => String::new(),
                    (_, _, None) => {
                        format!(" ({in_flight} in flight at the fault, {after} started after it)")
                    }
                    (_, _, Some(_)) => format!(
                        " ({in_flight} in flight at the fault, {before_effect} started before \
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
        out
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
