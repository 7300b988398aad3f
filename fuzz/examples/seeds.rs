//! Regenerates the fuzz corpus after a change to the wire shape (see
//! `shoal_fuzz::regenerate_corpus`): `cargo run --example seeds` from `fuzz/`. The same runs
//! from the workspace, without building libFuzzer:
//! `cargo test -p shoal-tests --test fuzz_corpus -- --ignored regenerate`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    print!("{}", shoal_fuzz::regenerate_corpus(&corpus)?);
    Ok(())
}
