//! `meshctl local status`: the Gateway API statuses the agent computed, read
//! from its `/debug/gatewayapiz` (a local mesh has no API server to write them
//! to). Matching a `KIND/NS/NAME` argument is a plain function.

use anyhow::bail;
use serde_json::{Map, Value};

/// Whether the agent's key `key` (`Gateway.gateway.networking.k8s.io/ns/n`,
/// `HTTPRoute/ns/n`) is the object the user named (`gateway/ns/n`, any case).
pub fn matches(key: &str, wanted: &str) -> bool {
    let (Some((kind, rest)), Some((wkind, wrest))) = (key.split_once('/'), wanted.split_once('/'))
    else {
        return false;
    };
    let short = kind.split('.').next().unwrap_or(kind);
    rest == wrest && (kind.eq_ignore_ascii_case(wkind) || short.eq_ignore_ascii_case(wkind))
}

/// One line per object: key and its conditions (`Type=Status/Reason`), the
/// route's per-parent ones prefixed by the parent's name.
pub fn summary(all: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (key, status) in all {
        let mut conds: Vec<String> = Vec::new();
        let mut push = |prefix: &str, list: &Value| {
            for c in list.as_array().into_iter().flatten() {
                conds.push(format!(
                    "{prefix}{}={}/{}",
                    c["type"].as_str().unwrap_or_default(),
                    c["status"].as_str().unwrap_or_default(),
                    c["reason"].as_str().unwrap_or_default()
                ));
            }
        };
        push("", &status["conditions"]);
        for p in status["parents"].as_array().into_iter().flatten() {
            let name = p["parentRef"]["name"].as_str().unwrap_or_default();
            push(&format!("{name}:"), &p["conditions"]);
        }
        for l in status["listeners"].as_array().into_iter().flatten() {
            let name = l["name"].as_str().unwrap_or_default();
            push(&format!("listener {name}:"), &l["conditions"]);
        }
        out.push_str(&format!("{key}  {}\n", conds.join(" ")));
    }
    out
}

/// Prints every object's summary, or the named object's status as YAML
/// (exit 1 naming the object when the agent has none for it).
pub fn print(agent: &str, object: Option<&str>) -> anyhow::Result<()> {
    let v = crate::http_get::get_json(agent, "/debug/gatewayapiz")?;
    let Value::Object(all) = v else {
        bail!("agent at {agent}: /debug/gatewayapiz is not an object");
    };
    match object {
        None => print!("{}", summary(&all)),
        Some(o) => match all.iter().find(|(k, _)| matches(k, o)) {
            Some((_, status)) => print!("{}", serde_yaml_ng::to_string(status)?),
            None => bail!(
                "no status for {o:?} (the agent has {} Gateway API objects with a status)",
                all.len()
            ),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_kind_short_or_full_any_case() {
        let k = "Gateway.gateway.networking.k8s.io/infra/web";
        assert!(matches(k, "gateway/infra/web"));
        assert!(matches(k, "Gateway.gateway.networking.k8s.io/infra/web"));
        assert!(!matches(k, "gateway/infra/webx"));
        assert!(!matches(k, "httproute/infra/web"));
        assert!(matches("HTTPRoute/a/r", "httproute/a/r"));
        assert!(!matches("HTTPRoute/a/r", "httproute"));
    }

    #[test]
    fn summary_lists_object_parent_and_listener_conditions() {
        let all = json!({
            "HTTPRoute/a/r": {"parents": [{"parentRef": {"name": "gw"}, "conditions": [
                {"type": "ResolvedRefs", "status": "False", "reason": "RefNotPermitted"}]}]},
            "Gateway.gateway.networking.k8s.io/a/gw": {
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
                "listeners": [{"name": "http", "conditions": [
                    {"type": "Programmed", "status": "True", "reason": "Programmed"}]}]}
        });
        let s = summary(all.as_object().unwrap());
        assert!(
            s.contains("HTTPRoute/a/r  gw:ResolvedRefs=False/RefNotPermitted"),
            "{s}"
        );
        assert!(
            s.contains("a/gw  Accepted=True/Accepted listener http:Programmed=True/Programmed"),
            "{s}"
        );
    }
}
