use thiserror::Error;

/// Why a benchmark could not run (failed requests are not errors: they are counted).
#[derive(Debug, Error)]
pub enum BenchError {
    /// The settings cannot work together (zero keys, a read ratio outside 0..=1, ...).
    #[error("invalid settings: {0}")]
    InvalidSpec(String),
    /// Preloading failed: a key could not be written, so timed reads would measure misses.
    #[error("preload failed at key {key}: {message}")]
    Preload {
        /// The key that could not be written.
        key: String,
        /// Why.
        message: String,
    },
    /// The fault (killing a node) could not be carried out.
    #[error("the fault could not be injected: {0}")]
    Fault(String),
    /// A worker task panicked or was cancelled.
    #[error("a load worker failed: {0}")]
    Worker(String),
    /// The target could not be set up (a bad endpoint, a connection refused at start).
    #[error("target: {0}")]
    Target(String),
    /// A report file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The report could not be serialised (a bug).
    #[error("cannot serialise the report: {0}")]
    Json(#[from] serde_json::Error),
}
