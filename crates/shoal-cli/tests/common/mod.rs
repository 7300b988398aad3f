//! Running the `shoal` binary from tests, and cleaning up after it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// `shoal ARGS…` with the given extra environment, waited for.
pub fn shoal(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(SHOAL);
    command
        .args(args)
        .env_remove("SHOAL_NODES")
        .env_remove("SHOAL_CERTS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("shoal runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it is not the expected one.
pub fn assert_exit(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// The string value of `"field":"…"` in a JSON line (tokens and addresses hold no quotes).
pub fn json_string(json: &str, field: &str) -> String {
    let start = json
        .find(&format!("\"{field}\":\""))
        .unwrap_or_else(|| panic!("no string field {field:?} in {json}"))
        + field.len()
        + 4;
    let len = json[start..].find('"').unwrap();
    json[start..start + len].to_owned()
}

/// Sends `signal` to `pid`; false when no such process exists.
#[allow(unsafe_code)]
pub fn signal(pid: u32, signal: i32) -> bool {
    let pid = libc::pid_t::try_from(pid).unwrap();
    assert!(pid > 0, "never signal a process group");
    // SAFETY: kill(2) takes two integers and touches no memory of ours; pid names one process.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Whether `pid` names a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    if !signal(pid, 0) {
        return false;
    }
    // A zombie still takes signals; its state letter in /proc says it is dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Polls `condition` until it holds or `timeout` passes; whether it held.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A `shoal dev` process. Dropping it kills the dev process and every node it recorded, so a
/// failing test leaves nothing running.
pub struct Dev {
    pub dir: PathBuf,
    child: Option<Child>,
    /// Every node pid seen in `dir/pids`, to kill on drop.
    pids: Vec<u32>,
    log: PathBuf,
}

/// What `shoal dev` exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub nodes: String,
    pub certs: String,
}

impl Env {
    pub fn vars(&self) -> [(&str, &str); 2] {
        [("SHOAL_NODES", &self.nodes), ("SHOAL_CERTS", &self.certs)]
    }
}

impl Dev {
    /// Starts `shoal dev --dir DIR ARGS…` with its output in `DIR.out`.
    pub fn start(dir: &Path, args: &[&str]) -> Dev {
        let log = dir.with_extension("out");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(SHOAL)
            .arg("dev")
            .arg("--dir")
            .arg(dir)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("shoal dev starts");
        Dev {
            dir: dir.to_owned(),
            child: Some(child),
            pids: Vec::new(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `DIR/env`, which appears once every node answers.
    pub fn wait_ready(&mut self, timeout: Duration) -> Env {
        let env_file = self.dir.join("env");
        let child = self.child.as_mut().unwrap();
        let mut exited = None;
        let ready = wait_for(timeout, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            env_file.exists()
        });
        assert!(
            ready && exited.is_none(),
            "shoal dev not ready (exited: {exited:?}):\n{}",
            self.output()
        );
        self.pids = self.node_pids();
        let text = std::fs::read_to_string(&env_file).unwrap();
        let line = text.trim().strip_prefix("export ").unwrap();
        let mut env = Env {
            nodes: String::new(),
            certs: String::new(),
        };
        for pair in line.split(' ') {
            match pair.split_once('=') {
                Some(("SHOAL_NODES", v)) => env.nodes = v.to_owned(),
                Some(("SHOAL_CERTS", v)) => env.certs = v.to_owned(),
                _ => panic!("unexpected env file {text:?}"),
            }
        }
        env
    }

    /// The node pids recorded in `DIR/pids`.
    pub fn node_pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' ')?.1.trim().parse().ok())
            .collect()
    }

    /// SIGTERM, then waits for the dev process to exit; its exit code.
    pub fn stop(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        assert!(signal(child.id(), libc::SIGTERM));
        let mut status = None;
        let exited = wait_for(timeout, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shoal dev did not stop in {timeout:?}:\n{}", self.output());
        }
        status.and_then(|s| s.code())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let mut pids = self.pids.clone();
        pids.extend(self.node_pids());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in pids {
            if alive(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}
