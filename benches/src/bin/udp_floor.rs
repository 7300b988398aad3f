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

use shoal_benches::floor;

/// Round trips made before measuring (socket buffers, caches, the echo thread's first wake-up).
const WARMUP: usize = 1000;

fn main() {
    floor::usage_on_help(
        "udp_floor [SAMPLES] [BYTES]: loopback UDP round trips of BYTES (default 64), SAMPLES \
         times (default 20000); prints p50 / p99 / max",
    );
    let samples: usize = floor::arg(0, "SAMPLES is a number", 20_000);
    let bytes: usize = floor::arg(1, "BYTES is a number", 64);
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

    println!(
        "loopback UDP round trip of {bytes} B: {}",
        floor::summary(&mut times)
    );
}
