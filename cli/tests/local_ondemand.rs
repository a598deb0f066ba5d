//! On-demand discovery is what `meshctl local up` runs without flags: a sidecar
//! starts with its namespace's scope, and its first call to a mesh service of
//! another namespace is looked up and is then a mesh call like any other —
//! mutual TLS (XFCC at the callee, `mutual_tls` in its metrics), the remote
//! namespace's VirtualService routing, STRICT PeerAuthentication at the callee —
//! and `proxy-config cluster` lists the service only after that call. What Istio
//! hides stays hidden: a Service exported to its own namespace is passthrough
//! (plaintext, as without a mesh), a VirtualService exported to its own namespace
//! does not route the caller, and a Sidecar with REGISTRY_ONLY refuses a service
//! its egress list leaves out although a lookup would find it.

mod common;

use common::*;

const APPS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: front, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: vault, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: locked, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: client, namespace: front}
spec:
  selector: {app: client}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: front}
spec:
  template:
    metadata: {labels: {app: client}}
    spec:
      serviceAccountName: client
      containers: [{name: client, image: curl, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      serviceAccountName: web
      containers: [{name: web, image: web, ports: [{containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v2, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web, version: v2}}
    spec:
      serviceAccountName: web
      containers: [{name: web, image: web, ports: [{containerPort: 8080}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: v2}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mtls: {mode: STRICT}
---
apiVersion: v1
kind: Service
metadata:
  name: private
  namespace: vault
  annotations: {networking.istio.io/exportTo: '.'}
spec:
  selector: {app: private}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: private, namespace: vault}
spec:
  template:
    metadata: {labels: {app: private}}
    spec:
      containers: [{name: private, image: web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: vault}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: vault}
spec:
  template:
    metadata: {labels: {app: api}}
    spec:
      serviceAccountName: api
      containers: [{name: api, image: web, ports: [{containerPort: 8080}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: vault}
spec:
  hosts: [api]
  exportTo: ['.']
  http:
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route:
    - destination: {host: api}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: locked, namespace: locked}
spec:
  template:
    metadata: {labels: {app: locked}}
    spec:
      containers: [{name: locked, image: curl}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: locked}
spec:
  egress:
  - hosts: ['./*', 'istio-system/*']
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";

const CLIENT: &str = "front/client-0";
const WEB: &str = "web.shop.svc.cluster.local";

/// Does the caller's `proxy-config cluster` table list `host`?
fn lists(mesh: &Local, pod: &str, host: &str) -> bool {
    mesh.ok(&["proxy-config", "cluster", pod])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(host))
}

#[test]
fn a_cross_namespace_call_under_the_default_flags_is_a_mesh_call_after_one_lookup() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    // No --visibility: the default is what is tested.
    mesh.ok(&["up", "-f", &apps]);

    // The caller's view is its namespace's scope: its own Service, not shop's.
    let before = mesh.ok(&["proxy-config", "cluster", CLIENT]);
    assert!(
        before.contains("client.front.svc.cluster.local"),
        "{before}"
    );
    assert!(!lists(&mesh, CLIENT, WEB), "{before}");

    // The first call is looked up and is a mesh call: shop's VirtualService
    // sends every request to v2, over mutual TLS (shop is STRICT).
    let res = mesh.calls(CLIENT, "http://web.shop/first", 10, &[]);
    assert_eq!(
        versions(&res),
        [("v2".to_string(), 10)].into_iter().collect(),
        "{res:?}"
    );
    let reply = res[0].1.as_ref().unwrap();
    let xfcc = &reply.headers["x-forwarded-client-cert"];
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/front/sa/client"),
        "{xfcc}"
    );
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/shop/sa/web"),
        "{xfcc}"
    );
    let m = mesh.metrics("shop/web-v2-0");
    assert_eq!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[
                "reporter=\"destination\"",
                "connection_security_policy=\"mutual_tls\"",
                "source_principal=\"spiffe://cluster.local/ns/front/sa/client\"",
            ],
        ),
        10.0,
        "{m}"
    );
    // Now the caller has it, with the subsets of shop's DestinationRule.
    let after = mesh.ok(&["proxy-config", "cluster", CLIENT]);
    assert!(lists(&mesh, CLIENT, WEB), "{after}");
    assert!(
        after
            .lines()
            .any(|l| l.starts_with(WEB) && l.split_whitespace().any(|c| c == "v2")),
        "{after}"
    );

    // A Service exported only to its namespace: the lookup answers "not
    // visible", the call is passthrough as in Istio (kube-proxy's DNAT to the
    // pod, plaintext: no client certificate) and the caller never lists it.
    let res = mesh.calls(CLIENT, "http://private.vault/hidden", 2, &[]);
    for (code, reply) in &res {
        assert_eq!(*code, 200, "{res:?}");
        let reply = reply.as_ref().expect("private's echo answer");
        assert_eq!(reply.pod, "private-0");
        assert!(
            !reply.headers.contains_key("x-forwarded-client-cert"),
            "{reply:?}"
        );
    }
    assert!(!lists(&mesh, CLIENT, "private.vault.svc.cluster.local"));

    // A VirtualService exported only to its namespace routes its namespace
    // (every call aborted with 418 there), not the caller that looked up the
    // Service: a mesh call without that route.
    let own = mesh.calls("vault/private-0", "http://api.vault/", 1, &[]);
    assert_eq!(own[0].0, 418, "{own:?}");
    let res = mesh.calls(CLIENT, "http://api.vault/", 2, &[]);
    for (code, reply) in &res {
        assert_eq!(*code, 200, "{res:?}");
        let xfcc = &reply.as_ref().unwrap().headers["x-forwarded-client-cert"];
        assert!(
            xfcc.contains("By=spiffe://cluster.local/ns/vault/sa/api"),
            "{xfcc}"
        );
    }
    assert!(lists(&mesh, CLIENT, "api.vault.svc.cluster.local"));

    // A Sidecar's egress list is all its proxies see, lookups or not: under
    // REGISTRY_ONLY the call to shop is refused at the caller's sidecar.
    let res = mesh.calls("locked/locked-0", "http://web.shop/", 2, &[]);
    assert!(res.iter().all(|(c, r)| *c == 502 && r.is_none()), "{res:?}");
    assert!(!lists(&mesh, "locked/locked-0", WEB));
}

#[test]
fn up_names_a_bad_visibility() {
    let mesh = Local::new();
    let out = mesh.meshctl(&["up", "--visibility", "cluster"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster") && err.contains("on-demand"),
        "{}",
        text(&out)
    );
}
