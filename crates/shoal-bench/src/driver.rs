//! Running a phase: worker tasks in a closed or open loop, the warm-up, the fault at its time, the
//! live progress line; and the preload that writes every key before timing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::BenchError;
use crate::keys::{Chooser, KeyChoice, key_name, random_value};
use crate::progress::{Line, Progress};
use crate::recorder::{Outcome, Recorder, latency_histogram, micros};
use crate::report::{LatencySummary, PhaseReport, PreloadReport};
use crate::spec::{Limit, Load, PhaseSpec};
use crate::target::{Found, KeyRef, Op, Target};

/// A fault to inject during a phase: called once, at the phase's `fault_at`; says what it did
/// or why it could not.
pub type Fault =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<Injected, String>> + Send>> + Send>;

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

/// Runs one phase against `target` and reports it. `fault`, if given, is injected
/// `spec.fault_at` after warm-up (required when the spec names a time, refused otherwise).
pub async fn run_phase<T: Target>(
    target: Arc<T>,
    spec: &PhaseSpec,
    fault: Option<Fault>,
    progress: Progress,
) -> Result<PhaseReport, BenchError> {
    spec.validate()?;
    if spec.fault_at.is_some() != fault.is_some() {
        return Err(BenchError::InvalidSpec(format!(
            "phase {}: a fault time needs a fault, and a fault needs a time",
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
    let recorder = Arc::new(Mutex::new(Recorder::new(measure_from, measured)));
    let plan = Plan::new(spec, start);
    let mut workers = JoinSet::new();
    let count = match spec.load {
        Load::Closed { concurrency } => concurrency.get(),
        Load::Open { workers, .. } => workers.get(),
    };
    for worker in 0..count {
        let chooser = Chooser::new(
            keys.clone(),
            spec.read_ratio,
            spec.value_size,
            spec.seed,
            worker,
        );
        let (target, plan, recorder) = (target.clone(), plan.clone(), recorder.clone());
        match spec.load {
            Load::Closed { .. } => workers.spawn(closed_loop(target, plan, recorder, chooser)),
            Load::Open { .. } => workers.spawn(open_loop(target, plan, recorder, chooser)),
        };
    }

    let fault_task = match (fault, spec.fault_at) {
        (Some(fault), Some(at)) => {
            let recorder = recorder.clone();
            Some(tokio::spawn(async move {
                tokio::time::sleep_until(measure_from + at).await;
                // Requests completing from here on count as after the fault.
                lock(&recorder).fault_injected(Instant::now(), "(injecting)".into());
                let outcome = fault().await;
                if let Ok(injected) = &outcome {
                    tracing::debug!(action = %injected.action, "fault injected");
                    lock(&recorder).fault_done(injected.clone());
                }
                outcome.map(|_| ())
            }))
        }
        _ => None,
    };

    let line = Line::new(progress, &format!("phase {}", spec.name), None);
    let mut tick = tokio::time::interval_at(start + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    let mut last = start;
    let mut failure = None;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(())) => {}
                Some(Err(e)) => failure = Some(BenchError::Worker(e.to_string())),
                None => break,
            },
            now = tick.tick() => {
                let live = lock(&recorder).take_live();
                let label = if now < measure_from { "warm-up" } else { "measuring" };
                line.phase(label, now.saturating_duration_since(start), now - last, live);
                last = now;
            }
        }
    }
    line.finish();
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
    let report = lock(&recorder).report(spec);
    Ok(report)
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
                    match target.update(key, value.clone()).await {
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

/// When each request starts and whether it is measured; shared by a phase's workers.
#[derive(Debug, Clone)]
struct Plan {
    inner: Arc<PlanInner>,
}

#[derive(Debug)]
struct PlanInner {
    start: Instant,
    measure_from: Instant,
    limit: Limit,
    /// Closed loop with an op limit: measured requests started so far.
    tickets: AtomicU64,
    /// Open loop: the next slot of the schedule, its interval, the first measured slot and
    /// the end.
    next_slot: AtomicU64,
    interval: Duration,
    first_measured: u64,
    end_slot: u64,
}

impl Plan {
    fn new(spec: &PhaseSpec, start: Instant) -> Plan {
        let (interval, first_measured, end_slot) = match spec.load {
            Load::Open { rate, .. } => {
                let first = (spec.warmup.as_secs_f64() * rate).ceil() as u64;
                let measured = match spec.limit {
                    Limit::Duration(d) => (d.as_secs_f64() * rate).ceil() as u64,
                    Limit::Ops(n) => n,
                };
                (
                    Duration::from_secs_f64(1.0 / rate),
                    first,
                    first.saturating_add(measured),
                )
            }
            Load::Closed { .. } => (Duration::ZERO, 0, 0),
        };
        Plan {
            inner: Arc::new(PlanInner {
                start,
                measure_from: start + spec.warmup,
                limit: spec.limit,
                tickets: AtomicU64::new(0),
                next_slot: AtomicU64::new(0),
                interval,
                first_measured,
                end_slot,
            }),
        }
    }

    /// Closed loop: whether a request starting at `now` runs, and whether it is measured.
    fn closed_admit(&self, now: Instant) -> Option<bool> {
        let p = &self.inner;
        if now < p.measure_from {
            return Some(false);
        }
        match p.limit {
            Limit::Duration(d) => (now < p.measure_from + d).then_some(true),
            Limit::Ops(n) => (p.tickets.fetch_add(1, Ordering::Relaxed) < n).then_some(true),
        }
    }

    /// Open loop: the next slot's scheduled start and whether it is measured; `None` when the
    /// schedule is done.
    fn open_slot(&self) -> Option<(Instant, bool)> {
        let p = &self.inner;
        let slot = p.next_slot.fetch_add(1, Ordering::Relaxed);
        if slot >= p.end_slot {
            return None;
        }
        let at = p.start + p.interval.mul_f64(slot as f64);
        Some((at, slot >= p.first_measured))
    }
}

async fn closed_loop<T: Target>(
    target: Arc<T>,
    plan: Plan,
    recorder: Arc<Mutex<Recorder>>,
    mut chooser: Chooser,
) {
    loop {
        let start = Instant::now();
        let Some(measured) = plan.closed_admit(start) else {
            return;
        };
        let (op, outcome) = execute(&*target, &mut chooser).await;
        let end = Instant::now();
        lock(&recorder).record(op, measured, start, end, &outcome);
    }
}

async fn open_loop<T: Target>(
    target: Arc<T>,
    plan: Plan,
    recorder: Arc<Mutex<Recorder>>,
    mut chooser: Chooser,
) {
    while let Some((scheduled, measured)) = plan.open_slot() {
        // A late worker does not wait: its request is already due, and its lateness counts.
        let ready = Instant::now();
        tokio::time::sleep_until(scheduled).await;
        let start = measured_start(scheduled, ready, Instant::now());
        let (op, outcome) = execute(&*target, &mut chooser).await;
        let end = Instant::now();
        lock(&recorder).record(op, measured, start, end, &outcome);
    }
}

/// Where an open-loop request's latency is counted from, for a worker that took its slot at
/// `ready` and got past the timer at `woke`.
///
/// A worker still busy with its previous request when the slot came due (`ready >=
/// scheduled`) was held up by the system under test: its request counts from the schedule, so a
/// stall counts against every request it delays (no coordinated omission). A worker that was
/// idle and waiting was held up by nothing but the timer, which wakes it up to a millisecond
/// late (tokio's timer granularity): that delay is the load generator's, not the system's, so
/// the request counts from when it was actually sent.
pub(crate) fn measured_start(scheduled: Instant, ready: Instant, woke: Instant) -> Instant {
    if ready >= scheduled {
        scheduled
    } else {
        woke.max(scheduled)
    }
}

/// One request as the chooser says.
async fn execute<T: Target>(target: &T, chooser: &mut Chooser) -> (Op, Outcome) {
    let (op, number) = chooser.next();
    let outcome = match op {
        Op::Read => {
            target
                .read(KeyRef {
                    number,
                    name: chooser.name(),
                })
                .await
        }
        Op::Update => {
            let value = chooser.value();
            let key = KeyRef {
                number,
                name: chooser.name(),
            };
            target.update(key, value).await.map(|()| Found::Value)
        }
    };
    (op, outcome)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Records stay consistent if a holder panicked: each update is a few counter increments.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
