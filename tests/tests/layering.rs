//! The layers of `../shared/DESIGN.md` §2, checked by the build instead of by memory: every
//! workspace crate may depend only on the Shoal crates the design allows it, and the logic
//! crates (which do no I/O and read no clock) on no async runtime or network library. The
//! dependency graph comes from `cargo metadata`, so a new `[dependencies]` line that crosses a
//! layer fails this test. (The logic crates' `clippy.toml` files forbid reading the clock and
//! spawning threads inside them.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Which Shoal crates each crate may depend on (normal dependencies; dev-dependencies are
/// tests' business). `None`: anything.
fn allowed() -> BTreeMap<&'static str, Option<&'static [&'static str]>> {
    BTreeMap::from([
        ("shoal-types", Some(&[][..])),
        ("shoal-causality", Some(&["shoal-types"][..])),
        ("shoal-ring", Some(&["shoal-types"][..])),
        (
            "shoal-protocol",
            Some(&["shoal-types", "shoal-causality", "shoal-ring"][..]),
        ),
        (
            "shoal-storage",
            Some(&["shoal-types", "shoal-causality"][..]),
        ),
        (
            "shoal-membership",
            Some(&["shoal-types", "shoal-ring", "shoal-protocol"][..]),
        ),
        (
            "shoal-coordinator",
            Some(
                &[
                    "shoal-types",
                    "shoal-causality",
                    "shoal-ring",
                    "shoal-protocol",
                    "shoal-storage",
                    "shoal-membership",
                ][..],
            ),
        ),
        (
            "shoal-transport",
            Some(&["shoal-types", "shoal-protocol"][..]),
        ),
        (
            "shoal-server",
            Some(
                &[
                    "shoal-types",
                    "shoal-causality",
                    "shoal-ring",
                    "shoal-protocol",
                    "shoal-storage",
                    "shoal-membership",
                    "shoal-coordinator",
                    "shoal-transport",
                ][..],
            ),
        ),
        (
            "shoal-client",
            Some(
                &[
                    "shoal-types",
                    "shoal-causality",
                    "shoal-ring",
                    "shoal-protocol",
                    "shoal-transport",
                ][..],
            ),
        ),
        (
            "shoal-sim",
            Some(
                &[
                    "shoal-types",
                    "shoal-causality",
                    "shoal-ring",
                    "shoal-protocol",
                    "shoal-storage",
                    "shoal-membership",
                    "shoal-coordinator",
                ][..],
            ),
        ),
        ("shoal-bench", Some(&["shoal-types", "shoal-client"][..])),
        ("shoal-cli", None),
        ("shoal-tests", None),
        ("shoal-benches", None),
    ])
}

/// Crates that must never depend on an async runtime or on the network.
const LOGIC_CRATES: [&str; 7] = [
    "shoal-types",
    "shoal-causality",
    "shoal-ring",
    "shoal-protocol",
    "shoal-membership",
    "shoal-coordinator",
    "shoal-sim",
];

/// What the logic crates must not depend on (storage must not either: it has its own thread).
const RUNTIME_AND_NETWORK: [&str; 4] = ["tokio", "quinn", "rustls", "socket2"];

/// Each workspace package and its normal dependencies, from `cargo metadata`.
fn workspace_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut packages = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let deps = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        packages.insert(name, deps);
    }
    packages
}

/// Every rule `packages` breaks.
fn broken_rules(packages: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let allowed = allowed();
    let mut broken = Vec::new();
    for (package, deps) in packages {
        let Some(rule) = allowed.get(package.as_str()) else {
            broken.push(format!(
                "{package} is not in DESIGN.md §2's table (add its row to this test)"
            ));
            continue;
        };
        let Some(rule) = rule else { continue };
        for dep in deps.iter().filter(|d| d.starts_with("shoal-")) {
            if !rule.contains(&dep.as_str()) {
                broken.push(format!(
                    "{package} depends on {dep}, which §2 does not allow"
                ));
            }
        }
    }
    for package in LOGIC_CRATES.iter().chain(&["shoal-storage"]) {
        if let Some(deps) = packages.get(*package) {
            for dep in RUNTIME_AND_NETWORK.iter().filter(|d| deps.contains(**d)) {
                broken.push(format!(
                    "{package} depends on {dep}: it must do no async I/O"
                ));
            }
        }
    }
    broken
}

#[test]
fn every_crate_depends_only_on_the_layers_below_it() {
    let packages = workspace_dependencies();
    let broken = broken_rules(&packages);
    println!(
        "layering: {} broken rules over {} crates",
        broken.len(),
        packages.len()
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_check_finds_dependencies_that_cross_a_layer() {
    let graph = |edges: &[(&str, &[&str])]| -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(p, deps)| (p.to_string(), deps.iter().map(|d| d.to_string()).collect()))
            .collect()
    };
    let honest = graph(&[
        ("shoal-coordinator", &["shoal-storage", "rand"]),
        ("shoal-cli", &["shoal-server", "tokio"]),
    ]);
    assert!(broken_rules(&honest).is_empty());
    let crossing = graph(&[
        ("shoal-coordinator", &["shoal-transport", "tokio"]),
        ("shoal-client", &["shoal-coordinator"]),
        ("shoal-gossip", &[]),
    ]);
    let broken = broken_rules(&crossing);
    assert_eq!(broken.len(), 4, "{broken:#?}");
}
