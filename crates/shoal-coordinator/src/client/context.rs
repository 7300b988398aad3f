//! Whether a write's causal context can be honest, and what a put answers with.
//!
//! A client may send any context; the coordinating primary checks it against its own object
//! (overlay included) before applying anything, and refuses with a definite
//! `RequestError::InvalidContext` one that no honest client can hold, or that would let
//! clients make the key's metadata grow without bound:
//!
//! - more entries (vector entries plus listed dots) than [`MAX_CONTEXT_ENTRIES`];
//! - a counter above [`MAX_PLAUSIBLE_COUNTER`] that the object has not reached itself: no key
//!   sees that many writes, and refusing it keeps every later dot computable (`u64::MAX` would
//!   leave none) and keeps one client from pushing a real actor's counter to where its next
//!   honest write would be refused;
//! - actors the object does not know, when with them its vector would pass
//!   [`MAX_ENTRIES_FROM_CONTEXTS`]: the write folds the context's vector into the object's,
//!   and every decoder refuses a vector past 256 entries;
//! - a counter of the coordinator's own actor above what its object has issued: only this actor
//!   makes its dots, and it holds its latest, so a client cannot have seen a later one.
//!
//! Not checkable here: whether an actor of another node, or a counter of one, was really made
//! (it may be a write this replica has not received yet). The bounds above limit what such a
//! claim can do.
//!
//! A put's answer is the writer's context plus the new dot (`CausalContext::with_dot`), never the
//! stored object's context: that one covers concurrent writes the writer never saw, and writing
//! with it would supersede them.

use shoal_causality::{
    Actor, CausalContext, Dot, MAX_CONTEXT_ENTRIES, MAX_ENTRIES_FROM_CONTEXTS,
    MAX_PLAUSIBLE_COUNTER, Object,
};
use shoal_protocol::ContextError;

/// Refuses `context` if it cannot be honest for a write that `actor` coordinates on `local`.
pub(super) fn check(
    context: &CausalContext,
    actor: &Actor,
    local: &Object,
) -> Result<(), ContextError> {
    if context.len() > MAX_CONTEXT_ENTRIES {
        return Err(ContextError::TooManyEntries {
            entries: context.len(),
            max: MAX_CONTEXT_ENTRIES,
        });
    }
    let seen = local.version_vector();
    let named = context
        .vector()
        .entries()
        .iter()
        .map(|(a, c)| (a, *c))
        .chain(context.dots().iter().map(|d| (&d.actor, d.counter)));
    let mut unknown: Vec<&Actor> = Vec::new();
    for (a, counter) in named {
        if counter > MAX_PLAUSIBLE_COUNTER && counter > seen.get(a) {
            return Err(ContextError::ImplausibleCounter {
                counter,
                max: MAX_PLAUSIBLE_COUNTER,
            });
        }
        if seen.get(a) == 0 && a != actor && !unknown.contains(&a) {
            unknown.push(a);
        }
    }
    let entries = seen.len() + unknown.len();
    if !unknown.is_empty() && entries > MAX_ENTRIES_FROM_CONTEXTS {
        return Err(ContextError::TooManyActors {
            entries,
            max: MAX_ENTRIES_FROM_CONTEXTS,
        });
    }
    let issued = seen.get(actor);
    let named = context.counter_of(actor);
    if named > issued {
        return Err(ContextError::Unissued {
            counter: named,
            issued,
        });
    }
    Ok(())
}

/// What a put that made `dot` with `context` answers: the writer's context plus its write.
pub(super) fn written(context: &CausalContext, dot: &Dot) -> CausalContext {
    context.with_dot(dot)
}
