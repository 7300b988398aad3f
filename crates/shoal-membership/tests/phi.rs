//! The phi-accrual detector with its defaults: regular heartbeats keep phi low, a crash is
//! convicted after the acceptable pause, a 5 s pause is not, phi grows with the silence, and a
//! node that was itself paused convicts no one in that check. Times are simulated (`Instant`s
//! built from one base), so every figure here is computed, never timed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use shoal_membership::{FailureDetector, PhiAccrual, PhiConfig, Verdict};
use shoal_types::NodeId;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A detector fed 60 heartbeats about 1 s apart (jitter ±100 ms from a fixed sequence); returns
/// it and the time of the last heartbeat.
fn steady(base: Instant) -> (PhiAccrual, Instant) {
    let mut d = PhiAccrual::new(PhiConfig::default());
    let mut t = base;
    let mut x: u64 = 7;
    for _ in 0..60 {
        d.heartbeat(t);
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        t += ms(900 + (x >> 33) % 200);
    }
    d.heartbeat(t);
    (d, t)
}

/// The first moment (in 10 ms steps) after `last` at which `d` convicts.
fn detection(d: &PhiAccrual, last: Instant) -> Duration {
    let mut silence = Duration::ZERO;
    while d.is_available(last + silence) {
        silence += ms(10);
        assert!(silence < Duration::from_secs(60), "never convicted");
    }
    silence
}

#[test]
fn regular_heartbeats_keep_phi_low_and_a_crash_is_convicted_after_the_acceptable_pause() {
    #[allow(clippy::disallowed_methods)] // the one base instant; the detector never reads a clock
    let base = Instant::now();
    let (d, last) = steady(base);
    for step in 0..=10 {
        let phi = d.phi(last + ms(100 * step));
        assert!(phi < 1.0, "phi {phi} a heartbeat interval after the last");
    }
    let took = detection(&d, last);
    println!("crash of a peer with 1 s heartbeats convicted after {took:?} of silence (phi 8)");
    // Mean interval 1 s + acceptable pause 4 s, then a few standard deviations (200 ms minimum).
    assert!(took > ms(5_000) && took < ms(7_000), "{took:?}");
}

#[test]
fn a_five_second_pause_is_not_convicted_and_heartbeats_bring_phi_back_down() {
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now();
    let (mut d, last) = steady(base);
    let back = last + ms(5_000);
    assert!(
        d.is_available(back),
        "phi {} after a 5 s pause",
        d.phi(back)
    );
    d.heartbeat(back);
    assert!(d.phi(back + ms(500)) < 1.0);
}

#[test]
fn a_node_that_was_itself_paused_convicts_no_one_in_that_check() {
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now();
    let peer = NodeId::new("n2").unwrap();
    let mut fd = FailureDetector::new(PhiConfig::default());
    let mut t = base;
    for _ in 0..30 {
        fd.heartbeat(&peer, t);
        assert!(fd.check(t).is_empty());
        t += ms(1_000);
    }
    // This node stalls for 20 s: no check, and nothing heard.
    let after = t + ms(20_000);
    assert!(
        fd.check(after).is_empty(),
        "the check after our own pause convicts no one"
    );
    assert_eq!(fd.skipped_checks(), 1);
    assert!(!fd.is_down(&peer));
    // The next regular check may: the peer really has been silent.
    let next = after + ms(100);
    assert_eq!(fd.check(next), vec![(peer.clone(), Verdict::Down)]);
    assert!(fd.is_down(&peer));
    // It comes back.
    fd.heartbeat(&peer, next + ms(50));
    assert_eq!(
        fd.check(next + ms(100)),
        vec![(peer.clone(), Verdict::Alive)]
    );
    assert!(!fd.is_down(&peer));
}

#[test]
fn a_peer_never_heard_from_is_not_convicted() {
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now();
    let d = PhiAccrual::new(PhiConfig::default());
    assert_eq!(d.phi(base + Duration::from_secs(3600)), 0.0);
    let mut fd = FailureDetector::new(PhiConfig::default());
    assert!(fd.check(base).is_empty());
    assert!(!fd.is_down(&NodeId::new("n9").unwrap()));
}

proptest! {
    #[test]
    fn phi_never_falls_as_the_silence_grows(
        intervals in proptest::collection::vec(50u64..3_000, 1..50),
        a in 0u64..20_000,
        b in 0u64..20_000,
    ) {
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let mut d = PhiAccrual::new(PhiConfig::default());
        let mut t = base;
        for i in intervals {
            d.heartbeat(t);
            t += ms(i);
        }
        d.heartbeat(t);
        let (short, long) = (a.min(b), a.max(b));
        prop_assert!(d.phi(t + ms(short)) <= d.phi(t + ms(long)) + 1e-9);
        prop_assert!(d.phi(t + ms(long)).is_finite());
    }
}

#[test]
fn a_refused_connection_convicts_a_known_peer_at_once_until_it_is_heard_again() {
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now();
    let mut f = FailureDetector::new(PhiConfig::default());
    let peer = NodeId::new("n2").unwrap();
    f.heartbeat(&peer, base);
    assert!(!f.is_down(&peer));
    assert!(f.unreachable(&peer, base + ms(10)), "down at once");
    assert!(f.is_down(&peer));
    assert!(!f.unreachable(&peer, base + ms(20)), "already down");
    // A check with phi low does not clear the evidence: only hearing from the peer does.
    f.check(base + ms(30));
    assert!(f.is_down(&peer));
    f.heartbeat(&peer, base + ms(900));
    assert!(!f.is_down(&peer), "a newer heartbeat clears it");
    f.unreachable(&peer, base + ms(950));
    f.reached(&peer);
    assert!(!f.is_down(&peer), "a direct answer clears it too");
}

#[test]
fn a_peer_never_heard_from_is_convicted_by_refusals_only_after_the_grace() {
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now();
    let config = PhiConfig::default();
    let mut f = FailureDetector::new(config);
    let peer = NodeId::new("n2").unwrap();
    assert!(
        !f.unreachable(&peer, base),
        "its listener may not be up yet"
    );
    assert!(!f.unreachable(&peer, base + config.unknown_grace / 2));
    assert!(!f.is_down(&peer));
    assert!(f.unreachable(&peer, base + config.unknown_grace));
    assert!(f.is_down(&peer), "still refusing after the grace");
}
