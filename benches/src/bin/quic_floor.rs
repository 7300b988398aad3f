//! The floor under every Shoal hop: one request and its response over `shoal-transport` (QUIC
//! with mutual TLS, one bidirectional stream per request, frames as the nodes send them) on
//! loopback, to a server that answers at once, repeated one after another, with p50 / p99 /
//! max. The difference to `udp_floor` is what QUIC, TLS, tokio and framing add per hop; a quorum
//! write pays this twice (client → coordinator, coordinator → replica) plus two commits.
//!
//! `cargo run --release -p shoal-benches --bin quic_floor [SAMPLES] [BYTES]` (SAMPLES defaults to
//! 20000, BYTES, the request size, to 1024; the response is 32 bytes, like an ack).

// A measuring tool: a failed setup or request is a broken run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_benches::floor;
use shoal_transport::certs::{self, IfExists};
use shoal_transport::{Endpoint, ExpectedPeer, Identity, Role, TransportConfig};
use shoal_types::NodeId;

/// Round trips made before measuring (the handshake, caches, the first wake-ups).
const WARMUP: usize = 1000;
const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    floor::usage_on_help(
        "quic_floor [SAMPLES] [BYTES]: QUIC+mTLS requests of BYTES (default 1024) and 32-byte \
         answers over shoal-transport, SAMPLES times (default 20000); prints p50 / p99 / max",
    );
    let samples: usize = floor::arg(0, "SAMPLES is a number", 20_000);
    let bytes: usize = floor::arg(1, "BYTES is a number", 1024);
    // Two worker threads, as a node's runtime has on this machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut times = runtime.block_on(measure(samples, bytes));
    println!(
        "QUIC+mTLS request of {bytes} B and response over loopback (shoal-transport): {}",
        floor::summary(&mut times)
    );
}

async fn measure(samples: usize, bytes: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    certs::init_ca(dir.path(), IfExists::Refuse).unwrap();
    certs::issue(dir.path(), Role::Node, "n1", IfExists::Refuse).unwrap();
    certs::issue(dir.path(), Role::Node, "n2", IfExists::Refuse).unwrap();
    let (server, mut incoming) = Endpoint::server(
        "127.0.0.1:0".parse().unwrap(),
        Identity::load(dir.path(), Role::Node, Some("n1")).unwrap(),
        TransportConfig::default(),
    )
    .unwrap();
    let ack = Bytes::from(vec![0u8; 32]);
    tokio::spawn(async move {
        while let Some(request) = incoming.next().await {
            request.respond(ack.clone());
        }
    });
    let client = Endpoint::client(
        Identity::load(dir.path(), Role::Node, Some("n2")).unwrap(),
        TransportConfig::default(),
    )
    .unwrap();
    let addr = server.local_addr();
    let expect = ExpectedPeer::Node(NodeId::new("n1").unwrap());
    let frame = Bytes::from(vec![0xa5u8; bytes]);
    let mut times = Vec::with_capacity(samples);
    for i in 0..WARMUP + samples {
        let start = Instant::now();
        client
            .request(addr, expect.clone(), frame.clone(), TIMEOUT)
            .await
            .unwrap();
        if i >= WARMUP {
            times.push(start.elapsed());
        }
    }
    client.close().await;
    server.close().await;
    times
}
