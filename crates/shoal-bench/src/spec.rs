//! What a run does: the load's shape, the mix of reads and updates, the keys, how long, how each
//! request is attempted (timeout and retries), the standard workload W1 (`WORKLOADS.md`) as
//! phases, and the overload workload (a step profile of open-loop rates around a measured
//! capacity).

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::time::Duration;

use serde::Serialize;

use crate::BenchError;
use crate::zipf::Zipfian;

/// How requests are started.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Load {
    /// `concurrency` requests in flight: each worker starts its next request when its last one
    /// ends. Latency counts from each request's start.
    Closed {
        /// Requests in flight.
        concurrency: NonZeroUsize,
    },
    /// Requests start at `rate` per second whatever the system does, each in its own task.
    /// Latency counts from each request's *scheduled* start whenever the system held it up, so
    /// a stall counts against every request it delays (no coordinated omission).
    Open {
        /// Requests per second.
        rate: f64,
        /// Most requests in flight; when that many are, later slots start late and their
        /// lateness is counted.
        max_in_flight: NonZeroUsize,
    },
    /// An open loop whose rate changes in steps (the overload workload): the warm-up runs at the
    /// first step's rate, then each step for its duration, with no pause between them, so
    /// whatever one step leaves behind (a queue, retries) carries into the next.
    Steps {
        /// The steps, in order.
        steps: Vec<RateStep>,
        /// Most requests in flight, as for [`Load::Open`].
        max_in_flight: NonZeroUsize,
    },
}

/// One step of a [`Load::Steps`] profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateStep {
    /// Its name in reports, e.g. "150%".
    pub label: String,
    /// Requests per second offered.
    pub rate: f64,
    /// How long it lasts.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

/// How each request is attempted, as external load generators and client drivers do: an
/// attempt that has not answered within `timeout` is abandoned (its future dropped, which
/// resets its stream) and the request is sent again at once, up to `attempts` times; an update
/// is sent again with the same value and causal context. A failed attempt is retried only when
/// it timed out: abandoned by the generator, or answered as a timeout by the store (with the
/// store's deadline equal to the attempt's, the two race for the same moment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AttemptPolicy {
    /// How long one attempt may take; `None`: as long as the target's own timeout.
    #[serde(serialize_with = "optional_seconds")]
    pub timeout: Option<Duration>,
    /// Attempts per request, the first included.
    pub attempts: NonZeroU32,
}

impl AttemptPolicy {
    /// One attempt, no timeout of the generator's own: what `shoal bench` always did.
    pub const SINGLE: AttemptPolicy = AttemptPolicy {
        timeout: None,
        attempts: NonZeroU32::MIN,
    };

    /// "1 attempt" or "attempts of 1 s, at most 3".
    pub fn describe(&self) -> String {
        match (self.timeout, self.attempts.get()) {
            (None, 1) => "1 attempt".to_owned(),
            (None, n) => format!("at most {n} attempts (retried after a timeout answer)"),
            (Some(t), n) => format!("attempts of {} s, at most {n}", t.as_secs_f64()),
        }
    }
}

impl Default for AttemptPolicy {
    fn default() -> AttemptPolicy {
        AttemptPolicy::SINGLE
    }
}

/// When the measured part of a phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// After this long (requests started before the end are finished and counted).
    Duration(#[serde(serialize_with = "seconds")] Duration),
    /// After exactly this many operations.
    Ops(u64),
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Key `k` with probability ∝ `1 / (k + 1)^theta` ([`Zipfian`]).
    Zipfian {
        /// The skew, `s` in WORKLOADS.md.
        theta: f64,
    },
}

/// One phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseSpec {
    /// Its name in reports ("A", "B", "C", or "run").
    pub name: String,
    /// Closed or open loop.
    pub load: Load,
    /// The share of reads; the rest are updates. 0 ..= 1.
    pub read_ratio: f64,
    /// Keys `user00000000` .. `user{keys-1:08}`.
    pub keys: NonZeroU64,
    /// How keys are chosen.
    pub distribution: Distribution,
    /// Bytes of each written value (random bytes).
    pub value_size: usize,
    /// Load before measuring starts; nothing of it is recorded.
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    /// How long the measured part runs.
    pub limit: Limit,
    /// When the fault (if the caller gives one) strikes, counted from the end of warm-up.
    #[serde(serialize_with = "optional_seconds")]
    pub fault_at: Option<Duration>,
    /// When the fault is undone (the killed nodes started again), counted from the end of
    /// warm-up; after `fault_at`. `None`: it lasts to the end.
    #[serde(serialize_with = "optional_seconds")]
    pub heal_at: Option<Duration>,
    /// Seeds every worker's key, operation and value choices.
    pub seed: u64,
    /// How each request is attempted.
    pub attempts: AttemptPolicy,
}

impl PhaseSpec {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |reason: String| Err(BenchError::InvalidSpec(reason));
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return invalid(format!(
                "the read ratio must lie in 0..=1, not {}",
                self.read_ratio
            ));
        }
        let valid_rate = |rate: f64| rate.is_finite() && rate > 0.0 && rate <= MAX_RATE;
        match &self.load {
            Load::Closed { .. } => {}
            Load::Open { rate, .. } => {
                if !valid_rate(*rate) {
                    return invalid(format!(
                        "the open-loop rate must be positive and finite, not {rate}"
                    ));
                }
            }
            Load::Steps { steps, .. } => {
                if steps.is_empty() {
                    return invalid("a step profile needs at least one step".into());
                }
                if let Some(bad) = steps.iter().find(|s| !valid_rate(s.rate)) {
                    return invalid(format!(
                        "step {}: the rate must be positive and finite, not {}",
                        bad.label, bad.rate
                    ));
                }
                if steps.iter().any(|s| s.duration.is_zero()) {
                    return invalid("every step needs a positive duration".into());
                }
                let total: Duration = steps.iter().map(|s| s.duration).sum();
                if self.limit != Limit::Duration(total) {
                    return invalid(format!(
                        "a step profile runs for the sum of its steps ({} s), not {:?}",
                        total.as_secs_f64(),
                        self.limit
                    ));
                }
            }
        }
        if let Some(t) = self.attempts.timeout
            && t.is_zero()
        {
            return invalid("the attempt timeout must be positive".into());
        }
        if let Distribution::Zipfian { theta } = self.distribution {
            Zipfian::new(self.keys.get(), theta)?;
        }
        match self.limit {
            Limit::Duration(d) if d.is_zero() => {
                return invalid("the duration must be positive".into());
            }
            Limit::Ops(0) => return invalid("--ops must be positive".into()),
            _ => {}
        }
        if let (Some(at), Limit::Duration(d)) = (self.fault_at, self.limit)
            && at >= d
        {
            return invalid(format!(
                "the fault at {at:?} would come after the measured {d:?}"
            ));
        }
        if self.fault_at.is_some() && matches!(self.limit, Limit::Ops(_)) {
            return invalid("a fault needs a duration, not --ops".into());
        }
        match (self.fault_at, self.heal_at, self.limit) {
            (None, Some(_), _) => return invalid("a restart needs a fault to undo".into()),
            (Some(at), Some(heal), _) if heal <= at => {
                return invalid(format!(
                    "the restart at {heal:?} must come after the fault at {at:?}"
                ));
            }
            (Some(_), Some(heal), Limit::Duration(d)) if heal >= d => {
                return invalid(format!(
                    "the restart at {heal:?} would come after the measured {d:?}"
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// A one-line description for the report, e.g. "closed loop, 32 in flight, 50% reads,
    /// uniform keys, 30 s after 5 s of warm-up".
    pub fn describe(&self) -> String {
        let load = match &self.load {
            Load::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
            Load::Open {
                rate,
                max_in_flight,
            } => {
                format!("open loop at {rate:.0} ops/s (at most {max_in_flight} in flight)")
            }
            Load::Steps {
                steps,
                max_in_flight,
            } => {
                let steps: Vec<String> = steps
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {:.0} ops/s {} s",
                            s.label,
                            s.rate,
                            s.duration.as_secs_f64()
                        )
                    })
                    .collect();
                format!(
                    "open loop in steps ({}; at most {max_in_flight} in flight)",
                    steps.join(", ")
                )
            }
        };
        let keys = match self.distribution {
            Distribution::Uniform => "uniform keys".to_owned(),
            Distribution::Zipfian { theta } => format!("zipfian keys (s = {theta})"),
        };
        let limit = match self.limit {
            Limit::Duration(d) => format!("{} s", d.as_secs_f64()),
            Limit::Ops(n) => format!("{n} ops"),
        };
        let fault = self
            .fault_at
            .map(|at| match self.heal_at {
                Some(heal) => format!(
                    ", the fault at {} s undone at {} s",
                    at.as_secs_f64(),
                    heal.as_secs_f64()
                ),
                None => format!(", the fault at {} s", at.as_secs_f64()),
            })
            .unwrap_or_default();
        format!(
            "{load}, {:.0}% reads, {keys}, {limit} after {} s of warm-up{fault}, {}",
            self.read_ratio * 100.0,
            self.warmup.as_secs_f64(),
            self.attempts.describe()
        )
    }

    /// The most requests in flight, for an open loop.
    pub fn max_in_flight(&self) -> Option<NonZeroUsize> {
        match &self.load {
            Load::Closed { .. } => None,
            Load::Open { max_in_flight, .. } | Load::Steps { max_in_flight, .. } => {
                Some(*max_in_flight)
            }
        }
    }
}

/// The highest open-loop rate accepted (requests per second).
const MAX_RATE: f64 = 10_000_000.0;

/// The standard workload W1 of WORKLOADS.md, with its knobs (for the variants and for quick runs).
#[derive(Debug, Clone, PartialEq)]
pub struct W1 {
    /// 100,000.
    pub keys: NonZeroU64,
    /// 1,024 bytes.
    pub value_size: usize,
    /// 32 in flight in phases A and C.
    pub concurrency: NonZeroUsize,
    /// 0.5 (W1-read: 0.95).
    pub read_ratio: f64,
    /// Uniform (W1-zipf: zipfian, s = 0.99).
    pub distribution: Distribution,
    /// 5 s before each phase.
    pub warmup: Duration,
    /// 30 s measured per phase.
    pub duration: Duration,
    /// Phase C's kill, from the end of warm-up: 10 s.
    pub kill_at: Duration,
    /// When phase C starts the killed nodes again, from the end of warm-up (W1 itself: never).
    pub restart_at: Option<Duration>,
    /// Seeds the workers.
    pub seed: u64,
    /// How each request is attempted (W1 itself: one attempt).
    pub attempts: AttemptPolicy,
    /// Phase B's most requests in flight; `None`: [`W1::OPEN_LOOP_IN_FLIGHT_PER_CONCURRENCY`]
    /// times `concurrency` (64), as W1's figures have always been measured.
    pub max_in_flight: Option<NonZeroUsize>,
}

impl W1 {
    /// Phase B may have this many requests in flight per request of phase A's concurrency,
    /// unless [`W1::max_in_flight`] says otherwise. The cap hides queue growth beyond 64
    /// requests (the 65th waits, late, and its lateness counts); an external open-loop
    /// generator has none, which `--max-in-flight 20000` imitates.
    pub const OPEN_LOOP_IN_FLIGHT_PER_CONCURRENCY: usize = 2;

    /// W1 as WORKLOADS.md states it.
    pub fn standard() -> W1 {
        W1 {
            keys: NonZeroU64::new(100_000).unwrap_or(NonZeroU64::MIN),
            value_size: 1024,
            concurrency: NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN),
            read_ratio: 0.5,
            distribution: Distribution::Uniform,
            warmup: Duration::from_secs(5),
            duration: Duration::from_secs(30),
            kill_at: Duration::from_secs(10),
            restart_at: None,
            seed: 1,
            attempts: AttemptPolicy::SINGLE,
            max_in_flight: None,
        }
    }

    /// Phase A: closed loop at the given concurrency.
    pub fn phase_a(&self) -> PhaseSpec {
        self.phase(
            "A",
            Load::Closed {
                concurrency: self.concurrency,
            },
        )
    }

    /// Phase B: open loop at half of phase A's throughput (`phase_a_throughput` ops/s).
    pub fn phase_b(&self, phase_a_throughput: f64) -> PhaseSpec {
        self.phase_b_at((phase_a_throughput / 2.0).max(1.0))
    }

    /// Phase B at a given rate (ops/s).
    pub fn phase_b_at(&self, rate: f64) -> PhaseSpec {
        let max_in_flight = self.max_in_flight.unwrap_or_else(|| {
            self.concurrency.saturating_mul(
                NonZeroUsize::new(Self::OPEN_LOOP_IN_FLIGHT_PER_CONCURRENCY)
                    .unwrap_or(NonZeroUsize::MIN),
            )
        });
        self.phase(
            "B",
            Load::Open {
                rate,
                max_in_flight,
            },
        )
    }

    /// Phase C: as phase A, with a node killed `kill_at` into the measured run.
    pub fn phase_c(&self) -> PhaseSpec {
        PhaseSpec {
            fault_at: Some(self.kill_at),
            heal_at: self.restart_at,
            ..self.phase(
                "C",
                Load::Closed {
                    concurrency: self.concurrency,
                },
            )
        }
    }

    fn phase(&self, name: &str, load: Load) -> PhaseSpec {
        PhaseSpec {
            name: name.to_owned(),
            load,
            read_ratio: self.read_ratio,
            keys: self.keys,
            distribution: self.distribution,
            value_size: self.value_size,
            warmup: self.warmup,
            limit: Limit::Duration(self.duration),
            fault_at: None,
            heal_at: None,
            seed: self.seed,
            attempts: self.attempts,
        }
    }
}

/// The overload workload: measure capacity with a short closed loop (or take it as given), then
/// offer an open loop in steps of that capacity, by default 50 %, 100 %, 150 % and 50 % again,
/// 20 s each, with the attempt policy given. It asks: does goodput hold when the offered load
/// passes capacity, and does latency come back when the load does (no metastable state)?
#[derive(Debug, Clone, PartialEq)]
pub struct Overload {
    /// Keys, values, mix, concurrency of the capacity phase, warm-up, seed and attempt policy
    /// (W1's, by default).
    pub base: W1,
    /// How long the capacity phase is measured (after the warm-up).
    pub capacity_duration: Duration,
    /// The steps, in percent of capacity.
    pub steps: Vec<f64>,
    /// How long each step lasts.
    pub step_duration: Duration,
    /// Most requests in flight in the steps.
    pub max_in_flight: NonZeroUsize,
}

impl Overload {
    /// The default profile, percent of capacity.
    pub const DEFAULT_STEPS: [f64; 4] = [50.0, 100.0, 150.0, 50.0];
    /// The default step length.
    pub const DEFAULT_STEP_DURATION: Duration = Duration::from_secs(20);
    /// The default capacity phase (closed loop), after its warm-up.
    pub const DEFAULT_CAPACITY_DURATION: Duration = Duration::from_secs(10);
    /// The steps' default cap on requests in flight: high enough never to be reached by a
    /// generator of a few thousand requests per second with seconds-long attempts (4,000/s ×
    /// 3 attempts of 1 s is 12,000), so that queues grow where the system lets them, as under
    /// an external open-loop generator.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 20_000;

    /// W1's knobs, the default profile.
    pub fn standard() -> Overload {
        Overload {
            base: W1::standard(),
            capacity_duration: Self::DEFAULT_CAPACITY_DURATION,
            steps: Self::DEFAULT_STEPS.to_vec(),
            step_duration: Self::DEFAULT_STEP_DURATION,
            max_in_flight: NonZeroUsize::new(Self::DEFAULT_MAX_IN_FLIGHT)
                .unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// The closed loop that measures capacity (W1's phase A, shorter).
    pub fn capacity_phase(&self) -> PhaseSpec {
        PhaseSpec {
            name: "capacity".into(),
            limit: Limit::Duration(self.capacity_duration),
            ..self.base.phase_a()
        }
    }

    /// The step profile at `capacity` ops/s.
    pub fn steps_phase(&self, capacity: f64) -> PhaseSpec {
        let steps: Vec<RateStep> = self
            .steps
            .iter()
            .map(|percent| RateStep {
                label: format!("{percent}%"),
                rate: capacity * percent / 100.0,
                duration: self.step_duration,
            })
            .collect();
        let total = self.step_duration * u32::try_from(steps.len()).unwrap_or(u32::MAX);
        PhaseSpec {
            limit: Limit::Duration(total),
            ..self.base.phase(
                "steps",
                Load::Steps {
                    steps,
                    max_in_flight: self.max_in_flight,
                },
            )
        }
    }

    /// Checks the settings (the capacity phase and a profile at a nominal capacity).
    pub fn validate(&self) -> Result<(), BenchError> {
        if let Some(bad) = self.steps.iter().find(|p| !(p.is_finite() && **p > 0.0)) {
            return Err(BenchError::InvalidSpec(format!(
                "a step must be a positive percentage of capacity, not {bad}"
            )));
        }
        self.capacity_phase().validate()?;
        self.steps_phase(1_000.0).validate()
    }
}

/// Durations in reports are seconds, as numbers.
fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn optional_seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w1_phases_follow_the_workload_text() {
        let w1 = W1::standard();
        let a = w1.phase_a();
        assert_eq!(a.keys.get(), 100_000);
        assert_eq!(a.limit, Limit::Duration(Duration::from_secs(30)));
        assert!(matches!(a.load, Load::Closed { concurrency } if concurrency.get() == 32));
        let b = w1.phase_b(10_000.0);
        assert!(matches!(b.load, Load::Open { rate, .. } if rate == 5_000.0));
        let c = w1.phase_c();
        assert_eq!(c.fault_at, Some(Duration::from_secs(10)));
        for phase in [a, b, c] {
            phase.validate().unwrap();
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let good = W1::standard().phase_a();
        let bad = [
            PhaseSpec {
                read_ratio: 1.5,
                ..good.clone()
            },
            PhaseSpec {
                limit: Limit::Ops(0),
                ..good.clone()
            },
            PhaseSpec {
                fault_at: Some(Duration::from_secs(31)),
                heal_at: None,
                ..good.clone()
            },
            PhaseSpec {
                heal_at: Some(Duration::from_secs(5)),
                ..good.clone()
            },
            PhaseSpec {
                fault_at: Some(Duration::from_secs(10)),
                heal_at: Some(Duration::from_secs(10)),
                ..good.clone()
            },
            PhaseSpec {
                fault_at: Some(Duration::from_secs(10)),
                heal_at: Some(Duration::from_secs(30)),
                ..good.clone()
            },
            PhaseSpec {
                distribution: Distribution::Zipfian { theta: 1.0 },
                ..good.clone()
            },
            PhaseSpec {
                load: Load::Open {
                    rate: 0.0,
                    max_in_flight: NonZeroUsize::MIN,
                },
                ..good.clone()
            },
            PhaseSpec {
                attempts: AttemptPolicy {
                    timeout: Some(Duration::ZERO),
                    attempts: NonZeroU32::MIN,
                },
                ..good.clone()
            },
            PhaseSpec {
                load: Load::Steps {
                    steps: Vec::new(),
                    max_in_flight: NonZeroUsize::MIN,
                },
                ..good.clone()
            },
            PhaseSpec {
                // The steps last 20 s; the limit says 30.
                ..Overload::standard().steps_phase(1000.0)
            }
            .with_limit(Limit::Duration(Duration::from_secs(30))),
        ];
        for spec in bad {
            assert!(spec.validate().is_err(), "{spec:?}");
        }
        let mut negative = Overload::standard();
        negative.steps = vec![50.0, -10.0];
        assert!(negative.validate().is_err());
    }

    impl PhaseSpec {
        fn with_limit(self, limit: Limit) -> PhaseSpec {
            PhaseSpec { limit, ..self }
        }
    }

    #[test]
    fn the_overload_profile_steps_around_the_capacity() {
        let overload = Overload::standard();
        overload.validate().unwrap();
        let capacity = overload.capacity_phase();
        assert_eq!(capacity.limit, Limit::Duration(Duration::from_secs(10)));
        assert!(matches!(capacity.load, Load::Closed { concurrency } if concurrency.get() == 32));
        let steps = overload.steps_phase(4_000.0);
        assert_eq!(steps.limit, Limit::Duration(Duration::from_secs(80)));
        let Load::Steps {
            steps,
            max_in_flight,
        } = steps.load
        else {
            panic!("a step profile");
        };
        assert_eq!(max_in_flight.get(), 20_000);
        let rates: Vec<(String, f64)> = steps.iter().map(|s| (s.label.clone(), s.rate)).collect();
        assert_eq!(
            rates,
            [
                ("50%".to_owned(), 2_000.0),
                ("100%".to_owned(), 4_000.0),
                ("150%".to_owned(), 6_000.0),
                ("50%".to_owned(), 2_000.0)
            ]
        );
    }

    #[test]
    fn phase_b_keeps_64_in_flight_unless_told_otherwise() {
        let mut w1 = W1::standard();
        assert_eq!(
            w1.phase_b_at(100.0).max_in_flight().map(NonZeroUsize::get),
            Some(64)
        );
        w1.max_in_flight = NonZeroUsize::new(20_000);
        assert_eq!(
            w1.phase_b_at(100.0).max_in_flight().map(NonZeroUsize::get),
            Some(20_000)
        );
    }
}
