//! Unit tests of the gateway controller's decisions.

use super::*;

fn gw(name: &str, ns: &str, class: &str) -> Gateway {
    let v = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {"gatewayClassName": class, "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
    });
    match mesh_api::gatewayapi::parse(&v).unwrap() {
        Some(mesh_api::gatewayapi::GatewayApiResource::Gateway(g)) => *g,
        o => panic!("{o:?}"),
    }
}

fn refs(objs: &[Value]) -> Vec<ObjectRef> {
    objs.iter().map(object_ref).collect()
}

#[test]
fn desired_deploys_our_classes_only() {
    let gws = [
        gw("a", "x", "istio"),
        gw("b", "y", "mesh"),
        gw("c", "z", "cilium"),
    ];
    let (objs, errs) = desired(&gws, &BTreeMap::new());
    assert!(errs.is_empty(), "{errs:?}");
    let names: BTreeSet<_> = refs(&objs).into_iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(
        names,
        [
            ("x".into(), "a-istio".into()),
            ("y".into(), "b-mesh".into())
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(objs.len(), 6);
}

#[test]
fn a_class_of_that_name_with_another_controller_is_not_ours() {
    let mut classes = BTreeMap::new();
    let mut c = deploy::default_classes().remove(0);
    c.spec.controller_name = "example.com/other".into();
    classes.insert("istio".to_string(), c);
    let (objs, _) = desired(&[gw("a", "x", "istio")], &classes);
    assert!(objs.is_empty());
}

#[test]
fn a_bad_gateway_is_reported_and_the_others_deployed() {
    let mut bad = gw("bad", "x", "istio");
    bad.metadata.annotations = Some(
        [(
            deploy::SERVICE_TYPE_ANNOTATION.to_string(),
            "Nope".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    let (objs, errs) = desired(&[bad, gw("good", "x", "istio")], &BTreeMap::new());
    assert_eq!(objs.len(), 3);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("x/bad") && errs[0].contains("\"Nope\""),
        "{errs:?}"
    );
}

#[test]
fn leftovers_are_managed_objects_no_gateway_wants() {
    let (a, _) = desired(&[gw("a", "x", "istio")], &BTreeMap::new());
    let (b, _) = desired(&[gw("b", "x", "istio")], &BTreeMap::new());
    let mut existing: Vec<Value> = a.iter().chain(b.iter()).cloned().collect();
    // Same label, no Gateway owner: someone else's, never deleted.
    existing.push(
        json!({"kind": "Service", "metadata": {"name": "c-istio", "namespace": "x",
        "labels": {MANAGED_LABEL: MANAGED_VALUE}}}),
    );
    let gone = leftovers(&existing, &a);
    assert_eq!(refs(&b), gone);
    assert!(leftovers(&existing, &[a, b].concat()).is_empty());
}

#[test]
fn status_targets() {
    let k = |kind: &str, ns: &str| ResourceKey {
        kind: kind.into(),
        namespace: ns.into(),
        name: "n".into(),
    };
    assert_eq!(
        status_target(&k("Gateway.gateway.networking.k8s.io", "x")),
        Some(("gateway.networking.k8s.io/v1".into(), "gateways", true))
    );
    assert_eq!(
        status_target(&k("GatewayClass", "")),
        Some((
            "gateway.networking.k8s.io/v1".into(),
            "gatewayclasses",
            false
        ))
    );
    assert_eq!(
        status_target(&k("TLSRoute", "x")),
        Some((
            "gateway.networking.k8s.io/v1alpha2".into(),
            "tlsroutes",
            true
        ))
    );
    // Istio's own Gateway and ReferenceGrant have no status we write.
    assert_eq!(status_target(&k("Gateway", "x")), None);
    assert_eq!(status_target(&k("ReferenceGrant", "x")), None);
}

#[test]
fn stamp_keeps_times_of_unchanged_conditions() {
    let prev = json!({
        "conditions": [
            {"type": "Accepted", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Programmed", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ],
        "listeners": [
            {"name": "b", "conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "T-b"}]},
            {"name": "a", "conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "T-a"}]},
        ],
        "parents": [
            {"parentRef": {"name": "gw"}, "conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "T-p"}]},
        ],
    });
    let next = json!({
        "conditions": [
            {"type": "Accepted", "status": "True"},
            {"type": "Programmed", "status": "True"},
            {"type": "ResolvedRefs", "status": "True", "lastTransitionTime": "bogus"},
        ],
        // Listener order changed: matched by name.
        "listeners": [
            {"name": "a", "conditions": [{"type": "Accepted", "status": "True"}]},
            {"name": "b", "conditions": [{"type": "Accepted", "status": "False"}]},
        ],
        "parents": [
            {"parentRef": {"name": "gw"}, "conditions": [{"type": "Accepted", "status": "True"}]},
            {"parentRef": {"name": "other"}, "conditions": [{"type": "Accepted", "status": "True"}]},
        ],
    });
    let out = stamp(&prev, &next, "NOW");
    let t = |p: &str| out.pointer(p).unwrap().as_str().unwrap().to_string();
    assert_eq!(
        t("/conditions/0/lastTransitionTime"),
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(t("/conditions/1/lastTransitionTime"), "NOW");
    assert_eq!(t("/conditions/2/lastTransitionTime"), "NOW");
    assert_eq!(t("/listeners/0/conditions/0/lastTransitionTime"), "T-a");
    assert_eq!(t("/listeners/1/conditions/0/lastTransitionTime"), "NOW");
    assert_eq!(t("/parents/0/conditions/0/lastTransitionTime"), "T-p");
    assert_eq!(t("/parents/1/conditions/0/lastTransitionTime"), "NOW");
    // Nothing before: everything is new.
    let fresh = stamp(&Value::Null, &next, "NOW");
    assert_eq!(fresh["conditions"][0]["lastTransitionTime"], "NOW");
}

#[test]
fn class_status_accepts_ours_once_per_generation() {
    let mut class = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "istio", "generation": 1},
        "spec": {"controllerName": CONTROLLER_NAME},
        "status": {"conditions": [{"type": "SupportedVersion", "status": "True", "lastTransitionTime": "T0"}]},
    });
    let st = class_status(&class, "NOW").unwrap();
    let conds = st["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 2, "{st}");
    let acc = conds.iter().find(|c| c["type"] == "Accepted").unwrap();
    assert_eq!(acc["status"], "True");
    assert_eq!(acc["reason"], "Accepted");
    assert_eq!(acc["observedGeneration"], 1);
    assert_eq!(acc["lastTransitionTime"], "NOW");
    class["status"] = st;
    assert_eq!(class_status(&class, "LATER"), None);
    // A spec change (new generation) is accepted again, its time kept.
    class["metadata"]["generation"] = json!(2);
    let st = class_status(&class, "LATER").unwrap();
    let acc = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap()
        .clone();
    assert_eq!(acc["observedGeneration"], 2);
    assert_eq!(acc["lastTransitionTime"], "NOW");
    // Someone else's class: not ours to accept.
    class["spec"]["controllerName"] = json!("example.com/other");
    assert_eq!(class_status(&class, "LATER"), None);
}

#[test]
fn a_manual_deployment_gets_nothing_and_its_old_objects_are_leftovers() {
    let (before, _) = desired(&[gw("a", "x", "istio")], &BTreeMap::new());
    let mut manual = gw("a", "x", "istio");
    manual.spec.addresses = vec![mesh_api::gatewayapi::gateway::GatewayAddress {
        type_: "Hostname".into(),
        value: "istio-ingressgateway.istio-system.svc.cluster.local".into(),
    }];
    let (now, errs) = desired(&[manual], &BTreeMap::new());
    assert!(now.is_empty() && errs.is_empty());
    assert_eq!(leftovers(&before, &now).len(), 3);
}

#[test]
fn route_parents_of_other_controllers_are_kept() {
    let cur = json!({"parents": [
        {"parentRef": {"name": "theirs"}, "controllerName": "example.com/other", "conditions": []},
        {"parentRef": {"name": "old"}, "controllerName": CONTROLLER_NAME, "conditions": []},
    ]});
    let next = json!({"parents": [
        {"parentRef": {"name": "web"}, "controllerName": CONTROLLER_NAME, "conditions": []},
    ]});
    let out = keep_foreign_parents(&cur, &next);
    let names: Vec<&str> = out["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["parentRef"]["name"].as_str().unwrap())
        .collect();
    // Ours replaced (old is gone), theirs kept.
    assert_eq!(names, ["web", "theirs"]);
    // Nothing foreign: unchanged.
    assert_eq!(keep_foreign_parents(&json!({}), &next), next);
    // A Gateway status (no parents) is untouched.
    let gw = json!({"conditions": []});
    assert_eq!(keep_foreign_parents(&cur, &gw)["conditions"], json!([]));
}
