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
//!
//! This file holds the allowed cycles and the tests; the checker lives in
//! `layout_support/`: `lex.rs` (comments and literals blanked, tokens),
//! `uses.rs` (the paths of a file, resolved to modules), `graph.rs` (the
//! module graph of a tree) and `cycles.rs` (its cycles, and the report).
//! Each uses only those before it; none uses this file.

#[path = "layout_support/lex.rs"]
mod lex;

#[path = "layout_support/uses.rs"]
mod uses;

#[path = "layout_support/graph.rs"]
mod graph;

#[path = "layout_support/cycles.rs"]
mod cycles;

use std::path::{Path, PathBuf};

use cycles::{check, cycles};
use graph::graph;
use uses::{name, Module};

/// Cycles (strongly connected components) still allowed, each as its sorted
/// module names. Empty: the crate has none. Only ever shrink this list.
const ALLOWED: &[&[&str]] = &[];

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
