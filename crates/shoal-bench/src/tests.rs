//! The driver against fake targets under tokio's paused clock (so timings are exact), and the
//! shape of the JSON and SVG outputs.

use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use std::num::NonZeroU32;
use std::sync::Mutex;

use crate::report::BenchReport;
use crate::spec::{AttemptPolicy, Distribution, Limit, Load, Overload, PhaseSpec};
use crate::target::{Found, KeyRef, OpError, Target};
use crate::{
    Fault, FaultPlan, Injected, Machine, Progress, ServerWatch, TargetInfo, WatchedNode, plot,
    run_phase,
};

/// Answers every request after `service`, except that nothing completes during the stall: a
/// request that arrives in `[stall_from, stall_until)` (times from the target's creation)
/// is held until `stall_until`, like a node frozen by a pause.
struct Stalling {
    created: Instant,
    service: Duration,
    stall: Option<(Duration, Duration)>,
    requests: AtomicU64,
}

impl Stalling {
    fn new(service: Duration, stall: Option<(Duration, Duration)>) -> Stalling {
        Stalling {
            created: Instant::now(),
            service,
            stall,
            requests: AtomicU64::new(0),
        }
    }

    async fn serve(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let since = now - self.created;
        match self.stall {
            Some((from, until)) if since >= from && since < until => {
                tokio::time::sleep_until(self.created + until).await;
            }
            _ => tokio::time::sleep(self.service).await,
        }
    }
}

impl Target for Stalling {
    type Context = ();

    async fn read(&self, _key: KeyRef<'_>) -> Result<Found, OpError> {
        self.serve().await;
        Ok(Found::Value)
    }

    fn context(&self, _key: KeyRef<'_>) {}

    async fn update(&self, _key: KeyRef<'_>, _value: Bytes, _context: &()) -> Result<(), OpError> {
        self.serve().await;
        Ok(())
    }
}

fn spec(load: Load, warmup: Duration, limit: Limit) -> PhaseSpec {
    PhaseSpec {
        name: "run".into(),
        load,
        read_ratio: 0.5,
        keys: NonZeroU64::new(100).unwrap(),
        distribution: Distribution::Uniform,
        value_size: 8,
        warmup,
        limit,
        fault_at: None,
        heal_at: None,
        seed: 7,
        attempts: AttemptPolicy::SINGLE,
    }
}

fn workers(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// Two workers in a closed loop for `seconds`, no warm-up, a fault 1 s in.
fn closed_with_a_fault_at_1s(seconds: u64) -> PhaseSpec {
    PhaseSpec {
        fault_at: Some(Duration::from_secs(1)),
        heal_at: None,
        ..spec(
            Load::Closed {
                concurrency: workers(2),
            },
            Duration::ZERO,
            Limit::Duration(Duration::from_secs(seconds)),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn open_loop_latency_counts_from_the_schedule_through_a_stall() {
    // 100 requests/s for 3 s; the target freezes from 1.0 s to 1.5 s. Every request scheduled
    // during the freeze waits for its end, and the four workers fall behind the schedule until
    // they catch up: those requests' latency must include the wait, as the schedule saw it.
    let target = Arc::new(Stalling::new(
        Duration::from_millis(1),
        Some((Duration::from_millis(1000), Duration::from_millis(1500))),
    ));
    let spec = spec(
        Load::Open {
            rate: 100.0,
            max_in_flight: workers(4),
        },
        Duration::ZERO,
        Limit::Duration(Duration::from_secs(3)),
    );
    let report = run_phase(target.clone(), &spec, None, Progress::Hidden, None)
        .await
        .unwrap();
    assert_eq!(report.ops, 300, "one request per scheduled slot");
    let max = report.read.latency.max_us.max(report.update.latency.max_us);
    assert!(
        (499_000..=501_000).contains(&max),
        "the first stalled request waited 0.5 s, max {max} µs"
    );
    // About 50 slots fall in the freeze (1.00..1.49 s); each is late by (1.5 s - its slot).
    let slow: u64 = report
        .timeline
        .iter()
        .map(|s| s.read.ok + s.update.ok)
        .sum::<u64>();
    assert_eq!(slow, 300);
    let p99 = report.read.latency.p99_us.max(report.update.latency.p99_us);
    assert!(p99 > 400_000, "the stall shows at p99: {p99} µs");
    let p50 = report.read.latency.p50_us;
    assert!(p50 < 5_000, "most requests are not delayed: p50 {p50} µs");
    // A closed loop would have seen four slow requests; the schedule saw every delayed one.
    let delayed = report
        .read
        .spectrum
        .iter()
        .filter(|p| p.us > 100_000)
        .count();
    assert!(delayed > 0);
    let over_100ms = count_over(&report, 100_000);
    assert!(
        (40..=50).contains(&over_100ms),
        "{over_100ms} requests over 100 ms"
    );
}

/// Requests slower than `us`, from the per-phase summary: total minus those at or below, using
/// the spectrum's resolution (1/20 decade), which is enough to tell 4 from 40.
fn count_over(report: &crate::PhaseReport, us: u64) -> u64 {
    [&report.read, &report.update]
        .iter()
        .map(|op| {
            let below = op
                .spectrum
                .iter()
                .filter(|p| p.us <= us)
                .map(|p| p.percentile)
                .fold(0.0, f64::max);
            ((1.0 - below / 100.0) * op.latency.count as f64).round() as u64
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn closed_loop_counts_from_each_start_and_skips_the_warmup() {
    let target = Arc::new(Stalling::new(Duration::from_millis(2), None));
    let spec = spec(
        Load::Closed {
            concurrency: workers(4),
        },
        Duration::from_secs(1),
        Limit::Duration(Duration::from_secs(2)),
    );
    let report = run_phase(target.clone(), &spec, None, Progress::Hidden, None)
        .await
        .unwrap();
    // 4 workers × 500 requests/s × 2 s measured; the warm-up's 2000 are not counted.
    assert_eq!(report.ops, 4000);
    assert_eq!(target.requests.load(Ordering::Relaxed), 6000);
    assert_eq!(report.read.latency.p50_us, 2000);
    assert_eq!(report.update.latency.max_us, 2000);
    assert!(
        (report.throughput - 2000.0).abs() < 10.0,
        "{}",
        report.throughput
    );
    assert_eq!(report.timeline.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_ops_limit_runs_exactly_that_many() {
    let target = Arc::new(Stalling::new(Duration::from_millis(1), None));
    let spec = spec(
        Load::Closed {
            concurrency: workers(3),
        },
        Duration::ZERO,
        Limit::Ops(1000),
    );
    let report = run_phase(target.clone(), &spec, None, Progress::Hidden, None)
        .await
        .unwrap();
    assert_eq!(report.ops, 1000);
    assert_eq!(target.requests.load(Ordering::Relaxed), 1000);
    let open = PhaseSpec {
        load: Load::Open {
            rate: 500.0,
            max_in_flight: workers(2),
        },
        ..spec
    };
    let report = run_phase(target.clone(), &open, None, Progress::Hidden, None)
        .await
        .unwrap();
    assert_eq!(report.ops, 1000);
}

#[tokio::test(start_paused = true)]
async fn a_fault_splits_the_run_into_before_and_after() {
    // The "fault" makes the target slow from its injection on.
    let target = Arc::new(Stalling::new(
        Duration::from_millis(1),
        Some((Duration::from_secs(2), Duration::from_secs(2))),
    ));
    let injected = Arc::new(AtomicU64::new(0));
    let flag = injected.clone();
    let fault: Fault = Box::new(move || {
        Box::pin(async move {
            flag.fetch_add(1, Ordering::Relaxed);
            Ok(Injected::action("SIGKILL to node n3"))
        })
    });
    let spec = closed_with_a_fault_at_1s(3);
    let report = run_phase(target, &spec, Some(fault.into()), Progress::Hidden, None)
        .await
        .unwrap();
    assert_eq!(injected.load(Ordering::Relaxed), 1);
    let fault = report.fault.as_ref().unwrap();
    assert_eq!(fault.action, "SIGKILL to node n3");
    assert!((fault.at_s - 1.0).abs() < 0.01, "{}", fault.at_s);
    let before = fault.before.read.ok + fault.before.update.ok;
    let after = fault.after.read.ok + fault.after.update.ok;
    assert_eq!(before + after, report.ops);
    assert!(
        (1900..=2100).contains(&before),
        "{before} before, {after} after"
    );
    // A fault time without a fault is refused.
    let spec = PhaseSpec {
        fault_at: Some(Duration::from_secs(1)),
        heal_at: None,
        ..spec
    };
    assert!(
        run_phase(
            Arc::new(Stalling::new(Duration::from_millis(1), None)),
            &spec,
            None,
            Progress::Hidden,
            None,
        )
        .await
        .is_err()
    );
}

/// A node that dies at `dies` and is noticed `noticed` later: requests in flight at the death,
/// and requests that start before it is noticed, fail when they would have completed.
struct Dying {
    created: Instant,
    service: Duration,
    dies: Duration,
    noticed: Duration,
}

impl Dying {
    async fn serve(&self) -> Result<(), OpError> {
        let start = Instant::now() - self.created;
        tokio::time::sleep(self.service).await;
        let end = Instant::now() - self.created;
        let in_flight = start < self.dies && end >= self.dies;
        let unnoticed = start >= self.dies && start < self.dies + self.noticed;
        if in_flight || unnoticed {
            Err(OpError::new("transport", "connection lost"))
        } else {
            Ok(())
        }
    }
}

impl Target for Dying {
    type Context = ();

    async fn read(&self, _key: KeyRef<'_>) -> Result<Found, OpError> {
        self.serve().await.map(|()| Found::Value)
    }

    fn context(&self, _key: KeyRef<'_>) {}

    async fn update(&self, _key: KeyRef<'_>, _value: Bytes, _context: &()) -> Result<(), OpError> {
        self.serve().await
    }
}

#[tokio::test(start_paused = true)]
async fn errors_after_a_fault_say_which_requests_were_in_flight_when_it_struck() {
    // Two workers, 30 ms per request: at 1 s two requests are in flight (started at 0.99 s);
    // they fail, and so do the two that start at 1.02 s, before the death is noticed at 1.05 s.
    let target = Arc::new(Dying {
        created: Instant::now(),
        service: Duration::from_millis(30),
        dies: Duration::from_secs(1),
        noticed: Duration::from_millis(50),
    });
    let fault: Fault = Box::new(|| Box::pin(async { Ok(Injected::action("SIGKILL to node n3")) }));
    let spec = closed_with_a_fault_at_1s(2);
    let report = run_phase(target, &spec, Some(fault.into()), Progress::Hidden, None)
        .await
        .unwrap();
    let fault = report.fault.as_ref().unwrap();
    let errors = fault.after.read.errors + fault.after.update.errors;
    let in_flight = fault.after.read.errors_in_flight + fault.after.update.errors_in_flight;
    assert_eq!(fault.before.read.errors + fault.before.update.errors, 0);
    assert_eq!((errors, in_flight), (4, 2), "{}", report.to_text());
    assert!(
        report
            .to_text()
            .contains("2 in flight at the fault, 2 started after it")
    );
}

#[tokio::test(start_paused = true)]
async fn errors_after_a_fault_say_which_started_before_it_took_effect() {
    // As above, but the death is noticed at 1.06 s and the fault reports that it took effect
    // (the process was gone) at 1.03 s: the requests of 0.99 s were in flight, those of 1.02 s
    // started before the effect, and those of 1.05 s after it.
    let target = Arc::new(Dying {
        created: Instant::now(),
        service: Duration::from_millis(30),
        dies: Duration::from_secs(1),
        noticed: Duration::from_millis(60),
    });
    let fault: Fault = Box::new(|| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(Injected {
                action: "SIGKILL to node n3".to_owned(),
                took_effect: Some(Instant::now()),
            })
        })
    });
    let report = run_phase(
        target,
        &closed_with_a_fault_at_1s(2),
        Some(fault.into()),
        Progress::Hidden,
        None,
    )
    .await
    .unwrap();
    let fault = report.fault.as_ref().unwrap();
    let after = &fault.after;
    let split = (
        after.read.errors + after.update.errors,
        after.read.errors_in_flight + after.update.errors_in_flight,
        after.read.errors_before_effect + after.update.errors_before_effect,
    );
    assert_eq!(split, (6, 2, 2), "{}", report.to_text());
    let effect = fault.took_effect_ms.unwrap();
    assert!((effect - 30.0).abs() < 1.0, "{effect}");
    let text = report.to_text();
    assert!(text.contains("took effect 30.0 ms later"), "{text}");
    assert!(
        text.contains("2 in flight at the fault, 2 started before it took effect, 2 after"),
        "{text}"
    );
}

/// Fails every request that completes in `[down_from, down_until)` (from its creation): nodes
/// killed and started again.
struct Outage {
    created: Instant,
    down_from: Duration,
    down_until: Duration,
}

impl Outage {
    async fn serve(&self) -> Result<(), OpError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now() - self.created;
        if now >= self.down_from && now < self.down_until {
            Err(OpError::new("unavailable", "primaries down"))
        } else {
            Ok(())
        }
    }
}

impl Target for Outage {
    type Context = ();

    async fn read(&self, _key: KeyRef<'_>) -> Result<Found, OpError> {
        self.serve().await.map(|()| Found::Value)
    }

    fn context(&self, _key: KeyRef<'_>) {}

    async fn update(&self, _key: KeyRef<'_>, _value: Bytes, _context: &()) -> Result<(), OpError> {
        self.serve().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_closes_the_fault_window_and_opens_its_own() {
    // Down from 1 s to 2 s; the fault strikes at 1 s, the restart at 2 s, in a 3 s run.
    let target = Arc::new(Outage {
        created: Instant::now(),
        down_from: Duration::from_secs(1),
        down_until: Duration::from_secs(2),
    });
    let strike: Fault = Box::new(|| Box::pin(async { Ok(Injected::action("SIGKILL to n4, n5")) }));
    let heal: Fault = Box::new(|| Box::pin(async { Ok(Injected::action("started n4, n5")) }));
    let spec = PhaseSpec {
        heal_at: Some(Duration::from_secs(2)),
        ..closed_with_a_fault_at_1s(3)
    };
    let plan = FaultPlan {
        strike,
        heal: Some(heal),
    };
    let report = run_phase(target, &spec, Some(plan), Progress::Hidden, None)
        .await
        .unwrap();
    let fault = report.fault.as_ref().unwrap();
    let heal = fault.heal.as_ref().expect("the restart is reported");
    assert_eq!(heal.action, "started n4, n5");
    assert!((heal.at_s - 2.0).abs() < 0.01, "{}", heal.at_s);
    assert!((fault.after.seconds - 1.0).abs() < 0.01);
    assert!(
        (heal.after.seconds - 1.0).abs() < 0.02,
        "{}",
        heal.after.seconds
    );
    let ok = |w: &crate::report::WindowReport| w.read.ok + w.update.ok;
    let errors = |w: &crate::report::WindowReport| w.read.errors + w.update.errors;
    // Every failure is in the outage's window; the windows add up to the run.
    assert_eq!(errors(&fault.before) + errors(&heal.after), 0);
    assert_eq!(errors(&fault.after), report.errors);
    assert!(errors(&fault.after) > 150, "{}", report.to_text());
    assert!(ok(&heal.after) > 150, "{}", report.to_text());
    assert_eq!(
        ok(&fault.before) + ok(&fault.after) + ok(&heal.after) + report.errors,
        report.ops
    );
    let text = report.to_text();
    assert!(text.contains("undone at 2.0 s: started n4, n5"), "{text}");
    // A restart time without a restart is refused, and a restart without its time.
    let only_strike: Fault = Box::new(|| Box::pin(async { Ok(Injected::action("x")) }));
    let no_heal = FaultPlan::from(only_strike);
    let outage = || {
        Arc::new(Outage {
            created: Instant::now(),
            down_from: Duration::ZERO,
            down_until: Duration::ZERO,
        })
    };
    assert!(
        run_phase(outage(), &spec, Some(no_heal), Progress::Hidden, None)
            .await
            .is_err()
    );
    let with_heal = FaultPlan {
        strike: Box::new(|| Box::pin(async { Ok(Injected::action("x")) })),
        heal: Some(Box::new(|| Box::pin(async { Ok(Injected::action("y")) }))),
    };
    assert!(
        run_phase(
            outage(),
            &closed_with_a_fault_at_1s(3),
            Some(with_heal),
            Progress::Hidden,
            None
        )
        .await
        .is_err()
    );
}

#[test]
fn an_open_loop_request_counts_from_its_schedule_only_when_the_system_held_it_up() {
    use crate::driver::measured_start;
    let t0 = std::time::Instant::now();
    let at = |us: u64| Instant::from_std(t0 + Duration::from_micros(us));
    let scheduled = at(10_000);
    // The dispatcher woken 0.9 ms late by the timer: the request starts when it is sent.
    assert_eq!(measured_start(scheduled, None, at(10_900)), at(10_900));
    assert_eq!(
        measured_start(scheduled, Some(at(2_000)), at(10_900)),
        at(10_900)
    );
    // Sent on time.
    assert_eq!(measured_start(scheduled, None, at(10_000)), scheduled);
    // The cap held the dispatcher until after the slot came due: the lateness is the system's
    // and counts, also for a slot that found a free permit once the dispatcher got to it.
    assert_eq!(
        measured_start(scheduled, Some(at(13_000)), at(13_000)),
        scheduled
    );
    assert_eq!(
        measured_start(scheduled, Some(at(13_000)), at(13_500)),
        scheduled
    );
    assert_eq!(
        measured_start(scheduled, Some(scheduled), at(10_050)),
        scheduled
    );
}

/// Counts the attempts of each update (named by the context the driver asked for), and the
/// attempts that were dropped unfinished: the first `hangs` attempts of every update hang for
/// an hour, the later ones answer after a millisecond.
struct Hanging {
    hangs: u32,
    contexts: AtomicU64,
    /// (context, value) of every attempt, in order.
    attempts: Mutex<Vec<(u64, Bytes)>>,
    dropped: Arc<AtomicU64>,
}

/// Counts a drop that happens before [`Unfinished::finish`].
struct Unfinished {
    dropped: Arc<AtomicU64>,
    finished: bool,
}

impl Unfinished {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.finished {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Hanging {
    fn new(hangs: u32) -> Hanging {
        Hanging {
            hangs,
            contexts: AtomicU64::new(0),
            attempts: Mutex::new(Vec::new()),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    fn attempts_of(&self, context: u64) -> Vec<Bytes> {
        let attempts = self.attempts.lock().unwrap();
        attempts
            .iter()
            .filter(|(c, _)| *c == context)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Target for Hanging {
    type Context = u64;

    async fn read(&self, _key: KeyRef<'_>) -> Result<Found, OpError> {
        unreachable!("this test only updates")
    }

    fn context(&self, _key: KeyRef<'_>) -> u64 {
        self.contexts.fetch_add(1, Ordering::Relaxed)
    }

    async fn update(&self, _key: KeyRef<'_>, value: Bytes, context: &u64) -> Result<(), OpError> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push((*context, value));
            attempts.iter().filter(|(c, _)| c == context).count() as u32
        };
        let guard = Unfinished {
            dropped: self.dropped.clone(),
            finished: false,
        };
        let wait = if attempt <= self.hangs {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(1)
        };
        tokio::time::sleep(wait).await;
        guard.finish();
        Ok(())
    }
}

fn updates(ops: u64, attempts: AttemptPolicy) -> PhaseSpec {
    PhaseSpec {
        read_ratio: 0.0,
        attempts,
        ..spec(
            Load::Closed {
                concurrency: workers(2),
            },
            Duration::ZERO,
            Limit::Ops(ops),
        )
    }
}

fn policy(timeout_ms: u64, attempts: u32) -> AttemptPolicy {
    AttemptPolicy {
        timeout: Some(Duration::from_millis(timeout_ms)),
        attempts: NonZeroU32::new(attempts).unwrap(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_abandoned_and_retried_with_the_same_value_and_context() {
    // Two attempts of every update hang; the third answers.
    let target = Arc::new(Hanging::new(2));
    let report = run_phase(
        target.clone(),
        &updates(10, policy(100, 3)),
        None,
        Progress::Hidden,
        None,
    )
    .await
    .unwrap();
    assert_eq!((report.ops, report.errors), (10, 0), "{}", report.to_text());
    let a = &report.attempts;
    assert_eq!((a.sent, a.abandoned, a.retries), (30, 20, 20));
    assert_eq!(a.succeeded_on, vec![0, 0, 10]);
    // The target saw each abandoned attempt's future dropped before it finished.
    assert_eq!(target.dropped.load(Ordering::Relaxed), 20);
    for context in 0..10 {
        let values = target.attempts_of(context);
        assert_eq!(values.len(), 3, "request {context}: {values:?}");
        assert!(
            values.iter().all(|v| *v == values[0]),
            "one value for every attempt"
        );
    }
    // Each succeeded after two timeouts of 100 ms and its own millisecond.
    assert_near(report.update.latency.p50_us, 201_000);
    assert!(
        report
            .to_text()
            .contains("30 sent, 20 abandoned at the attempt timeout, 20 retries")
    );
}

/// Equal within the histograms' three significant digits.
fn assert_near(us: u64, expected: u64) {
    let tolerance = expected / 1_000 + 1;
    assert!(
        us.abs_diff(expected) <= tolerance,
        "{us} µs, expected {expected}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_every_attempt_times_out_fails_as_attempt_timeout_after_n_attempts() {
    let target = Arc::new(Hanging::new(5));
    let report = run_phase(
        target.clone(),
        &updates(6, policy(250, 2)),
        None,
        Progress::Hidden,
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.errors, 6);
    assert_eq!(report.update.errors.get("attempt_timeout"), Some(&6));
    assert_eq!((report.attempts.sent, report.attempts.abandoned), (12, 12));
    assert!(report.attempts.succeeded_on.is_empty());
    for context in 0..6 {
        assert_eq!(target.attempts_of(context).len(), 2, "at most two attempts");
    }
    let failed = report.update.failed_latency.unwrap();
    // 2 × 250 ms.
    assert_near(failed.p50_us, 500_000);
    assert_near(failed.max_us, 500_000);
    // Without an attempt timeout (one attempt, as before) nothing is abandoned.
    let target = Arc::new(Hanging::new(0));
    let report = run_phase(
        target.clone(),
        &updates(4, AttemptPolicy::SINGLE),
        None,
        Progress::Hidden,
        None,
    )
    .await
    .unwrap();
    assert_eq!((report.attempts.sent, report.attempts.abandoned), (4, 0));
    assert_eq!(target.dropped.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn only_timeouts_are_retried() {
    use crate::driver::attempt;
    let calls = AtomicU64::new(0);
    // The store answers "timeout" twice (its deadline is the attempt's), then succeeds.
    let (outcome, attempts) = attempt(policy(1000, 3), || {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        async move {
            if n < 2 {
                Err(OpError::new("timeout", "coordinator deadline"))
            } else {
                Ok(n)
            }
        }
    })
    .await;
    assert_eq!(outcome.unwrap(), 2);
    assert_eq!((attempts.sent, attempts.abandoned), (3, 0));
    // Any other error ends the request at once.
    let (outcome, attempts) = attempt(policy(1000, 3), || async {
        Err::<(), _>(OpError::new("overloaded", "shed"))
    })
    .await;
    assert_eq!(outcome.unwrap_err().kind, "overloaded");
    assert_eq!(attempts.sent, 1);
    // Timeouts answered by the store on every attempt count as the attempts timing out.
    let (outcome, attempts) = attempt(policy(1000, 2), || async {
        Err::<(), _>(OpError::new("timeout", "coordinator deadline"))
    })
    .await;
    assert_eq!(outcome.unwrap_err().kind, OpError::ATTEMPT_TIMEOUT);
    assert_eq!((attempts.sent, attempts.abandoned), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn the_open_loop_reaches_twenty_thousand_in_flight_and_counts_the_lateness_past_the_cap() {
    // 4,000 requests/s for 6 s against a target that takes 10 s: 20,000 are in flight after
    // 5 s, and the cap holds the last 4,000 until the first ones end at 10 s.
    let target = Arc::new(Stalling::new(Duration::from_secs(10), None));
    let spec = spec(
        Load::Open {
            rate: 4_000.0,
            max_in_flight: workers(20_000),
        },
        Duration::ZERO,
        Limit::Duration(Duration::from_secs(6)),
    );
    let report = run_phase(target.clone(), &spec, None, Progress::Hidden, None)
        .await
        .unwrap();
    assert_eq!(report.ops, 24_000);
    let open = report.open_loop.as_ref().unwrap();
    assert_eq!((open.max_in_flight, open.peak_in_flight), (20_000, 20_000));
    assert_eq!(open.held_starts, 4_000);
    // Slot 20,000 was due at 5 s, started at 10 s when slot 0 ended, and ended at 20 s.
    let max = report.read.latency.max_us.max(report.update.latency.max_us);
    assert!((14_990_000..=15_010_000).contains(&max), "max {max} µs");
    // A sixth of the requests were held: p99 is theirs, p50 the others'.
    let p99 = report.read.latency.p99_us;
    assert!((14_990_000..=15_010_000).contains(&p99), "p99 {p99} µs");
    let p50 = report.read.latency.p50_us;
    assert!((9_990_000..=10_010_000).contains(&p50), "p50 {p50} µs");
    let peak = report.timeline.iter().filter_map(|s| s.in_flight_max).max();
    assert_eq!(peak, Some(20_000));
    assert!(
        report
            .to_text()
            .contains("at most 20000 in flight (cap 20000); 4000 requests")
    );
}

/// Answers after `slow` if the request was sent in `[from, until)` (times from the target's
/// creation), else after 1 ms.
struct SlowWindow {
    created: Instant,
    from: Duration,
    until: Duration,
    slow: Duration,
}

impl SlowWindow {
    async fn serve(&self) {
        let since = Instant::now() - self.created;
        let wait = if since >= self.from && since < self.until {
            self.slow
        } else {
            Duration::from_millis(1)
        };
        tokio::time::sleep(wait).await;
    }
}

impl Target for SlowWindow {
    type Context = ();

    async fn read(&self, _key: KeyRef<'_>) -> Result<Found, OpError> {
        self.serve().await;
        Ok(Found::Value)
    }

    fn context(&self, _key: KeyRef<'_>) {}

    async fn update(&self, _key: KeyRef<'_>, _value: Bytes, _context: &()) -> Result<(), OpError> {
        self.serve().await;
        Ok(())
    }
}

/// 50, 100, 150 and 50 % of 200 ops/s, 5 s each, no warm-up.
fn step_profile(attempts: AttemptPolicy) -> PhaseSpec {
    let mut overload = Overload::standard();
    overload.base.keys = NonZeroU64::new(100).unwrap();
    overload.base.warmup = Duration::ZERO;
    overload.base.attempts = attempts;
    overload.step_duration = Duration::from_secs(5);
    overload.steps_phase(200.0)
}

#[tokio::test(start_paused = true)]
async fn a_step_profile_reports_goodput_per_step_and_when_latency_came_back() {
    // Requests sent from 10 s (the 150 % step) to 17.5 s (half way into the last step) take
    // 400 ms; the others 1 ms.
    let target = Arc::new(SlowWindow {
        created: Instant::now(),
        from: Duration::from_secs(10),
        until: Duration::from_millis(17_500),
        slow: Duration::from_millis(400),
    });
    let report = run_phase(
        target,
        &step_profile(AttemptPolicy::SINGLE),
        None,
        Progress::Hidden,
        None,
    )
    .await
    .unwrap();
    let steps: Vec<(&str, f64, u64, f64)> = report
        .steps
        .iter()
        .map(|s| (s.label.as_str(), s.rate, s.offered, s.goodput))
        .collect();
    assert_eq!(
        steps,
        [
            ("50%", 100.0, 500, 100.0),
            ("100%", 200.0, 1000, 200.0),
            ("150%", 300.0, 1500, 300.0),
            ("50%", 100.0, 500, 100.0)
        ],
        "{}",
        report.to_text()
    );
    assert_eq!(report.steps[0].latency.p99_us, 1_000);
    assert_near(report.steps[2].latency.p50_us, 400_000);
    // Half of the last step was slow.
    assert_near(report.steps[3].latency.p99_us, 400_000);
    let recovery = report.recovery.as_ref().unwrap();
    assert_eq!(
        (recovery.baseline_step, recovery.baseline_p99_us),
        (0, 1_000)
    );
    // Second 17 still completes requests sent before 17.5 s; from second 18 all is fast.
    assert_eq!(recovery.recovered_at_second, Some(18));
    assert_eq!(recovery.time_to_recover_s, Some(3.0));
    let text = report.to_text();
    assert!(
        text.contains("time to recover: 3.0 s (from second 18"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_attempts_time_out_loses_its_goodput_and_the_retries_are_counted() {
    // Requests sent during the 150 % step (10 s to 15 s) take 2 s; attempts time out after
    // 500 ms, two each: only those whose second attempt leaves after 15 s succeed.
    let target = Arc::new(SlowWindow {
        created: Instant::now(),
        from: Duration::from_secs(10),
        until: Duration::from_secs(15),
        slow: Duration::from_secs(2),
    });
    let report = run_phase(
        target,
        &step_profile(policy(500, 2)),
        None,
        Progress::Hidden,
        None,
    )
    .await
    .unwrap();
    let overloaded = &report.steps[2];
    let failed = overloaded
        .errors
        .get("attempt_timeout")
        .copied()
        .unwrap_or(0);
    assert!((1_348..=1_352).contains(&failed), "{failed} failed");
    assert_eq!(overloaded.ok + failed, 1_500);
    assert!(
        (29.0..=31.0).contains(&overloaded.goodput),
        "{}",
        overloaded.goodput
    );
    assert_eq!(overloaded.attempts.succeeded_on, vec![0, overloaded.ok]);
    assert_eq!(overloaded.attempts.abandoned, 2 * failed + overloaded.ok);
    for calm in [0, 1, 3] {
        let step = &report.steps[calm];
        assert!(step.errors.is_empty(), "step {calm}: {:?}", step.errors);
        assert_eq!(step.goodput, step.rate);
    }
    // The last step's first second still sees the retries of the overloaded one end.
    let recovery = report.recovery.as_ref().unwrap();
    assert_eq!(
        recovery.recovered_at_second,
        Some(16),
        "{}",
        report.to_text()
    );
}

#[test]
fn a_profile_that_never_comes_back_did_not_recover() {
    use crate::report::{SecondOp, SecondReport, recovery};
    let second = |second: u32, ok: u64, errors: u64, p99_us: u64| SecondReport {
        second,
        ok,
        errors,
        p99_us,
        abandoned: 0,
        started: 0,
        in_flight_max: None,
        read: SecondOp::default(),
        update: SecondOp::default(),
    };
    let step = |rate: f64, start_s: f64, p99_us: u64| crate::StepReport {
        label: format!("{rate}"),
        rate,
        start_s,
        seconds: 2.0,
        offered: 0,
        ok: 0,
        goodput: 0.0,
        delivered: 0.0,
        errors: Default::default(),
        latency: crate::report::LatencySummary {
            p99_us,
            ..Default::default()
        },
        attempts: Default::default(),
        server: None,
    };
    let steps = [
        step(100.0, 0.0, 1_000),
        step(300.0, 2.0, 9_000),
        step(100.0, 4.0, 5_000),
    ];
    let slow_to_the_end = [second(4, 100, 0, 1_500), second(5, 100, 0, 3_000)];
    let r = recovery(&steps, &slow_to_the_end).unwrap();
    assert_eq!(r.threshold_us, 2_000);
    assert_eq!((r.recovered_at_second, r.time_to_recover_s), (None, None));
    // Fast successes while more than 1 % fail are not a recovery either; nor an empty second.
    let failing = [second(4, 100, 0, 1_500), second(5, 90, 10, 1_000)];
    assert_eq!(
        recovery(&steps, &failing).unwrap().recovered_at_second,
        None
    );
    let empty = [second(4, 0, 0, 0)];
    assert_eq!(recovery(&steps, &empty).unwrap().recovered_at_second, None);
    let back = [
        second(4, 100, 0, 3_000),
        second(5, 100, 1, 2_000),
        second(6, 100, 0, 900),
    ];
    let r = recovery(&steps, &back).unwrap();
    assert_eq!(
        (r.recovered_at_second, r.time_to_recover_s),
        (Some(5), Some(1.0))
    );
    assert!(recovery(&[], &back).is_none());
}

#[tokio::test]
async fn the_servers_are_scraped_at_the_ends_of_a_phase() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A metrics endpoint whose shed counter reads 5 at the first scrape and 12 after.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut scrapes = 0;
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await.unwrap();
            let value = if scrapes == 0 { 5 } else { 12 };
            scrapes += 1;
            let body = format!(
                "# TYPE shoal_requests_shed_total counter\nshoal_requests_shed_total{{class=\"client\"}} {value}\n"
            );
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    let watch = Arc::new(ServerWatch::new(vec![WatchedNode {
        name: "n1".into(),
        metrics: Some(addr),
        pid: Some(std::process::id()),
    }]));
    let target = Arc::new(Stalling::new(Duration::from_millis(1), None));
    let spec = spec(
        Load::Closed {
            concurrency: workers(2),
        },
        Duration::ZERO,
        Limit::Ops(20),
    );
    let report = run_phase(target, &spec, None, Progress::Hidden, Some(&watch))
        .await
        .unwrap();
    server.abort();
    let server = report.server.as_ref().unwrap();
    assert_eq!(server.nodes_scraped, 1);
    let shed = server.metrics["shoal_requests_shed_total"]
        .as_ref()
        .unwrap();
    assert_eq!(shed.total, 7.0);
    assert_eq!(server.metrics["shoal_queue_depth"], None);
    assert_eq!(server.ops, 20);
    assert!(server.node_cpu_seconds.is_some() && server.client_cpu_seconds.is_some());
    let text = report.to_text();
    assert!(
        text.contains("shoal_requests_cancelled_total n/a"),
        "{text}"
    );
    assert!(
        text.contains("shoal_requests_shed_total +7 (class=\"client\" 7)"),
        "{text}"
    );
}

async fn sample_report() -> BenchReport {
    let target = Arc::new(Stalling::new(Duration::from_millis(1), None));
    let injected: Fault =
        Box::new(|| Box::pin(async { Ok(Injected::action("SIGKILL to node n3 (pid 1)")) }));
    let a = spec(
        Load::Closed {
            concurrency: workers(2),
        },
        Duration::ZERO,
        Limit::Duration(Duration::from_secs(2)),
    );
    let c = PhaseSpec {
        name: "C".into(),
        fault_at: Some(Duration::from_secs(1)),
        heal_at: None,
        ..a.clone()
    };
    let phases = vec![
        run_phase(target.clone(), &a, None, Progress::Hidden, None)
            .await
            .unwrap(),
        run_phase(target, &c, Some(injected.into()), Progress::Hidden, None)
            .await
            .unwrap(),
    ];
    BenchReport {
        command: "shoal bench --test <&>".into(),
        target: TargetInfo {
            kind: "fake".into(),
            endpoints: vec!["127.0.0.1:1".into()],
            consistency: "none".into(),
        },
        workload: Some("w1".into()),
        machine: Machine::detect(),
        client_threads: 1,
        started_unix_s: 0,
        preload: None,
        phases,
    }
}

#[tokio::test(start_paused = true)]
async fn the_json_holds_every_figure_and_the_settings() {
    let report = sample_report().await;
    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["target"]["kind"], "fake");
    assert!(json["machine"]["cpus"].as_u64().unwrap() >= 1);
    let a = &json["phases"][0];
    assert_eq!(a["spec"]["load"]["kind"], "closed");
    assert_eq!(a["spec"]["load"]["concurrency"], 2);
    assert_eq!(a["spec"]["read_ratio"], 0.5);
    assert_eq!(a["spec"]["limit"]["duration"], 2.0);
    assert_eq!(a["spec"]["distribution"]["kind"], "uniform");
    for op in ["read", "update"] {
        for field in ["count", "mean_us", "p50_us", "p99_us", "p999_us", "max_us"] {
            assert!(a[op]["latency"][field].is_number(), "{op}.{field} in {a}");
        }
        assert!(a[op]["throughput"].as_f64().unwrap() > 0.0);
        assert!(a[op]["errors"].is_object());
        assert!(a[op]["spectrum"].as_array().unwrap().len() > 100);
    }
    assert!(a["throughput"].as_f64().unwrap() > 0.0);
    assert!(a["fault"].is_null());
    let c = &json["phases"][1];
    assert_eq!(c["fault"]["action"], "SIGKILL to node n3 (pid 1)");
    assert!(c["fault"]["before"]["read"]["latency"]["p99_us"].is_number());
    assert!(c["fault"]["after"]["update"]["ok"].as_u64().unwrap() > 0);
    assert_eq!(c["timeline"].as_array().unwrap().len(), 2);
    assert!(c["timeline"][1]["read"]["p99_us"].is_number());
}

#[tokio::test(start_paused = true)]
async fn the_svg_is_well_formed_xml_with_a_line_per_series() {
    let report = sample_report().await;
    let svg = plot::svg(&report);
    check_xml(&svg);
    // Spectrum: A and C, read and update; timeline of C: read and update.
    assert_eq!(svg.matches("<polyline").count(), 6, "{svg}");
    assert!(svg.contains("99.9%") && svg.contains("max"));
    assert!(svg.contains("SIGKILL to node n3"));
    assert!(svg.contains("&lt;&amp;&gt;") || !svg.contains("<&>"));
}

/// A small well-formedness check: one root, tags balanced and properly nested, attributes
/// quoted, no bare `<` or `&` in text.
fn check_xml(doc: &str) {
    let body = doc.trim_start();
    let body = match body.strip_prefix("<?xml") {
        Some(rest) => &rest[rest.find("?>").expect("end of the XML declaration") + 2..],
        None => body,
    };
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open]);
        let close = rest[open..].find('>').expect("an unclosed tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name = tag.split_whitespace().next().expect("a tag name");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
            "tag name {name:?}"
        );
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        assert!(!tag.contains('<'), "a '<' inside <{tag}>");
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name.to_owned());
        }
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1, "one root element");
}

fn check_text(text: &str) {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "a bare & in {text:?}"
        );
    }
}
