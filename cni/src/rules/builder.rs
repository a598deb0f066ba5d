//! The builder the rule files write through: per-table rules in final order, with
//! Istio's `-I` insertions resolved; its own file so `istio`, `dns` and `tproxy`
//! share it without using each other.

use super::model::{Family, FamilyRules, TableRules};

pub(super) struct Builder {
    pub(super) tables: Vec<(String, TableRules)>,
}

impl Builder {
    fn table(&mut self, t: &str) -> &mut TableRules {
        if let Some(i) = self.tables.iter().position(|(n, _)| n == t) {
            &mut self.tables[i].1
        } else {
            self.tables.push((t.to_string(), TableRules::default()));
            &mut self.tables.last_mut().expect("just pushed").1
        }
    }

    fn note_target(tr: &mut TableRules, args: &[String]) {
        if let Some(i) = args.iter().position(|a| a == "-j") {
            if let Some(t) = args.get(i + 1).filter(|t| t.starts_with("ISTIO_")) {
                tr.declare(t);
            }
        }
    }

    pub(super) fn append(&mut self, table: &str, chain: &str, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let tr = self.table(table);
        tr.declare(chain);
        Self::note_target(tr, &args);
        tr.chain_mut(chain).push(args);
    }

    /// `-I chain pos` (1-based), as Istio does for a few rules.
    pub(super) fn insert(&mut self, table: &str, chain: &str, pos: usize, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let tr = self.table(table);
        tr.declare(chain);
        Self::note_target(tr, &args);
        let rules = tr.chain_mut(chain);
        let at = (pos.max(1) - 1).min(rules.len());
        rules.insert(at, args);
    }

    pub(super) fn finish(mut self, family: Family) -> FamilyRules {
        self.tables.retain(|(_, t)| !t.is_empty());
        self.tables.sort_by(|a, b| a.0.cmp(&b.0));
        FamilyRules {
            family,
            tables: self.tables,
        }
    }
}
