//! Replays the fuzz corpus through the fuzz targets' own bodies: every file of
//! `fuzz/corpus/<target>/` and every seed goes through `fuzz/src/lib.rs` (included here as a
//! module), so CI checks each input libFuzzer kept — crashes found and fixed included — without
//! libFuzzer. A panic, in a decoder or in a target's checks, fails the test.

// Test code, the included target bodies too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[cfg(test)]
#[allow(unreachable_pub)]
#[path = "../../fuzz/src/lib.rs"]
mod targets;

/// The corpus files of one target, in name order (an absent directory has none).
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.expect("a readable corpus directory").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn every_fuzz_corpus_input_replays_without_a_crash() {
    let mut per_target = BTreeMap::new();
    let mut crashes = Vec::new();
    let mut run = |target: &'static str, body: targets::Body, name: String, input: &[u8]| {
        *per_target.entry(target).or_insert(0usize) += 1;
        if panic::catch_unwind(AssertUnwindSafe(|| body(input))).is_err() {
            crashes.push(format!("{target}: {name}"));
        }
    };
    for (target, body) in targets::TARGETS {
        for file in corpus_files(target) {
            let input = std::fs::read(&file).expect("a readable corpus file");
            run(target, body, file.display().to_string(), &input);
        }
    }
    for (i, (target, input)) in targets::seeds().into_iter().enumerate() {
        let body = targets::TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .map(|(_, body)| *body)
            .expect("every seed names a target");
        run(target, body, format!("seed {i}"), &input);
    }
    let inputs: usize = per_target.values().sum();
    println!("fuzz corpus by target: {per_target:?}");
    println!(
        "fuzz corpus replayed: {inputs} inputs, crashes: {}",
        crashes.len()
    );
    assert!(crashes.is_empty(), "inputs that crash: {crashes:#?}");
    for (target, _) in targets::TARGETS {
        assert!(
            !corpus_files(target).is_empty(),
            "fuzz/corpus/{target} is empty: the replay would check nothing but the seeds"
        );
    }
}

/// The corpus is regenerated after a change to the wire shape (`regenerate` below): every seed
/// file of a
/// frame-body target decodes with the current protocol, and nearly every input libFuzzer kept
/// carries the current version byte — a corpus of another version stops at that byte and tests
/// nothing behind it.
#[test]
fn the_frame_body_corpus_speaks_the_current_protocol() {
    use shoal_protocol::{DecodeLimits, PROTOCOL_VERSION, Request, Response, decode};
    let limits = DecodeLimits::default();
    for (target, at) in targets::VERSIONED {
        let files = corpus_files(target);
        let mut seeds = 0;
        let mut current = 0;
        for file in &files {
            let input = std::fs::read(file).expect("a readable corpus file");
            if input.get(at) == Some(&PROTOCOL_VERSION) {
                current += 1;
            }
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("seed-") {
                seeds += 1;
                let body = &input[at.min(input.len())..];
                let decodes = match target {
                    "response" => decode::<Response>(body, &limits).is_ok(),
                    _ => decode::<Request>(body, &limits).is_ok(),
                };
                assert!(
                    decodes,
                    "{} does not decode: regenerate the seeds",
                    file.display()
                );
            }
        }
        println!(
            "{target}: {} inputs, {current} of the current protocol, {seeds} seeds",
            files.len()
        );
        assert!(
            seeds > 0,
            "fuzz/corpus/{target} has no seed-* files: regenerate the seeds"
        );
        assert!(
            current * 10 >= files.len() * 9,
            "fuzz/corpus/{target}: only {current} of {} inputs are of protocol version \
             {PROTOCOL_VERSION}: regenerate the corpus",
            files.len()
        );
    }
}

/// Regenerates the corpus after a change to the wire shape, from the workspace:
/// `cargo test -p shoal-tests --test fuzz_corpus -- --ignored regenerate`. Commit the result.
#[test]
#[ignore = "writes fuzz/corpus: run it after changing the wire shape"]
fn regenerate() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    print!(
        "{}",
        targets::regenerate_corpus(&corpus).expect("the corpus is writable")
    );
}
