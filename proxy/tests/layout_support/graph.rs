//! The module graph of one `src` tree: its files as modules, and an edge for
//! every path from one file module into another (with where it is written).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::lex::strip;
use crate::uses::{resolve, uses, Module};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file under `src` is, or `None` for the binary's `main.rs`.
fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs").to_string();
    match (parts.is_empty(), stem.as_str()) {
        (true, "lib") => Some(vec![]),
        (true, "main") => None,
        (_, "mod") => Some(parts),
        _ => {
            parts.push(stem);
            Some(parts)
        }
    }
}

pub(crate) type Edges = BTreeMap<Module, BTreeMap<Module, Vec<String>>>;

pub(crate) fn graph(src: &Path) -> Edges {
    let mut fs = Vec::new();
    files(src, &mut fs);
    let by_mod: BTreeMap<Module, PathBuf> = fs
        .into_iter()
        .filter_map(|f| Some((module_of(src, &f)?, f)))
        .collect();
    let mods: BTreeSet<Module> = by_mod.keys().cloned().collect();
    let mut edges: Edges = mods.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
    for (m, f) in &by_mod {
        let text = std::fs::read_to_string(f).expect("read source file");
        let rel = f
            .strip_prefix(src)
            .expect("under src")
            .display()
            .to_string();
        let children: BTreeSet<String> = mods
            .iter()
            .filter(|c| c.len() == m.len() + 1 && c.starts_with(m))
            .map(|c| c[m.len()].clone())
            .collect();
        for u in uses(m, &children, &strip(&text)) {
            let Some(t) = resolve(&u, m, &mods) else {
                continue;
            };
            if &t == m {
                continue;
            }
            let e = edges.get_mut(m).expect("module").entry(t).or_default();
            if e.len() < 3 {
                e.push(format!("src/{rel}:{} {}", u.line, u.path.join("::")));
            }
        }
    }
    edges
}
