//! Where workers record each request: HDR histograms per operation for the measured run, the
//! windows before and after a fault, one small histogram per second (the timeline), and the
//! live figures the progress line shows.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::driver::Injected;
use crate::report::{
    FaultReport, LatencySummary, OpReport, PhaseReport, SecondOp, SecondReport, WindowOp,
    WindowReport, spectrum,
};
use crate::spec::PhaseSpec;
use crate::target::{Found, Op, OpError};

/// The largest latency recorded (one hour); longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits of the phase histograms.
const SIGFIG: u8 = 3;
/// Significant digits of the per-second and live histograms (they only give a p99).
const SIGFIG_COARSE: u8 = 2;

/// One request's outcome, as recorded.
pub(crate) type Outcome = Result<Found, OpError>;

/// A phase's records.
#[derive(Debug)]
pub(crate) struct Recorder {
    measure_from: Instant,
    /// The last second of the timeline: requests completing after the measured duration (they
    /// started within it) count in its last second rather than making a partial one.
    last_second: Option<usize>,
    fault: Option<FaultRecord>,
    ops: [OpRecord; 2],
    seconds: Vec<[SecondRecord; 2]>,
    live: [Histogram<u64>; 2],
    live_errors: u64,
    last_end: Option<Instant>,
}

/// When the fault was injected, what it was, and when it had taken effect.
#[derive(Debug)]
struct FaultRecord {
    at: Instant,
    action: String,
    took_effect: Option<Instant>,
}

#[derive(Debug)]
struct OpRecord {
    latency: Histogram<u64>,
    failed: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    not_found: u64,
    before: Window,
    after: Window,
}

#[derive(Debug)]
struct Window {
    latency: Histogram<u64>,
    errors: u64,
    /// When each failed request after the fault started, so that the report can tell those in
    /// flight at the fault from those started before it took effect (a moment the fault may
    /// report only after they failed).
    error_starts: Vec<Instant>,
}

#[derive(Debug)]
struct SecondRecord {
    latency: Histogram<u64>,
    errors: u64,
}

/// What the progress line shows: the requests completed since the last look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) p99_us: [u64; 2],
}

impl Recorder {
    /// Records of a phase whose measured run starts at `measure_from` and, if known, lasts
    /// `measured`.
    pub(crate) fn new(measure_from: Instant, measured: Option<Duration>) -> Recorder {
        let last_second = measured.map(|d| {
            usize::try_from(d.as_secs_f64().ceil() as u64)
                .unwrap_or(usize::MAX)
                .saturating_sub(1)
        });
        Recorder {
            measure_from,
            last_second,
            fault: None,
            ops: [OpRecord::new(), OpRecord::new()],
            seconds: Vec::new(),
            live: [histogram(SIGFIG_COARSE), histogram(SIGFIG_COARSE)],
            live_errors: 0,
            last_end: None,
        }
    }

    /// The fault struck at `at`: requests completing from then on count as "after".
    pub(crate) fn fault_injected(&mut self, at: Instant, action: String) {
        self.fault = Some(FaultRecord {
            at,
            action,
            took_effect: None,
        });
    }

    /// What the fault did, once it is done.
    pub(crate) fn fault_done(&mut self, injected: Injected) {
        if let Some(fault) = &mut self.fault {
            fault.action = injected.action;
            fault.took_effect = injected.took_effect;
        }
    }

    /// One request of `op`, started (or, in an open loop, scheduled) at `start`, ended at
    /// `end`. `measured` is false during warm-up: then only the live figures see it.
    pub(crate) fn record(
        &mut self,
        op: Op,
        measured: bool,
        start: Instant,
        end: Instant,
        outcome: &Outcome,
    ) {
        let us = micros(end.saturating_duration_since(start));
        let i = op.index();
        match outcome {
            Ok(_) => self.live[i].saturating_record(us),
            Err(_) => self.live_errors += 1,
        }
        if !measured {
            return;
        }
        self.last_end = Some(self.last_end.map_or(end, |last| last.max(end)));
        let after_fault = self.fault.as_ref().is_some_and(|f| end >= f.at);
        let second = usize::try_from(end.saturating_duration_since(self.measure_from).as_secs())
            .unwrap_or(usize::MAX);
        let second = self.last_second.map_or(second, |last| second.min(last));
        if second < MAX_TIMELINE_SECONDS {
            while self.seconds.len() <= second {
                self.seconds
                    .push([SecondRecord::new(), SecondRecord::new()]);
            }
        }
        let record = &mut self.ops[i];
        let window = if after_fault {
            &mut record.after
        } else {
            &mut record.before
        };
        let slot = self.seconds.get_mut(second).map(|s| &mut s[i]);
        match outcome {
            Ok(found) => {
                record.latency.saturating_record(us);
                window.latency.saturating_record(us);
                if let Some(slot) = slot {
                    slot.latency.saturating_record(us);
                }
                if *found == Found::Nothing {
                    record.not_found += 1;
                }
            }
            Err(e) => {
                record.failed.saturating_record(us);
                *record.errors.entry(e.kind.to_string()).or_default() += 1;
                window.errors += 1;
                if after_fault {
                    window.error_starts.push(start);
                }
                if let Some(slot) = slot {
                    slot.errors += 1;
                }
                tracing::debug!(%op, error = %e, "request failed");
            }
        }
    }

    /// The figures since the last call, and starts the next interval.
    pub(crate) fn take_live(&mut self) -> Live {
        let live = Live {
            ops: self.live[0].len() + self.live[1].len() + self.live_errors,
            errors: self.live_errors,
            p99_us: [
                self.live[0].value_at_quantile(0.99),
                self.live[1].value_at_quantile(0.99),
            ],
        };
        for h in &mut self.live {
            h.reset();
        }
        self.live_errors = 0;
        live
    }

    /// The phase's report.
    pub(crate) fn report(&self, spec: &PhaseSpec) -> PhaseReport {
        let seconds = self.last_end.map_or(0.0, |end| {
            end.saturating_duration_since(self.measure_from)
                .as_secs_f64()
        });
        let rate = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        let op_report = |r: &OpRecord| {
            let count = r.latency.len() + r.failed.len();
            OpReport {
                count,
                throughput: rate(count),
                latency: LatencySummary::of(&r.latency),
                errors: r.errors.clone(),
                failed_latency: (!r.failed.is_empty()).then(|| LatencySummary::of(&r.failed)),
                not_found: r.not_found,
                spectrum: spectrum(&r.latency),
            }
        };
        let read = op_report(&self.ops[0]);
        let update = op_report(&self.ops[1]);
        let ops = read.count + update.count;
        let errors = self.ops.iter().map(|r| r.failed.len()).sum();
        let fault = self.fault.as_ref().map(|f| {
            let at_s =
                f.at.saturating_duration_since(self.measure_from)
                    .as_secs_f64();
            let window = |seconds: f64, pick: fn(&OpRecord) -> &Window| WindowReport {
                seconds,
                read: pick(&self.ops[0]).summary(Some(f)),
                update: pick(&self.ops[1]).summary(Some(f)),
            };
            FaultReport {
                action: f.action.clone(),
                at_s,
                took_effect_ms: f
                    .took_effect
                    .map(|t| t.saturating_duration_since(f.at).as_secs_f64() * 1e3),
                before: window(at_s, |r| &r.before),
                after: window((seconds - at_s).max(0.0), |r| &r.after),
            }
        });
        let timeline = self
            .seconds
            .iter()
            .enumerate()
            .map(|(second, [read, update])| SecondReport {
                second: u32::try_from(second).unwrap_or(u32::MAX),
                read: read.summary(),
                update: update.summary(),
            })
            .collect();
        PhaseReport {
            name: spec.name.clone(),
            description: spec.describe(),
            spec: spec.clone(),
            seconds,
            ops,
            throughput: rate(ops),
            errors,
            read,
            update,
            fault,
            timeline,
        }
    }
}

/// A timeline longer than this (a day) keeps only its first part.
const MAX_TIMELINE_SECONDS: usize = 86_400;

impl OpRecord {
    fn new() -> OpRecord {
        OpRecord {
            latency: histogram(SIGFIG),
            failed: histogram(SIGFIG),
            errors: BTreeMap::new(),
            not_found: 0,
            before: Window::new(),
            after: Window::new(),
        }
    }
}

impl Window {
    fn new() -> Window {
        Window {
            latency: histogram(SIGFIG),
            errors: 0,
            error_starts: Vec::new(),
        }
    }

    fn summary(&self, fault: Option<&FaultRecord>) -> WindowOp {
        let started_before = |at: Option<Instant>| {
            at.map_or(0, |at| {
                self.error_starts.iter().filter(|&&s| s < at).count() as u64
            })
        };
        let in_flight = started_before(fault.map(|f| f.at));
        let before_effect = started_before(fault.and_then(|f| f.took_effect));
        WindowOp {
            ok: self.latency.len(),
            errors: self.errors,
            errors_in_flight: in_flight,
            errors_before_effect: before_effect.saturating_sub(in_flight),
            latency: LatencySummary::of(&self.latency),
        }
    }
}

impl SecondRecord {
    fn new() -> SecondRecord {
        SecondRecord {
            latency: histogram(SIGFIG_COARSE),
            errors: 0,
        }
    }

    fn summary(&self) -> SecondOp {
        SecondOp {
            ok: self.latency.len(),
            errors: self.errors,
            p99_us: if self.latency.is_empty() {
                0
            } else {
                self.latency.value_at_quantile(0.99)
            },
        }
    }
}

/// A histogram of microseconds from 1 µs to an hour.
#[allow(clippy::expect_used)]
fn histogram(sigfig: u8) -> Histogram<u64> {
    // Constant bounds: low = 1, high ≥ 2·low, sigfig ≤ 5; `new_with_bounds` fails on nothing else.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, sigfig).expect("constant histogram bounds")
}

/// Whole microseconds, at least 1 (the histogram's lowest value).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A histogram for callers outside this module (the preload).
pub(crate) fn latency_histogram() -> Histogram<u64> {
    histogram(SIGFIG)
}
