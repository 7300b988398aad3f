//! Placeholder: the ring benches are being written.
fn main() {}
