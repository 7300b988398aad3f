use thiserror::Error;

/// Why a causality operation was refused. No state changes when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CausalityError {
    /// The write would leave more concurrent siblings than the cluster allows; resolve the
    /// siblings (write with the context of a read) first.
    #[error("too many siblings: the write would leave {siblings}, the limit is {max}")]
    TooManySiblings {
        /// Siblings the object would hold after the write.
        siblings: usize,
        /// The limit.
        max: usize,
    },
    /// The actor has no counter left for a new dot (a context named `u64::MAX` for it).
    #[error("no fresh dot left for the coordinating actor")]
    CountersExhausted,
    /// Bytes decoded into an object or vector that breaks an invariant.
    #[error("invalid causal data: {0}")]
    Invalid(&'static str),
}
