//! Request path normalization, as Istio's `meshConfig.pathNormalization`
//! configures Envoy: the normalized path is what AuthorizationPolicy `paths`
//! see and what the app receives, so `/admin/../public`, `/%61dmin` or
//! `//admin` cannot slip past a rule written for `/admin`.
//!
//! Modes (Istio's names): `NONE`; `BASE` (decode percent-encoded unreserved
//! characters, `\` → `/`, resolve `.`/`..` segments per RFC 3986);
//! `MERGE_SLASHES` (BASE, then `//` → `/`); `DECODE_AND_MERGE_SLASHES` (first
//! decode `%2F` and `%5C`, then MERGE_SLASHES). `%00` is always refused. The
//! query string is left as it is.

use std::borrow::Cow;
use std::str::FromStr;

/// Which normalization runs before authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathNormalization {
    None,
    Base,
    /// Our default: Istio's own default is `BASE`, which lets `//admin` through
    /// a DENY on `/admin` (CVE-2021-31920); Istio recommends this one.
    #[default]
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl FromStr for PathNormalization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "NONE" => Ok(PathNormalization::None),
            "BASE" | "DEFAULT" => Ok(PathNormalization::Base),
            "MERGE_SLASHES" => Ok(PathNormalization::MergeSlashes),
            "DECODE_AND_MERGE_SLASHES" => Ok(PathNormalization::DecodeAndMergeSlashes),
            _ => Err(format!(
                "{s:?}: expected NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES"
            )),
        }
    }
}

/// Why a path is refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} contains an encoded NUL (%00)")]
    Nul(String),
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%HH` where `keep(decoded)` says so; other escapes stay as written.
/// Where a decoded character completes a new escape (`%%361` → `%61`), that one
/// is decoded too, so no escape `keep` accepts is left: normalizing twice gives
/// the same path, and an app decoding once more cannot see a different one.
fn decode_where(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    for &c in s.as_bytes() {
        out.push(c);
        // Each decode shortens `out` by two, so this stays linear.
        while let [.., b'%', h, l] = out[..] {
            match (hex(h), hex(l)) {
                (Some(h), Some(l)) if keep(h * 16 + l) => {
                    out.truncate(out.len() - 3);
                    out.push(h * 16 + l);
                }
                _ => break,
            }
        }
    }
    // Only ASCII bytes were produced from escapes; the rest was valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let segs: Vec<&str> = path[1..].split('/').collect();
    let last = segs.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    for (i, s) in segs.iter().enumerate() {
        match *s {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Normalizes a request target (`path?query`). Borrows it unchanged when
/// there is nothing to do (the common case: no `%`, `\\`, `/.` or `//`).
pub fn normalize(target: &str, mode: PathNormalization) -> Result<Cow<'_, str>, PathError> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let escapes = path.contains('%');
    if escapes && path.contains("%00") {
        return Err(PathError::Nul(target.to_string()));
    }
    let clean = !escapes && !path.contains('\\') && !path.contains("/.") && !path.contains("//");
    if clean || mode == PathNormalization::None || !path.starts_with('/') {
        return Ok(Cow::Borrowed(target));
    }
    // One pass for all decoded characters, so a decoded `/` cannot complete a
    // new escape after its pass is over.
    let slashes = mode == PathNormalization::DecodeAndMergeSlashes;
    let mut p = decode_where(path, |c| {
        unreserved(c) || (slashes && (c == b'/' || c == b'\\'))
    })
    .replace('\\', "/");
    // Decoding can assemble a `%00` (`%%300`) that the check above did not see.
    if p.contains("%00") {
        return Err(PathError::Nul(target.to_string()));
    }
    p = remove_dot_segments(&p);
    if mode != PathNormalization::Base {
        p = merge_slashes(&p);
    }
    if let Some(q) = query {
        p.push('?');
        p.push_str(q);
    }
    Ok(Cow::Owned(p))
}

/// The path without its query, as `paths`/`notPaths` compare it.
pub fn path_only(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or(target)
}

#[cfg(test)]
mod tests {
    use super::PathNormalization::*;
    use super::*;

    #[test]
    fn table() {
        let cases = [
            // (mode, input, output)
            (Base, "/a/../b", "/b"),
            (Base, "/admin/../public", "/public"),
            (Base, "/public/./data/abc/../xyz", "/public/data/xyz"),
            (Base, "/some%2fdata/%61%62%63", "/some%2fdata/abc"),
            (Base, "/%2e%2e/admin", "/admin"),
            (Base, "/x/%2E%2E/admin", "/admin"),
            (Base, "/some\\data", "/some/data"),
            (Base, "/a//b", "/a//b"),
            (Base, "/..", "/"),
            (Base, "/a/b/..", "/a/"),
            (Base, "/a/.", "/a/"),
            (Base, "/%7euser/%5fx%2d", "/~user/_x-"),
            (Base, "/a%20b", "/a%20b"),
            (Base, "/p?x=/../y", "/p?x=/../y"),
            (MergeSlashes, "/some//data///abc", "/some/data/abc"),
            (MergeSlashes, "//admin", "/admin"),
            (MergeSlashes, "/a//../admin", "/a/admin"),
            (MergeSlashes, "/a%2f%2fb", "/a%2f%2fb"),
            (DecodeAndMergeSlashes, "/a%2fb", "/a/b"),
            (DecodeAndMergeSlashes, "/a%2F%2Fb%5cc", "/a/b/c"),
            (DecodeAndMergeSlashes, "/x/..%2fadmin", "/admin"),
            (None, "/a/../b", "/a/../b"),
            (MergeSlashes, "*", "*"),
            // Found by fuzzing (proxy/tests/fuzz.rs): a decoded character that
            // completes an escape is decoded too, so a second pass (or the app)
            // cannot turn what authorization saw into `/admin`.
            (Base, "/%%361dmin", "/admin"),
            (Base, "/%%3%361dmin", "/admin"),
            (DecodeAndMergeSlashes, "/a%%32Fadmin", "/a/admin"),
            (Base, "/a%%32Fb", "/a%2Fb"),
        ];
        for (mode, input, want) in cases {
            assert_eq!(normalize(input, mode).unwrap(), want, "{mode:?} {input}");
        }
    }

    #[test]
    fn nul_is_refused() {
        let e = normalize("/a%00b", Base).unwrap_err();
        assert!(e.to_string().contains("/a%00b"));
        assert!(normalize("/a%00", None).is_err());
        // Found by fuzzing: decoding `%30` next to `%0` assembles a `%00`.
        let e = normalize("/%%300", Base).unwrap_err();
        assert!(e.to_string().contains("/%%300"), "{e}");
    }

    #[test]
    fn modes_parse() {
        assert_eq!("base".parse::<PathNormalization>().unwrap(), Base);
        let e = "SOMETIMES".parse::<PathNormalization>().unwrap_err();
        assert!(e.contains("SOMETIMES"));
        assert_eq!(path_only("/a?b=c"), "/a");
    }
}
