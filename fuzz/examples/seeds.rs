//! Writes `shoal_fuzz::seeds()` into `fuzz/corpus/<target>/seed-<n>`, the start of each corpus:
//! `cargo run --example seeds` (from `fuzz/`).

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut counts = std::collections::BTreeMap::new();
    for (target, bytes) in shoal_fuzz::seeds() {
        let n = counts.entry(target).or_insert(0);
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{n}")), bytes)?;
        *n += 1;
    }
    println!("seeds written: {counts:?}");
    Ok(())
}
