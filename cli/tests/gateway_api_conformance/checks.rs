//! Shared checks of the scenarios: bounded polling ([`until`]), the answer
//! came from the expected backend ([`answered`]), route and listener status
//! conditions ([`route_has`], [`listener_has`]) and the weighted-split
//! statistics ([`backends`], [`split`]). A leaf module beside `env`: it imports
//! none of the scenario files.

use crate::env::{Check, Env, Resp, CONVERGE, INFRA};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Polls `f` until it holds, at most [`CONVERGE`]; the last failure otherwise.
pub fn until(mut f: impl FnMut() -> Check) -> Check {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

pub fn ensure(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// The answer came with `code` from a pod whose name starts with `backend`
/// (`None`: no backend answered).
pub fn answered(r: &Resp, code: u16, backend: Option<&str>, what: &str) -> Check {
    let from_backend = match backend {
        Some(b) => r.pod().starts_with(b),
        None => r.echo.is_none(),
    };
    ensure(r.code == code && from_backend, || {
        format!(
            "{what}: got {} from {}, want {code} from {backend:?}",
            r.code,
            r.pod()
        )
    })
}

/// Whether `conds` has a condition `type_` with `status` and `reason`.
pub fn has(conds: &Value, type_: &str, status: &str, reason: &str) -> bool {
    conds
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == status && c["reason"] == reason)
}

/// A route's conditions for parent `parent` (its first matching parentRef entry).
fn parent_conds(st: &Value, parent: &str) -> Value {
    st["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["parentRef"]["name"] == parent)
        .map(|p| p["conditions"].clone())
        .unwrap_or_default()
}

fn listener<'a>(st: &'a Value, name: &str) -> Option<&'a Value> {
    st["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)
}

/// Route `ns/name` has, for `parent`, every `(type, status, reason)` listed.
pub fn route_has(
    env: &Env,
    ns: &str,
    name: &str,
    parent: &str,
    want: &[(&str, &str, &str)],
) -> Check {
    let st = env
        .status(&format!("httproute/{ns}/{name}"))
        .ok_or_else(|| format!("no status for HTTPRoute {ns}/{name}"))?;
    let conds = parent_conds(&st, parent);
    for (t, s, r) in want {
        ensure(has(&conds, t, s, r), || {
            format!("HTTPRoute {ns}/{name} parent {parent}: want {t}={s}/{r}, have {conds}")
        })?;
    }
    Ok(())
}

/// Listener `l` of Gateway `infra/gw` has every condition listed.
pub fn listener_has(
    env: &Env,
    gw: &str,
    l: &str,
    want: &[(&str, &str, &str)],
) -> Result<Value, String> {
    let st = env
        .status(&format!("gateway/{INFRA}/{gw}"))
        .ok_or_else(|| format!("no status for Gateway {gw}"))?;
    let lst = listener(&st, l).ok_or_else(|| format!("Gateway {gw}: no listener {l} in {st}"))?;
    for (t, s, r) in want {
        ensure(has(&lst["conditions"], t, s, r), || {
            format!(
                "Gateway {gw} listener {l}: want {t}={s}/{r}, have {}",
                lst["conditions"]
            )
        })?;
    }
    Ok(lst.clone())
}

pub const ACCEPTED: (&str, &str, &str) = ("Accepted", "True", "Accepted");
pub const RESOLVED: (&str, &str, &str) = ("ResolvedRefs", "True", "ResolvedRefs");

/// Counts of answering backends over `res` (pod name without `-N`).
pub fn backends(res: &[Resp]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in res {
        let b = match &r.echo {
            Some(e) => e
                .pod
                .rsplit_once('-')
                .map(|(b, _)| b)
                .unwrap_or(&e.pod)
                .to_string(),
            None => format!("status {}", r.code),
        };
        *m.entry(b).or_insert(0) += 1;
    }
    m
}

/// The weighted split is within 5σ of its expectation (a false failure has
/// probability below 1e-6); a zero weight gets nothing.
pub fn split(res: &[Resp], want: &[(&str, f64)]) -> Check {
    let n = res.len();
    let got = backends(res);
    for (b, p) in want {
        let k = got.get(*b).copied().unwrap_or(0);
        let mean = n as f64 * p;
        let tol = 5.0 * (n as f64 * p * (1.0 - p)).sqrt();
        ensure((k as f64 - mean).abs() <= tol, || {
            format!("{b}: {k} of {n}, want {mean} ± {tol:.0}: {got:?}")
        })?;
    }
    ensure(got.keys().all(|k| want.iter().any(|(b, _)| b == k)), || {
        format!("unexpected answers: {got:?}")
    })
}
