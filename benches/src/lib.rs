//! Criterion benchmarks of Shoal hot paths (`benches/benches/`) and the floor tools
//! (`src/bin/`: `udp_floor`, `fsync_floor`, `quic_floor`); [`floor`] holds what those share.

pub mod floor {
    //! What the floor tools share: positional arguments and the one-line percentile summary.

    use std::time::Duration;

    /// Prints `usage` and exits if the first argument asks for help (`-h`, `--help`), so that a
    /// request for help is never taken for a directory or a number.
    pub fn usage_on_help(usage: &str) {
        if matches!(
            std::env::args().nth(1).as_deref(),
            Some("-h" | "--help" | "help")
        ) {
            println!("{usage}");
            std::process::exit(0);
        }
    }

    /// Positional argument `index` (0 = the first after the program name) as a number, or
    /// `default` when absent. A measuring tool: a malformed argument ends the run with a panic
    /// naming it.
    #[allow(clippy::expect_used)]
    pub fn arg<T: std::str::FromStr>(index: usize, name: &str, default: T) -> T {
        std::env::args()
            .nth(index + 1)
            .map_or(default, |s| s.parse().ok().expect(name))
    }

    /// `p50 …, p99 …, max … over N samples` of `times` (sorted here; at least one sample).
    pub fn summary(times: &mut [Duration]) -> String {
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        format!(
            "p50 {:?}, p99 {:?}, max {:?} over {} samples",
            at(0.50),
            at(0.99),
            times[times.len() - 1],
            times.len()
        )
    }
}
