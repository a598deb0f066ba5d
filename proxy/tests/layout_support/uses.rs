//! The module paths a file depends on: its `use` trees and `crate::`/`super::`/
//! `self::`/child paths, each resolved to the file module it names.

use std::collections::BTreeSet;

use crate::lex::{tokens, Tok};

pub(crate) type Module = Vec<String>;

pub(crate) fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
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
pub(crate) struct Use {
    pub(crate) at: Module,
    pub(crate) path: Vec<String>,
    pub(crate) line: usize,
}

/// Every path of interest in one (stripped) file of module `m`, whose child
/// modules are named `children`.
pub(crate) fn uses(m: &Module, children: &BTreeSet<String>, src: &str) -> Vec<Use> {
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
pub(crate) fn resolve(u: &Use, file_mod: &Module, mods: &BTreeSet<Module>) -> Option<Module> {
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
