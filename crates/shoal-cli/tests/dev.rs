//! `shoal dev` end to end: a real three-node cluster of `shoal server` processes, used through
//! the binary, stopped with SIGTERM (every node must exit), restarted on the same directory
//! (same ports, same data).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Dev, Env, alive, assert_exit, json_string, shoal, stderr, stdout};

const START: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

fn put(env: &Env, key: &str, value: &str, context: Option<&str>) -> String {
    let mut args = vec!["put", key, value, "--json"];
    if let Some(context) = context {
        args.extend(["--context", context]);
    }
    let output = shoal(&args, &env.vars());
    assert_exit(&output, 0);
    json_string(&stdout(&output), "context")
}

/// The JSON of `shoal get KEY --json`, after checking the exit code.
fn get(env: &Env, key: &str, expected_exit: i32) -> String {
    let output = shoal(&["get", key, "--json"], &env.vars());
    assert_exit(&output, expected_exit);
    stdout(&output)
}

#[test]
fn a_dev_cluster_serves_stops_cleanly_and_restarts_with_its_data() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let mut dev = Dev::start(&dir, &["--nodes", "3"]);
    let env = dev.wait_ready(START);
    assert_eq!(env.nodes.split(',').count(), 3);
    assert!(
        dev.output().contains("export SHOAL_NODES="),
        "{}",
        dev.output()
    );

    // Write, read back; text output puts values on stdout and the context on stderr.
    put(&env, "greeting", "hello", None);
    let output = shoal(&["get", "greeting"], &env.vars());
    assert_exit(&output, 0);
    assert_eq!(stdout(&output), "hello\n");
    assert!(stderr(&output).contains("context: "), "{}", stderr(&output));

    // A blind write next to it makes siblings; a write with the read's context resolves them.
    put(&env, "greeting", "bonjour", None);
    let read = get(&env, "greeting", 0);
    assert!(read.contains(r#""siblings":2"#), "{read}");
    assert!(
        read.contains(r#""hello""#) && read.contains(r#""bonjour""#),
        "{read}"
    );
    let output = shoal(&["get", "greeting"], &env.vars());
    assert!(
        stderr(&output).contains("siblings: 2"),
        "{}",
        stderr(&output)
    );
    let context = json_string(&read, "context");
    put(&env, "greeting", "hello+bonjour", Some(&context));
    let read = get(&env, "greeting", 0);
    assert!(read.contains(r#""values":["hello+bonjour"]"#), "{read}");

    // Not found is exit 1; a delete with the read's context makes the key not found.
    let missing = get(&env, "never-written", 1);
    assert!(missing.contains(r#""found":false"#), "{missing}");
    let context = json_string(&read, "context");
    let output = shoal(&["delete", "greeting", "--context", &context], &env.vars());
    assert_exit(&output, 0);
    get(&env, "greeting", 1);

    // Every replica took the tombstone, so each reaped it; --local shows them reaped
    // (polled: the reap follows the delete's acks).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let output = shoal(&["get", "--local", "greeting", "--json"], &env.vars());
        assert_exit(&output, 0);
        let local = stdout(&output);
        if local.matches(r#""state":"reaped""#).count() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tombstone was not reaped on every replica: {local}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let output = shoal(&["cluster", "status", "--json"], &env.vars());
    assert_exit(&output, 0);
    let status = stdout(&output);
    assert_eq!(status.matches(r#""zone":"default""#).count(), 3, "{status}");

    put(&env, "kept", "across restarts", None);

    // SIGTERM: dev exits 0 and every node it started is gone.
    let nodes = dev.node_pids();
    assert_eq!(nodes.len(), 3);
    assert_eq!(dev.stop(STOP), Some(0), "{}", dev.output());
    for pid in &nodes {
        assert!(
            !alive(*pid),
            "node pid {pid} still running after shoal dev stopped"
        );
    }
    assert!(
        !dir.join("env").exists(),
        "the env file goes with the cluster"
    );

    // Restart on the same directory: same ports, same data.
    let mut dev = Dev::start(&dir, &[]);
    let again = dev.wait_ready(START);
    assert_eq!(again, env, "same addresses and certificates");
    let read = get(&again, "kept", 0);
    assert!(read.contains(r#""values":["across restarts"]"#), "{read}");
    get(&again, "greeting", 1);
    let nodes = dev.node_pids();
    assert_eq!(dev.stop(STOP), Some(0), "{}", dev.output());
    for pid in &nodes {
        assert!(
            !alive(*pid),
            "node pid {pid} still running after the second stop"
        );
    }
}

#[test]
fn a_second_dev_on_a_running_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let mut dev = Dev::start(&dir, &["--nodes", "1"]);
    dev.wait_ready(START);
    let output = shoal(&["dev", "--dir", dir.to_str().unwrap()], &[]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("already running"),
        "{}",
        stderr(&output)
    );
    assert_eq!(dev.stop(STOP), Some(0), "{}", dev.output());
}

/// Ports chosen free are released before the nodes bind them, and a port check or a client of
/// another process may hold one for a moment: `shoal dev` starts such a node again instead of
/// giving up. Here the test itself holds n2's port until n2 has failed to bind it once.
#[test]
fn a_node_whose_port_is_held_for_a_moment_is_started_again() {
    // Two nodes on --base-port P: QUIC on P and P+1, metrics on P+2 and P+3. Pick a P whose
    // four ports are free now, below the ephemeral range; keep n2's QUIC port bound.
    let (base, squatter) = (0..200u16)
        .map(|i| 21_000 + (std::process::id() % 500) as u16 * 8 + i * 4_007 % 8_000)
        .find_map(|base| {
            let quic: Vec<_> = (0..2)
                .map(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)))
                .collect::<Result<_, _>>()
                .ok()?;
            let metrics: Vec<_> = (2..4)
                .map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)))
                .collect::<Result<_, _>>()
                .ok()?;
            drop(metrics);
            let mut quic = quic.into_iter();
            drop(quic.next());
            Some((base, quic.next()?))
        })
        .expect("four free ports");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let base_port = base.to_string();
    let mut dev = Dev::start(&dir, &["--nodes", "2", "--base-port", &base_port]);
    let n2_log = dir.join("n2.log");
    let failed_once = common::wait_for(START, || {
        std::fs::read_to_string(&n2_log).is_ok_and(|log| log.contains("cannot bind"))
    });
    assert!(failed_once, "n2 never met its held port:\n{}", dev.output());
    drop(squatter);
    dev.wait_ready(START);
    assert!(
        !dev.output().contains("exited unexpectedly"),
        "{}",
        dev.output()
    );
    assert_eq!(dev.stop(STOP), Some(0), "{}", dev.output());
}
