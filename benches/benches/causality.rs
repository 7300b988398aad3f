//! Placeholder: the causality benches are being written.
fn main() {}
