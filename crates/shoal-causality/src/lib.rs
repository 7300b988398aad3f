//! Causality for Shoal: who made each write (an [`Actor`]), the unique name of each write event
//! (a [`Dot`]), summaries of what has been seen ([`VersionVector`], and its client-facing form
//! [`CausalContext`]), and the object every key stores: a dotted-version-vector sibling set
//! ([`Object`]).
//!
//! An [`Object`] is a version vector — everything the object has seen — plus the siblings that
//! survive: concurrent `(dot, value-or-tombstone)` pairs none of which has seen another.
//! [`Object::update`] is what a coordinator does on a put: make a new dot, drop what the client's
//! context covered, keep the rest as siblings. [`Object::merge`] is what replicas do when they
//! exchange objects; it is commutative, associative and idempotent, so replication, read repair,
//! hinted handoff and anti-entropy can apply the same object any number of times in any order.
//!
//! The invariants every `Object` holds, also after decoding untrusted bytes: version-vector
//! entries sorted by actor with positive counters; siblings sorted by dot, dots unique; every
//! sibling's dot covered by the vector. Canonical order makes equal objects encode to equal bytes.
//!
//! Not here: where objects are stored or sent, and how many siblings a cluster allows (the caller
//! passes the cap). No I/O, no async, no clock.

mod error;
mod object;
mod vv;

pub use error::CausalityError;
pub use object::{Object, Sibling};
pub use vv::{Actor, CausalContext, Dot, VersionVector};
