use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::TypesError;

/// A key: 1 to `Key::MAX_LEN` bytes. The coordinator enforces a smaller configurable limit
/// (`Limits::max_key_bytes`, 1 KiB by default); this hard limit bounds what any decoder accepts.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Bytes", into = "Bytes")]
pub struct Key(Bytes);

impl Key {
    /// The longest key any part of Shoal accepts, in bytes.
    pub const MAX_LEN: usize = 64 * 1024;

    /// Parses a key of 1 to `Key::MAX_LEN` bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Result<Self, TypesError> {
        let bytes = bytes.into();
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return Err(TypesError::InvalidKeyLength {
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(Key(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key's bytes, shared.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: keys are never empty. Present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Bytes> for Key {
    type Error = TypesError;
    fn try_from(b: Bytes) -> Result<Self, TypesError> {
        Key::new(b)
    }
}

impl From<Key> for Bytes {
    fn from(k: Key) -> Bytes {
        k.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => write!(f, "Key({s:?})"),
            _ => write!(f, "Key(0x{})", hex(&self.0)),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => f.write_str(s),
            Err(_) => write!(f, "0x{}", hex(&self.0)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_never_empty_nor_huge() {
        assert!(Key::new(Bytes::new()).is_err());
        assert!(Key::new(vec![0u8; Key::MAX_LEN + 1]).is_err());
        assert_eq!(Key::new(&b"user1"[..]).unwrap().len(), 5);
    }

    #[test]
    fn decoded_keys_are_checked() {
        let empty = rmp_serde::to_vec(&Bytes::new()).unwrap();
        assert!(rmp_serde::from_slice::<Key>(&empty).is_err());
    }
}
