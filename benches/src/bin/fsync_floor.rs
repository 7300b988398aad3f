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
use std::time::{Duration, Instant};

use shoal_bench::Machine;
use shoal_benches::floor;

const BLOCK: usize = 4096;
const BLOCKS: u64 = 256;

fn main() {
    floor::usage_on_help(
        "fsync_floor [DIR] [SAMPLES]: 4 KiB write + fdatasync in DIR (default: the temp \
         directory), SAMPLES times (default 2000); prints p50 / p99 / max",
    );
    let dir = std::env::args()
        .nth(1)
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let samples: usize = floor::arg(1, "SAMPLES is a number", 2000);
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

    println!(
        "4 KiB write + fdatasync in {} ({}): {}",
        dir.display(),
        Machine::filesystem_of(&dir),
        floor::summary(&mut times),
    );
}
