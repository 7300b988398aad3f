//! The driver against fake targets under tokio's paused clock (so timings are exact), and the
//! shape of the JSON and SVG outputs.

use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::report::BenchReport;
use crate::spec::{Distribution, Limit, Load, PhaseSpec};
use crate::target::{Found, KeyRef, OpError, Target};
use crate::{Fault, Injected, Machine, Progress, TargetInfo, plot, run_phase};

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
    async fn read(&self, _key: KeyRef<'_>) -> Result<Found, OpError> {
        self.serve().await;
        Ok(Found::Value)
    }

    async fn update(&self, _key: KeyRef<'_>, _value: Bytes) -> Result<(), OpError> {
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
        seed: 7,
    }
}

fn workers(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// Two workers in a closed loop for `seconds`, no warm-up, a fault 1 s in.
fn closed_with_a_fault_at_1s(seconds: u64) -> PhaseSpec {
    PhaseSpec {
        fault_at: Some(Duration::from_secs(1)),
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
            workers: workers(4),
        },
        Duration::ZERO,
        Limit::Duration(Duration::from_secs(3)),
    );
    let report = run_phase(target.clone(), &spec, None, Progress::Hidden)
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
    let report = run_phase(target.clone(), &spec, None, Progress::Hidden)
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
    let report = run_phase(target.clone(), &spec, None, Progress::Hidden)
        .await
        .unwrap();
    assert_eq!(report.ops, 1000);
    assert_eq!(target.requests.load(Ordering::Relaxed), 1000);
    let open = PhaseSpec {
        load: Load::Open {
            rate: 500.0,
            workers: workers(2),
        },
        ..spec
    };
    let report = run_phase(target.clone(), &open, None, Progress::Hidden)
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
    let report = run_phase(target, &spec, Some(fault), Progress::Hidden)
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
        ..spec
    };
    assert!(
        run_phase(
            Arc::new(Stalling::new(Duration::from_millis(1), None)),
            &spec,
            None,
            Progress::Hidden
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
    async fn read(&self, _key: KeyRef<'_>) -> Result<Found, OpError> {
        self.serve().await.map(|()| Found::Value)
    }

    async fn update(&self, _key: KeyRef<'_>, _value: Bytes) -> Result<(), OpError> {
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
    let report = run_phase(target, &spec, Some(fault), Progress::Hidden)
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
        Some(fault),
        Progress::Hidden,
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

#[test]
fn an_open_loop_request_counts_from_its_schedule_only_when_the_system_held_it_up() {
    use crate::driver::measured_start;
    let t0 = std::time::Instant::now();
    let at = |us: u64| Instant::from_std(t0 + Duration::from_micros(us));
    let scheduled = at(10_000);
    // An idle worker woken 0.9 ms late by the timer: the request starts when it is sent.
    assert_eq!(measured_start(scheduled, at(2_000), at(10_900)), at(10_900));
    // An idle worker woken on time.
    assert_eq!(measured_start(scheduled, at(2_000), at(10_000)), scheduled);
    // A worker busy until after the slot came due: the lateness is the system's and counts.
    assert_eq!(measured_start(scheduled, at(13_000), at(13_000)), scheduled);
    assert_eq!(measured_start(scheduled, scheduled, at(10_050)), scheduled);
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
        ..a.clone()
    };
    let phases = vec![
        run_phase(target.clone(), &a, None, Progress::Hidden)
            .await
            .unwrap(),
        run_phase(target, &c, Some(injected), Progress::Hidden)
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
