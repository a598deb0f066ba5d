//! [`SharedStr`]: an immutable string that one decoded view holds once, however
//! many of its endpoints carry it.
//!
//! A view repeats a few short strings in every endpoint: the port names
//! (`http`, `grpc-api`), the locality, the service account. A sidecar keeps the
//! view it runs on, and each of those was its own heap allocation (at least 32
//! bytes with glibc's overhead) per endpoint: a few hundred KB of a sidecar in
//! a namespace of a hundred services. Decoded inside [`interning`], equal
//! strings share one allocation (and so do equal port lists). Outside it (the agent building views, tests)
//! each value is its own `Arc<str>`: equality, order and hashing are the
//! string's either way, and it travels as a plain JSON string.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// An immutable, cheaply cloned string (see the module docs).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedStr(Arc<str>);

impl SharedStr {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string itself (the sidecar's compiled endpoints keep it).
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// `s`, shared with an equal string already decoded in this [`interning`]
    /// scope if there is one.
    pub fn interned(s: &str) -> SharedStr {
        SharedStr(INTERNED.with(|cell| match cell.borrow_mut().as_mut() {
            Some(t) => shared(&mut t.strs, s),
            None => Arc::from(s),
        }))
    }
}

/// What one [`interning`] scope has decoded so far.
#[derive(Default)]
struct Tables {
    strs: HashSet<Arc<str>>,
    /// Endpoints' port lists ([`crate::portmap::PortMap`]): the endpoints of
    /// one workload have the same ports.
    ports: HashSet<Arc<[(SharedStr, u16)]>>,
}

std::thread_local! {
    static INTERNED: RefCell<Option<Tables>> = const { RefCell::new(None) };
}

/// The table's copy of `v`, added if it has none.
fn shared<T: ?Sized + Eq + std::hash::Hash>(set: &mut HashSet<Arc<T>>, v: &T) -> Arc<T>
where
    Arc<T>: for<'a> From<&'a T>,
{
    match set.get(v) {
        Some(a) => a.clone(),
        None => {
            let a: Arc<T> = Arc::from(v);
            set.insert(a.clone());
            a
        }
    }
}

/// A port list, shared with an equal one decoded in this [`interning`] scope
/// if there is one.
pub(crate) fn interned_ports(v: &[(SharedStr, u16)]) -> Arc<[(SharedStr, u16)]> {
    INTERNED.with(|cell| match cell.borrow_mut().as_mut() {
        Some(t) => shared(&mut t.ports, v),
        None => Arc::from(v),
    })
}

/// Runs `f` (a decode), in which equal [`SharedStr`]s share one allocation.
/// The table lives only as long as the scope: what stays shared afterwards is
/// held by the values, not by a process-wide cache.
pub fn interning<R>(f: impl FnOnce() -> R) -> R {
    let outer = INTERNED.with(|s| s.borrow_mut().replace(Tables::default()));
    let r = f();
    INTERNED.with(|s| *s.borrow_mut() = outer);
    r
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Equality, order and hashing are `str`'s (derived through `Arc<str>`), so
// maps keyed by `SharedStr` can be probed with a `&str`.
impl Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl From<&String> for SharedStr {
    fn from(s: &String) -> Self {
        SharedStr(Arc::from(s.as_str()))
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for SharedStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SharedStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SharedStr, E> {
                Ok(SharedStr::interned(s))
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn equal_strings_share_one_allocation_within_a_scope_only() {
        let json = r#"["http", "http", "grpc", "http"]"#;
        let v: Vec<SharedStr> = interning(|| serde_json::from_str(json).unwrap());
        assert!(Arc::ptr_eq(v[0].as_arc(), v[1].as_arc()));
        assert!(Arc::ptr_eq(v[0].as_arc(), v[3].as_arc()));
        assert!(!Arc::ptr_eq(v[0].as_arc(), v[2].as_arc()));
        // Outside a scope each value is its own.
        let w: Vec<SharedStr> = serde_json::from_str(json).unwrap();
        assert!(!Arc::ptr_eq(w[0].as_arc(), w[1].as_arc()));
        assert_eq!(v, w);
        // Nested scopes end with the outer one restored.
        interning(|| {
            let a = SharedStr::interned("x");
            interning(|| assert!(!Arc::ptr_eq(a.as_arc(), SharedStr::interned("x").as_arc())));
            assert!(Arc::ptr_eq(a.as_arc(), SharedStr::interned("x").as_arc()));
        });
        INTERNED.with(|s| assert!(s.borrow().is_none()));
    }

    #[test]
    fn behaves_as_its_string() {
        let s = SharedStr::from("zone-a");
        assert_eq!(s, "zone-a");
        assert_eq!(s.len(), 6);
        assert_eq!(format!("{s} {s:?}"), r#"zone-a "zone-a""#);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""zone-a""#);
        let m: BTreeMap<SharedStr, u8> = [(s.clone(), 1)].into();
        assert_eq!(m.get("zone-a"), Some(&1));
        let (a, b) = (SharedStr::from("a"), SharedStr::from("b"));
        assert!(a < b, "ordered as strings");
        let e = serde_json::from_str::<SharedStr>("7").unwrap_err();
        assert!(e.to_string().contains("a string"), "{e}");
    }
}
