//! Causality for Shoal: who made each write (an [`Actor`]), the unique name of each write event
//! (a [`Dot`]), summaries of what has been seen ([`VersionVector`], and the client-facing
//! [`CausalContext`]: a vector plus a few listed dots), and the object every key stores: a
//! dotted-version-vector sibling set ([`Object`]).
//!
//! An [`Object`] is a version vector — everything the object has seen — plus the siblings that
//! survive: concurrent `(dot, value-or-tombstone)` pairs none of which has seen another.
//! [`Object::update`] is what a coordinator does on a put: make a new dot, drop what the client's
//! context covered, keep the rest as siblings. A read hands the client the object's whole vector
//! ([`Object::context`]); a put hands back only the writer's own context plus the dot it made
//! ([`Object::update_with_dot`], [`CausalContext::with_dot`]), never the object's vector, which
//! covers concurrent writes the writer never saw. [`Object::merge`] is what replicas do when they
//! exchange objects; it is commutative, associative and idempotent, so replication, read repair,
//! hinted handoff and anti-entropy can apply the same object any number of times in any order.
//!
//! The invariants every `Object` holds, also after decoding untrusted bytes: version-vector
//! entries sorted by actor with positive counters; siblings sorted by dot, dots unique; every
//! sibling's dot covered by the vector. Canonical order makes equal objects encode to equal bytes.
//!
//! Not here: where objects are stored or sent, how many siblings a cluster allows (the caller
//! passes the cap), and whether a client's context is honest (coordinators check that against
//! their own object before [`Object::update`]; the caps they use are defined here). No I/O, no
//! async, no clock.

mod error;
mod object;
mod vv;

pub use error::CausalityError;
pub use object::{Object, Sibling};
pub use vv::{
    Actor, CausalContext, Dot, MAX_CONTEXT_DOTS, MAX_CONTEXT_ENTRIES, MAX_ENTRIES_FROM_CONTEXTS,
    MAX_PLAUSIBLE_COUNTER, VersionVector,
};
