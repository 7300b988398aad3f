//! shoal-ring: being written.
