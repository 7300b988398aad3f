use serde::{Deserialize, Serialize};

use crate::{Key, TypesError};

/// Size limits the coordinator enforces on every request, with a clear error when exceeded.
///
/// An object (all of a key's siblings) is bounded too, by the sum of its values' bytes
/// (`max_object_bytes`): a write whose resulting object would exceed it is refused, so that
/// every object a coordinator makes fits in one frame with its envelope. Merges of concurrent
/// writes accepted by different coordinators can still exceed it at a replica; such an object is
/// read as its context only (`docs/reliability.md`, "Objects larger than a frame").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLimits", into = "RawLimits")]
pub struct Limits {
    max_key_bytes: usize,
    max_value_bytes: usize,
    max_siblings: usize,
    max_object_bytes: usize,
}

impl Limits {
    /// The largest value any configuration may allow: 64 MiB (frames are bounded at 16 MiB by
    /// default; raising this also needs a larger frame limit).
    pub const HARD_MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;
    /// The most siblings any configuration may allow.
    pub const HARD_MAX_SIBLINGS: usize = 1024;
    /// The largest object any configuration may allow: 1 GiB (frame lengths are 32-bit).
    pub const HARD_MAX_OBJECT_BYTES: usize = 1024 * 1024 * 1024;
    /// The default bound of an object's value bytes: 15 MiB, which leaves 1 MiB of a default
    /// 16 MiB frame for the envelope, the key, the dots and the version vector.
    pub const DEFAULT_MAX_OBJECT_BYTES: usize = 15 * 1024 * 1024;

    /// Parses limits: all positive, within the hard maximums. The object bound is the default
    /// one, or `max_value_bytes` if that is larger (see [`Limits::with_max_object_bytes`]).
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
            max_object_bytes: Self::DEFAULT_MAX_OBJECT_BYTES.max(max_value_bytes),
        })
    }

    /// These limits with another object bound: at least `max_value_bytes` (one value must fit)
    /// and at most [`Limits::HARD_MAX_OBJECT_BYTES`].
    pub fn with_max_object_bytes(self, max_object_bytes: usize) -> Result<Self, TypesError> {
        if max_object_bytes < self.max_value_bytes || max_object_bytes > Self::HARD_MAX_OBJECT_BYTES
        {
            return Err(TypesError::InvalidLimits(format!(
                "max object bytes {max_object_bytes} must be between the max value bytes {} and {}",
                self.max_value_bytes,
                Self::HARD_MAX_OBJECT_BYTES
            )));
        }
        Ok(Limits {
            max_object_bytes,
            ..self
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
    /// Most value bytes one key's object may hold after a write, all siblings together
    /// (default 15 MiB).
    pub const fn max_object_bytes(&self) -> usize {
        self.max_object_bytes
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 8 * 1024 * 1024,
            max_siblings: 64,
            max_object_bytes: Self::DEFAULT_MAX_OBJECT_BYTES,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RawLimits {
    max_key_bytes: usize,
    max_value_bytes: usize,
    max_siblings: usize,
    /// Absent in limits written before the object bound existed: the default then.
    #[serde(default)]
    max_object_bytes: Option<usize>,
}

impl TryFrom<RawLimits> for Limits {
    type Error = TypesError;
    fn try_from(r: RawLimits) -> Result<Self, TypesError> {
        let limits = Limits::new(r.max_key_bytes, r.max_value_bytes, r.max_siblings)?;
        match r.max_object_bytes {
            Some(max) => limits.with_max_object_bytes(max),
            None => Ok(limits),
        }
    }
}

impl From<Limits> for RawLimits {
    fn from(l: Limits) -> RawLimits {
        RawLimits {
            max_key_bytes: l.max_key_bytes,
            max_value_bytes: l.max_value_bytes,
            max_siblings: l.max_siblings,
            max_object_bytes: Some(l.max_object_bytes),
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

    #[test]
    fn an_object_holds_at_least_one_value() {
        let limits = Limits::default();
        assert!(limits.max_object_bytes() >= limits.max_value_bytes());
        assert!(
            limits
                .with_max_object_bytes(limits.max_value_bytes())
                .is_ok()
        );
        assert!(
            limits
                .with_max_object_bytes(limits.max_value_bytes() - 1)
                .is_err()
        );
        let big = Limits::new(1024, 32 << 20, 64).unwrap();
        assert_eq!(big.max_object_bytes(), 32 << 20);
    }
}
