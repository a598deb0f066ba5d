//! OpenShift Service Mesh membership end to end against the in-process fake
//! API server: a ServiceMeshMemberRoll (names and memberSelectors) labels its
//! members, writes their NetworkPolicies and status, and restricts what the
//! agent serves (real proxy clients subscribe over loopback); removing a member
//! undoes it; a ServiceMeshMember joins its namespace; a namespace of another
//! control plane is refused with a message.

use mesh_agent::client::{self, ClientConfig, ClientState};
use mesh_agent::config::Config;
use mesh_api::syncapi::{ProxyIdentity, ProxyView};
use mesh_e2e::fake_api::Fake;
use mesh_e2e::wait::eventually;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod common;

const CP: &str = "istio-system";
const LIMIT: Duration = Duration::from_secs(20);

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn service(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80}]}})
}

fn roll(members: Value) -> Value {
    json!({"apiVersion": "maistra.io/v1", "kind": "ServiceMeshMemberRoll",
        "metadata": {"name": "default", "namespace": CP},
        "spec": {"members": members, "memberSelectors": [{"matchLabels": {"team": "shop"}}]}})
}

fn member(ns: &str) -> Value {
    json!({"apiVersion": "maistra.io/v1", "kind": "ServiceMeshMember",
        "metadata": {"name": "default", "namespace": ns},
        "spec": {"controlPlaneRef": {"name": "basic", "namespace": CP}}})
}

fn proxy(addr: &str, ns: &str, shutdown: &CancellationToken) -> watch::Receiver<ClientState> {
    let id = ProxyIdentity {
        pod: format!("app-{ns}"),
        namespace: ns.into(),
        service_account: "default".into(),
        labels: [("app".to_string(), "app".to_string())].into(),
        ips: vec!["10.9.0.1".into()],
        router: false,
    };
    let mut cfg = ClientConfig::new(addr, id);
    cfg.max_backoff = Duration::from_millis(300);
    client::spawn(cfg, |_: &ProxyView| Ok(()), shutdown.clone())
}

fn hosts(s: &watch::Receiver<ClientState>) -> (u64, Vec<String>) {
    match &s.borrow().current {
        Some(v) => (
            v.version,
            v.services.iter().map(|s| s.hostname.clone()).collect(),
        ),
        None => (0, vec![]),
    }
}

fn label(fake: &Fake, ns: &str) -> Option<String> {
    fake.get("Namespace", "", ns)?["metadata"]["labels"]["maistra.io/member-of"]
        .as_str()
        .map(String::from)
}

fn policies(fake: &Fake, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = ["istio-mesh-basic", "istio-expose-route-basic"]
        .into_iter()
        .filter(|n| fake.get("NetworkPolicy", ns, n).is_some())
        .map(String::from)
        .collect();
    names.sort();
    names
}

fn roll_status(fake: &Fake) -> Value {
    fake.get("ServiceMeshMemberRoll", CP, "default")
        .map(|r| r["status"].clone())
        .unwrap_or_default()
}

async fn wait_view(
    what: &str,
    s: &watch::Receiver<ClientState>,
    f: impl Fn(u64, &[String]) -> bool,
) -> u64 {
    let mut version = 0;
    eventually(what, LIMIT, async || {
        let (v, h) = hosts(s);
        version = v;
        v > 0 && f(v, &h)
    })
    .await;
    version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_roll_labels_protects_and_scopes_the_mesh() {
    let fake = Fake::new();
    fake.apply(namespace(CP, json!({})));
    fake.apply(namespace("bookinfo", json!({})));
    fake.apply(namespace("shop", json!({"team": "shop"})));
    fake.apply(namespace("outsider", json!({})));
    fake.apply(namespace(
        "theirs",
        json!({"maistra.io/member-of": "other-cp"}),
    ));
    for (ns, name) in [
        ("bookinfo", "productpage"),
        ("shop", "cart"),
        ("outsider", "vault"),
        ("theirs", "ledger"),
    ] {
        fake.apply(service(ns, name));
    }
    fake.apply(roll(json!(["bookinfo"])));

    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let client = fake.serve(shutdown.clone()).await;
    let cfg = common::kube_flags(&["--visibility", "mesh", "--maistra-members"]);
    let (_keep, settings) = watch::channel(Arc::new(cfg.settings()));
    let settings = mesh_agent::maistra::members::start(
        client.clone(),
        cfg.members().unwrap(),
        settings,
        shutdown.clone(),
    )
    .await;
    // The first plan is in force before the agent serves anyone.
    assert_eq!(
        settings.borrow().members.as_deref(),
        Some(&[CP.to_string(), "bookinfo".into(), "shop".into()].into())
    );
    let agent = common::start_kube_agent(&cfg, settings, client, &shutdown).await;
    let addr = agent.sync_addr.to_string();
    let bookinfo = proxy(&addr, "bookinfo", &shutdown);
    let outsider = proxy(&addr, "outsider", &shutdown);

    // Named member and selected member: labelled, protected, configured 2/2.
    eventually("members labelled", LIMIT, async || {
        [CP, "bookinfo", "shop"]
            .iter()
            .all(|ns| label(&fake, ns).as_deref() == Some(CP))
    })
    .await;
    assert_eq!(label(&fake, "outsider"), None);
    assert_eq!(label(&fake, "theirs").as_deref(), Some("other-cp"));
    eventually("member NetworkPolicies", LIMIT, async || {
        [CP, "bookinfo", "shop"]
            .iter()
            .all(|ns| policies(&fake, ns).len() == 2)
    })
    .await;
    assert!(policies(&fake, "outsider").is_empty());
    assert!(policies(&fake, "theirs").is_empty());
    let np = fake
        .get("NetworkPolicy", "bookinfo", "istio-mesh-basic")
        .unwrap();
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
            ["maistra.io/member-of"],
        CP
    );
    eventually("roll status 2/2", LIMIT, async || {
        let s = roll_status(&fake);
        s["annotations"]["configuredMemberCount"] == "2/2" && s["observedGeneration"] == 1
    })
    .await;
    let s = roll_status(&fake);
    assert_eq!(s["configuredMembers"], json!(["bookinfo", "shop"]));
    assert_eq!(s["conditions"][0]["status"], "True");
    assert!(
        s["conditions"][0]["lastTransitionTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{s}"
    );

    // Members see each other; nobody sees the outsider; the outsider sees nothing.
    let v = wait_view("bookinfo sees exactly the members", &bookinfo, |_, h| {
        h == [
            "cart.shop.svc.cluster.local",
            "productpage.bookinfo.svc.cluster.local",
        ]
    })
    .await;
    wait_view("outsider at the same version", &outsider, |ov, _| ov >= v).await;
    assert_eq!(hosts(&outsider).1, Vec::<String>::new());

    // A namespace of another control plane is refused, with the reason.
    fake.apply(roll(json!(["bookinfo", "theirs"])));
    eventually("theirs pending", LIMIT, async || {
        let s = roll_status(&fake);
        s["observedGeneration"] == 2 && s["pendingMembers"] == json!(["theirs"])
    })
    .await;
    let s = roll_status(&fake);
    assert_eq!(s["annotations"]["configuredMemberCount"], "2/3");
    assert_eq!(s["conditions"][0]["status"], "False");
    let msg = s["conditions"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("\"theirs\"") && msg.contains("other-cp"),
        "{msg}"
    );
    assert_eq!(label(&fake, "theirs").as_deref(), Some("other-cp"));
    assert!(policies(&fake, "theirs").is_empty());

    // Removing bookinfo undoes its label and NetworkPolicies and its proxy
    // gets nothing any more.
    fake.apply(roll(json!([])));
    eventually("bookinfo released", LIMIT, async || {
        label(&fake, "bookinfo").is_none() && policies(&fake, "bookinfo").is_empty()
    })
    .await;
    assert_eq!(policies(&fake, "shop").len(), 2);
    wait_view("bookinfo served nothing", &bookinfo, |_, h| h.is_empty()).await;

    // A ServiceMeshMember joins its namespace; the outsider now sees the mesh.
    fake.apply(member("outsider"));
    eventually("member object configured", LIMIT, async || {
        fake.get("ServiceMeshMember", "outsider", "default")
            .is_some_and(|m| {
                m["status"]["observedGeneration"] == 1
                    && m["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
    })
    .await;
    assert_eq!(label(&fake, "outsider").as_deref(), Some(CP));
    assert_eq!(policies(&fake, "outsider").len(), 2);
    wait_view("outsider sees the mesh", &outsider, |_, h| {
        h.contains(&"cart.shop.svc.cluster.local".to_string())
            && h.contains(&"vault.outsider.svc.cluster.local".to_string())
    })
    .await;

    // A member object in another mesh's namespace: Ready=False, with the reason.
    fake.apply(member("theirs"));
    eventually("member object refused", LIMIT, async || {
        fake.get("ServiceMeshMember", "theirs", "default")
            .is_some_and(|m| {
                m["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|c| {
                        c["type"] == "Ready"
                            && c["status"] == "False"
                            && c["reason"] == "ErrMemberOfOtherMesh"
                            && c["message"].as_str().unwrap_or("").contains("other-cp")
                    })
                })
            })
    })
    .await;
    assert_eq!(label(&fake, "theirs").as_deref(), Some("other-cp"));

    // Deleting the member object and the roll leaves no trace.
    fake.delete("ServiceMeshMember", "outsider", "default");
    fake.delete("ServiceMeshMember", "theirs", "default");
    fake.delete("ServiceMeshMemberRoll", CP, "default");
    eventually("everything released", LIMIT, async || {
        ["shop", "outsider"]
            .iter()
            .all(|ns| label(&fake, ns).is_none() && policies(&fake, ns).is_empty())
            && policies(&fake, CP).is_empty()
    })
    .await;
    // The control-plane namespace stays in its own mesh.
    assert_eq!(label(&fake, CP).as_deref(), Some(CP));
    // Not multitenant any more: every namespace is served again.
    wait_view("outsider sees every namespace", &outsider, |_, h| {
        h.contains(&"ledger.theirs.svc.cluster.local".to_string())
    })
    .await;
    // Statuses are written when they change, not on every pass (our own
    // writes come back as watch events): a handful per change above.
    let status_writes = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.uri.contains("/status"))
        .count();
    assert!(
        (4..=16).contains(&status_writes),
        "{status_writes} status writes"
    );
}

fn smcp(name: &str, manage_network_policy: Option<bool>) -> Value {
    let mut s = json!({"apiVersion": "maistra.io/v2", "kind": "ServiceMeshControlPlane",
        "metadata": {"name": name, "namespace": CP}, "spec": {"version": "v2.6"}});
    if let Some(m) = manage_network_policy {
        s["spec"]["security"] = json!({"manageNetworkPolicy": m});
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_in_force_names_and_switches_the_network_policies() {
    let fake = Fake::new();
    fake.apply(namespace(CP, json!({})));
    fake.apply(namespace("bookinfo", json!({})));
    fake.apply(roll(json!(["bookinfo"])));
    fake.apply(smcp("prod", None));
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let client = fake.serve(shutdown.clone()).await;
    // The flags say `basic`; the SMCP in the namespace says `prod` and wins.
    let cfg = Config::from_flags(["--source", "kubernetes", "--maistra-members"]).unwrap();
    let (_keep, settings) = watch::channel(Arc::new(cfg.settings()));
    let _settings =
        mesh_agent::maistra::members::start(client, cfg.members().unwrap(), settings, shutdown)
            .await;
    let named = |ns: &str, n: &str| fake.get("NetworkPolicy", ns, n).is_some();
    eventually("istio-mesh-prod in the member", LIMIT, async || {
        named("bookinfo", "istio-mesh-prod") && named("bookinfo", "istio-expose-route-prod")
    })
    .await;
    assert!(
        policies(&fake, "bookinfo").is_empty(),
        "no `basic` policies"
    );
    // manageNetworkPolicy: false takes ours away.
    fake.apply(smcp("prod", Some(false)));
    eventually("policies removed", LIMIT, async || {
        !named("bookinfo", "istio-mesh-prod") && !named("bookinfo", "istio-expose-route-prod")
    })
    .await;
    assert_eq!(label(&fake, "bookinfo").as_deref(), Some(CP));
}
