//! The `shoal` binary without a cluster: help, usage errors, certificates, unreachable nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{assert_exit, shoal, stderr, stdout};

#[test]
fn help_lists_the_commands_and_the_exit_codes() {
    let output = shoal(&["--help"], &[]);
    assert_exit(&output, 0);
    let help = stdout(&output);
    for word in [
        "certs",
        "server",
        "dev",
        "get",
        "put",
        "delete",
        "cluster",
        "Exit codes",
    ] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }
    for command in [
        vec!["get", "--help"],
        vec!["put", "--help"],
        vec!["delete", "--help"],
        vec!["dev", "--help"],
        vec!["server", "--help"],
        vec!["cluster", "status", "--help"],
        vec!["certs", "node", "--help"],
    ] {
        assert_exit(&shoal(&command, &[]), 0);
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["get"],
        vec!["get", "k"],
        vec!["get", "k", "--node", "not-an-address", "--certs", "/tmp"],
        vec!["delete", "k", "--node", "127.0.0.1:1", "--certs", "/tmp"],
        vec![
            "put",
            "k",
            "v",
            "--node",
            "127.0.0.1:1",
            "--certs",
            "/tmp",
            "--timeout",
            "5d",
        ],
        vec!["server", "--node-id", "bad id", "--listen", "127.0.0.1:1"],
    ] {
        let output = shoal(&args, &[]);
        assert_exit(&output, 2);
    }
    // A malformed context token is refused before anything is sent.
    let output = shoal(
        &[
            "put",
            "k",
            "v",
            "--context",
            "%%%",
            "--node",
            "127.0.0.1:1",
            "--certs",
            "/nonexistent",
        ],
        &[],
    );
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("invalid context token"),
        "{}",
        stderr(&output)
    );
    let output = shoal(
        &["put", "k", "v", "--context", "%%%", "--json"],
        &[
            ("SHOAL_NODES", "127.0.0.1:1"),
            ("SHOAL_CERTS", "/nonexistent"),
        ],
    );
    assert_exit(&output, 2);
    assert!(stdout(&output).contains(r#""kind":"invalid_context_token""#));
}

#[test]
fn certs_commands_write_keys_readable_only_by_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs = certs.to_str().unwrap();
    assert_exit(&shoal(&["certs", "init", "--certs", certs], &[]), 0);
    for (role, name) in [("node", "n1"), ("client", "app"), ("admin", "ops")] {
        let output = shoal(&["certs", role, name, "--certs", certs], &[]);
        assert_exit(&output, 0);
        assert!(stdout(&output).contains(&format!("{role}-{name}.pem")));
    }
    for stem in ["ca", "node-n1", "client-app", "admin-ops"] {
        let key = std::fs::metadata(format!("{certs}/{stem}.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600, "{stem}.key");
        assert!(std::fs::metadata(format!("{certs}/{stem}.pem")).is_ok());
    }
    // Nothing is overwritten unless asked.
    let output = shoal(&["certs", "client", "app", "--certs", certs], &[]);
    assert_exit(&output, 5);
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        stderr(&output)
    );
    assert_exit(
        &shoal(
            &["certs", "client", "app", "--certs", certs, "--force"],
            &[],
        ),
        0,
    );
    // SHOAL_CERTS stands in for --certs.
    assert_exit(
        &shoal(&["certs", "admin", "ops2"], &[("SHOAL_CERTS", certs)]),
        0,
    );
}

#[test]
fn certs_are_issued_from_the_ca_directory_into_one_without_the_ca_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = dir.path().join("n1");
    let (ca, out) = (ca.to_str().unwrap(), out.to_str().unwrap());
    assert_exit(&shoal(&["certs", "init", "--certs", ca], &[]), 0);
    let output = shoal(&["certs", "node", "n1", "--ca", ca, "--out", out], &[]);
    assert_exit(&output, 0);
    assert!(
        !stderr(&output).contains("holds the CA key"),
        "{}",
        stderr(&output)
    );
    for file in ["node-n1.pem", "node-n1.key", "ca.pem"] {
        assert!(std::fs::metadata(format!("{out}/{file}")).is_ok(), "{file}");
    }
    assert!(
        std::fs::metadata(format!("{out}/ca.key")).is_err(),
        "the CA key was copied"
    );
    assert_eq!(
        std::fs::read(format!("{out}/ca.pem")).unwrap(),
        std::fs::read(format!("{ca}/ca.pem")).unwrap()
    );
    let mode = std::fs::metadata(out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the new certificate directory");
    // The one-directory form still works, and says where the CA key is.
    let output = shoal(&["certs", "node", "n2", "--certs", ca], &[]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("holds the CA key"),
        "{}",
        stderr(&output)
    );
    // --ca without --out (or --certs) names no output directory.
    let output = shoal(&["certs", "node", "n3", "--ca", ca], &[]);
    assert_exit(&output, 2);
}

#[test]
fn an_unreachable_cluster_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_str().unwrap();
    assert_exit(&shoal(&["certs", "init", "--certs", certs], &[]), 0);
    assert_exit(
        &shoal(&["certs", "client", "app", "--certs", certs], &[]),
        0,
    );
    // A port nobody listens on: bound for a moment, then freed.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = format!("127.0.0.1:{port}");
    let output = shoal(
        &[
            "get",
            "k",
            "--node",
            &node,
            "--certs",
            certs,
            "--timeout",
            "500ms",
            "--json",
        ],
        &[],
    );
    assert_exit(&output, 3);
    assert!(
        stdout(&output).contains(r#""kind":"no_node_reachable""#),
        "{}",
        stdout(&output)
    );
}
