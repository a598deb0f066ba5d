//! The hosts one proxy looked up on demand, kept in its view until it
//! forgets them. A generation number changes with every change to the set,
//! so a stream deciding how to push (once per affected proxy and change)
//! compares two numbers instead of two sets of hostnames.

use crate::ondemand;
use std::collections::BTreeSet;

/// One stream's on-demand hosts and their generation.
#[derive(Debug, Default)]
pub struct Requested {
    hosts: BTreeSet<String>,
    generation: u64,
}

impl Requested {
    /// The hosts a reconnecting proxy says it had, at most
    /// [`ondemand::MAX_REQUESTED`] of them.
    pub fn new(hosts: impl IntoIterator<Item = String>) -> Requested {
        Requested {
            hosts: hosts.into_iter().take(ondemand::MAX_REQUESTED).collect(),
            generation: 0,
        }
    }

    pub fn hosts(&self) -> &BTreeSet<String> {
        &self.hosts
    }

    /// Changes whenever the hosts do: equal generations of one stream mean
    /// equal sets.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Adds `host` while there is room; whether it was added.
    pub fn insert(&mut self, host: &str) -> bool {
        if self.hosts.len() >= ondemand::MAX_REQUESTED || self.hosts.contains(host) {
            return false;
        }
        self.hosts.insert(host.to_string());
        self.generation += 1;
        true
    }

    /// Removes `hosts`; whether any was there.
    pub fn remove(&mut self, hosts: &[String]) -> bool {
        let before = self.hosts.len();
        for h in hosts {
            self.hosts.remove(h);
        }
        let removed = self.hosts.len() < before;
        if removed {
            self.generation += 1;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::Requested;

    #[test]
    fn the_generation_moves_with_the_hosts_and_only_then() {
        let mut r = Requested::new(["a".to_string(), "b".to_string()]);
        let g0 = r.generation();
        assert!(!r.insert("a"), "already there");
        assert!(!r.remove(&["c".to_string()]), "never there");
        assert_eq!(r.generation(), g0);
        assert!(r.insert("c"));
        let g1 = r.generation();
        assert_ne!(g1, g0);
        assert!(r.remove(&["a".to_string(), "z".to_string()]));
        assert_ne!(r.generation(), g1);
        assert_eq!(
            r.hosts().iter().map(String::as_str).collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn it_holds_at_most_the_bound() {
        let many = (0..crate::ondemand::MAX_REQUESTED + 5).map(|i| format!("h{i}"));
        let mut r = Requested::new(many);
        assert_eq!(r.hosts().len(), crate::ondemand::MAX_REQUESTED);
        assert!(!r.insert("one-more"));
    }
}
