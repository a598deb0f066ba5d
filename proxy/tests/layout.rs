//! The files of `proxy/src` form no import cycle: every module uses only
//! modules below it (leaf vocabulary, then config/snapshot/state/telemetry,
//! then the shared connection parts, then `inbound/` and `outbound/`, then the
//! listeners and the gateway, then `admin`/`lib`). A cycle makes every file in
//! it depend on every other, which is what made the crate hard to change.
//! The same holds for every other crate of the workspace ([`CRATES`]).
//!
//! Plain Rust, no external tool: each file under `src/` is a module (`lib.rs`
//! the crate root, `x/mod.rs` module `x`); an edge is a path starting with
//! `crate::`, `super::` or `self::`, any path of a `use` item (groups
//! `use crate::{a, b::{c, d}}` expanded), and a path into a child module by
//! its bare name (`use child::X`, `child::f()`: a parent using or re-exporting
//! its child depends on it). A path is
//! resolved to the longest module prefix that is a file; a path into items of
//! `lib.rs` is an edge to the crate root. Comments and string literals are
//! skipped (a doc link is no dependency); inline `mod tests { .. }` blocks
//! belong to their file, and `super::` inside them is resolved from there.
//! `main.rs` is a crate of its own (it uses `mesh_proxy::`) and is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Cycles (strongly connected components) still allowed, each as its sorted
/// module names. Empty: the crate has none. Only ever shrink this list.
const ALLOWED: &[&[&str]] = &[];

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

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

/// The source with comments and the contents of string and char literals
/// blanked (lines kept, for line numbers).
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |c: u8| if c == b'\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) {
            // A raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"')
                || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            {
                out.push(c as char);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            out.push_str(&" ".repeat(j + 1 - i));
            i = j + 1;
            while i < b.len() && !b[i..].starts_with(&close) {
                out.push(blank(b[i]));
                i += 1;
            }
            out.push_str(&" ".repeat(close.len().min(b.len() - i)));
            i += close.len();
        } else if c == b'"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '"'); otherwise a lifetime.
            if b.get(i + 1) == Some(&b'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                out.push_str(&" ".repeat(j + 1 - i));
                i = j + 1;
            } else if b.get(i + 2) == Some(&b'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            // Multi-byte UTF-8 is copied whole (it never starts a token we look at).
            let len = match c {
                0xF0..=0xFF => 4,
                0xE0..=0xEF => 3,
                0xC0..=0xDF => 2,
                _ => 1,
            };
            out.push_str(&src[i..i + len]);
            i += len;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // `::`
    Punct(char),
}

fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[s..i].to_string()), line));
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push((Tok::Path, line));
            i += 2;
        } else if c.is_ascii() {
            out.push((Tok::Punct(c as char), line));
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The paths of a `use` tree starting at `toks[*i]`, each prefixed by `prefix`.
fn use_tree(toks: &[(Tok, usize)], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        match toks.get(*i).map(|t| &t.0) {
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                *i += 1;
                match toks.get(*i).map(|t| &t.0) {
                    Some(Tok::Path) => *i += 1,
                    Some(Tok::Ident(a)) if a == "as" => {
                        *i += 2;
                        out.push(path);
                        return;
                    }
                    _ => {
                        out.push(path);
                        return;
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(path);
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.0) {
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        None => return,
                        _ => use_tree(toks, i, path.clone(), out),
                    }
                }
            }
            _ => {
                out.push(path);
                return;
            }
        }
    }
}

/// One dependency of a file: the path as written, resolved from `at`.
struct Use {
    at: Module,
    path: Vec<String>,
    line: usize,
}

/// Every path of interest in one (stripped) file of module `m`, whose child
/// modules are named `children`.
fn uses(m: &Module, children: &BTreeSet<String>, src: &str) -> Vec<Use> {
    let toks = tokens(src);
    let mut out = Vec::new();
    // Inline modules open at a brace depth; `super::` inside resolves from them.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let here = |inline: &Vec<(String, usize)>| {
        let mut h = m.clone();
        h.extend(inline.iter().map(|(n, _)| n.clone()));
        h
    };
    while i < toks.len() {
        let (t, line) = (&toks[i].0, toks[i].1);
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(k) if k == "mod" => {
                if let (Some((Tok::Ident(n), _)), Some((Tok::Punct('{'), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((n.clone(), depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(k) if k == "use" => {
                let mut paths = Vec::new();
                let mut j = i + 1;
                if matches!(toks.get(j).map(|t| &t.0), Some(Tok::Path)) {
                    j += 1;
                }
                use_tree(&toks, &mut j, vec![], &mut paths);
                for p in paths {
                    out.push(Use {
                        at: here(&inline),
                        path: p,
                        line,
                    });
                }
                i = j;
                continue;
            }
            // `crate::`, `super::`, `self::` paths, and a bare path into a
            // child module (`child::f()` in its parent's file: a child's name
            // there shadows any extern crate's).
            Tok::Ident(k)
                if (k == "crate" || k == "super" || k == "self")
                    || (inline.is_empty() && children.contains(k)) =>
            {
                let prev_path = i > 0 && toks[i - 1].0 == Tok::Path;
                if !prev_path && matches!(toks.get(i + 1).map(|t| &t.0), Some(Tok::Path)) {
                    let mut p = vec![];
                    let mut j = i;
                    while let Some((Tok::Ident(s), _)) = toks.get(j) {
                        p.push(s.clone());
                        if !matches!(toks.get(j + 1).map(|t| &t.0), Some(Tok::Path)) {
                            break;
                        }
                        j += 2;
                    }
                    out.push(Use {
                        at: here(&inline),
                        path: p,
                        line,
                    });
                    i = j + 1;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The file module `u` names, if it names one of this crate.
fn resolve(u: &Use, file_mod: &Module, mods: &BTreeSet<Module>) -> Option<Module> {
    let mut abs: Vec<String>;
    let mut rest = u.path.as_slice();
    match rest.first().map(String::as_str) {
        Some("crate") => {
            abs = vec![];
            rest = &rest[1..];
        }
        Some("super") | Some("self") => {
            abs = u.at.clone();
            while let Some(s) = rest.first() {
                match s.as_str() {
                    "super" => {
                        abs.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        Some(first) => {
            // A bare `use child::..` from the module's own file.
            let mut child = file_mod.clone();
            child.push(first.to_string());
            if u.at != *file_mod || !mods.contains(&child) {
                return None;
            }
            abs = file_mod.clone();
        }
        None => return None,
    }
    abs.extend(rest.iter().cloned());
    (0..=abs.len())
        .rev()
        .map(|k| abs[..k].to_vec())
        .find(|p| mods.contains(p))
}

type Edges = BTreeMap<Module, BTreeMap<Module, Vec<String>>>;

fn graph(src: &Path) -> Edges {
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

/// Strongly connected components of more than one module (Tarjan).
fn cycles(edges: &Edges) -> Vec<Vec<Module>> {
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
fn check(src: &Path, edges: &Edges, allowed: &[&[&str]]) -> Result<(), String> {
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

#[test]
fn proxy_src_has_no_import_cycles() {
    // `LAYOUT_SRC=dir` checks another tree (an older commit's, say);
    // `LAYOUT_EDGES=1` prints every edge.
    let src = std::env::var_os("LAYOUT_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let edges = graph(&src);
    if std::env::var_os("LAYOUT_EDGES").is_some() {
        for (m, ts) in &edges {
            for (t, why) in ts {
                println!("{} -> {}   ({})", name(m), name(t), why.join("; "));
            }
        }
    }
    assert!(edges.len() > 20, "found the modules of {}", src.display());
    if let Err(report) = check(&src, &edges, ALLOWED) {
        panic!("{report}");
    }
}

/// The other crates of the workspace, each with the cycles it still has.
/// Only ever shrink these lists.
const CRATES: &[(&str, &[&[&str]])] = &[
    ("api/src", &[]),
    ("webhook/src", &[]),
    ("cni/src", &[]),
    ("proxy/agent/src", &[]),
    ("cli/src", &[]),
    ("cli/runtime/src", &[]),
    ("tests/src", &[]),
    ("bench/src", &[]),
];

/// The house rule holds for every crate, not only the sidecar's: each
/// crate's files form no import cycle (beyond the listed ones, which are
/// being taken apart).
#[test]
fn no_crate_of_the_workspace_has_import_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut failures = Vec::new();
    for (dir, allowed) in CRATES {
        let src = root.join(dir);
        let edges = graph(&src);
        assert!(edges.len() > 1, "found the modules of {}", src.display());
        if let Err(report) = check(&src, &edges, allowed) {
            failures.push(report);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The checker itself: a cycle is found, a chain is not, and comments, strings
/// and inline test modules do not make edges.
#[test]
fn the_checker_finds_a_cycle_and_ignores_comments() {
    let dir = std::env::temp_dir().join(format!("layout-check-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("b")).expect("mkdir");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    let write = |p: &str, s: &str| std::fs::write(src.join(p), s).expect("write");
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n");
    // A parent calling its child by a bare path; `http::` is no child here.
    write(
        "d/mod.rs",
        "pub mod y;\nfn f() { y::g(); let _ = http::Method::GET; }\n",
    );
    write("d/y.rs", "pub fn g() {}\n");
    write(
        "a.rs",
        "use crate::{b::{self, x::Y}, c};\n// crate::b::never\n",
    );
    write("b/mod.rs", "pub mod x;\npub use x::Y;\n");
    write("b/x.rs", "pub struct Y;\nfn f() { let _ = \"crate::a::no\"; }\n#[cfg(test)]\nmod tests { use super::*; }\n");
    write("c.rs", "/// [`crate::a`]\npub fn f() {}\n");
    let edges = graph(&src);
    let m = |s: &str| s.split("::").map(str::to_string).collect::<Module>();
    let targets = |s: &str| edges[&m(s)].keys().map(name).collect::<Vec<_>>();
    assert_eq!(targets("a"), ["b", "b::x", "c"]);
    assert_eq!(targets("b"), ["b::x"]);
    assert!(targets("b::x").is_empty(), "{:?}", targets("b::x"));
    assert!(targets("c").is_empty());
    assert_eq!(targets("d"), ["d::y"]);
    assert!(cycles(&edges).is_empty());
    write("c.rs", "pub fn f() { crate::a::g() }\n");
    write("b/x.rs", "pub struct Y;\nuse super::super::c;\n");
    let found = cycles(&graph(&src));
    assert_eq!(found, vec![vec![m("a"), m("b"), m("b::x"), m("c")]]);
    std::fs::remove_dir_all(&dir).expect("clean up");
}
