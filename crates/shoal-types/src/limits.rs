use serde::{Deserialize, Serialize};

use crate::{Key, TypesError};

/// Size limits the coordinator enforces on every request, with a clear error when exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLimits", into = "RawLimits")]
pub struct Limits {
    max_key_bytes: usize,
    max_value_bytes: usize,
    max_siblings: usize,
}

impl Limits {
    /// The largest value any configuration may allow: 64 MiB (frames are bounded at 16 MiB by
    /// default; raising this also needs a larger frame limit).
    pub const HARD_MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;
    /// The most siblings any configuration may allow.
    pub const HARD_MAX_SIBLINGS: usize = 1024;

    /// Parses limits: all positive, within the hard maximums.
    pub fn new(
        max_key_bytes: usize,
        max_value_bytes: usize,
        max_siblings: usize,
    ) -> Result<Self, TypesError> {
        if max_key_bytes == 0 || max_key_bytes > Key::MAX_LEN {
            return Err(TypesError::InvalidLimits(format!(
                "max key bytes {max_key_bytes} must be between 1 and {}",
                Key::MAX_LEN
            )));
        }
        if max_value_bytes == 0 || max_value_bytes > Self::HARD_MAX_VALUE_BYTES {
            return Err(TypesError::InvalidLimits(format!(
                "max value bytes {max_value_bytes} must be between 1 and {}",
                Self::HARD_MAX_VALUE_BYTES
            )));
        }
        if max_siblings == 0 || max_siblings > Self::HARD_MAX_SIBLINGS {
            return Err(TypesError::InvalidLimits(format!(
                "max siblings {max_siblings} must be between 1 and {}",
                Self::HARD_MAX_SIBLINGS
            )));
        }
        Ok(Limits {
            max_key_bytes,
            max_value_bytes,
            max_siblings,
        })
    }

    /// Largest key, in bytes (default 1 KiB).
    pub const fn max_key_bytes(&self) -> usize {
        self.max_key_bytes
    }
    /// Largest value, in bytes (default 8 MiB).
    pub const fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }
    /// Most siblings one key may hold after a write (default 64).
    pub const fn max_siblings(&self) -> usize {
        self.max_siblings
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 8 * 1024 * 1024,
            max_siblings: 64,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RawLimits {
    max_key_bytes: usize,
    max_value_bytes: usize,
    max_siblings: usize,
}

impl TryFrom<RawLimits> for Limits {
    type Error = TypesError;
    fn try_from(r: RawLimits) -> Result<Self, TypesError> {
        Limits::new(r.max_key_bytes, r.max_value_bytes, r.max_siblings)
    }
}

impl From<Limits> for RawLimits {
    fn from(l: Limits) -> RawLimits {
        RawLimits {
            max_key_bytes: l.max_key_bytes,
            max_value_bytes: l.max_value_bytes,
            max_siblings: l.max_siblings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_positive_and_bounded() {
        assert!(Limits::new(1024, 8 << 20, 64).is_ok());
        assert!(Limits::new(0, 8 << 20, 64).is_err());
        assert!(Limits::new(1024, 0, 64).is_err());
        assert!(Limits::new(1024, 8 << 20, 0).is_err());
        assert!(Limits::new(1024, 1 << 30, 64).is_err());
    }
}
