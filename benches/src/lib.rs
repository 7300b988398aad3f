//! Criterion benchmarks of Shoal hot paths; see `benches/benches/`.
