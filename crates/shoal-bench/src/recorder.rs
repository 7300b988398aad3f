//! Where workers record each request: HDR histograms per operation for the measured run, the
//! windows before and after a fault, the steps of a step profile, one small histogram per
//! second (the timeline), how many attempts each request took, how far an open loop got (in
//! flight, late starts, the generator's own lag), and the live figures the progress line shows.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::driver::Injected;
use crate::report::{
    AttemptReport, FaultReport, HealReport, LatencySummary, OpReport, OpenLoopReport, PhaseReport,
    SecondOp, SecondReport, StepReport, WindowOp, WindowReport, recovery, spectrum,
};
use crate::spec::{Load, PhaseSpec};
use crate::target::{Found, Op, OpError};

/// The largest latency recorded (one hour); longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits of the phase histograms.
const SIGFIG: u8 = 3;
/// Significant digits of the per-second and live histograms (they only give a p99).
const SIGFIG_COARSE: u8 = 2;

/// One request's outcome, as recorded.
pub(crate) type Outcome = Result<Found, OpError>;

/// How many attempts one request took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempts {
    /// Attempts sent, the first included.
    pub(crate) sent: u32,
    /// Of those, attempts the generator abandoned at the attempt timeout.
    pub(crate) abandoned: u32,
}

/// One finished request, as a worker hands it to the recorder.
#[derive(Debug)]
pub(crate) struct Completed<'a> {
    pub(crate) op: Op,
    /// False during warm-up: then only the live figures see it.
    pub(crate) measured: bool,
    /// The step of a step profile its slot was scheduled in.
    pub(crate) step: Option<usize>,
    /// When it started (or, in an open loop, was scheduled, if the system held it up).
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    pub(crate) outcome: &'a Outcome,
    pub(crate) attempts: Attempts,
}

/// One open-loop request as it starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    pub(crate) at: Instant,
    pub(crate) measured: bool,
    /// Requests in flight with this one.
    pub(crate) in_flight: u64,
    /// Whether it started late because [`Load::Open::max_in_flight`] requests were in flight.
    pub(crate) held: bool,
    /// How long after its slot the generator sent it, when it was not held: the timer's and
    /// the generator's own delay, not counted in its latency.
    pub(crate) lag: Option<Duration>,
}

/// A phase's records.
#[derive(Debug)]
pub(crate) struct Recorder {
    measure_from: Instant,
    /// The last second of the timeline: requests completing after the measured duration (they
    /// started within it) count in its last second rather than making a partial one.
    last_second: Option<usize>,
    fault: Option<FaultRecord>,
    ops: [OpRecord; 2],
    seconds: Vec<Second>,
    /// A step profile's steps: their windows (for what was delivered in each) and records.
    step_windows: Vec<(Instant, Instant)>,
    steps: Vec<StepRecord>,
    open: Option<OpenRecord>,
    live: [Histogram<u64>; 2],
    live_errors: u64,
    last_end: Option<Instant>,
}

/// How an open loop kept its schedule.
#[derive(Debug)]
struct OpenRecord {
    peak_in_flight: u64,
    held: u64,
    lag: Histogram<u64>,
}

/// Requests of one step, by the step their slot was scheduled in.
#[derive(Debug)]
struct StepRecord {
    offered: u64,
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    attempts: AttemptCounts,
    /// Successful requests that completed within the step's window, whenever scheduled.
    delivered: u64,
}

/// Attempts of many requests.
#[derive(Debug, Default, Clone)]
struct AttemptCounts {
    sent: u64,
    abandoned: u64,
    /// Successful requests by the attempt that succeeded (index 0: the first).
    succeeded_on: Vec<u64>,
}

/// When the fault was injected, what it was, and when it had taken effect; the same of its
/// undoing, if the phase undoes it.
#[derive(Debug)]
struct FaultRecord {
    at: Instant,
    action: String,
    took_effect: Option<Instant>,
    heal: Option<Event>,
}

/// An undoing of the fault: when it started, what it was, when it had taken effect.
#[derive(Debug)]
struct Event {
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
    attempts: AttemptCounts,
    before: Window,
    after: Window,
    /// After the fault was undone.
    healed: Window,
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

/// One second of the timeline.
#[derive(Debug)]
struct Second {
    ops: [SecondRecord; 2],
    /// Successful requests of both operations completed in it.
    all: Histogram<u64>,
    abandoned: u64,
    /// Open loop: requests started in it, and the most in flight at a start.
    started: u64,
    in_flight_max: Option<u64>,
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
    /// Records of `spec`'s phase whose measured run starts at `measure_from` and, if known,
    /// lasts `measured`.
    pub(crate) fn new(
        spec: &PhaseSpec,
        measure_from: Instant,
        measured: Option<Duration>,
    ) -> Recorder {
        let last_second = measured.map(|d| {
            usize::try_from(d.as_secs_f64().ceil() as u64)
                .unwrap_or(usize::MAX)
                .saturating_sub(1)
        });
        let mut step_windows = Vec::new();
        if let Load::Steps { steps, .. } = &spec.load {
            let mut from = measure_from;
            for step in steps {
                step_windows.push((from, from + step.duration));
                from += step.duration;
            }
        }
        Recorder {
            measure_from,
            last_second,
            fault: None,
            ops: [OpRecord::new(), OpRecord::new()],
            seconds: Vec::new(),
            steps: step_windows.iter().map(|_| StepRecord::new()).collect(),
            step_windows,
            open: spec.max_in_flight().map(|_| OpenRecord {
                peak_in_flight: 0,
                held: 0,
                lag: histogram(SIGFIG_COARSE),
            }),
            live: [histogram(SIGFIG_COARSE), histogram(SIGFIG_COARSE)],
            live_errors: 0,
            last_end: None,
        }
    }

    /// An open-loop request starts.
    pub(crate) fn started(&mut self, s: Started) {
        if !s.measured {
            return;
        }
        if let Some(open) = &mut self.open {
            open.peak_in_flight = open.peak_in_flight.max(s.in_flight);
            if s.held {
                open.held += 1;
            }
            if let Some(lag) = s.lag {
                open.lag.saturating_record(micros(lag));
            }
        }
        // A slot of the measured run sent just after its end (the generator's lag) counts in
        // its last second, as completions after the end do.
        if let Some(second) = self.second(s.at) {
            second.started += 1;
            second.in_flight_max = Some(second.in_flight_max.unwrap_or(0).max(s.in_flight));
        }
    }

    /// The timeline's second holding `at` (made if needed); times after the measured run
    /// count in its last second.
    fn second(&mut self, at: Instant) -> Option<&mut Second> {
        let second = usize::try_from(at.saturating_duration_since(self.measure_from).as_secs())
            .unwrap_or(usize::MAX);
        let second = self.last_second.map_or(second, |last| second.min(last));
        if second >= MAX_TIMELINE_SECONDS {
            return None;
        }
        while self.seconds.len() <= second {
            self.seconds.push(Second::new());
        }
        self.seconds.get_mut(second)
    }

    /// The fault struck at `at`: requests completing from then on count as "after".
    pub(crate) fn fault_injected(&mut self, at: Instant) {
        self.fault = Some(FaultRecord {
            at,
            action: "(injecting)".into(),
            took_effect: None,
            heal: None,
        });
    }

    /// What the fault did, once it is done.
    pub(crate) fn fault_done(&mut self, injected: Injected) {
        if let Some(fault) = &mut self.fault {
            fault.action = injected.action;
            fault.took_effect = injected.took_effect;
        }
    }

    /// The fault's undoing started at `at`: requests completing from then on count as
    /// "healed".
    pub(crate) fn heal_started(&mut self, at: Instant) {
        if let Some(fault) = &mut self.fault {
            fault.heal = Some(Event {
                at,
                action: "(restarting)".into(),
                took_effect: None,
            });
        }
    }

    /// What the undoing did, once it is done.
    pub(crate) fn heal_done(&mut self, done: Injected) {
        if let Some(heal) = self.fault.as_mut().and_then(|f| f.heal.as_mut()) {
            heal.action = done.action;
            heal.took_effect = done.took_effect;
        }
    }

    /// One finished request.
    pub(crate) fn record(&mut self, c: Completed<'_>) {
        let us = micros(c.end.saturating_duration_since(c.start));
        let i = c.op.index();
        match c.outcome {
            Ok(_) => self.live[i].saturating_record(us),
            Err(_) => self.live_errors += 1,
        }
        if !c.measured {
            return;
        }
        self.last_end = Some(self.last_end.map_or(c.end, |last| last.max(c.end)));
        let after_fault = self.fault.as_ref().is_some_and(|f| c.end >= f.at);
        let after_heal = self
            .fault
            .as_ref()
            .and_then(|f| f.heal.as_ref())
            .is_some_and(|h| c.end >= h.at);
        let delivered_in = self
            .step_windows
            .iter()
            .position(|(from, until)| c.end >= *from && c.end < *until);
        if let Some(second) = self.second(c.end) {
            second.abandoned += u64::from(c.attempts.abandoned);
            match c.outcome {
                Ok(_) => {
                    second.ops[i].latency.saturating_record(us);
                    second.all.saturating_record(us);
                }
                Err(_) => second.ops[i].errors += 1,
            }
        }
        let step = c.step.and_then(|s| self.steps.get_mut(s));
        let record = &mut self.ops[i];
        record.attempts.add(c.attempts, c.outcome.is_ok());
        let window = if after_heal {
            &mut record.healed
        } else if after_fault {
            &mut record.after
        } else {
            &mut record.before
        };
        match c.outcome {
            Ok(found) => {
                record.latency.saturating_record(us);
                window.latency.saturating_record(us);
                if *found == Found::Nothing {
                    record.not_found += 1;
                }
            }
            Err(e) => {
                record.failed.saturating_record(us);
                *record.errors.entry(e.kind.to_string()).or_default() += 1;
                window.errors += 1;
                if after_fault || after_heal {
                    window.error_starts.push(c.start);
                }
                tracing::debug!(op = %c.op, error = %e, "request failed");
            }
        }
        if let Some(step) = step {
            step.offered += 1;
            step.attempts.add(c.attempts, c.outcome.is_ok());
            match c.outcome {
                Ok(_) => step.latency.saturating_record(us),
                Err(e) => *step.errors.entry(e.kind.to_string()).or_default() += 1,
            }
        }
        if let (Ok(_), Some(s)) = (c.outcome, delivered_in.and_then(|s| self.steps.get_mut(s))) {
            s.delivered += 1;
        }
    }

    /// The 99th percentile of the successful requests (reads and updates) that completed in
    /// the timeline's seconds `seconds` (from the end of warm-up); `None` when none did.
    pub(crate) fn p99_of_seconds(&self, seconds: std::ops::Range<usize>) -> Option<u64> {
        let mut merged = histogram(SIGFIG_COARSE);
        for second in self.seconds.get(seconds).unwrap_or_default() {
            // Same bounds and precision: adding cannot fail.
            let _ = merged.add(&second.all);
        }
        (!merged.is_empty()).then(|| merged.value_at_quantile(0.99))
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
                attempts: r.attempts.report(count),
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
            let since_start = |at: Instant| {
                at.saturating_duration_since(self.measure_from)
                    .as_secs_f64()
            };
            let effect_ms = |at: Instant, took_effect: Option<Instant>| {
                took_effect.map(|t| t.saturating_duration_since(at).as_secs_f64() * 1e3)
            };
            let window =
                |seconds: f64,
                 pick: fn(&OpRecord) -> &Window,
                 event: (Instant, Option<Instant>)| WindowReport {
                    seconds,
                    read: pick(&self.ops[0]).summary(event),
                    update: pick(&self.ops[1]).summary(event),
                };
            let strike = (f.at, f.took_effect);
            let heal_s = f.heal.as_ref().map(|h| since_start(h.at));
            FaultReport {
                action: f.action.clone(),
                at_s,
                took_effect_ms: effect_ms(f.at, f.took_effect),
                before: window(at_s, |r| &r.before, strike),
                after: window(
                    (heal_s.unwrap_or(seconds) - at_s).max(0.0),
                    |r| &r.after,
                    strike,
                ),
                heal: f.heal.as_ref().map(|h| HealReport {
                    action: h.action.clone(),
                    at_s: since_start(h.at),
                    took_effect_ms: effect_ms(h.at, h.took_effect),
                    after: window(
                        (seconds - since_start(h.at)).max(0.0),
                        |r| &r.healed,
                        (h.at, h.took_effect),
                    ),
                    // From the servers' samples (the driver's).
                    backlog: None,
                }),
            }
        });
        let timeline: Vec<SecondReport> = self
            .seconds
            .iter()
            .enumerate()
            .map(|(second, s)| SecondReport {
                second: u32::try_from(second).unwrap_or(u32::MAX),
                ok: s.all.len(),
                errors: s.ops[0].errors + s.ops[1].errors,
                p99_us: quantile(&s.all, 0.99),
                abandoned: s.abandoned,
                started: s.started,
                in_flight_max: s.in_flight_max,
                read: s.ops[0].summary(),
                update: s.ops[1].summary(),
            })
            .collect();
        let mut attempts = self.ops[0].attempts.clone();
        attempts.merge(&self.ops[1].attempts);
        let open_loop = match (&self.open, spec.max_in_flight()) {
            (Some(open), Some(max)) => Some(OpenLoopReport {
                max_in_flight: max.get() as u64,
                peak_in_flight: open.peak_in_flight,
                held_starts: open.held,
                generator_lag: LatencySummary::of(&open.lag),
            }),
            _ => None,
        };
        let steps: Vec<StepReport> = match &spec.load {
            Load::Steps { steps, .. } => steps
                .iter()
                .zip(&self.steps)
                .zip(&self.step_windows)
                .map(|((step, r), (from, _))| {
                    let seconds = step.duration.as_secs_f64();
                    StepReport {
                        label: step.label.clone(),
                        rate: step.rate,
                        start_s: from
                            .saturating_duration_since(self.measure_from)
                            .as_secs_f64(),
                        seconds,
                        offered: r.offered,
                        ok: r.latency.len(),
                        goodput: r.latency.len() as f64 / seconds,
                        delivered: r.delivered as f64 / seconds,
                        errors: r.errors.clone(),
                        latency: LatencySummary::of(&r.latency),
                        attempts: r.attempts.report(r.offered),
                        server: None,
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let recovery = recovery(&steps, &timeline);
        PhaseReport {
            name: spec.name.clone(),
            description: spec.describe(),
            spec: spec.clone(),
            seconds,
            ops,
            throughput: rate(ops),
            errors,
            attempts: attempts.report(ops),
            read,
            update,
            fault,
            open_loop,
            steps,
            recovery,
            server: None,
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
            attempts: AttemptCounts::default(),
            before: Window::new(),
            after: Window::new(),
            healed: Window::new(),
        }
    }
}

impl StepRecord {
    fn new() -> StepRecord {
        StepRecord {
            offered: 0,
            latency: histogram(SIGFIG),
            errors: BTreeMap::new(),
            attempts: AttemptCounts::default(),
            delivered: 0,
        }
    }
}

impl AttemptCounts {
    fn add(&mut self, attempts: Attempts, ok: bool) {
        self.sent += u64::from(attempts.sent);
        self.abandoned += u64::from(attempts.abandoned);
        if ok && attempts.sent > 0 {
            let i = usize::try_from(attempts.sent - 1).unwrap_or(usize::MAX);
            if i < MAX_ATTEMPTS_COUNTED {
                if self.succeeded_on.len() <= i {
                    self.succeeded_on.resize(i + 1, 0);
                }
                self.succeeded_on[i] += 1;
            }
        }
    }

    fn merge(&mut self, other: &AttemptCounts) {
        self.sent += other.sent;
        self.abandoned += other.abandoned;
        if self.succeeded_on.len() < other.succeeded_on.len() {
            self.succeeded_on.resize(other.succeeded_on.len(), 0);
        }
        for (mine, theirs) in self.succeeded_on.iter_mut().zip(&other.succeeded_on) {
            *mine += theirs;
        }
    }

    /// The figures for `requests` requests.
    fn report(&self, requests: u64) -> AttemptReport {
        AttemptReport {
            sent: self.sent,
            abandoned: self.abandoned,
            retries: self.sent.saturating_sub(requests),
            succeeded_on: self.succeeded_on.clone(),
        }
    }
}

/// Successes counted by attempt for at most this many attempts.
const MAX_ATTEMPTS_COUNTED: usize = 1_000;

impl Second {
    fn new() -> Second {
        Second {
            ops: [SecondRecord::new(), SecondRecord::new()],
            all: histogram(SIGFIG_COARSE),
            abandoned: 0,
            started: 0,
            in_flight_max: None,
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

    /// The window's figures; errors split by when their request started, relative to `event`
    /// (when the fault or its undoing started, and when it had taken effect).
    fn summary(&self, (at, took_effect): (Instant, Option<Instant>)) -> WindowOp {
        let started_before = |at: Option<Instant>| {
            at.map_or(0, |at| {
                self.error_starts.iter().filter(|&&s| s < at).count() as u64
            })
        };
        let in_flight = started_before(Some(at));
        let before_effect = started_before(took_effect);
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
            p99_us: quantile(&self.latency, 0.99),
        }
    }
}

/// The value at quantile `q`, 0 for an empty histogram.
fn quantile(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::W1;

    #[test]
    fn a_request_sent_or_completed_after_the_measured_run_counts_in_its_last_second() {
        let spec = W1::standard().phase_b_at(100.0);
        let t0 = Instant::now();
        let mut recorder = Recorder::new(&spec, t0, Some(Duration::from_secs(30)));
        let late = t0 + Duration::from_millis(30_001);
        recorder.started(Started {
            at: late,
            measured: true,
            in_flight: 3,
            held: false,
            lag: Some(Duration::from_millis(2)),
        });
        recorder.record(Completed {
            op: Op::Read,
            measured: true,
            step: None,
            start: late,
            end: late + Duration::from_millis(5),
            outcome: &Ok(Found::Value),
            attempts: Attempts {
                sent: 1,
                abandoned: 0,
            },
        });
        let report = recorder.report(&spec);
        assert_eq!(report.timeline.len(), 30);
        let last = &report.timeline[29];
        assert_eq!((last.started, last.ok, last.in_flight_max), (1, 1, Some(3)));
    }
}
