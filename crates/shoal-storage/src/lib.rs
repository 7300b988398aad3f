//! shoal-storage: being written.
