//! `shoal bench --dev 3` end to end: it starts its own cluster, preloads, measures, writes the
//! JSON and SVG reports, and stops every node it started; with a kill, phase C reports the
//! windows before and after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{alive, assert_exit, shoal, signal, stderr, stdout};

/// Kills whatever nodes a failed run left in `dir/pids`.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(self.0.join("pids")).unwrap_or_default();
        for pid in pids
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' ')?.1.trim().parse::<u32>().ok())
        {
            if alive(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn bench_dev_measures_and_writes_the_reports_then_stops_its_nodes() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let _leftovers = Leftovers(dir.clone());
    let (json, svg) = (root.path().join("run.json"), root.path().join("run.svg"));
    let output = shoal(
        &[
            "bench",
            "--dev",
            "3",
            "--dev-dir",
            dir.to_str().unwrap(),
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--keys",
            "1000",
            "--concurrency",
            "8",
            "--json",
            json.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("phase run") && text.contains("p99 µs"),
        "{text}"
    );
    assert!(
        !dir.join("pids").exists(),
        "the nodes were stopped: {}",
        stderr(&output)
    );

    let report = read_json(&json);
    assert_eq!(report["target"]["kind"], "shoal");
    assert_eq!(report["target"]["endpoints"].as_array().unwrap().len(), 3);
    assert_eq!(report["preload"]["keys"], 1000);
    let phase = &report["phases"][0];
    assert_eq!(phase["spec"]["keys"], 1000);
    assert_eq!(phase["spec"]["load"]["concurrency"], 8);
    assert!(phase["throughput"].as_f64().unwrap() > 0.0, "{phase}");
    for op in ["read", "update"] {
        let latency = &phase[op]["latency"];
        assert!(latency["count"].as_u64().unwrap() > 0, "{op}: {phase}");
        assert!(latency["p50_us"].as_u64().unwrap() > 0);
        assert!(latency["p99_us"].as_u64() >= latency["p50_us"].as_u64());
        assert!(latency["max_us"].as_u64() >= latency["p999_us"].as_u64());
        assert_eq!(phase[op]["not_found"], 0, "every key was preloaded");
    }
    assert_eq!(phase["errors"], 0, "{phase}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
}

#[test]
fn bench_dev_kills_a_node_in_phase_c_and_reports_before_and_after() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let _leftovers = Leftovers(dir.clone());
    let json = root.path().join("c.json");
    let output = shoal(
        &[
            "bench",
            "--dev",
            "3",
            "--dev-dir",
            dir.to_str().unwrap(),
            "--workload",
            "w1",
            "--phases",
            "C",
            "--duration",
            "3s",
            "--kill-at",
            "1s",
            "--warmup",
            "0s",
            "--keys",
            "500",
            "--concurrency",
            "8",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&output, 0);
    assert!(
        !dir.join("pids").exists(),
        "the nodes were stopped: {}",
        stderr(&output)
    );
    let report = read_json(&json);
    assert_eq!(report["workload"], "w1");
    let c = &report["phases"][0];
    assert_eq!(c["name"], "C");
    let fault = &c["fault"];
    assert!(
        fault["action"]
            .as_str()
            .unwrap()
            .starts_with("SIGKILL to node n3"),
        "{fault}"
    );
    assert!(
        (fault["at_s"].as_f64().unwrap() - 1.0).abs() < 0.5,
        "{fault}"
    );
    let ok = |w: &serde_json::Value| {
        w["read"]["ok"].as_u64().unwrap() + w["update"]["ok"].as_u64().unwrap()
    };
    assert!(
        ok(&fault["before"]) > 0 && ok(&fault["after"]) > 0,
        "{fault}"
    );
    assert_eq!(c["timeline"].as_array().unwrap().len(), 3);
}

#[test]
fn bench_refuses_a_kill_it_cannot_carry_out() {
    let output = shoal(
        &[
            "bench",
            "--node",
            "127.0.0.1:9",
            "--certs",
            "/nonexistent",
            "--workload",
            "w1",
        ],
        &[],
    );
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("--kill-cmd"),
        "{}",
        stderr(&output)
    );
}
