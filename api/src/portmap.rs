//! [`PortMap`]: an endpoint's ports by service port name, as a sorted boxed
//! slice.
//!
//! Every endpoint of a view carries one, and a sidecar holds the view it runs
//! on, so its size is paid once per endpoint: a `BTreeMap` of two ports is a
//! ~300-byte node, this is a sorted slice whose names are [`SharedStr`]s, and
//! within one decoded view all endpoints with the same ports (every replica
//! of a workload) share one slice (see [`crate::sharedstr::interning`]). It travels as
//! the same JSON object a map would (`{"http": 8080}`).

use crate::sharedstr::SharedStr;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Service port name → an endpoint's port. Names are unique and sorted; built
/// from pairs, a later pair replaces an earlier one of the same name (as
/// inserting into a map would).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PortMap(Arc<[(SharedStr, u16)]>);

impl PortMap {
    /// The port of service port `name`.
    pub fn get(&self, name: &str) -> Option<&u16> {
        self.0
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        self.0.iter().map(|(n, p)| (&**n, *p))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `map["http"]`, as on a map: panics when the name is absent.
impl std::ops::Index<&str> for PortMap {
    type Output = u16;
    fn index(&self, name: &str) -> &u16 {
        self.get(name)
            .unwrap_or_else(|| panic!("no port named {name:?} in {self:?}"))
    }
}

impl<S: Into<SharedStr>> FromIterator<(S, u16)> for PortMap {
    fn from_iter<I: IntoIterator<Item = (S, u16)>>(iter: I) -> Self {
        let mut v: Vec<(SharedStr, u16)> = iter.into_iter().map(|(n, p)| (n.into(), p)).collect();
        // Stable sort, then keep the last of each name: map-insert semantics.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(SharedStr, u16)> = Vec::with_capacity(v.len());
        for e in v {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        PortMap(crate::sharedstr::interned_ports(&out))
    }
}

impl<S: Into<SharedStr>, const N: usize> From<[(S, u16); N]> for PortMap {
    fn from(a: [(S, u16); N]) -> Self {
        a.into_iter().collect()
    }
}

impl Serialize for PortMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for PortMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<SharedStr, u16>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_sorting_and_the_last_of_a_name() {
        let m: PortMap = [("http", 8080), ("grpc", 9090), ("http", 8081)].into();
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("http"), Some(&8081));
        assert_eq!(m["grpc"], 9090);
        assert_eq!(m.get("grpc"), Some(&9090));
        assert_eq!(m.get("tcp"), None);
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            [("grpc", 9090), ("http", 8081)]
        );
        assert!(PortMap::default().is_empty());
        assert_eq!(PortMap::default().get(""), None);
    }

    #[test]
    fn equal_port_lists_of_one_decode_share_one_slice() {
        let json =
            r#"[{"http": 8080, "grpc": 9090}, {"grpc": 9090, "http": 8080}, {"http": 8081}]"#;
        let v: Vec<PortMap> = crate::sharedstr::interning(|| serde_json::from_str(json).unwrap());
        assert!(Arc::ptr_eq(&v[0].0, &v[1].0));
        assert!(!Arc::ptr_eq(&v[0].0, &v[2].0));
        assert_eq!(v[2]["http"], 8081);
        let w: Vec<PortMap> = serde_json::from_str(json).unwrap();
        assert!(
            !Arc::ptr_eq(&w[0].0, &w[1].0),
            "outside a scope: each its own"
        );
        assert_eq!(v, w);
    }

    #[test]
    fn travels_as_a_json_object() {
        let m: PortMap = [("http", 8080), ("", 80)].into();
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, r#"{"":80,"http":8080}"#);
        let back: PortMap = serde_json::from_str(&j).unwrap();
        assert_eq!(back, m);
        let e = serde_json::from_str::<PortMap>(r#"{"http": 70000}"#).unwrap_err();
        assert!(e.to_string().contains("70000"), "{e}");
    }
}
