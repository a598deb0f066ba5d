//! What a pod's redirect rules capture: [`Selection`] lists and the
//! [`InterceptionMode`]. Their own file so that `annotations` can parse them
//! without importing `redirect`, which uses the annotation parsers; `redirect`
//! re-exports both.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A list that may also mean "nothing" or "everything" (`""` / `*` in Istio's syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Selection<T> {
    #[default]
    None,
    All,
    Only(Vec<T>),
}

impl<T: fmt::Display> fmt::Display for Selection<T> {
    /// Istio's flag syntax: `""`, `*`, or a comma list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selection::None => Ok(()),
            Selection::All => f.write_str("*"),
            Selection::Only(v) => f.write_str(&join(v)),
        }
    }
}

impl<T> Selection<T> {
    pub fn is_none(&self) -> bool {
        match self {
            Selection::None => true,
            Selection::Only(v) => v.is_empty(),
            Selection::All => false,
        }
    }
}

/// How inbound traffic reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum InterceptionMode {
    /// NAT REDIRECT (the default).
    #[default]
    Redirect,
    /// TPROXY: keeps the original source address; needs policy routing.
    Tproxy,
    /// No capture at all.
    None,
}

impl fmt::Display for InterceptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InterceptionMode::Redirect => "REDIRECT",
            InterceptionMode::Tproxy => "TPROXY",
            InterceptionMode::None => "NONE",
        })
    }
}

/// Istio's list syntax: the items joined by commas.
pub(crate) fn join<T: fmt::Display>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}
