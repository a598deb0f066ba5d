//! Core HTTP profile (GATEWAY-HTTP), Gateway status scenarios: listeners'
//! supported route kinds, attached route counts and observedGeneration after
//! a spec change.

use crate::checks::{ensure, has, listener_has, until, ACCEPTED};
use crate::env::{Check, Env, INFRA};
use serde_json::Value;

pub fn invalid_route_kind(env: &Env) -> Check {
    let bad = ("ResolvedRefs", "False", "InvalidRouteKinds");
    let l = listener_has(env, "gateway-only-invalid-route-kind", "http", &[bad])?;
    ensure(
        l["supportedKinds"].as_array().is_none_or(|k| k.is_empty()),
        || format!("only-invalid: supportedKinds {}", l["supportedKinds"]),
    )?;
    let l = listener_has(
        env,
        "gateway-supported-and-invalid-route-kind",
        "http",
        &[bad],
    )?;
    let kinds: Vec<&str> = l["supportedKinds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["kind"].as_str())
        .collect();
    ensure(kinds == ["HTTPRoute"], || {
        format!("supported-and-invalid: supportedKinds {kinds:?}")
    })
}

pub fn attached_routes(env: &Env) -> Check {
    let gw = "gateway-with-one-attached-route";
    let l = listener_has(env, gw, "http", &[ACCEPTED])?;
    ensure(l["attachedRoutes"] == 1, || {
        format!("http: attachedRoutes {}", l["attachedRoutes"])
    })?;
    let l = listener_has(env, gw, "http-unattached", &[ACCEPTED])?;
    ensure(l["attachedRoutes"] == 0, || {
        format!("http-unattached: attachedRoutes {}", l["attachedRoutes"])
    })
}

/// Every condition of the Gateway and its listeners reports `generation`.
fn generation_is(env: &Env, gen: i64) -> Check {
    let gw = "gateway-observed-generation-bump";
    let st = env
        .status(&format!("gateway/{INFRA}/{gw}"))
        .ok_or_else(|| format!("no status for {gw}"))?;
    let mut conds: Vec<&Value> = st["conditions"].as_array().into_iter().flatten().collect();
    for l in st["listeners"].as_array().into_iter().flatten() {
        conds.extend(l["conditions"].as_array().into_iter().flatten());
    }
    ensure(
        !conds.is_empty() && conds.iter().all(|c| c["observedGeneration"] == gen),
        || format!("{gw}: want observedGeneration {gen} everywhere: {st}"),
    )?;
    ensure(
        has(&st["conditions"], "Accepted", "True", "Accepted"),
        || format!("{gw}: {st}"),
    )
}

pub fn observed_generation_bump(env: &Env) -> Check {
    until(|| generation_is(env, 1))?;
    env.mesh
        .ok(&["apply", "-f", &env.data("observed-generation-bump-2.yaml")]);
    until(|| generation_is(env, 2))?;
    listener_has(
        env,
        "gateway-observed-generation-bump",
        "http-2",
        &[ACCEPTED],
    )
    .map(drop)
}
