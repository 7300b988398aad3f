//! Placeholder: the storage benches are being written.
fn main() {}
