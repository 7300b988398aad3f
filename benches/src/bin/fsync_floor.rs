//! The floor under every durable write: a 4 KiB write plus `fdatasync` on one file, repeated,
//! with p50 / p99 / max. Storage's commit latency with one writer should sit a little above
//! this; group commit is what lets many writers share it.
//!
//! `cargo run --release -p shoal-benches --bin fsync_floor [DIR] [SAMPLES]` (DIR defaults to the
//! system temp directory, SAMPLES to 2000).

// A measuring tool: a failed write or sync is a broken run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const BLOCKS: u64 = 256;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let samples: usize = args
        .next()
        .map_or(2000, |s| s.parse().expect("SAMPLES is a number"));
    let path = dir.join(format!("fsync-floor-{}.dat", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    // Allocate the whole file first, so each sample is an overwrite that needs no metadata.
    let block = vec![0xa5u8; BLOCK];
    for i in 0..BLOCKS {
        file.write_all_at(&block, i * BLOCK as u64).unwrap();
    }
    file.sync_all().unwrap();

    let mut times: Vec<Duration> = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        file.write_all_at(&block, (i as u64 % BLOCKS) * BLOCK as u64)
            .unwrap();
        file.sync_data().unwrap();
        times.push(start.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path).unwrap();

    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "4 KiB write + fdatasync in {} ({}): p50 {:?}, p99 {:?}, max {:?} over {samples} samples",
        dir.display(),
        filesystem_of(&dir),
        at(0.50),
        at(0.99),
        times[times.len() - 1],
    );
}

/// The filesystem type holding `path`, from /proc/mounts (the longest matching mount point).
fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {}", f[2], f[0])))
        })
        .max()
        .map_or_else(|| "unknown filesystem".into(), |(_, fs)| fs)
}
