//! What a run does: the load's shape, the mix of reads and updates, the keys, how long, and the
//! standard workload W1 (`WORKLOADS.md`) as phases.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use serde::Serialize;

use crate::BenchError;
use crate::zipf::Zipfian;

/// How requests are started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Load {
    /// `concurrency` requests in flight: each worker starts its next request when its last one
    /// ends. Latency counts from each request's start.
    Closed {
        /// Requests in flight.
        concurrency: NonZeroUsize,
    },
    /// Requests start at `rate` per second whatever the system does; `workers` tasks take the
    /// scheduled slots in turn. Latency counts from each request's *scheduled* start, so a
    /// stall counts against every request it delays (no coordinated omission).
    Open {
        /// Requests per second.
        rate: f64,
        /// Most requests in flight; when all are busy, later slots start late and their
        /// lateness is counted.
        workers: NonZeroUsize,
    },
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
    /// Seeds every worker's key, operation and value choices.
    pub seed: u64,
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
        if let Load::Open { rate, .. } = self.load
            && !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0)
        {
            return invalid(format!(
                "the open-loop rate must be positive and finite, not {rate}"
            ));
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
        Ok(())
    }

    /// A one-line description for the report, e.g. "closed loop, 32 in flight, 50% reads,
    /// uniform keys, 30 s after 5 s of warm-up".
    pub fn describe(&self) -> String {
        let load = match self.load {
            Load::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
            Load::Open { rate, workers } => {
                format!("open loop at {rate:.0} ops/s (at most {workers} in flight)")
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
            .map(|at| format!(", a node killed at {} s", at.as_secs_f64()))
            .unwrap_or_default();
        format!(
            "{load}, {:.0}% reads, {keys}, {limit} after {} s of warm-up{fault}",
            self.read_ratio * 100.0,
            self.warmup.as_secs_f64()
        )
    }
}

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
    /// Seeds the workers.
    pub seed: u64,
}

impl W1 {
    /// Phase B may have this many requests in flight per request of phase A's concurrency.
    pub const OPEN_LOOP_WORKERS_PER_CONCURRENCY: usize = 2;

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
            seed: 1,
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
        let workers = self.concurrency.saturating_mul(
            NonZeroUsize::new(Self::OPEN_LOOP_WORKERS_PER_CONCURRENCY).unwrap_or(NonZeroUsize::MIN),
        );
        self.phase("B", Load::Open { rate, workers })
    }

    /// Phase C: as phase A, with a node killed `kill_at` into the measured run.
    pub fn phase_c(&self) -> PhaseSpec {
        PhaseSpec {
            fault_at: Some(self.kill_at),
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
            seed: self.seed,
        }
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
                ..good.clone()
            },
            PhaseSpec {
                distribution: Distribution::Zipfian { theta: 1.0 },
                ..good.clone()
            },
            PhaseSpec {
                load: Load::Open {
                    rate: 0.0,
                    workers: NonZeroUsize::MIN,
                },
                ..good.clone()
            },
        ];
        for spec in bad {
            assert!(spec.validate().is_err(), "{spec:?}");
        }
    }
}
