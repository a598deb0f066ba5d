//! A map from socket address to a value, as one sorted boxed slice: the shape
//! of the sidecar's per-endpoint tables (endpoint address → cluster in a
//! snapshot, endpoint address → run-time state in each cluster's entry). A
//! sidecar holds one entry per endpoint it can see, and a hash map per table
//! costs about twice the memory; lookups happen once per connection or
//! request, where a binary search is as good.

use std::net::SocketAddr;

/// Sorted by address, one entry per address.
#[derive(Debug)]
pub struct ByAddr<V>(Box<[(SocketAddr, V)]>);

impl<V> Default for ByAddr<V> {
    fn default() -> Self {
        ByAddr(Box::default())
    }
}

impl<V> ByAddr<V> {
    /// Of one address's entries, the first in `entries` is kept.
    pub fn new(mut entries: Vec<(SocketAddr, V)>) -> ByAddr<V> {
        // A stable sort: the first pushed of an address stays first.
        entries.sort_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        ByAddr(entries.into_boxed_slice())
    }

    pub fn get(&self, addr: SocketAddr) -> Option<&V> {
        self.0
            .binary_search_by_key(&addr, |e| e.0)
            .ok()
            .map(|i| &self.0[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_value_of_an_address() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let m = ByAddr::new(vec![
            (a("10.0.0.2:80"), 0),
            (a("10.0.0.1:80"), 1),
            (a("10.0.0.2:80"), 2),
            (a("[fd00::1]:80"), 3),
        ]);
        assert_eq!(m.get(a("10.0.0.2:80")), Some(&0));
        assert_eq!(m.get(a("10.0.0.1:80")), Some(&1));
        assert_eq!(m.get(a("[fd00::1]:80")), Some(&3));
        assert_eq!(m.get(a("10.0.0.1:81")), None);
        assert_eq!(ByAddr::<u8>::default().get(a("10.0.0.1:80")), None);
    }
}
