//! Running a phase: worker tasks in a closed loop, or an open loop's dispatcher starting each
//! request in its own task on schedule (one rate, or a step profile); each request attempted as
//! the phase's [`AttemptPolicy`] says; the warm-up, the fault at its time, the servers sampled
//! at the boundaries, the live progress line; and the preload that writes every key before
//! timing.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::BenchError;
use crate::keys::{Chooser, KeyChoice, key_name, random_value};
use crate::progress::{Line, Progress};
use crate::recorder::{Attempts, Completed, Outcome, Recorder, Started, latency_histogram, micros};
use crate::report::{BacklogReport, LatencySummary, PhaseReport, PreloadReport};
use crate::servers::{self, Sample, ServerWatch};
use crate::spec::{AttemptPolicy, Limit, Load, PhaseSpec};
use crate::target::{Found, KeyRef, Op, OpError, Target};

/// A fault to inject during a phase: called once, at the phase's `fault_at`; says what it did
/// or why it could not.
pub type Fault =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<Injected, String>> + Send>> + Send>;

/// A phase's fault and, if the phase undoes it at its `heal_at`, the undoing (the killed nodes
/// started again), also a [`Fault`].
pub struct FaultPlan {
    /// Injected at the phase's `fault_at`.
    pub strike: Fault,
    /// Run at the phase's `heal_at`, after `strike` is done.
    pub heal: Option<Fault>,
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPlan")
            .field("heal", &self.heal.is_some())
            .finish_non_exhaustive()
    }
}

impl From<Fault> for FaultPlan {
    fn from(strike: Fault) -> FaultPlan {
        FaultPlan { strike, heal: None }
    }
}

/// What a [`Fault`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// What was done ("SIGKILL to node n3 (pid 1234)").
    pub action: String,
    /// When it had taken full effect, if the fault can tell: a killed process is gone (its
    /// sockets closed) some milliseconds after the signal. Requests that start in between
    /// reach a process that can no longer answer them.
    pub took_effect: Option<Instant>,
}

impl Injected {
    /// A fault that cannot tell when it took effect.
    pub fn action(action: impl Into<String>) -> Injected {
        Injected {
            action: action.into(),
            took_effect: None,
        }
    }
}

/// How often the progress line is refreshed (and over what interval its figures are).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How many times the preload tries one key before giving up.
const PRELOAD_ATTEMPTS: usize = 3;
/// How often the servers' gauges are sampled between a phase's boundaries.
const GAUGE_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Runs one phase against `target` and reports it. `fault`, if given, is injected
/// `spec.fault_at` after warm-up and undone at `spec.heal_at` (each required when the spec
/// names its time, refused otherwise).
/// `servers`, if given, is sampled at the start and end of the measured run and at each step's
/// boundaries, for the report's server figures.
pub async fn run_phase<T: Target>(
    target: Arc<T>,
    spec: &PhaseSpec,
    fault: Option<FaultPlan>,
    progress: Progress,
    servers: Option<&Arc<ServerWatch>>,
) -> Result<PhaseReport, BenchError> {
    spec.validate()?;
    if spec.fault_at.is_some() != fault.is_some()
        || spec.heal_at.is_some() != fault.as_ref().is_some_and(|f| f.heal.is_some())
    {
        return Err(BenchError::InvalidSpec(format!(
            "phase {}: a fault (or restart) time needs a fault (or restart), and it needs a time",
            spec.name
        )));
    }
    let keys = KeyChoice::new(spec)?;
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let measured = match spec.limit {
        Limit::Duration(d) => Some(d),
        Limit::Ops(_) => None,
    };
    let recorder = Arc::new(Mutex::new(Recorder::new(spec, measure_from, measured)));
    let mut workers = JoinSet::new();
    match &spec.load {
        Load::Closed { concurrency } => {
            let plan = ClosedPlan::new(spec, start);
            for worker in 0..concurrency.get() {
                let chooser = Chooser::new(
                    keys.clone(),
                    spec.read_ratio,
                    spec.value_size,
                    spec.seed,
                    worker,
                );
                let (target, plan, recorder) = (target.clone(), plan.clone(), recorder.clone());
                workers.spawn(closed_loop(target, plan, recorder, chooser, spec.attempts));
            }
        }
        Load::Open { max_in_flight, .. } | Load::Steps { max_in_flight, .. } => {
            let chooser = Chooser::new(keys, spec.read_ratio, spec.value_size, spec.seed, 0);
            let schedule = Schedule::new(spec, start);
            workers.spawn(open_loop(
                target.clone(),
                schedule,
                *max_in_flight,
                recorder.clone(),
                chooser,
                spec.attempts,
            ));
        }
    }

    let fault_task = match (fault, spec.fault_at) {
        (Some(FaultPlan { strike, heal }), Some(at)) => {
            let recorder = recorder.clone();
            let heal = heal.zip(spec.heal_at);
            Some(tokio::spawn(async move {
                tokio::time::sleep_until(measure_from + at).await;
                // Requests completing from here on count as after the fault.
                lock(&recorder).fault_injected(Instant::now());
                let injected = strike().await?;
                tracing::debug!(action = %injected.action, "fault injected");
                lock(&recorder).fault_done(injected);
                if let Some((heal, heal_at)) = heal {
                    tokio::time::sleep_until(measure_from + heal_at).await;
                    // And from here on as after the restart.
                    lock(&recorder).heal_started(Instant::now());
                    let healed = heal().await?;
                    tracing::debug!(action = %healed.action, "fault undone");
                    lock(&recorder).heal_done(healed);
                }
                Ok::<(), String>(())
            }))
        }
        _ => None,
    };

    // The servers: at the start of the measured run and of each later step, every second
    // between (for the gauges), and at the end.
    let step_starts = step_offsets(spec);
    let watching = servers.map(|watch| {
        let boundaries: Vec<Instant> = std::iter::once(Duration::ZERO)
            .chain(step_starts.iter().skip(1).copied())
            .map(|offset| measure_from + offset)
            .collect();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(sample_servers(watch.clone(), boundaries, stopped));
        (stop, task)
    });

    let line = Line::new(progress, &format!("phase {}", spec.name), None);
    let mut tick = tokio::time::interval_at(start + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    let mut last = start;
    let mut failure = None;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => failure = Some(e),
                Some(Err(e)) => failure = Some(BenchError::Worker(e.to_string())),
                None => break,
            },
            now = tick.tick() => {
                let live = lock(&recorder).take_live();
                let label = progress_label(spec, &step_starts, measure_from, now);
                line.phase(&label, now.saturating_duration_since(start), now - last, live);
                last = now;
            }
        }
    }
    line.finish();
    let samples = match watching {
        Some((stop, task)) => {
            let _ = stop.send(());
            Some(task.await.map_err(|e| BenchError::Worker(e.to_string()))?)
        }
        None => None,
    };
    if let Some(task) = fault_task {
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(BenchError::Fault(e)),
            Err(e) => return Err(BenchError::Worker(e.to_string())),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut report = lock(&recorder).report(spec);
    if let Some(samples) = samples {
        attach_server_windows(&mut report, &samples);
        attach_backlog(&mut report, &samples, measure_from, &lock(&recorder));
    }
    Ok(report)
}

/// When each step of a step profile starts, from the end of warm-up (one zero for other loads).
fn step_offsets(spec: &PhaseSpec) -> Vec<Duration> {
    match &spec.load {
        Load::Steps { steps, .. } => steps
            .iter()
            .scan(Duration::ZERO, |at, step| {
                let start = *at;
                *at += step.duration;
                Some(start)
            })
            .collect(),
        _ => vec![Duration::ZERO],
    }
}

/// "warm-up", "measuring", or for a step profile "step 3/4 (150%)".
fn progress_label(
    spec: &PhaseSpec,
    starts: &[Duration],
    measure_from: Instant,
    now: Instant,
) -> String {
    if now < measure_from {
        return "warm-up".into();
    }
    match &spec.load {
        Load::Steps { steps, .. } => {
            let since = now - measure_from;
            let i = starts.iter().rposition(|s| *s <= since).unwrap_or(0);
            let label = steps.get(i).map_or("", |s| s.label.as_str());
            format!("step {}/{} ({label})", i + 1, steps.len())
        }
        _ => "measuring".into(),
    }
}

/// A sample of the servers, and which boundary it was taken at (`None`: a gauge sample
/// between boundaries).
type Tagged = (Option<usize>, Sample);

/// Samples `watch` at each of `boundaries`, every [`GAUGE_SAMPLE_INTERVAL`] between them when
/// it scrapes metrics, and once more when `stop` fires (the end of the phase).
async fn sample_servers(
    watch: Arc<ServerWatch>,
    boundaries: Vec<Instant>,
    mut stop: oneshot::Receiver<()>,
) -> Vec<Tagged> {
    let mut samples = Vec::new();
    let Some(&first) = boundaries.first() else {
        return samples;
    };
    let mut next = 0;
    let mut gauges = tokio::time::interval_at(first + GAUGE_SAMPLE_INTERVAL, GAUGE_SAMPLE_INTERVAL);
    gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let scrapes = watch.scrapes();
    loop {
        let boundary = boundaries.get(next).copied();
        tokio::select! {
            biased;
            _ = &mut stop => break,
            () = sleep_until_some(boundary) => {
                samples.push((Some(next), watch.sample().await));
                next += 1;
            }
            _ = gauges.tick(), if scrapes && next > 0 => {
                samples.push((None, watch.sample().await));
            }
        }
    }
    samples.push((Some(boundaries.len()), watch.sample().await));
    samples
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The phase's and each step's server figures, from the samples at their boundaries.
fn attach_server_windows(report: &mut PhaseReport, samples: &[Tagged]) {
    let at = |boundary: usize| {
        samples
            .iter()
            .find(|(b, _)| *b == Some(boundary))
            .map(|(_, s)| s)
    };
    // The end is the last sample; a boundary never reached (the phase ended early) is the end.
    let Some((_, end)) = samples.last() else {
        return;
    };
    let between = |from: &Sample, to: &Sample| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|(b, s)| b.is_none() && s.at > from.at && s.at < to.at)
            .map(|(_, s)| s)
            .collect()
    };
    let Some(start) = at(0) else {
        return;
    };
    let ok = report.read.latency.count + report.update.latency.count;
    report.server = Some(servers::window(start, end, &between(start, end), ok));
    let count = report.steps.len();
    for (i, step) in report.steps.iter_mut().enumerate() {
        let from = at(i).unwrap_or(end);
        let to = if i + 1 < count {
            at(i + 1).unwrap_or(end)
        } else {
            end
        };
        let delivered = (step.delivered * step.seconds).round() as u64;
        step.server = Some(servers::window(from, to, &between(from, to), delivered));
    }
}

/// The backlog the fault left and how long after its undoing it was cleared (a phase with a
/// restart, on servers that export [`servers::BACKLOG_GAUGE`]).
fn attach_backlog(
    report: &mut PhaseReport,
    samples: &[Tagged],
    measure_from: Instant,
    recorder: &Recorder,
) {
    let Some(fault) = &mut report.fault else {
        return;
    };
    let Some(heal) = &mut fault.heal else {
        return;
    };
    let since = |s: f64| measure_from + Duration::from_secs_f64(s.max(0.0));
    let (struck, restart) = (since(fault.at_s), since(heal.at_s));
    let after_fault: Vec<&Sample> = samples
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.at >= struck)
        .collect();
    let second = |at: Instant| at.saturating_duration_since(measure_from).as_secs() as usize;
    heal.backlog = servers::backlog(&after_fault, restart).map(|b| BacklogReport {
        metric: servers::BACKLOG_GAUGE.to_owned(),
        peak: b.peak,
        at_restart: b.at_restart,
        cleared_after_s: b
            .cleared
            .map(|at| at.saturating_duration_since(restart).as_secs_f64()),
        p99_draining_us: b
            .cleared
            .and_then(|at| recorder.p99_of_seconds(second(restart)..second(at) + 1)),
        p99_before_fault_us: recorder.p99_of_seconds(0..second(struck)),
    });
}

/// Writes every key `0..keys` once with a random value of `value_size` bytes, `concurrency`
/// writes in flight; each key is tried up to three times.
pub async fn preload<T: Target>(
    target: Arc<T>,
    keys: u64,
    value_size: usize,
    concurrency: usize,
    seed: u64,
    progress: Progress,
) -> Result<PreloadReport, BenchError> {
    let next = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(latency_histogram()));
    let line = Line::new(progress, "preload", Some(keys));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for worker in 0..concurrency.max(1) {
        let (target, next, latency) = (target.clone(), next.clone(), latency.clone());
        workers.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed ^ 0x9e10_ad00 ^ worker as u64);
            loop {
                let number = next.fetch_add(1, Ordering::Relaxed);
                if number >= keys {
                    return Ok(());
                }
                let name = key_name(number);
                let value = random_value(&mut rng, value_size);
                let mut last_error = None;
                for _ in 0..PRELOAD_ATTEMPTS {
                    let began = Instant::now();
                    let key = KeyRef {
                        number,
                        name: &name,
                    };
                    let context = target.context(key);
                    match target.update(key, value.clone(), &context).await {
                        Ok(()) => {
                            lock(&latency).saturating_record(micros(began.elapsed()));
                            last_error = None;
                            break;
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
                if let Some(e) = last_error {
                    return Err(BenchError::Preload {
                        key: String::from_utf8_lossy(&name).into_owned(),
                        message: e.to_string(),
                    });
                }
            }
        });
    }
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    let mut failure = None;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    // Stop the others: the preload has failed.
                    failure.get_or_insert(e);
                    workers.abort_all();
                }
                Some(Err(e)) if e.is_cancelled() => {}
                Some(Err(e)) => { failure.get_or_insert(BenchError::Worker(e.to_string())); }
                None => break,
            },
            _ = tick.tick() => {
                let done = next.load(Ordering::Relaxed).min(keys);
                let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
                line.set_position(done, format!("{rate:.0} keys/s"));
            }
        }
    }
    line.finish();
    if let Some(e) = failure {
        return Err(e);
    }
    let seconds = start.elapsed().as_secs_f64();
    let latency = LatencySummary::of(&lock(&latency));
    Ok(PreloadReport {
        keys,
        value_size,
        concurrency,
        seconds,
        throughput: keys as f64 / seconds.max(1e-9),
        latency,
    })
}

/// Which closed-loop requests run and are measured; shared by a phase's workers.
#[derive(Debug, Clone)]
struct ClosedPlan {
    inner: Arc<ClosedPlanInner>,
}

#[derive(Debug)]
struct ClosedPlanInner {
    measure_from: Instant,
    limit: Limit,
    /// With an op limit: measured requests started so far.
    tickets: AtomicU64,
}

impl ClosedPlan {
    fn new(spec: &PhaseSpec, start: Instant) -> ClosedPlan {
        ClosedPlan {
            inner: Arc::new(ClosedPlanInner {
                measure_from: start + spec.warmup,
                limit: spec.limit,
                tickets: AtomicU64::new(0),
            }),
        }
    }

    /// Whether a request starting at `now` runs, and whether it is measured.
    fn admit(&self, now: Instant) -> Option<bool> {
        let p = &self.inner;
        if now < p.measure_from {
            return Some(false);
        }
        match p.limit {
            Limit::Duration(d) => (now < p.measure_from + d).then_some(true),
            Limit::Ops(n) => (p.tickets.fetch_add(1, Ordering::Relaxed) < n).then_some(true),
        }
    }
}

/// An open loop's slots, in order: the warm-up at the first rate, then the measured run (one
/// rate, or each step's).
#[derive(Debug)]
struct Schedule {
    start: Instant,
    segments: Vec<Segment>,
    segment: usize,
    slot: u64,
}

/// Slots at `from + k / rate` for `k` in `0..slots`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    from: Duration,
    interval: Duration,
    slots: u64,
    measured: bool,
    step: Option<usize>,
}

/// One scheduled request.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    at: Instant,
    measured: bool,
    step: Option<usize>,
}

impl Schedule {
    fn new(spec: &PhaseSpec, start: Instant) -> Schedule {
        let segment =
            |from: Duration, rate: f64, seconds: Option<Duration>, ops: u64, measured, step| {
                Segment {
                    from,
                    interval: Duration::from_secs_f64(1.0 / rate),
                    slots: seconds.map_or(ops, |d| (d.as_secs_f64() * rate).ceil() as u64),
                    measured,
                    step,
                }
            };
        let mut segments = Vec::new();
        match &spec.load {
            Load::Closed { .. } => {}
            Load::Open { rate, .. } => {
                segments.push(segment(
                    Duration::ZERO,
                    *rate,
                    Some(spec.warmup),
                    0,
                    false,
                    None,
                ));
                let (seconds, ops) = match spec.limit {
                    Limit::Duration(d) => (Some(d), 0),
                    Limit::Ops(n) => (None, n),
                };
                segments.push(segment(spec.warmup, *rate, seconds, ops, true, None));
            }
            Load::Steps { steps, .. } => {
                if let Some(first) = steps.first() {
                    segments.push(segment(
                        Duration::ZERO,
                        first.rate,
                        Some(spec.warmup),
                        0,
                        false,
                        None,
                    ));
                }
                let mut from = spec.warmup;
                for (i, step) in steps.iter().enumerate() {
                    segments.push(segment(
                        from,
                        step.rate,
                        Some(step.duration),
                        0,
                        true,
                        Some(i),
                    ));
                    from += step.duration;
                }
            }
        }
        Schedule {
            start,
            segments,
            segment: 0,
            slot: 0,
        }
    }
}

impl Iterator for Schedule {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        loop {
            let seg = self.segments.get(self.segment)?;
            if self.slot < seg.slots {
                let at = self.start + seg.from + seg.interval.mul_f64(self.slot as f64);
                self.slot += 1;
                return Some(Slot {
                    at,
                    measured: seg.measured,
                    step: seg.step,
                });
            }
            self.segment += 1;
            self.slot = 0;
        }
    }
}

async fn closed_loop<T: Target>(
    target: Arc<T>,
    plan: ClosedPlan,
    recorder: Arc<Mutex<Recorder>>,
    mut chooser: Chooser,
    policy: AttemptPolicy,
) -> Result<(), BenchError> {
    loop {
        let start = Instant::now();
        let Some(measured) = plan.admit(start) else {
            return Ok(());
        };
        let request = Request::choose(&*target, &mut chooser);
        let (outcome, attempts) = request.run(&*target, policy).await;
        let end = Instant::now();
        lock(&recorder).record(Completed {
            op: request.op,
            measured,
            step: None,
            start,
            end,
            outcome: &outcome,
            attempts,
        });
    }
}

/// The open loop: one dispatcher walks the schedule and starts each request in its own task
/// at its slot, at most `max_in_flight` at once. When that many are in flight, the next slot
/// waits for one to end; it and every slot that came due meanwhile count from their schedule
/// (the system held them up). Other requests count from when they were sent: the timer wakes
/// the dispatcher up to a millisecond late, which is the generator's delay, reported apart.
async fn open_loop<T: Target>(
    target: Arc<T>,
    schedule: Schedule,
    max_in_flight: NonZeroUsize,
    recorder: Arc<Mutex<Recorder>>,
    mut chooser: Chooser,
    policy: AttemptPolicy,
) -> Result<(), BenchError> {
    let cap = max_in_flight.get();
    let permits = Arc::new(Semaphore::new(cap));
    let mut requests = JoinSet::new();
    // The last moment the cap held the dispatcher up: slots due by then started late because
    // of the system.
    let mut held_until: Option<Instant> = None;
    for slot in schedule {
        while let Some(done) = requests.try_join_next() {
            done.map_err(|e| BenchError::Worker(e.to_string()))?;
        }
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| BenchError::Worker(e.to_string()))?;
                held_until = Some(Instant::now());
                permit
            }
        };
        if slot.at > Instant::now() {
            tokio::time::sleep_until(slot.at).await;
        }
        let sent = Instant::now();
        let held = held_until.is_some_and(|until| slot.at <= until);
        let start = measured_start(slot.at, held_until, sent);
        let in_flight = (cap - permits.available_permits()) as u64;
        let request = Request::choose(&*target, &mut chooser);
        lock(&recorder).started(Started {
            at: sent,
            measured: slot.measured,
            in_flight,
            held,
            lag: (!held).then(|| sent.saturating_duration_since(slot.at)),
        });
        let (target, recorder) = (target.clone(), recorder.clone());
        requests.spawn(async move {
            let (outcome, attempts) = request.run(&*target, policy).await;
            let end = Instant::now();
            drop(permit);
            lock(&recorder).record(Completed {
                op: request.op,
                measured: slot.measured,
                step: slot.step,
                start,
                end,
                outcome: &outcome,
                attempts,
            });
        });
    }
    while let Some(done) = requests.join_next().await {
        done.map_err(|e| BenchError::Worker(e.to_string()))?;
    }
    Ok(())
}

/// Where an open-loop request's latency is counted from: its slot came due at `scheduled`, the
/// dispatcher sent it at `sent`, and the cap on requests in flight last held the dispatcher up
/// until `held_until`.
///
/// A slot that came due while the cap held the dispatcher (`scheduled <= held_until`) was held
/// up by the system under test: it counts from the schedule, so a stall counts against every
/// request it delays (no coordinated omission). Otherwise nothing but the timer held it, which
/// wakes the dispatcher up to a millisecond late (tokio's timer granularity): that delay is the
/// load generator's, not the system's, so the request counts from when it was sent.
pub(crate) fn measured_start(
    scheduled: Instant,
    held_until: Option<Instant>,
    sent: Instant,
) -> Instant {
    if held_until.is_some_and(|until| scheduled <= until) {
        scheduled
    } else {
        sent.max(scheduled)
    }
}

/// One request, chosen before it is attempted: every attempt sends the same key, value and
/// context.
#[derive(Debug)]
struct Request<C> {
    op: Op,
    number: u64,
    name: Vec<u8>,
    /// An update's value and context.
    update: Option<(Bytes, C)>,
}

impl<C: Send + Sync + 'static> Request<C> {
    fn choose<T: Target<Context = C>>(target: &T, chooser: &mut Chooser) -> Request<C> {
        let (op, number) = chooser.next();
        let name = chooser.name().to_vec();
        let update = (op == Op::Update).then(|| {
            let context = target.context(KeyRef {
                number,
                name: &name,
            });
            (chooser.value(), context)
        });
        Request {
            op,
            number,
            name,
            update,
        }
    }

    /// Attempts it as `policy` says.
    async fn run<T: Target<Context = C>>(
        &self,
        target: &T,
        policy: AttemptPolicy,
    ) -> (Outcome, Attempts) {
        let key = KeyRef {
            number: self.number,
            name: &self.name,
        };
        attempt(policy, || async move {
            match &self.update {
                None => target.read(key).await,
                Some((value, context)) => target
                    .update(key, value.clone(), context)
                    .await
                    .map(|()| Found::Value),
            }
        })
        .await
    }
}

/// Runs `once` as `policy` says: each attempt within the attempt timeout (a late one is
/// dropped, which abandons it), again at once after an attempt that timed out, up to the
/// number of attempts. A request whose every attempt timed out fails as
/// [`OpError::ATTEMPT_TIMEOUT`]; other errors end it at once, as they are.
pub(crate) async fn attempt<F, Fut, V>(
    policy: AttemptPolicy,
    mut once: F,
) -> (Result<V, OpError>, Attempts)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, OpError>>,
{
    let max = policy.attempts.get();
    let mut abandoned = 0;
    let mut sent = 0;
    loop {
        sent += 1;
        let result = match policy.timeout {
            Some(timeout) => match tokio::time::timeout(timeout, once()).await {
                Ok(result) => result,
                Err(_) => {
                    abandoned += 1;
                    Err(OpError::new(
                        OpError::ATTEMPT_TIMEOUT,
                        format!("no answer within {timeout:?}"),
                    ))
                }
            },
            None => once().await,
        };
        let attempts = Attempts { sent, abandoned };
        match result {
            Err(e) if e.is_timeout() && sent < max => {
                tracing::trace!(attempt = sent, error = %e, "attempt timed out; trying again");
            }
            Err(e) if e.is_timeout() && policy.timeout.is_some() => {
                // Every attempt timed out, abandoned or answered so by the store: the store's
                // deadline is the attempt's, and which side noticed first is a race.
                let message = format!("{sent} attempt(s) timed out; the last: {}", e.message);
                return (
                    Err(OpError::new(OpError::ATTEMPT_TIMEOUT, message)),
                    attempts,
                );
            }
            other => return (other, attempts),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Records stay consistent if a holder panicked: each update is a few counter increments.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
