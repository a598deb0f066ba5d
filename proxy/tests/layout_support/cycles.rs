//! The cycles of a module graph (Tarjan's strongly connected components) and
//! the report that names each with one path around it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::graph::Edges;
use crate::uses::{name, Module};

/// Strongly connected components of more than one module (Tarjan).
pub(crate) fn cycles(edges: &Edges) -> Vec<Vec<Module>> {
    struct T<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Module) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.edges[v].keys() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().expect("on stack");
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

/// One shortest cycle through `start` inside `comp`, with why each edge exists.
fn one_cycle(edges: &Edges, comp: &[Module]) -> String {
    let inside: BTreeSet<&Module> = comp.iter().collect();
    let start = &comp[0];
    let mut prev: BTreeMap<&Module, &Module> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    'bfs: while let Some(v) = queue.pop_front() {
        for w in edges[v].keys().filter(|w| inside.contains(w)) {
            if w == start {
                prev.insert(start, v);
                break 'bfs;
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut path = vec![start];
    let mut at = prev[start];
    while at != start {
        path.push(at);
        at = prev[at];
    }
    path.push(start);
    path.reverse();
    let mut s = String::new();
    for w in path.windows(2) {
        s += &format!(
            "    {} -> {}   ({})\n",
            name(w[0]),
            name(w[1]),
            edges[w[0]][w[1]].join("; ")
        );
    }
    s
}

/// The cycles of the tree at `src` (its `edges`) against `allowed`: `Err`
/// with a report naming each cycle and one path around it when they differ.
pub(crate) fn check(src: &Path, edges: &Edges, allowed: &[&[&str]]) -> Result<(), String> {
    let found = cycles(edges);
    let names: Vec<Vec<String>> = found.iter().map(|c| c.iter().map(name).collect()).collect();
    let allowed: Vec<Vec<String>> = allowed
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    if names == allowed {
        return Ok(());
    }
    let mut report = String::new();
    for c in &found {
        report += &format!(
            "cycle of {} modules: {}\n  for example:\n{}",
            c.len(),
            c.iter().map(name).collect::<Vec<_>>().join(", "),
            one_cycle(edges, c)
        );
    }
    Err(format!(
        "import cycles in {} ({} found, {} allowed):\n{report}",
        src.display(),
        found.len(),
        allowed.len()
    ))
}
