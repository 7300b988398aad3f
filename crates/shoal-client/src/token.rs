//! Causal contexts as opaque text: `base64url(TOKEN_VERSION ‖ rmp-serde(context))`, no padding.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use shoal_causality::CausalContext;
use shoal_protocol::{DecodeLimits, MAX_DECODE_DEPTH};

use crate::ClientError;

/// The first byte of every decoded token; bumped if the encoding ever changes.
pub const TOKEN_VERSION: u8 = 1;

/// The longest token accepted, in characters: far above any real context (one entry is well
/// under 100 bytes; a context holds at most N plus a few fallback entries), small enough that a
/// hostile token cannot make the decoder allocate much.
pub const MAX_TOKEN_CHARS: usize = 64 * 1024;

/// Encodes a context as a URL-safe token, for command lines, HTTP headers and JSON.
pub fn context_to_token(context: &CausalContext) -> String {
    let mut bytes = vec![TOKEN_VERSION];
    // Writing a version vector into a Vec cannot fail: every field is a plain string, integer
    // or sequence, and a Vec grows as needed. An empty token would still decode to an error,
    // never to a wrong context.
    if rmp_serde::encode::write(&mut bytes, context).is_err() {
        bytes.truncate(1);
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a token made by [`context_to_token`]. The token's length is checked before decoding,
/// nesting depth and vector size are bounded, and the context's own invariants (entries sorted
/// by actor, positive counters) are checked; anything else is
/// [`ClientError::InvalidContextToken`].
pub fn context_from_token(token: &str) -> Result<CausalContext, ClientError> {
    let invalid = |reason: String| ClientError::InvalidContextToken(reason);
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid(
            "the token is empty (a blind write takes no context at all)".into(),
        ));
    }
    if token.len() > MAX_TOKEN_CHARS {
        return Err(invalid(format!(
            "{} characters, the limit is {MAX_TOKEN_CHARS}",
            token.len()
        )));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| invalid(format!("not URL-safe base64: {e}")))?;
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| invalid("no bytes".into()))?;
    if version != TOKEN_VERSION {
        return Err(invalid(format!(
            "token version {version}, this client reads version {TOKEN_VERSION}"
        )));
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    de.set_max_depth(MAX_DECODE_DEPTH);
    let context = CausalContext::deserialize(&mut de)
        .map_err(|e| invalid(format!("not a causal context: {e}")))?;
    if serde::de::IgnoredAny::deserialize(&mut de).is_ok() {
        return Err(invalid("trailing bytes after the context".into()));
    }
    let max_entries = DecodeLimits::default().max_vector_entries;
    if context.vector().len() > max_entries {
        return Err(invalid(format!(
            "{} vector entries, the limit is {max_entries}",
            context.vector().len()
        )));
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use shoal_causality::{Actor, VersionVector};
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
                Err(ClientError::InvalidContextToken(message)) => {
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
            Err(ClientError::InvalidContextToken(m)) if m.contains("limit")
        ));
    }
}
