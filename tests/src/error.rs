use std::path::PathBuf;

use thiserror::Error;

/// Why the harness could not do what a test asked.
#[derive(Debug, Error)]
pub enum HarnessError {
    /// The `shoal` binary is missing or older than the sources it is built from.
    #[error("{0}")]
    Binary(String),
    /// A file, directory, socket or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be made or loaded.
    #[error("certificates: {0}")]
    Certs(#[from] shoal_transport::CertError),
    /// The harness's own QUIC endpoint failed.
    #[error("transport: {0}")]
    Transport(#[from] shoal_transport::TransportError),
    /// A client of the cluster could not be built.
    #[error("client: {0}")]
    Client(#[from] shoal_client::ClientError),
    /// A node did not start, answer, or stop as asked. Carries the end of its log.
    #[error("node {node}: {problem}\n--- last lines of {} ---\n{tail}", log.display())]
    Node {
        /// The node's id.
        node: String,
        /// What went wrong.
        problem: String,
        /// Its log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// The test asked for something impossible (a node index out of range, resuming a node
    /// that is not paused...).
    #[error("invalid request to the harness: {0}")]
    Invalid(String),
}

impl HarnessError {
    /// An I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> HarnessError {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }
}
