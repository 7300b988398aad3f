//! The floor under every network hop: a loopback UDP round trip (a small datagram to an echo
//! thread and back, blocking sockets), repeated, with p50 / p99 / max. A quorum write cannot beat
//! one fsync plus one round trip; compare with `fsync_floor`.
//!
//! `cargo run --release -p shoal-benches --bin udp_floor [SAMPLES] [BYTES]` (SAMPLES defaults to
//! 20000, BYTES, the datagram size, to 64).

// A measuring tool: a failed send or receive is a broken run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Round trips made before measuring (socket buffers, caches, the echo thread's first wake-up).
const WARMUP: usize = 1000;

fn main() {
    let mut args = std::env::args().skip(1);
    let samples: usize = args
        .next()
        .map_or(20_000, |s| s.parse().expect("SAMPLES is a number"));
    let bytes: usize = args
        .next()
        .map_or(64, |s| s.parse().expect("BYTES is a number"));
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let total = WARMUP + samples;
    let server = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        for _ in 0..total {
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(echo_addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let datagram = vec![0xa5u8; bytes];
    let mut reply = vec![0u8; 65536];
    let mut times: Vec<Duration> = Vec::with_capacity(samples);
    for i in 0..total {
        let start = Instant::now();
        client.send(&datagram).unwrap();
        let n = client.recv(&mut reply).unwrap();
        assert_eq!(n, bytes);
        if i >= WARMUP {
            times.push(start.elapsed());
        }
    }
    server.join().unwrap();

    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "loopback UDP round trip of {bytes} B: p50 {:?}, p99 {:?}, max {:?} over {samples} samples",
        at(0.50),
        at(0.99),
        times[times.len() - 1],
    );
}
