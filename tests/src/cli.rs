//! Running the `shoal` binary as a client, and reading its output.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::HarnessError;

/// What one run of `shoal` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliOutput {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl CliOutput {
    /// The string value of `"field":"…"` in the JSON on stdout (tokens, addresses and error
    /// kinds hold no quotes), if present.
    pub fn json_string(&self, field: &str) -> Option<String> {
        json_string(&self.stdout, field)
    }

    /// The numeric value of `"field":N` in the JSON on stdout, if present.
    pub fn json_number(&self, field: &str) -> Option<u64> {
        let pattern = format!("\"{field}\":");
        let start = self.stdout.find(&pattern)? + pattern.len();
        let digits: String = self.stdout[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The string value of `"field":"…"` in a JSON text.
pub fn json_string(json: &str, field: &str) -> Option<String> {
    let pattern = format!("\"{field}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let len = json[start..].find('"')?;
    Some(json[start..start + len].to_owned())
}

/// Runs `binary ARGS…` with `env` added (and no inherited `SHOAL_*` or `RUST_LOG`), with
/// `stdin` written to its standard input.
pub async fn run_with_stdin(
    binary: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Result<CliOutput, HarnessError> {
    let mut command = tokio::process::Command::new(binary);
    command
        .args(args)
        .env_remove("SHOAL_NODES")
        .env_remove("SHOAL_CERTS")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| HarnessError::io(format!("running {}", binary.display()), e))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes)
            .await
            .map_err(|e| HarnessError::io("writing shoal's stdin", e))?;
        drop(pipe);
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| HarnessError::io(format!("waiting for {}", binary.display()), e))?;
    Ok(CliOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
