//! Table-driven checks of the evaluator against the examples of Istio's
//! AuthorizationPolicy reference and its normalization page.

use std::collections::BTreeMap;

use super::*;

/// A request as a test writes it; `facts()` borrows it.
#[derive(Clone)]
struct R {
    method: &'static str,
    target: &'static str,
    host: &'static str,
    headers: HeaderMap,
    src: &'static str,
    xff: Option<&'static str>,
    dport: u16,
    principal: Option<&'static str>,
    tcp: bool,
}

fn get(target: &'static str) -> R {
    R {
        method: "GET",
        target,
        host: "httpbin.foo.svc.cluster.local:8000",
        headers: HeaderMap::new(),
        src: "10.88.0.2",
        xff: None,
        dport: 8000,
        principal: None,
        tcp: false,
    }
}

impl R {
    fn method(mut self, m: &'static str) -> R {
        self.method = m;
        self
    }
    fn header(mut self, k: &'static str, v: &'static str) -> R {
        self.headers.append(k, v.parse().unwrap());
        self
    }
    fn src_ip(mut self, ip: &'static str) -> R {
        self.src = ip;
        self
    }
    fn xff(mut self, v: &'static str) -> R {
        self.xff = Some(v);
        self
    }
    fn port(mut self, p: u16) -> R {
        self.dport = p;
        self
    }
    fn host(mut self, h: &'static str) -> R {
        self.host = h;
        self
    }
    fn peer(mut self, p: &'static str) -> R {
        self.principal = Some(p);
        self
    }
    fn tcp(mut self) -> R {
        self.tcp = true;
        self
    }
    fn decide(&self, a: &Authz) -> Verdict {
        let path =
            normalize::normalize(self.target, normalize::PathNormalization::default()).unwrap();
        let ns = self
            .principal
            .and_then(|p| p.split("/ns/").nth(1))
            .and_then(|r| r.split('/').next());
        let src: IpAddr = self.src.parse().unwrap();
        let facts = Facts {
            source_ip: src,
            remote_ip: self
                .xff
                .and_then(|x| x.rsplit(',').next()?.trim().parse().ok())
                .unwrap_or(src),
            destination_ip: "10.88.0.9".parse().unwrap(),
            destination_port: self.dport,
            principal: self.principal,
            namespace: ns,
            sni: None,
            http: (!self.tcp).then_some(HttpFacts {
                method: self.method,
                path: normalize::path_only(&path),
                host: self.host,
                headers: &self.headers,
            }),
        };
        a.evaluate(&facts)
    }
}

fn policies(docs: &[&str]) -> Authz {
    let map: BTreeMap<String, AuthorizationPolicySpec> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                format!("foo/p{i}"),
                serde_yaml_ng::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")),
            )
        })
        .collect();
    Authz::compile(map.iter())
}

const ALLOW_NOTHING: &str = "{}";
const ALLOW_ALL: &str = "rules:\n- {}";
const DENY_NOTHING: &str = "action: DENY";
const ALLOW_GET_INFO: &str = r#"
action: ALLOW
rules:
- to:
  - operation:
      methods: ["GET"]
      paths: ["/info*", "/public", "*.png"]
"#;
const DENY_ADMIN: &str = r#"
action: DENY
rules:
- to:
  - operation:
      paths: ["/admin", "/admin/*"]
"#;
const ALLOW_FROM_SLEEP: &str = r#"
rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/sleep"]
  - source:
      namespaces: ["test"]
  to:
  - operation:
      methods: ["GET"]
"#;
const DENY_NOT_FOO_NS: &str = r#"
action: DENY
rules:
- from:
  - source:
      notNamespaces: ["foo"]
"#;
const ALLOW_HEADER: &str = r#"
rules:
- when:
  - key: request.headers[x-token]
    values: ["admin-*", "root"]
    notValues: ["admin-revoked"]
"#;
const ALLOW_IPS: &str = r#"
rules:
- from:
  - source:
      ipBlocks: ["10.88.0.0/24"]
      notIpBlocks: ["10.88.0.66"]
"#;
const ALLOW_REMOTE: &str = r#"
rules:
- from:
  - source:
      remoteIpBlocks: ["203.0.113.0/24"]
"#;
const DENY_GET_TCP: &str = r#"
action: DENY
rules:
- to:
  - operation:
      methods: ["GET"]
      ports: ["9000"]
"#;
const ALLOW_GET_TCP: &str = r#"
rules:
- to:
  - operation:
      methods: ["GET"]
      ports: ["9000"]
"#;
const ALLOW_PORT_TCP: &str = r#"
rules:
- to:
  - operation:
      ports: ["9000", "9001"]
"#;
const ALLOW_HOSTS: &str = r#"
rules:
- to:
  - operation:
      hosts: ["*.foo.svc.cluster.local", "Example.COM"]
      notHosts: ["secret.foo.svc.cluster.local"]
"#;
const ALLOW_WHEN_MISC: &str = r#"
rules:
- when:
  - key: destination.port
    values: ["8000"]
  - key: source.ip
    values: ["10.88.0.0/16"]
  - key: source.principal
    notValues: ["cluster.local/ns/bad/sa/*"]
"#;
const CUSTOM: &str = r#"
action: CUSTOM
provider:
  name: ext-authz
rules:
- to:
  - operation:
      paths: ["/ext/*"]
"#;
const AUDIT_ALL: &str = "action: AUDIT\nrules:\n- {}";
const ALLOW_UNKNOWN_KEY: &str = r#"
rules:
- when:
  - key: request.weird
    values: ["x"]
"#;
const DENY_UNKNOWN_KEY: &str = r#"
action: DENY
rules:
- to:
  - operation:
      paths: ["/x"]
  when:
  - key: request.weird
    values: ["x"]
"#;
const ALLOW_JWT: &str = r#"
rules:
- from:
  - source:
      requestPrincipals: ["*"]
"#;
const DENY_NO_JWT: &str = r#"
action: DENY
rules:
- from:
  - source:
      notRequestPrincipals: ["*"]
  to:
  - operation:
      paths: ["/jwt*"]
"#;
const ALLOW_ANY_PEER: &str = "rules:\n- from:\n  - source:\n      principals: [\"*\"]";
const TARGET_REF: &str = "targetRefs:\n- kind: Gateway\n  name: gw\n";

#[test]
fn table() {
    let sleep = "cluster.local/ns/default/sa/sleep";
    let other = "cluster.local/ns/test/sa/x";
    let bad = "cluster.local/ns/bad/sa/y";
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<&str>, R, bool)> = vec![
        ("no policy allows", vec![], get("/"), true),
        ("ALLOW with no rules denies all", vec![ALLOW_NOTHING], get("/"), false),
        ("ALLOW with an empty rule allows all", vec![ALLOW_ALL], get("/x"), true),
        ("DENY with no rules denies nothing", vec![DENY_NOTHING], get("/"), true),
        ("DENY without rules does not switch on default deny", vec![DENY_NOTHING], get("/").method("POST"), true),
        ("ALLOW by method and prefix", vec![ALLOW_GET_INFO], get("/info/x"), true),
        ("ALLOW exact path", vec![ALLOW_GET_INFO], get("/public"), true),
        ("ALLOW exact path is exact", vec![ALLOW_GET_INFO], get("/public/x"), false),
        ("ALLOW suffix path", vec![ALLOW_GET_INFO], get("/img/a.png"), true),
        ("ALLOW wrong method", vec![ALLOW_GET_INFO], get("/info").method("POST"), false),
        ("ALLOW path not listed", vec![ALLOW_GET_INFO], get("/admin"), false),
        ("ALLOW ignores the query", vec![ALLOW_GET_INFO], get("/public?x=/admin"), true),
        ("dot-dot into an allowed path", vec![ALLOW_GET_INFO], get("/admin/../public"), true),
        ("dot-dot out of an allowed prefix", vec![ALLOW_GET_INFO], get("/info/../admin"), false),
        ("DENY beats ALLOW", vec![ALLOW_ALL, DENY_ADMIN], get("/admin"), false),
        ("DENY leaves the rest", vec![ALLOW_ALL, DENY_ADMIN], get("/admins"), true),
        ("DENY subtree", vec![DENY_ADMIN], get("/admin/users"), false),
        ("DENY vs ..", vec![DENY_ADMIN], get("/public/../admin"), false),
        ("DENY vs encoded dots", vec![DENY_ADMIN], get("/public/%2e%2e/admin"), false),
        ("DENY vs encoded letters", vec![DENY_ADMIN], get("/%61dmin"), false),
        ("DENY vs double slash", vec![DENY_ADMIN], get("//admin"), false),
        ("DENY vs backslash", vec![DENY_ADMIN], get("/public\\..\\admin"), false),
        ("DENY vs ./", vec![DENY_ADMIN], get("/./admin/./x"), false),
        ("principal allowed", vec![ALLOW_FROM_SLEEP], get("/").peer(sleep), true),
        ("namespace allowed", vec![ALLOW_FROM_SLEEP], get("/").peer(other), true),
        ("principal elsewhere", vec![ALLOW_FROM_SLEEP], get("/").peer(bad), false),
        ("no mTLS: principals never match", vec![ALLOW_FROM_SLEEP], get("/"), false),
        ("principal ok but method not", vec![ALLOW_FROM_SLEEP], get("/").method("DELETE").peer(sleep), false),
        ("notNamespaces denies others", vec![DENY_NOT_FOO_NS], get("/").peer(bad), false),
        ("notNamespaces spares its own", vec![DENY_NOT_FOO_NS], get("/").peer("cluster.local/ns/foo/sa/a"), true),
        ("notNamespaces: plaintext has no namespace", vec![DENY_NOT_FOO_NS], get("/"), false),
        ("any peer needs mTLS", vec![ALLOW_ANY_PEER], get("/"), false),
        ("any peer with mTLS", vec![ALLOW_ANY_PEER], get("/").peer(bad), true),
        ("header prefix", vec![ALLOW_HEADER], get("/").header("x-token", "admin-1"), true),
        ("header exact", vec![ALLOW_HEADER], get("/").header("X-Token", "root"), true),
        ("header notValues", vec![ALLOW_HEADER], get("/").header("x-token", "admin-revoked"), false),
        ("header absent", vec![ALLOW_HEADER], get("/"), false),
        ("header other value", vec![ALLOW_HEADER], get("/").header("x-token", "guest"), false),
        ("repeated header joined", vec![ALLOW_HEADER], get("/").header("x-token", "admin-a").header("x-token", "b"), true),
        ("ipBlocks in", vec![ALLOW_IPS], get("/").src_ip("10.88.0.5"), true),
        ("ipBlocks out", vec![ALLOW_IPS], get("/").src_ip("10.88.1.5"), false),
        ("notIpBlocks", vec![ALLOW_IPS], get("/").src_ip("10.88.0.66"), false),
        ("ipBlocks ignore XFF", vec![ALLOW_IPS], get("/").src_ip("10.88.1.5").xff("10.88.0.5"), false),
        ("remoteIpBlocks from XFF", vec![ALLOW_REMOTE], get("/").xff("1.1.1.1, 203.0.113.9"), true),
        ("remoteIpBlocks uses the last XFF hop", vec![ALLOW_REMOTE], get("/").xff("203.0.113.9, 1.1.1.1"), false),
        ("remoteIpBlocks without XFF", vec![ALLOW_REMOTE], get("/"), false),
        ("hosts suffix, port ignored", vec![ALLOW_HOSTS], get("/"), true),
        ("hosts case-insensitive", vec![ALLOW_HOSTS], get("/").host("example.com"), true),
        ("notHosts", vec![ALLOW_HOSTS], get("/").host("secret.foo.svc.cluster.local"), false),
        ("hosts other", vec![ALLOW_HOSTS], get("/").host("evil.com"), false),
        ("when: port, ip, principal", vec![ALLOW_WHEN_MISC], get("/"), true),
        ("when: wrong port", vec![ALLOW_WHEN_MISC], get("/").port(9000), false),
        ("when: notValues principal", vec![ALLOW_WHEN_MISC], get("/").peer(bad), false),
        ("when: source.ip", vec![ALLOW_WHEN_MISC], get("/").src_ip("192.168.0.1"), false),
        ("TCP: DENY ignores HTTP-only fields", vec![DENY_GET_TCP], get("/").tcp().port(9000), false),
        ("TCP: DENY still needs its port", vec![DENY_GET_TCP], get("/").tcp().port(9001), true),
        ("TCP: ALLOW rule with HTTP-only fields never matches", vec![ALLOW_GET_TCP], get("/").tcp().port(9000), false),
        ("TCP: ALLOW by port", vec![ALLOW_PORT_TCP], get("/").tcp().port(9001), true),
        ("HTTP: DENY with method+port", vec![DENY_GET_TCP], get("/").port(9000), false),
        ("HTTP: DENY with method+port, other method", vec![DENY_GET_TCP], get("/").port(9000).method("POST"), true),
        ("CUSTOM is refused where it matches", vec![CUSTOM], get("/ext/a"), false),
        ("CUSTOM elsewhere", vec![CUSTOM], get("/other"), true),
        ("AUDIT does not decide", vec![AUDIT_ALL], get("/"), true),
        ("unknown key: ALLOW rule fails closed", vec![ALLOW_UNKNOWN_KEY], get("/"), false),
        ("unknown key: DENY rule ignores it", vec![DENY_UNKNOWN_KEY], get("/x"), false),
        ("unknown key: DENY rest still applies", vec![DENY_UNKNOWN_KEY], get("/y"), true),
        ("no JWT: requestPrincipals never match", vec![ALLOW_JWT], get("/"), false),
        ("no JWT: notRequestPrincipals matches", vec![DENY_NO_JWT], get("/jwt/x"), false),
        ("targetRefs do not apply to sidecars", vec![TARGET_REF], get("/"), true),
    ];
    assert!(cases.len() >= 30);
    let mut failed = vec![];
    for (name, docs, req, want) in &cases {
        let a = policies(docs);
        let got = req.decide(&a);
        if got.is_allowed() != *want {
            failed.push(format!("{name}: want allowed={want}, got {got:?}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} failures:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn denial_names_the_rule() {
    let a = policies(&[ALLOW_ALL, DENY_ADMIN]);
    assert_eq!(
        get("/admin").decide(&a).details(),
        "rbac_access_denied_matched_policy[ns[foo]-policy[p1]-rule[0]]"
    );
    let a = policies(&[ALLOW_NOTHING]);
    assert_eq!(
        get("/").decide(&a).details(),
        "rbac_access_denied_matched_policy[none]"
    );
    assert_eq!(
        policies(&[AUDIT_ALL]).evaluate(&Facts {
            source_ip: "10.0.0.1".parse().unwrap(),
            remote_ip: "10.0.0.1".parse().unwrap(),
            destination_ip: "10.0.0.2".parse().unwrap(),
            destination_port: 80,
            principal: None,
            namespace: None,
            sni: None,
            http: None,
        }),
        Verdict::Allow { audited: true }
    );
}

#[test]
fn warnings_name_the_problem() {
    let a = policies(&[CUSTOM, ALLOW_UNKNOWN_KEY, TARGET_REF]);
    let w = a.warnings.join("\n");
    assert!(
        w.contains("foo/p0") && w.contains("CUSTOM") && w.contains("ext-authz"),
        "{w}"
    );
    assert!(w.contains("request.weird"), "{w}");
    assert!(w.contains("targetRef"), "{w}");
}
