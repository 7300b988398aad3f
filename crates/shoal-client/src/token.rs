//! Causal contexts as opaque text: `base64url(TOKEN_VERSION ‖ rmp-serde(context))`, no padding.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use shoal_causality::CausalContext;
use shoal_protocol::{DecodeLimits, MAX_DECODE_DEPTH};
use thiserror::Error;

use crate::ClientError;

/// The first byte of every decoded token; bumped when the encoding changes. 2: contexts carry
/// listed dots beside their vector, and a put's token covers only what the writer saw plus its
/// write (a version-1 put token covered the whole stored object, concurrent writes included, so
/// version-1 tokens are refused rather than read as vectors).
pub const TOKEN_VERSION: u8 = 2;

/// The longest token accepted, in characters: far above any real context (one entry is well
/// under 100 bytes; a context holds at most N plus a few fallback entries), small enough that a
/// hostile token cannot make the decoder allocate much.
pub const MAX_TOKEN_CHARS: usize = 64 * 1024;

/// Why a context token was refused ([`ClientError::InvalidContextToken`]). Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TokenError {
    /// The token is empty.
    #[error("the token is empty (a blind write takes no context at all)")]
    Empty,
    /// The token is longer than [`MAX_TOKEN_CHARS`].
    #[error("{chars} characters, the limit is {max}")]
    TooLong {
        /// Its length.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not URL-safe base64 without padding.
    #[error("not URL-safe base64: {0}")]
    NotBase64(String),
    /// The token decodes to no bytes.
    #[error("no bytes")]
    NoBytes,
    /// The token was made by an older client, in an encoding this one no longer reads.
    #[error(
        "token version {found} is outdated (this client reads version {expected}); read the key for a fresh token"
    )]
    Outdated {
        /// The token's version.
        found: u8,
        /// The version this client reads.
        expected: u8,
    },
    /// The token was made by a newer client.
    #[error("token version {found}, this client reads version {expected}")]
    UnknownVersion {
        /// The token's version.
        found: u8,
        /// The version this client reads.
        expected: u8,
    },
    /// The bytes are not a valid causal context.
    #[error("not a causal context: {0}")]
    NotAContext(String),
    /// Bytes follow the context.
    #[error("trailing bytes after the context")]
    TrailingBytes,
    /// The context holds more entries (vector entries plus listed dots) than any node decodes.
    #[error("{entries} context entries, the limit is {max}")]
    TooManyEntries {
        /// Entries in the context.
        entries: usize,
        /// The limit.
        max: usize,
    },
}

/// Encodes a context as a URL-safe token, for command lines, HTTP headers and JSON.
pub fn context_to_token(context: &CausalContext) -> String {
    let mut bytes = vec![TOKEN_VERSION];
    // Writing a context into a Vec cannot fail: every field is a plain string, integer or
    // sequence, and a Vec grows as needed. An empty token would still decode to an error, never
    // to a wrong context.
    if rmp_serde::encode::write(&mut bytes, context).is_err() {
        bytes.truncate(1);
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a token made by [`context_to_token`]. The token's length is checked before decoding,
/// nesting depth and context size are bounded, and the context's own invariants (see
/// [`CausalContext`]) are checked; anything else is [`ClientError::InvalidContextToken`].
pub fn context_from_token(token: &str) -> Result<CausalContext, ClientError> {
    decode(token).map_err(ClientError::InvalidContextToken)
}

fn decode(token: &str) -> Result<CausalContext, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_CHARS {
        return Err(TokenError::TooLong {
            chars: token.len(),
            max: MAX_TOKEN_CHARS,
        });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| TokenError::NotBase64(e.to_string()))?;
    let (&version, body) = bytes.split_first().ok_or(TokenError::NoBytes)?;
    if version < TOKEN_VERSION {
        return Err(TokenError::Outdated {
            found: version,
            expected: TOKEN_VERSION,
        });
    }
    if version != TOKEN_VERSION {
        return Err(TokenError::UnknownVersion {
            found: version,
            expected: TOKEN_VERSION,
        });
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    de.set_max_depth(MAX_DECODE_DEPTH);
    let context =
        CausalContext::deserialize(&mut de).map_err(|e| TokenError::NotAContext(e.to_string()))?;
    if serde::de::IgnoredAny::deserialize(&mut de).is_ok() {
        return Err(TokenError::TrailingBytes);
    }
    let max = DecodeLimits::default().max_vector_entries;
    if context.len() > max {
        return Err(TokenError::TooManyEntries {
            entries: context.len(),
            max,
        });
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use shoal_causality::{Actor, Dot, VersionVector};
    use shoal_types::{Incarnation, NodeId};

    use super::*;

    fn context(entries: &[(&str, u64, u64)]) -> CausalContext {
        let mut vv = VersionVector::new();
        for &(node, incarnation, counter) in entries {
            let actor = Actor::new(NodeId::new(node).unwrap(), Incarnation::new(incarnation));
            vv.witness(&actor, counter);
        }
        CausalContext::from(vv)
    }

    fn raw_token(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn tokens_round_trip() {
        for ctx in [
            CausalContext::empty(),
            context(&[("n1", 7, 1)]),
            context(&[("n1", u64::MAX, 3), ("n2", 0, 1), ("n3", 42, u64::MAX)]),
        ] {
            let token = context_to_token(&ctx);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "URL-safe: {token}"
            );
            assert_eq!(context_from_token(&token).unwrap(), ctx);
            assert_eq!(
                context_from_token(&format!(" {token}\n")).unwrap(),
                ctx,
                "surrounding whitespace from shells is ignored"
            );
        }
    }

    #[test]
    fn equal_contexts_make_equal_tokens() {
        let a = context(&[("n2", 1, 2), ("n1", 1, 1)]);
        let b = context(&[("n1", 1, 1), ("n2", 1, 2)]);
        assert_eq!(context_to_token(&a), context_to_token(&b));
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        let good = rmp_serde::to_vec(&context(&[("n1", 1, 1)])).unwrap();
        let mut wrong_version = vec![TOKEN_VERSION + 1];
        wrong_version.extend_from_slice(&good);
        let mut trailing = vec![TOKEN_VERSION];
        trailing.extend_from_slice(&good);
        trailing.push(0xc0);
        let mut truncated = vec![TOKEN_VERSION];
        truncated.extend_from_slice(&good[..good.len() - 1]);
        let unsorted = {
            let a = (
                Actor::new(NodeId::new("b").unwrap(), Incarnation::new(1)),
                1u64,
            );
            let b = (
                Actor::new(NodeId::new("a").unwrap(), Incarnation::new(1)),
                1u64,
            );
            let mut bytes = vec![TOKEN_VERSION];
            bytes.extend(rmp_serde::to_vec(&vec![a, b]).unwrap());
            bytes
        };
        let zero_counter = {
            let a = (
                Actor::new(NodeId::new("a").unwrap(), Incarnation::new(1)),
                0u64,
            );
            let mut bytes = vec![TOKEN_VERSION];
            bytes.extend(rmp_serde::to_vec(&vec![a]).unwrap());
            bytes
        };
        let deep = {
            let mut bytes = vec![TOKEN_VERSION];
            bytes.extend(std::iter::repeat_n(0x91, 10_000));
            bytes
        };
        let cases = [
            ("".to_owned(), "empty"),
            ("not base64!".to_owned(), "base64"),
            ("a+b/".to_owned(), "base64"),
            (raw_token(&wrong_version), "version"),
            (raw_token(&trailing), "trailing"),
            (raw_token(&truncated), "causal context"),
            (raw_token(&unsorted), "causal context"),
            (raw_token(&zero_counter), "causal context"),
            (raw_token(&deep), "causal context"),
            ("A".repeat(MAX_TOKEN_CHARS + 1), "limit"),
        ];
        for (token, reason) in cases {
            match context_from_token(&token) {
                Err(ClientError::InvalidContextToken(e)) => {
                    let message = e.to_string();
                    assert!(message.contains(reason), "{message:?} should say {reason}")
                }
                other => panic!("{token:.40}: expected an invalid token error, got {other:?}"),
            }
        }
    }

    #[test]
    fn oversized_vectors_are_refused() {
        let entries: Vec<(String, u64, u64)> =
            (0..300).map(|i| (format!("n{i:03}"), 1, 1)).collect();
        let entries: Vec<(&str, u64, u64)> = entries
            .iter()
            .map(|(n, i, c)| (n.as_str(), *i, *c))
            .collect();
        let token = context_to_token(&context(&entries));
        assert!(matches!(
            context_from_token(&token),
            Err(ClientError::InvalidContextToken(
                TokenError::TooManyEntries { entries: 300, .. }
            ))
        ));
    }

    #[test]
    fn a_version_1_token_is_refused_as_outdated() {
        // A token as version-1 clients made it: the bare version vector. A put's version-1
        // token covered the whole stored object, so it is not read as a vector.
        let mut bytes = vec![1];
        bytes.extend(
            rmp_serde::to_vec(&vec![(
                Actor::new(NodeId::new("n1").unwrap(), Incarnation::new(1)),
                3u64,
            )])
            .unwrap(),
        );
        let error = context_from_token(&raw_token(&bytes)).unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::InvalidContextToken(TokenError::Outdated {
                    found: 1,
                    expected: TOKEN_VERSION
                })
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("read the key"), "{error}");
        let newer = raw_token(&[TOKEN_VERSION + 1, 0x90]);
        assert!(matches!(
            context_from_token(&newer),
            Err(ClientError::InvalidContextToken(
                TokenError::UnknownVersion { .. }
            ))
        ));
    }

    #[test]
    fn dotted_contexts_round_trip_and_broken_ones_are_refused() {
        let actor = |n: &str| Actor::new(NodeId::new(n).unwrap(), Incarnation::new(1));
        let dot = |n: &str, counter| Dot {
            actor: actor(n),
            counter,
        };
        let dotted = context(&[("n1", 1, 2)])
            .with_dot(&dot("n2", 3))
            .with_dot(&dot("n1", 5));
        assert_eq!(dotted.dots().len(), 2);
        assert_eq!(
            context_from_token(&context_to_token(&dotted)).unwrap(),
            dotted
        );
        // A listed dot the vector covers breaks the canonical form.
        #[derive(serde::Serialize)]
        struct Raw {
            vv: Vec<(Actor, u64)>,
            dots: Vec<Dot>,
        }
        let raw = Raw {
            vv: vec![(actor("n1"), 4)],
            dots: vec![dot("n1", 2)],
        };
        let mut bytes = vec![TOKEN_VERSION];
        bytes.extend(rmp_serde::to_vec(&raw).unwrap());
        assert!(matches!(
            context_from_token(&raw_token(&bytes)),
            Err(ClientError::InvalidContextToken(TokenError::NotAContext(_)))
        ));
    }
}
