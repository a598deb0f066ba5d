//! VirtualService routing, compiled once per snapshot and evaluated per request
//! as a pure function: `decide(table, request facts) -> Decision`.
//!
//! Semantics follow Istio's reference: routes are tried in order and the first
//! whose `match` list has a matching entry wins (an empty list matches all);
//! within an entry every condition must hold. String matches are `exact`,
//! `prefix` or RE2-style full-string `regex`; an empty match object on a header
//! means "present". A host with a VirtualService but no matching route answers
//! 404 `NR`, as Envoy does.
//!
//! The compiled types (`types`), building them once per snapshot (`compile`)
//! and reading them per request (`eval`) are files of their own, so each reads
//! alone; the re-exports here keep every item at its `crate::route::` path.

mod compile;
mod eval;
mod types;

pub use compile::{fqdn, RouteError, RouteTable};
pub use eval::{
    cors_allows, hit, pick_target, rewrite_path, select, Facts, L4Facts, REDIRECT_PREFIX_MARKER,
};
pub use types::{Fault, L4Route, MatchEntry, Matcher, Retry, Route, Target};

#[cfg(test)]
mod tests;
