//! Finding the `shoal` binary the tests run.
//!
//! The tests package cannot use `CARGO_BIN_EXE_shoal` (that variable exists only for the
//! integration tests of the package that owns the binary, `shoal-cli`), so the binary is found
//! where cargo puts it: a test executable is `target/<profile>/deps/<test>-<hash>`, the binary
//! `target/<profile>/shoal`. `cargo test --workspace` builds it before running any test,
//! because `shoal-cli`'s own integration tests need it; `cargo test -p shoal-tests` does not,
//! hence the check below.
//!
//! Staleness is judged the way cargo judges it: cargo writes the source files a binary was built
//! from into `target/<profile>/shoal.d`, and a binary older than one of them is stale.
//! (Comparing with the test executable would call every binary stale after a change to the
//! tests alone, which rebuilds the tests but rightly not the binary.)

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::HarnessError;

/// The path of the `shoal` binary to run: `$SHOAL_BIN` if set, else `target/<profile>/shoal`
/// beside the running test executable. Fails with what to run when it is missing or older
/// than its sources.
pub fn shoal_binary() -> Result<PathBuf, HarnessError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(find)
        .clone()
        .map_err(HarnessError::Binary)
}

fn find() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SHOAL_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("SHOAL_BIN={} is not a file", path.display()))
        };
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the test executable: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    let binary = dir.join(format!("shoal{}", std::env::consts::EXE_SUFFIX));
    let how = "run `cargo build --bin shoal` (same profile and target directory as the tests), \
               or `cargo test --workspace`, which builds it";
    let built = match std::fs::metadata(&binary).and_then(|m| m.modified()) {
        Ok(built) => built,
        Err(_) => {
            return Err(format!(
                "the shoal binary is not at {}: {how}",
                binary.display()
            ));
        }
    };
    if let Some(source) = newer_source(&dir.join("shoal.d"), built) {
        return Err(format!(
            "the shoal binary at {} is older than {}: {how}",
            binary.display(),
            source.display()
        ));
    }
    Ok(binary)
}

/// The first source file listed in the dep-info file `dep_info` (`target: src src …`, spaces
/// in paths escaped with a backslash) that was modified after `built`. `None` when all are
/// older, or the dep-info cannot be read.
fn newer_source(dep_info: &Path, built: SystemTime) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dep_info).ok()?;
    let line = text.lines().next()?;
    let (_, sources) = line.split_once(": ")?;
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = sources.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => paths.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    paths.push(current);
    paths
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .find(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|at| at > built)
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_source_newer_than_the_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old file.rs");
        let new = dir.path().join("new.rs");
        std::fs::write(&old, "").unwrap();
        std::fs::write(&new, "").unwrap();
        let dep_info = dir.path().join("shoal.d");
        let escaped = old.display().to_string().replace(' ', "\\ ");
        std::fs::write(
            &dep_info,
            format!("/t/shoal: {escaped} {}\n", new.display()),
        )
        .unwrap();
        let at = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before_both = at(&old) - Duration::from_secs(10);
        assert_eq!(newer_source(&dep_info, before_both), Some(old.clone()));
        let after_both = at(&new).max(at(&old)) + Duration::from_secs(10);
        assert_eq!(newer_source(&dep_info, after_both), None);
        assert_eq!(
            newer_source(&dir.path().join("missing.d"), before_both),
            None
        );
    }
}
