//! The phi-accrual failure detector (Hayashibara et al., 2004), in Akka's form, and one per peer
//! with Cassandra's local-pause guard.
//!
//! A detector samples the intervals between a peer's heartbeats and, at any moment, says how
//! surprising the silence since the last one is: `phi = -log10(P(an interval this long or
//! longer))` under a normal distribution with the samples' mean plus an acceptable pause, and
//! their standard deviation, never below a minimum. phi 1 means a 10 % chance of being wrong to
//! convict, phi 8 one in 10^8. The normal tail is Akka's logistic approximation, which is
//! monotone and needs no error function (computed so that phi stays finite).
//!
//! Besides heartbeats, [`FailureDetector`] takes one kind of evidence: a connection to a peer that
//! could not be made ([`FailureDetector::unreachable`]; the transport's fast dead-port check says
//! so within milliseconds of a process dying). It convicts at once, until the peer is heard from
//! again — phi would take seconds to say what a refused port says now.
//!
//! Not here: where heartbeats come from (gossip carries them) and what a conviction does
//! (preference lists skip the peer; it stays a member). No clock: every call takes `now`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use shoal_types::NodeId;

/// The detector's settings. [`PhiConfig::default`] is what a node runs with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiConfig {
    /// phi at or above which a peer is convicted (judged down). Default 8, as Cassandra's and
    /// Akka's.
    pub threshold: f64,
    /// How many intervals the detector remembers. Default 200.
    pub max_samples: usize,
    /// The smallest standard deviation used, so that a peer with very regular heartbeats is
    /// not convicted by the first one late by a little. Default 200 ms.
    pub min_std_deviation: Duration,
    /// A silence this much longer than the mean interval is not yet surprising (a GC pause, a
    /// burst of loss). Default 4 s: with 1 s heartbeats a peer silent for 5 s is not convicted
    /// (phi 0.3); one silent for about 6 s is.
    pub acceptable_pause: Duration,
    /// The interval assumed before any was sampled (with a standard deviation of a quarter of
    /// it). Default 1 s, the gossip interval.
    pub first_heartbeat_estimate: Duration,
    /// Until this many intervals were sampled, the detector is unsure how regular the peer is
    /// and takes the standard deviation to be at least the mean interval, so a peer just
    /// learned of (whose news comes irregularly through gossip) is not convicted by the first
    /// long gap; it still is if it stays silent. Default 10.
    pub min_samples: usize,
    /// When two checks of the detector are further apart than this, the node itself was
    /// paused (a stop, a stalled machine), and that check convicts no one: the silence was
    /// ours. Default 2 s (Cassandra uses 5 s).
    pub max_local_pause: Duration,
    /// How long connections to a peer never heard from may fail before that counts as
    /// evidence against it: the nodes of a cluster start together, and a first connection may
    /// beat a peer's listener. Default 1 s.
    pub unknown_grace: Duration,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            threshold: 8.0,
            max_samples: 200,
            min_std_deviation: Duration::from_millis(200),
            acceptable_pause: Duration::from_secs(4),
            first_heartbeat_estimate: Duration::from_secs(1),
            min_samples: 10,
            max_local_pause: Duration::from_secs(2),
            unknown_grace: Duration::from_secs(1),
        }
    }
}

/// One peer's heartbeat history and the phi it gives. See the module docs.
#[derive(Clone, Debug)]
pub struct PhiAccrual {
    config: PhiConfig,
    /// Sampled intervals in seconds, oldest first, with their running sums.
    intervals: VecDeque<f64>,
    sum: f64,
    sum_of_squares: f64,
    /// Intervals sampled from real heartbeats (not the seed), up to `min_samples`.
    sampled: usize,
    last: Option<Instant>,
}

impl PhiAccrual {
    /// A detector that has heard nothing yet.
    pub fn new(config: PhiConfig) -> Self {
        let mut detector = PhiAccrual {
            config,
            intervals: VecDeque::new(),
            sum: 0.0,
            sum_of_squares: 0.0,
            sampled: 0,
            last: None,
        };
        // Akka's seed: two intervals a quarter of the estimate either side of it, so the first
        // real silence is judged against the expected interval, not against nothing.
        let mean = config.first_heartbeat_estimate.as_secs_f64();
        detector.record(mean - mean / 4.0);
        detector.record(mean + mean / 4.0);
        detector
    }

    /// A heartbeat from the peer arrived at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let interval = now.saturating_duration_since(last).as_secs_f64();
            self.record(interval);
            self.sampled = (self.sampled + 1).min(self.config.min_samples);
        }
        self.last = Some(now);
    }

    /// When the last heartbeat arrived, if one did.
    pub fn last_heartbeat(&self) -> Option<Instant> {
        self.last
    }

    /// How surprising the silence since the last heartbeat is at `now`; 0 before the first.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let silence = now.saturating_duration_since(last).as_secs_f64();
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        let variance = (self.sum_of_squares / n - mean * mean).max(0.0);
        let floor = if self.sampled < self.config.min_samples {
            mean
        } else {
            self.config.min_std_deviation.as_secs_f64()
        };
        let std = variance.sqrt().max(floor);
        phi(
            silence,
            mean + self.config.acceptable_pause.as_secs_f64(),
            std,
        )
    }

    /// Whether the peer is judged up at `now` (phi below the threshold).
    pub fn is_available(&self, now: Instant) -> bool {
        self.phi(now) < self.config.threshold
    }

    fn record(&mut self, interval: f64) {
        if self.intervals.len() >= self.config.max_samples.max(2)
            && let Some(old) = self.intervals.pop_front()
        {
            self.sum -= old;
            self.sum_of_squares -= old * old;
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_of_squares += interval * interval;
    }
}

/// `-log10` of the probability that an interval of a normal distribution (`mean`, `std`) is at
/// least `silence`, with Akka's logistic approximation of the tail: with
/// `a = y (1.5976 + 0.070566 y²)` and `y = (silence - mean) / std`, the tail is `1 / (1 + e^a)`,
/// so phi is `log10(1 + e^a)`, computed so that it stays finite however long the silence.
fn phi(silence: f64, mean: f64, std: f64) -> f64 {
    let y = (silence - mean) / std;
    let a = y * (1.5976 + 0.070566 * y * y);
    let ln = if a > 0.0 {
        a + (-a).exp().ln_1p()
    } else {
        a.exp().ln_1p()
    };
    ln / std::f64::consts::LN_10
}

/// What a check says of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// phi below the threshold (or the check convicted no one: see [`PhiConfig::max_local_pause`]).
    Alive,
    /// phi at or above the threshold.
    Down,
}

/// A [`PhiAccrual`] per peer, and the verdict of the last check of each.
#[derive(Clone, Debug)]
pub struct FailureDetector {
    config: PhiConfig,
    peers: BTreeMap<NodeId, PhiAccrual>,
    down: BTreeSet<NodeId>,
    /// Peers a connection to failed since they were last heard from (evidence: down now).
    refused: BTreeSet<NodeId>,
    /// Peers never heard from whose connections fail, and since when.
    unknown_failing: BTreeMap<NodeId, Instant>,
    /// Peers that answered or sent a request directly at least once (known, even before a
    /// heartbeat of theirs arrived).
    reached: BTreeSet<NodeId>,
    last_check: Option<Instant>,
    /// Checks that convicted no one because the node itself had been paused.
    skipped_checks: u64,
}

impl FailureDetector {
    /// A detector that knows no peer yet.
    pub fn new(config: PhiConfig) -> Self {
        FailureDetector {
            config,
            peers: BTreeMap::new(),
            down: BTreeSet::new(),
            refused: BTreeSet::new(),
            unknown_failing: BTreeMap::new(),
            reached: BTreeSet::new(),
            last_check: None,
            skipped_checks: 0,
        }
    }

    /// A heartbeat of `peer` arrived at `now`. A peer convicted before is judged again at the
    /// next check.
    pub fn heartbeat(&mut self, peer: &NodeId, now: Instant) {
        self.reached(peer);
        self.peers
            .entry(peer.clone())
            .or_insert_with(|| PhiAccrual::new(self.config))
            .heartbeat(now);
    }

    /// Judges every peer at `now`, and returns the peers whose verdict changed. A check that
    /// follows the previous one by more than [`PhiConfig::max_local_pause`] convicts no one.
    pub fn check(&mut self, now: Instant) -> Vec<(NodeId, Verdict)> {
        let paused = self
            .last_check
            .is_some_and(|last| now.saturating_duration_since(last) > self.config.max_local_pause);
        self.last_check = Some(now);
        if paused {
            self.skipped_checks += 1;
        }
        let mut changed = Vec::new();
        for (peer, detector) in &self.peers {
            let verdict = if paused || detector.is_available(now) {
                Verdict::Alive
            } else {
                Verdict::Down
            };
            let was_down = self.down.contains(peer);
            match verdict {
                Verdict::Down if !was_down => {
                    self.down.insert(peer.clone());
                    changed.push((peer.clone(), verdict));
                }
                Verdict::Alive if was_down && !paused => {
                    self.down.remove(peer);
                    changed.push((peer.clone(), verdict));
                }
                _ => {}
            }
        }
        changed
    }

    /// Evidence: a connection to `peer` could not be made at `now`. A peer heard from before
    /// (a heartbeat, or directly) is judged down at once, until it is heard from again; one
    /// never heard from only once its
    /// connections have failed for [`PhiConfig::unknown_grace`]. Returns whether this made the
    /// peer down.
    pub fn unreachable(&mut self, peer: &NodeId, now: Instant) -> bool {
        if !self.peers.contains_key(peer) && !self.reached.contains(peer) {
            let since = *self.unknown_failing.entry(peer.clone()).or_insert(now);
            if now.saturating_duration_since(since) < self.config.unknown_grace {
                return false;
            }
        }
        let was_down = self.is_down(peer);
        self.refused.insert(peer.clone());
        !was_down
    }

    /// `peer` answered or sent a request directly: whatever the refused connections said, it is
    /// there now. (Its phi moves only with heartbeats.)
    pub fn reached(&mut self, peer: &NodeId) {
        if !self.refused.is_empty() {
            self.refused.remove(peer);
        }
        if !self.unknown_failing.is_empty() {
            self.unknown_failing.remove(peer);
        }
        if !self.reached.contains(peer) {
            self.reached.insert(peer.clone());
        }
    }

    /// Whether `peer` is judged down: by the last check, or by a refused connection since it
    /// was last heard from (a peer never heard from is not, unless refused for the grace).
    pub fn is_down(&self, peer: &NodeId) -> bool {
        self.down.contains(peer) || self.refused.contains(peer)
    }

    /// When `peer`'s latest heartbeat arrived, if one ever did.
    pub fn last_heartbeat(&self, peer: &NodeId) -> Option<Instant> {
        self.peers.get(peer).and_then(PhiAccrual::last_heartbeat)
    }

    /// `peer`'s phi at `now`, if it was ever heard from.
    pub fn phi(&self, peer: &NodeId, now: Instant) -> Option<f64> {
        self.peers.get(peer).map(|d| d.phi(now))
    }

    /// How many checks convicted no one because the node itself had been paused.
    pub fn skipped_checks(&self) -> u64 {
        self.skipped_checks
    }
}
