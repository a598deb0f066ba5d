//! One parser per configuration value, shared by the agent's validator and the
//! proxy's compiler: a value the validator accepts is, by construction, a value
//! the proxy can use, because both call the same function and get the same
//! compiled form.
//!
//! - [`duration`]: Istio durations (Go `time.ParseDuration` syntax, which is what
//!   Istio's protobuf Duration fields accept: `1s`, `0m1s`, `1.5s`, `100ms`, `1h2m`).
//! - [`full_match_regex`] / [`regex`]: RE2 syntax through the `regex` crate, with
//!   the flags RE2 lacks (`x`, `R`, `u`) refused, a program size bound, and the
//!   full-string anchoring a StringMatch `regex` has.
//! - [`ip_net`]: an IP address or CIDR block (`destinationSubnets`, `ipBlocks`).
//! - [`Matcher`]: a compiled StringMatch (uri, scheme, method, authority, header,
//!   query parameter, CORS origin).

use crate::networking::StringMatch;
use std::time::Duration;

/// Why a value cannot be used. The message names the value as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0}")]
    Duration(String),
    #[error("invalid regex {value:?}: {reason}")]
    Regex { value: String, reason: String },
    #[error("exactly one of exact, prefix or regex must be set")]
    StringMatch,
    #[error("invalid IP address or CIDR block {0:?}")]
    IpNet(String),
}

/// Compiled program size bound for every configured regex (Envoy bounds RE2's
/// program size the same way): a pattern over it is refused, not truncated.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Largest duration protobuf's `Duration` can hold (10,000 years).
const MAX_SECONDS: u128 = 315_576_000_000;

/// Parses a duration as Istio accepts it: an optional `+`, then one or more
/// `<number><unit>` with a decimal number (fraction allowed) and a unit among
/// `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`; `0` alone is zero. Negative and
/// out-of-range values are errors. Exact: no floating point involved.
pub fn duration(s: &str) -> Result<Duration, ValueError> {
    let err = |m: String| ValueError::Duration(m);
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(err(format!("duration {s:?} is negative")));
    }
    if rest.is_empty() {
        return Err(err("empty duration".into()));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(err(format!("invalid number in duration {s:?}")));
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: u128 = match &rest[..unit_end] {
            "" => return Err(err(format!("missing unit in duration {s:?}"))),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            u => return Err(err(format!("unknown unit {u:?} in duration {s:?}"))),
        };
        rest = &rest[unit_end..];
        let out_of_range = || err(format!("duration {s:?} is out of range"));
        // Digits beyond 30 overflow any sane duration; say so instead of wrapping.
        let digits = |d: &str| -> Result<u128, ValueError> {
            if d.len() > 30 {
                return Err(out_of_range());
            }
            Ok(d.parse::<u128>().unwrap_or(0))
        };
        let mut part = digits(int)?.checked_mul(scale).ok_or_else(out_of_range)?;
        // The fraction, exactly to the nanosecond (further digits are dropped, as Go does).
        let mut place = scale;
        for c in frac.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            part += u128::from(c - b'0') * place;
        }
        nanos = nanos.checked_add(part).ok_or_else(out_of_range)?;
        if nanos > MAX_SECONDS * 1_000_000_000 {
            return Err(out_of_range());
        }
    }
    Ok(Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    ))
}

/// Refuses inline flags RE2 does not have: Istio validates with Go's RE2, so
/// `(?x)` (whose `#` comments would also swallow the anchoring group), `(?R)`
/// and `(?u)` are configuration errors, not proxy surprises.
struct Re2Flags;

impl regex_syntax::ast::Visitor for Re2Flags {
    type Output = ();
    type Err = String;
    fn finish(self) -> Result<(), String> {
        Ok(())
    }
    fn visit_pre(&mut self, ast: &regex_syntax::ast::Ast) -> Result<(), String> {
        use regex_syntax::ast::{Ast, Flag, FlagsItemKind};
        let flags = match ast {
            Ast::Flags(f) => Some(&f.flags),
            Ast::Group(g) => g.flags(),
            _ => None,
        };
        for item in flags.map(|f| f.items.as_slice()).unwrap_or_default() {
            let name = match item.kind {
                FlagsItemKind::Flag(Flag::IgnoreWhitespace) => "x",
                FlagsItemKind::Flag(Flag::CRLF) => "R",
                FlagsItemKind::Flag(Flag::Unicode) => "u",
                _ => continue,
            };
            return Err(format!(
                "flag {name} is not RE2 syntax (the flags are i, m, s and U)"
            ));
        }
        Ok(())
    }
}

fn regex_error(pattern: &str, reason: impl ToString) -> ValueError {
    // The regex crate's messages are multi-line drawings; the last line says why.
    let reason = reason.to_string();
    let last = reason.lines().last().unwrap_or("").trim();
    let reason = last.strip_prefix("error: ").unwrap_or(last).to_string();
    ValueError::Regex {
        value: pattern.to_string(),
        reason,
    }
}

/// Checks `pattern` on its own: it must parse as a complete RE2 expression, so
/// wrapping it in a group cannot change what it means.
fn check_re2(pattern: &str) -> Result<(), ValueError> {
    let ast = regex_syntax::ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| regex_error(pattern, e))?;
    regex_syntax::ast::visit(&ast, Re2Flags).map_err(|e| regex_error(pattern, e))
}

std::thread_local! {
    /// Regexes compiled within [`sharing_regexes`] on this thread, by pattern.
    static SHARED: std::cell::RefCell<Option<std::collections::HashMap<(String, bool), regex::Regex>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, in which [`full_match_regex`] compiles each (pattern, case)
/// once and hands out clones (which share the compiled program). Routes
/// generated from one template repeat their regexes in every service, and
/// each compiled regex holds tens of KB for the life of a snapshot.
pub fn sharing_regexes<R>(f: impl FnOnce() -> R) -> R {
    let outer = SHARED.with(|s| s.borrow_mut().replace(Default::default()));
    let r = f();
    SHARED.with(|s| *s.borrow_mut() = outer);
    r
}

/// A regex that must match the whole value (StringMatch `regex`, as Envoy's
/// full match); `ignore_case` is the form `ignoreUriCase` gives.
pub fn full_match_regex(pattern: &str, ignore_case: bool) -> Result<regex::Regex, ValueError> {
    let key = (pattern.to_string(), ignore_case);
    if let Some(r) = SHARED.with(|s| s.borrow().as_ref().and_then(|m| m.get(&key).cloned())) {
        return Ok(r);
    }
    let r = compile_full_match(pattern, ignore_case)?;
    SHARED.with(|s| {
        if let Some(m) = s.borrow_mut().as_mut() {
            m.insert(key, r.clone());
        }
    });
    Ok(r)
}

fn compile_full_match(pattern: &str, ignore_case: bool) -> Result<regex::Regex, ValueError> {
    check_re2(pattern)?;
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .case_insensitive(ignore_case)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| regex_error(pattern, e))
}

/// A regex searched anywhere in the value (`uriRegexRewrite.match`).
pub fn regex(pattern: &str) -> Result<regex::Regex, ValueError> {
    check_re2(pattern)?;
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| regex_error(pattern, e))
}

/// An IP address (a single-address block) or a CIDR block.
pub fn ip_net(s: &str) -> Result<ipnet::IpNet, ValueError> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| ValueError::IpNet(s.to_string()))
}

/// A compiled StringMatch.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    /// Anchored: matches the whole value.
    Regex(regex::Regex),
    /// `{}`: the value only has to be present (headers, `withoutHeaders`).
    Present,
}

impl Matcher {
    /// Compiles `m`; `ignore_case` lower-cases `exact`/`prefix` (the caller
    /// lower-cases the value) and makes `regex` case-insensitive.
    pub fn compile(m: &StringMatch, ignore_case: bool) -> Result<Matcher, ValueError> {
        let lc = |s: &str| {
            if ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), None, None) => Ok(Matcher::Exact(lc(e))),
            (None, Some(p), None) => Ok(Matcher::Prefix(lc(p))),
            (None, None, Some(r)) => full_match_regex(r, ignore_case).map(Matcher::Regex),
            (None, None, None) => Ok(Matcher::Present),
            _ => Err(ValueError::StringMatch),
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            Matcher::Exact(e) => v == e,
            Matcher::Prefix(p) => v.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(v),
            Matcher::Present => true,
        }
    }

    /// The pattern as configured (the anchoring removed), for config dumps.
    pub fn pattern(&self) -> Option<String> {
        match self {
            Matcher::Regex(r) => Some(
                r.as_str()
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(r.as_str())
                    .to_string(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharing_regexes_compiles_each_pattern_once_within_its_scope() {
        let cached = || SHARED.with(|s| s.borrow().as_ref().map(|m| m.len()));
        assert_eq!(cached(), None);
        sharing_regexes(|| {
            let a = full_match_regex("/api/v[0-9]+/.*", false).unwrap();
            let b = full_match_regex("/api/v[0-9]+/.*", false).unwrap();
            let c = full_match_regex("/api/v[0-9]+/.*", true).unwrap();
            assert_eq!(cached(), Some(2));
            assert!(a.is_match("/api/v2/x") && b.is_match("/api/v2/x"));
            assert!(c.is_match("/API/V2/x") && !b.is_match("/API/V2/x"));
            assert!(full_match_regex("(", false).is_err());
            assert_eq!(cached(), Some(2));
        });
        assert_eq!(cached(), None);
        // Outside a scope nothing is kept.
        full_match_regex("/x", false).unwrap();
        assert_eq!(cached(), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_in_every_istio_form() {
        for (s, want) in [
            ("1s", ms(1000)),
            ("0m1s", ms(1000)),
            ("1.5s", ms(1500)),
            ("100ms", ms(100)),
            ("1h2m", ms(3_720_000)),
            ("1m30s", ms(90_000)),
            (".5s", ms(500)),
            ("1.s", ms(1000)),
            ("+2s", ms(2000)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1.000000001s", Duration::new(1, 1)),
            ("1500us", Duration::from_micros(1500)),
            ("1500µs", Duration::from_micros(1500)),
            ("7ns", Duration::from_nanos(7)),
            ("0.1s", ms(100)),
            ("2h45m30.5s", Duration::new(9930, 500_000_000)),
        ] {
            assert_eq!(duration(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn bad_durations_name_the_value() {
        for (s, why) in [
            ("", "empty duration"),
            ("soon", "invalid number in duration \"soon\""),
            ("10", "missing unit in duration \"10\""),
            ("1s5", "missing unit in duration \"1s5\""),
            (
                "10 seconds",
                "unknown unit \" seconds\" in duration \"10 seconds\"",
            ),
            ("3x", "unknown unit \"x\" in duration \"3x\""),
            ("1.2.3s", "invalid number in duration \"1.2.3s\""),
            (".s", "invalid number in duration \".s\""),
            ("-1s", "duration \"-1s\" is negative"),
            ("1s ", "unknown unit \"s \" in duration \"1s \""),
            ("3000000000h", "duration \"3000000000h\" is out of range"),
            (
                "9999999999999999999999999999999999h",
                "duration \"9999999999999999999999999999999999h\" is out of range",
            ),
        ] {
            assert_eq!(duration(s), Err(ValueError::Duration(why.into())), "{s:?}");
        }
    }

    #[test]
    fn regexes_match_the_whole_value() {
        let re = full_match_regex("/v[0-9]+", false).unwrap();
        assert!(re.is_match("/v12"));
        assert!(!re.is_match("/v12/x"));
        // Alternation stays inside the anchors.
        let re = full_match_regex("a|ab", false).unwrap();
        assert!(re.is_match("ab"));
        assert!(!re.is_match("xab"));
        let re = full_match_regex("/API", true).unwrap();
        assert!(re.is_match("/api"));
    }

    #[test]
    fn regexes_that_would_escape_the_anchors_are_refused() {
        for (p, why) in [
            (
                "(?x)/never # a comment",
                "flag x is not RE2 syntax (the flags are i, m, s and U)",
            ),
            (
                "a(?x: b)",
                "flag x is not RE2 syntax (the flags are i, m, s and U)",
            ),
            (
                "(?R)a",
                "flag R is not RE2 syntax (the flags are i, m, s and U)",
            ),
            ("a)|(b", "unopened group"),
            ("(unclosed", "unclosed group"),
            (
                "a\\",
                "incomplete escape sequence, reached end of pattern prematurely",
            ),
        ] {
            let e = full_match_regex(p, false).unwrap_err();
            assert_eq!(
                e,
                ValueError::Regex {
                    value: p.into(),
                    reason: why.into()
                },
                "{p}"
            );
            assert!(regex(p).is_err(), "{p}");
        }
        // RE2's own flags are fine, scoped to the user's group.
        assert!(full_match_regex("(?i)/a(?m:^b)(?sU:.+)", false).is_ok());
        let big = full_match_regex("\\w{1000}\\w{1000}", false).unwrap_err();
        assert!(big.to_string().contains("size limit"), "{big}");
    }

    #[test]
    fn addresses_and_blocks() {
        assert_eq!(ip_net("10.0.0.5").unwrap().to_string(), "10.0.0.5/32");
        assert_eq!(ip_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(ip_net("fd00::1").unwrap().to_string(), "fd00::1/128");
        for bad in ["10.0.0.0/33", "10.0.0", "", "a.b.c.d"] {
            assert_eq!(ip_net(bad), Err(ValueError::IpNet(bad.into())), "{bad}");
        }
    }

    #[test]
    fn string_matches() {
        let sm = |e: Option<&str>, p: Option<&str>, r: Option<&str>| StringMatch {
            exact: e.map(Into::into),
            prefix: p.map(Into::into),
            regex: r.map(Into::into),
            ..Default::default()
        };
        let m = Matcher::compile(&sm(Some("/A"), None, None), true).unwrap();
        assert!(m.matches("/a") && !m.matches("/A"));
        let m = Matcher::compile(&sm(None, Some("/p"), None), false).unwrap();
        assert!(m.matches("/p/x") && !m.matches("/q"));
        let m = Matcher::compile(&sm(None, None, Some("/r.*")), false).unwrap();
        assert!(m.matches("/rest"));
        assert_eq!(m.pattern().as_deref(), Some("/r.*"));
        assert!(matches!(
            Matcher::compile(&sm(None, None, None), false),
            Ok(Matcher::Present)
        ));
        assert_eq!(
            Matcher::compile(&sm(Some("a"), Some("b"), None), false).unwrap_err(),
            ValueError::StringMatch
        );
    }
}
