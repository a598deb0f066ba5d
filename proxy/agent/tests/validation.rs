//! Validation: every Bookinfo routing sample is accepted, and a table of
//! deliberately broken resources yields the expected message, path and value.

use mesh_agent::objects::{parse_yaml, KubeObject};
use mesh_agent::validate::{validate, Severity};

const BOOKINFO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/samples/bookinfo/networking"
);

fn istio(yaml: &str) -> Vec<mesh_api::resource::IstioResource> {
    let (objs, errs) = parse_yaml(yaml);
    assert!(errs.is_empty(), "{errs:?}");
    objs.into_iter()
        .filter_map(|(_, o)| match o {
            KubeObject::Istio(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn every_bookinfo_routing_file_parses_and_validates() {
    let mut files: Vec<_> = std::fs::read_dir(BOOKINFO)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected the Bookinfo samples, found {files:?}"
    );
    let mut resources = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let rs = istio(&text);
        assert!(!rs.is_empty(), "{} has no Istio resources", f.display());
        for r in &rs {
            let findings = validate(r);
            assert!(
                findings.is_empty(),
                "{}: {}",
                f.display(),
                findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            resources += 1;
        }
    }
    assert!(resources >= 38, "only {resources} resources");
}

#[test]
fn all_served_api_versions_parse_to_the_same_resource() {
    let base = "kind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n";
    let parsed: Vec<_> = ["v1", "v1beta1", "v1alpha3"]
        .iter()
        .map(|v| istio(&format!("apiVersion: networking.istio.io/{v}\n{base}")).remove(0))
        .collect();
    assert_eq!(parsed[0], parsed[1]);
    assert_eq!(parsed[0], parsed[2]);
    let (_, errs) = parse_yaml(&format!("apiVersion: networking.istio.io/v2\n{base}"));
    assert!(
        errs[0]
            .message
            .contains("\"networking.istio.io/v2\" is not served"),
        "{errs:?}"
    );
    let pa = "kind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: STRICT}}\n";
    for v in ["v1", "v1beta1"] {
        assert_eq!(
            istio(&format!("apiVersion: security.istio.io/{v}\n{pa}")).len(),
            1
        );
    }
}

#[test]
fn unknown_fields_are_kept_and_warned_about() {
    let rs = istio("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: reviews\n  futureField: {a: 1}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    colour: blue\n");
    let f = validate(&rs[0]);
    let shown: Vec<String> = f.iter().map(ToString::to_string).collect();
    assert_eq!(f.len(), 2, "{shown:?}");
    assert!(f.iter().all(|x| x.severity == Severity::Warning));
    assert!(shown.contains(&"warning: DestinationRule/default/d: spec.futureField: unknown field (kept, but this mesh ignores it) (value {\"a\":1})".to_string()), "{shown:?}");
    assert!(
        shown
            .iter()
            .any(|s| s.contains("spec.subsets[0].colour") && s.contains("\"blue\"")),
        "{shown:?}"
    );
    // Kept: a round trip still carries them.
    assert_eq!(rs[0].spec_json()["futureField"]["a"], 1);
}

/// (resource YAML without apiVersion line, expected path, expected substring of message, expected value)
const INVALID: &[(&str, &str, &str, &str)] = &[
    ("kind: VirtualService\nmetadata: {name: bad-regex}\nspec:\n  hosts: [a]\n  http:\n  - match:\n    - uri: {regex: \"(unclosed\"}\n    route:\n    - destination: {host: a}\n",
     "spec.http[0].match[0].uri.regex", "invalid regex", "\"(unclosed\""),
    // Compiled as the proxy compiles it (anchored, RE2 flags only): `(?x)`'s
    // comment would swallow the anchoring group, so the proxy could not use it.
    ("kind: VirtualService\nmetadata: {name: x-flag}\nspec:\n  hosts: [a]\n  http:\n  - match:\n    - uri: {regex: \"(?x)/never # a comment\"}\n    route:\n    - destination: {host: a}\n",
     "spec.http[0].match[0].uri.regex", "flag x is not RE2 syntax", "\"(?x)/never # a comment\""),
    ("kind: VirtualService\nmetadata: {name: escape}\nspec:\n  hosts: [a]\n  http:\n  - match:\n    - headers: {x-v: {regex: \"a)|(b\"}}\n    route:\n    - destination: {host: a}\n",
     "spec.http[0].match[0].headers.x-v.regex", "unopened group", "\"a)|(b\""),
    ("kind: VirtualService\nmetadata: {name: weights}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, subset: v1}\n      weight: 60\n    - destination: {host: a, subset: v2}\n      weight: 30\n",
     "spec.http[0].route", "total destination weight must be 100", "90"),
    ("kind: VirtualService\nmetadata: {name: dup}\nspec:\n  hosts: [a, b, a]\n  http:\n  - route:\n    - destination: {host: a}\n",
     "spec.hosts[2]", "duplicate host", "\"a\""),
    ("kind: VirtualService\nmetadata: {name: timeout}\nspec:\n  hosts: [a]\n  http:\n  - timeout: 10 seconds\n    route:\n    - destination: {host: a}\n",
     "spec.http[0].timeout", "unknown unit \" seconds\"", "\"10 seconds\""),
    ("kind: VirtualService\nmetadata: {name: tiny}\nspec:\n  hosts: [a]\n  http:\n  - retries: {attempts: 3, perTryTimeout: 100us}\n    route:\n    - destination: {host: a}\n",
     "spec.http[0].retries.perTryTimeout", "at least 1ms", "\"100us\""),
    ("kind: VirtualService\nmetadata: {name: port}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, port: {number: 70000}}\n",
     "spec.http[0].route[0].destination.port.number", "port number must be in 1..65535", "70000"),
    ("kind: VirtualService\nmetadata: {name: abort}\nspec:\n  hosts: [a]\n  http:\n  - fault: {abort: {httpStatus: 99, percentage: {value: 150}}}\n    route:\n    - destination: {host: a}\n",
     "spec.http[0].fault.abort.httpStatus", "HTTP status must be in [200, 599]", "99"),
    ("kind: VirtualService\nmetadata: {name: pct}\nspec:\n  hosts: [a]\n  http:\n  - fault: {abort: {httpStatus: 503, percentage: {value: 150}}}\n    route:\n    - destination: {host: a}\n",
     "spec.http[0].fault.abort.percentage.value", "percentage must be in [0, 100]", "150.0"),
    ("kind: VirtualService\nmetadata: {name: two-matches}\nspec:\n  hosts: [a]\n  http:\n  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: a}\n",
     "spec.http[0].match[0].uri", "exactly one of exact, prefix or regex", "{\"exact\":\"/a\",\"prefix\":\"/b\"}"),
    ("kind: VirtualService\nmetadata: {name: tcp-cidr}\nspec:\n  hosts: [a]\n  tcp:\n  - match:\n    - destinationSubnets: [10.0.0.0/33]\n    route:\n    - destination: {host: a}\n",
     "spec.tcp[0].match[0].destinationSubnets[0]", "invalid IP address or CIDR block", "\"10.0.0.0/33\""),
    ("kind: VirtualService\nmetadata: {name: nohost}\nspec:\n  http:\n  - route:\n    - destination: {host: a}\n",
     "spec.hosts", "at least one host", ""),
    ("kind: VirtualService\nmetadata: {name: badhost}\nspec:\n  hosts: [\"foo_bar.com\"]\n  http:\n  - route:\n    - destination: {host: a}\n",
     "spec.hosts[0]", "invalid host", "\"foo_bar.com\""),
    ("kind: VirtualService\nmetadata: {name: export}\nspec:\n  hosts: [a]\n  exportTo: [\"~\", \".\"]\n  http:\n  - route:\n    - destination: {host: a}\n",
     "spec.exportTo[0]", "'~' (export to none) cannot be combined", "\"~\""),
    ("kind: DestinationRule\nmetadata: {name: tls}\nspec:\n  host: a\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, clientCertificate: /etc/cert.pem}\n",
     "spec.trafficPolicy.tls", "cannot specify client certificates", "\"ISTIO_MUTUAL\""),
    ("kind: DestinationRule\nmetadata: {name: mutual}\nspec:\n  host: a\n  trafficPolicy:\n    tls: {mode: MUTUAL}\n",
     "spec.trafficPolicy.tls", "mode MUTUAL needs clientCertificate and privateKey", "\"MUTUAL\""),
    ("kind: DestinationRule\nmetadata: {name: sds}\nspec:\n  host: a\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: SIMPLE, credentialName: ext-ca}\n",
     "spec.trafficPolicy.portLevelSettings[0].tls.credentialName", "credentialName is not supported for sidecars yet; use clientCertificate/privateKey/caCertificates files", "\"ext-ca\""),
    ("kind: DestinationRule\nmetadata: {name: lb}\nspec:\n  host: a\n  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n",
     "spec.trafficPolicy.loadBalancer.simple", "must be one of", "\"FASTEST\""),
    ("kind: DestinationRule\nmetadata: {name: subsets}\nspec:\n  host: a\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v1, labels: {version: v2}}\n",
     "spec.subsets[1]", "duplicate subset name", "\"v1\""),
    ("kind: DestinationRule\nmetadata: {name: eject}\nspec:\n  host: a\n  trafficPolicy:\n    outlierDetection: {baseEjectionTime: 3x, maxEjectionPercent: 101}\n",
     "spec.trafficPolicy.outlierDetection.baseEjectionTime", "unknown unit", "\"3x\""),
    ("kind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n",
     "spec.servers[0].tls", "must have tls settings", ""),
    ("kind: Gateway\nmetadata: {name: gw-tls}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: PASSTHROUGH, credentialName: cert}\n",
     "spec.servers[0].tls", "certificates cannot be set with this TLS mode", "\"PASSTHROUGH\""),
    ("kind: Gateway\nmetadata: {name: gw-proto}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: SPDY}\n    hosts: [\"*\"]\n",
     "spec.servers[0].port.protocol", "unsupported protocol", "\"SPDY\""),
    ("kind: Gateway\nmetadata: {name: gw-noport}\nspec:\n  servers:\n  - hosts: [\"*\"]\n",
     "spec.servers[0].port", "server must have a port", ""),
    ("kind: Gateway\nmetadata: {name: gw-range}\nspec:\n  servers:\n  - port: {number: 70000, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
     "spec.servers[0].port.number", "port number must be in 1..65535", "70000"),
    ("kind: Gateway\nmetadata: {name: gw-mode}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: STRICT, credentialName: c}\n",
     "spec.servers[0].tls.mode", "must be one of", "\"STRICT\""),
    ("kind: Gateway\nmetadata: {name: gw-nohosts}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n",
     "spec.servers[0].hosts", "at least one host", ""),
    ("kind: Gateway\nmetadata: {name: gw-midwild}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"prod/foo.*.com\"]\n",
     "spec.servers[0].hosts[0]", "invalid host", "\"foo.*.com\""),
    ("kind: Gateway\nmetadata: {name: gw-ns}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"Bad_NS/foo.com\"]\n",
     "spec.servers[0].hosts[0]", "namespace part must be", "\"Bad_NS/foo.com\""),
    ("kind: Gateway\nmetadata: {name: gw-simple}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE}\n",
     "spec.servers[0].tls", "needs serverCertificate and privateKey, or credentialName", "\"SIMPLE\""),
    ("kind: Gateway\nmetadata: {name: gw-default-mode}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {privateKey: /k.pem}\n",
     "spec.servers[0].tls", "needs serverCertificate and privateKey, or credentialName", ""),
    ("kind: Gateway\nmetadata: {name: gw-mutual}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: MUTUAL}\n",
     "spec.servers[0].tls", "needs serverCertificate and privateKey, or credentialName", "\"MUTUAL\""),
    ("kind: Gateway\nmetadata: {name: gw-pass-http}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {mode: PASSTHROUGH}\n",
     "spec.servers[0].tls.mode", "mode PASSTHROUGH needs protocol TLS or HTTPS, not \"HTTP\"", "\"PASSTHROUGH\""),
    ("kind: Gateway\nmetadata: {name: gw-auto-tcp}\nspec:\n  servers:\n  - port: {number: 15443, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n    tls: {mode: AUTO_PASSTHROUGH}\n",
     "spec.servers[0].tls.mode", "needs protocol TLS or HTTPS", "\"AUTO_PASSTHROUGH\""),
    ("kind: Gateway\nmetadata: {name: gw-version}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {credentialName: c, minProtocolVersion: TLSV1_4}\n",
     "spec.servers[0].tls.minProtocolVersion", "must be one of TLS_AUTO, TLSV1_0", "\"TLSV1_4\""),
    ("kind: Gateway\nmetadata: {name: gw-versions}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}\n",
     "spec.servers[0].tls.minProtocolVersion", "above maxProtocolVersion TLSV1_2", "\"TLSV1_3\""),
    ("kind: VirtualService\nmetadata: {name: vs-gw}\nspec:\n  hosts: [a]\n  gateways: [\"a/b/c\"]\n  http:\n  - route:\n    - destination: {host: a}\n",
     "spec.gateways[0]", "gateway must be 'mesh' or [namespace/]name", "\"a/b/c\""),
    ("kind: VirtualService\nmetadata: {name: vs-gw-match}\nspec:\n  hosts: [a]\n  http:\n  - match:\n    - gateways: [\"Bad Name\"]\n    route:\n    - destination: {host: a}\n",
     "spec.http[0].match[0].gateways[0]", "gateway must be 'mesh' or [namespace/]name", "\"Bad Name\""),
    ("kind: ServiceEntry\nmetadata: {name: se}\nspec:\n  hosts: [db.example.com]\n  addresses: [10.1.2.0/40]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n",
     "spec.addresses[0]", "invalid IP address or CIDR block", "\"10.1.2.0/40\""),
    ("kind: ServiceEntry\nmetadata: {name: se-static}\nspec:\n  hosts: [db.example.com]\n  resolution: STATIC\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n",
     "spec.endpoints", "resolution STATIC needs endpoints", ""),
    ("kind: ServiceEntry\nmetadata: {name: se-ports}\nspec:\n  hosts: [db.example.com]\n  ports: [{number: 0, name: tcp, protocol: TCP}]\n",
     "spec.ports[0].number", "port number must be in 1..65535", "0"),
    ("kind: Sidecar\nmetadata: {name: sc}\nspec:\n  egress:\n  - hosts: [\"reviews\"]\n",
     "spec.egress[0].hosts[0]", "egress host must be namespace/dnsName", "\"reviews\""),
];

const INVALID_SECURITY: &[(&str, &str, &str, &str)] = &[
    ("kind: PeerAuthentication\nmetadata: {name: pa}\nspec:\n  mtls: {mode: STRICTER}\n",
     "spec.mtls.mode", "must be one of UNSET, DISABLE, PERMISSIVE, STRICT", "\"STRICTER\""),
    ("kind: PeerAuthentication\nmetadata: {name: pa-port}\nspec:\n  portLevelMtls:\n    \"8080\": {mode: DISABLE}\n",
     "spec.portLevelMtls", "requires a workload selector", ""),
    ("kind: AuthorizationPolicy\nmetadata: {name: ap}\nspec:\n  rules:\n  - from:\n    - source: {ipBlocks: [1.2.3.4/99]}\n",
     "spec.rules[0].from[0].source.ipBlocks[0]", "invalid IP address or CIDR block", "\"1.2.3.4/99\""),
    ("kind: AuthorizationPolicy\nmetadata: {name: ap-port}\nspec:\n  rules:\n  - to:\n    - operation: {ports: [\"http\"]}\n",
     "spec.rules[0].to[0].operation.ports[0]", "port must be a number", "\"http\""),
    ("kind: AuthorizationPolicy\nmetadata: {name: ap-custom}\nspec:\n  action: CUSTOM\n",
     "spec.provider", "action CUSTOM needs a provider", ""),
];

fn check_table(api: &str, table: &[(&str, &str, &str, &str)]) {
    for (yaml, path, msg, value) in table {
        let rs = istio(&format!("apiVersion: {api}\n{yaml}"));
        let findings = validate(&rs[0]);
        let key = rs[0].key().to_string();
        let hit = findings
            .iter()
            .find(|f| f.path == *path && f.message.contains(msg));
        let shown: Vec<String> = findings.iter().map(ToString::to_string).collect();
        let hit = hit.unwrap_or_else(|| panic!("{key}: expected {path}: {msg}, got {shown:#?}"));
        assert_eq!(hit.severity, Severity::Error, "{key}");
        assert_eq!(hit.value, *value, "{key}: {shown:?}");
        let line = hit.to_string();
        assert!(
            line.starts_with(&format!("error: {key}: {path}: ")),
            "{line}"
        );
    }
}

#[test]
fn invalid_networking_resources_are_rejected_with_precise_messages() {
    check_table("networking.istio.io/v1", INVALID);
}

#[test]
fn invalid_security_resources_are_rejected_with_precise_messages() {
    check_table("security.istio.io/v1", INVALID_SECURITY);
}

#[test]
fn type_errors_name_the_field_path() {
    let (_, errs) = parse_yaml("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x, namespace: ns}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: heavy\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.starts_with("VirtualService/ns/x: field spec.http[0].route[0].weight: invalid type: string \"heavy\""), "{}", errs[0].message);
    assert!(!errs[0].syntax);
}
