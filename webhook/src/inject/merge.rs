//! Merging a user's own `istio-proxy` / `istio-init` container over our template,
//! the way Kubernetes strategic merge patch treats a Container: nested objects merge,
//! keyed lists (`env` by name, `volumeMounts` by mountPath, `ports` by
//! containerPort) merge item by item, everything else is replaced by the user's.

use serde_json::Value;

fn list_key(field: &str) -> Option<&'static str> {
    match field {
        "env" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// Merges `over` into `base` (both container objects).
pub fn merge_container(base: &mut Value, over: &Value) {
    let (Value::Object(b), Value::Object(o)) = (base, over) else {
        return;
    };
    for (k, v) in o {
        // Istio's convention: `image: auto` means "use the injector's image".
        if k == "image" && v.as_str() == Some("auto") {
            continue;
        }
        if let (Some(key), Some(items)) = (list_key(k), v.as_array()) {
            let slot = b
                .entry(k.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !slot.is_array() {
                *slot = Value::Array(Vec::new());
            }
            let list = slot.as_array_mut().expect("array ensured above");
            for item in items {
                match list
                    .iter_mut()
                    .find(|x| x.get(key).is_some() && x.get(key) == item.get(key))
                {
                    Some(existing) => *existing = item.clone(),
                    None => list.push(item.clone()),
                }
            }
            continue;
        }
        match b.get_mut(k) {
            Some(bv) if bv.is_object() && v.is_object() => merge_container(bv, v),
            _ => {
                b.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_of_containers() {
        let mut base = json!({
            "name": "istio-proxy", "image": "ours",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}],
            "securityContext": {"runAsUser": 1337, "runAsNonRoot": true},
            "args": ["x"],
        });
        let over = json!({
            "name": "istio-proxy", "image": "auto",
            "env": [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
            "securityContext": {"runAsUser": 1234},
            "args": ["y", "z"],
            "tty": true,
        });
        merge_container(&mut base, &over);
        assert_eq!(base["image"], "ours");
        assert_eq!(
            base["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            base["securityContext"],
            json!({"runAsUser": 1234, "runAsNonRoot": true})
        );
        assert_eq!(base["args"], json!(["y", "z"]));
        assert_eq!(base["tty"], true);
        let again = base.clone();
        merge_container(&mut base, &again);
        assert_eq!(base, again, "merging a result over itself changes nothing");
    }
}
