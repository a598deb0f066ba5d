//! The rule-set data model (families, tables, chains, rules) and its
//! `iptables-restore` rendering; its own file so the builder's files under `rules`
//! use it without using `rules` itself, which uses them.

use std::fmt::Write as _;

/// IP family of one rule set (`iptables` vs `ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// The netfilter tables the capture rules use, in the order `iptables-save` sorts them.
pub const TABLES: [&str; 3] = ["mangle", "nat", "raw"];

/// Chains that exist in every table and are never created or deleted by us.
pub const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// One rule: its chain and the match/target arguments after `-A CHAIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub args: Vec<String>,
}

impl Rule {
    /// The rule as `-A CHAIN args…` text.
    pub fn append_line(&self) -> String {
        format!("-A {} {}", self.chain, self.args.join(" "))
    }

    pub fn in_builtin_chain(&self) -> bool {
        BUILTIN_CHAINS.contains(&self.chain.as_str())
    }
}

/// The rules of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRules {
    /// Our own chains, in declaration order.
    pub chains: Vec<String>,
    /// Rules per chain in final order; chains in order of first use.
    pub rules: Vec<(String, Vec<Vec<String>>)>,
}

impl TableRules {
    pub(crate) fn chain_mut(&mut self, chain: &str) -> &mut Vec<Vec<String>> {
        if let Some(i) = self.rules.iter().position(|(c, _)| c == chain) {
            &mut self.rules[i].1
        } else {
            self.rules.push((chain.to_string(), Vec::new()));
            &mut self.rules.last_mut().expect("just pushed").1
        }
    }

    pub(crate) fn declare(&mut self, chain: &str) {
        if !BUILTIN_CHAINS.contains(&chain) && !self.chains.iter().any(|c| c == chain) {
            self.chains.push(chain.to_string());
        }
    }

    /// All rules in rendering order.
    pub fn all_rules(&self) -> impl Iterator<Item = Rule> + '_ {
        self.rules.iter().flat_map(|(c, rs)| {
            rs.iter().map(move |a| Rule {
                chain: c.clone(),
                args: a.clone(),
            })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.rules.iter().all(|(_, r)| r.is_empty())
    }
}

/// The complete rule set of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRules {
    pub family: Family,
    /// `(table name, rules)`, sorted by table name, empty tables left out.
    pub tables: Vec<(String, TableRules)>,
}

impl FamilyRules {
    pub fn table(&self, name: &str) -> Option<&TableRules> {
        self.tables.iter().find(|(t, _)| t == name).map(|(_, r)| r)
    }

    /// Rules we add to built-in chains (these cannot be flushed wholesale).
    pub fn builtin_rules(&self) -> Vec<(String, Rule)> {
        self.tables
            .iter()
            .flat_map(|(t, tr)| {
                tr.all_rules()
                    .filter(Rule::in_builtin_chain)
                    .map(move |r| (t.clone(), r))
            })
            .collect()
    }

    /// Istio's dry-run layout: `* table`, `-N` per chain, the rules, `COMMIT`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (table, tr) in &self.tables {
            let _ = writeln!(out, "* {table}");
            for c in &tr.chains {
                let _ = writeln!(out, "-N {c}");
            }
            for r in tr.all_rules() {
                let _ = writeln!(out, "{}", r.append_line());
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// The rule sets of both families (`v6` only when IPv6 is enabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub v4: FamilyRules,
    pub v6: Option<FamilyRules>,
}

impl RuleSet {
    pub fn families(&self) -> impl Iterator<Item = &FamilyRules> {
        std::iter::once(&self.v4).chain(self.v6.as_ref())
    }

    /// What `redirect --dry-run` prints: the IPv4 restore input, then the IPv6 one.
    pub fn render(&self) -> String {
        let mut out = String::from("# iptables-restore (ipv4)\n");
        out.push_str(&self.v4.render());
        if let Some(v6) = &self.v6 {
            out.push_str("# ip6tables-restore (ipv6)\n");
            out.push_str(&v6.render());
        }
        out
    }
}
