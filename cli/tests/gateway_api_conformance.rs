//! The Gateway API conformance suite's core HTTP and mesh (GAMMA) profiles,
//! ported as scenarios (not code) to `meshctl local`: one local mesh carries the
//! suite's base infrastructure (`gateway-api/base.yaml`: backend namespaces,
//! infra backends, three Gateways of class `istio` whose `<gateway>-istio` pods
//! run locally with published ports, mesh echo v1/v2 and clients); each
//! scenario applies its own objects (`gateway-api/<scenario>.yaml`, our YAML),
//! sends its requests — from the host through the Gateway's published port for
//! ingress, from a client pod for mesh — and reads statuses with `meshctl local
//! status`, polling (bounded) until the expected answer, then deletes its
//! objects. The test prints one line per upstream test (profile, name, result),
//! the pass count per profile, and fails unless every scenario it runs passes.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const INFRA: &str = "gateway-conformance-infra";
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gateway-api");
/// How long one scenario may take to converge (config push + pod start).
const CONVERGE: Duration = Duration::from_secs(40);

type Check = Result<(), String>;

struct Env {
    mesh: Local,
    /// Base64 of a certificate/key for `example.org` (Secrets of the TLS scenarios).
    cert_b64: String,
    key_b64: String,
    /// Path of the CA that signed it (curl `--cacert`).
    ca: String,
}

/// One answer: status code, the echo app's report, response headers (lower-case).
struct Resp {
    code: u16,
    echo: Option<EchoReply>,
    headers: Value,
}

impl Resp {
    fn pod(&self) -> &str {
        self.echo.as_ref().map(|e| e.pod.as_str()).unwrap_or("-")
    }
    fn req_header(&self, name: &str) -> Option<&str> {
        self.echo.as_ref()?.headers.get(name).map(String::as_str)
    }
    fn resp_header(&self, name: &str) -> Option<String> {
        Some(self.headers[name].get(0)?.as_str()?.to_string())
    }
}

impl Env {
    /// A scenario file with the test certificate filled in, written for `apply`.
    fn data(&self, name: &str) -> String {
        let text = std::fs::read_to_string(format!("{DATA}/{name}"))
            .unwrap()
            .replace("CERT_B64", &self.cert_b64)
            .replace("KEY_B64", &self.key_b64);
        self.mesh.file(name, &text)
    }

    /// `host:port` of a Gateway's published port.
    fn gw(&self, gateway: &str, port: u16) -> Result<String, String> {
        let out = self.mesh.meshctl(&[
            "service-url",
            &format!("{gateway}-istio"),
            "-n",
            INFRA,
            "--port",
            &port.to_string(),
        ]);
        if !out.status.success() {
            return Err(format!(
                "no published port {port} of {gateway}: {}",
                text(&out)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `n` requests by one curl, from the host (`pod` None) or from a pod.
    fn curl(&self, pod: Option<&str>, args: &[&str], url: &str, n: usize) -> Vec<Resp> {
        let url = if n > 1 {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}call=[1-{n}]")
        } else {
            url.to_string()
        };
        let mut argv = vec![
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n@@%{http_code}@@%{header_json}@@END\n",
        ];
        argv.extend_from_slice(args);
        argv.push(&url);
        let out = match pod {
            Some(p) => self.mesh.exec(p, None, &argv),
            None => std::process::Command::new(argv[0])
                .args(&argv[1..])
                .output()
                .unwrap(),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .split("@@END\n")
            .filter_map(|chunk| {
                let (body, rest) = chunk.rsplit_once("\n@@")?;
                let (code, headers) = rest.split_once("@@")?;
                Some(Resp {
                    code: code.parse().unwrap_or(0),
                    echo: serde_json::from_str(body.trim()).ok(),
                    headers: serde_json::from_str(headers).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// One GET through a Gateway's published HTTP port with `Host: host`.
    fn get(&self, gateway: &str, host: &str, path: &str, headers: &[&str]) -> Result<Resp, String> {
        let addr = self.gw(gateway, 80)?;
        let h = format!("Host: {host}");
        let mut args = vec!["-H", h.as_str()];
        for x in headers {
            args.extend(["-H", x]);
        }
        self.curl(None, &args, &format!("http://{addr}{path}"), 1)
            .pop()
            .ok_or_else(|| format!("no answer from {gateway} for {host}{path}"))
    }

    /// One GET from a mesh client pod.
    fn pod_get(&self, pod: &str, url: &str, headers: &[&str]) -> Result<Resp, String> {
        let mut args = Vec::new();
        for x in headers {
            args.extend(["-H", *x]);
        }
        self.curl(Some(pod), &args, url, 1)
            .pop()
            .ok_or_else(|| format!("no answer from {pod} to {url}"))
    }

    /// The status the agent computed for `kind/ns/name`, if any.
    fn status(&self, obj: &str) -> Option<Value> {
        let out = self.mesh.meshctl(&["status", obj]);
        if !out.status.success() {
            return None;
        }
        serde_yaml_ng::from_slice(&out.stdout).ok()
    }
}

/// Polls `f` until it holds, at most [`CONVERGE`]; the last failure otherwise.
fn until(mut f: impl FnMut() -> Check) -> Check {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// The answer came with `code` from a pod whose name starts with `backend`
/// (`None`: no backend answered).
fn answered(r: &Resp, code: u16, backend: Option<&str>, what: &str) -> Check {
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
fn has(conds: &Value, type_: &str, status: &str, reason: &str) -> bool {
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
fn route_has(env: &Env, ns: &str, name: &str, parent: &str, want: &[(&str, &str, &str)]) -> Check {
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
fn listener_has(
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

const ACCEPTED: (&str, &str, &str) = ("Accepted", "True", "Accepted");
const RESOLVED: (&str, &str, &str) = ("ResolvedRefs", "True", "ResolvedRefs");

// ---- core HTTP profile ----

fn simple_same_namespace(env: &Env) -> Check {
    route_has(
        env,
        INFRA,
        "gateway-conformance-infra-test",
        "same-namespace",
        &[ACCEPTED, RESOLVED],
    )?;
    let r = env.get("same-namespace", "any.example", "/", &[])?;
    answered(&r, 200, Some("infra-backend-v1"), "GET /")
}

fn cross_namespace(env: &Env) -> Check {
    route_has(
        env,
        "gateway-conformance-web-backend",
        "cross-namespace",
        "backend-namespaces",
        &[ACCEPTED, RESOLVED],
    )?;
    let r = env.get("backend-namespaces", "any.example", "/", &[])?;
    answered(&r, 200, Some("web-backend"), "GET /")
}

/// `(path, expected backend or None for 404)` through `gateway` with `host`.
fn paths(env: &Env, gateway: &str, host: &str, cases: &[(&str, &[&str], Option<&str>)]) -> Check {
    for (path, headers, backend) in cases {
        let r = env.get(gateway, host, path, headers)?;
        let code = if backend.is_some() { 200 } else { 404 };
        answered(&r, code, *backend, &format!("{host}{path} {headers:?}"))?;
    }
    Ok(())
}

fn exact_path_matching(env: &Env) -> Check {
    paths(
        env,
        "same-namespace",
        "any.example",
        &[
            ("/one", &[], Some("infra-backend-v1")),
            ("/two", &[], Some("infra-backend-v2")),
            ("/", &[], None),
            ("/one/example", &[], None),
            ("/Two", &[], None),
        ],
    )
}

fn matching(env: &Env) -> Check {
    paths(
        env,
        "same-namespace",
        "any.example",
        &[
            ("/", &[], Some("infra-backend-v1")),
            ("/example", &[], Some("infra-backend-v1")),
            ("/v2", &[], Some("infra-backend-v2")),
            ("/v2/example", &[], Some("infra-backend-v2")),
            ("/v2example", &[], Some("infra-backend-v1")),
            ("/", &["version: two"], Some("infra-backend-v2")),
        ],
    )
}

fn matching_across_routes(env: &Env) -> Check {
    let gw = "same-namespace";
    paths(
        env,
        gw,
        "example.com",
        &[
            ("/", &[], Some("infra-backend-v1")),
            ("/example", &[], Some("infra-backend-v1")),
            ("/v2", &[], Some("infra-backend-v2")),
            ("/", &["version: two"], Some("infra-backend-v2")),
        ],
    )?;
    paths(
        env,
        gw,
        "test.example.com",
        &[
            ("/v2", &[], Some("infra-backend-v1")),
            ("/", &["version: two"], Some("infra-backend-v1")),
        ],
    )?;
    paths(env, gw, "other.example.com", &[("/", &[], None)])
}

fn header_matching(env: &Env) -> Check {
    paths(
        env,
        "same-namespace",
        "any.example",
        &[
            ("/", &["version: one"], Some("infra-backend-v1")),
            ("/", &["version: two"], Some("infra-backend-v2")),
            (
                "/",
                &["version: two", "color: orange"],
                Some("infra-backend-v1"),
            ),
            ("/", &["color: blue"], Some("infra-backend-v1")),
            ("/", &["color: green"], Some("infra-backend-v1")),
            ("/", &["color: red"], None),
            ("/", &[], None),
        ],
    )
}

fn hostname_intersection(env: &Env) -> Check {
    let gw = "httproute-hostname-intersection";
    for (host, path, backend) in [
        ("very.specific.com", "/s1", Some("infra-backend-v1")),
        ("non.matching.com", "/s1", None),
        ("foo.nonmatchingwildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("bar.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("foo.bar.wildcard.io", "/s2", None),
        ("non.matching.com", "/s2", None),
        ("wildcard.io", "/s2", None),
        ("very.specific.com", "/s3", Some("infra-backend-v3")),
        ("foo.specific.com", "/s3", None),
        ("foo.anotherwildcard.io", "/s4", Some("infra-backend-v1")),
        ("wildcard.io", "/s5", None),
        ("specific.but.wrong.com", "/s5", None),
    ] {
        paths(env, gw, host, &[(path, &[], backend)])?;
    }
    route_has(
        env,
        INFRA,
        "no-intersecting-hosts",
        gw,
        &[("Accepted", "False", "NoMatchingListenerHostname")],
    )
}

fn listener_hostname_matching(env: &Env) -> Check {
    let gw = "httproute-listener-hostname-matching";
    for (host, backend) in [
        ("bar.com", Some("infra-backend-v1")),
        ("foo.bar.com", Some("infra-backend-v2")),
        ("baz.bar.com", Some("infra-backend-v3")),
        ("boo.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.foo.com", Some("infra-backend-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ] {
        paths(env, gw, host, &[("/", &[], backend)])?;
    }
    Ok(())
}

fn request_header_modifier(env: &Env) -> Check {
    let gw = "same-namespace";
    let r = env.get(
        gw,
        "any.example",
        "/set",
        &["X-Header-Set: some-other-value"],
    )?;
    answered(&r, 200, Some("infra-backend-v1"), "/set")?;
    ensure(
        r.req_header("x-header-set") == Some("set-overwrites-values"),
        || {
            format!(
                "/set: backend saw x-header-set {:?}",
                r.req_header("x-header-set")
            )
        },
    )?;
    let r = env.get(gw, "any.example", "/add", &["X-Header-Add: some-value"])?;
    answered(&r, 200, Some("infra-backend-v1"), "/add")?;
    ensure(
        r.req_header("x-header-add") == Some("some-value, add-appends-values"),
        || {
            format!(
                "/add: backend saw x-header-add {:?}",
                r.req_header("x-header-add")
            )
        },
    )?;
    let r = env.get(gw, "any.example", "/remove", &["X-Header-Remove: gone"])?;
    answered(&r, 200, Some("infra-backend-v1"), "/remove")?;
    ensure(r.req_header("x-header-remove").is_none(), || {
        "/remove: backend still saw x-header-remove".to_string()
    })
}

/// Counts of answering backends over `res` (pod name without `-N`).
fn backends(res: &[Resp]) -> std::collections::BTreeMap<String, usize> {
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
fn split(res: &[Resp], want: &[(&str, f64)]) -> Check {
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

fn weight(env: &Env) -> Check {
    // Converged first (the route answers), then one measured batch.
    until(|| {
        answered(
            &env.get("same-namespace", "any.example", "/", &[])?,
            200,
            Some("infra-backend-v"),
            "GET /",
        )
    })?;
    let addr = env.gw("same-namespace", 80)?;
    let res = env.curl(
        None,
        &["-H", "Host: any.example"],
        &format!("http://{addr}/"),
        100,
    );
    ensure(res.len() == 100, || format!("{} answers of 100", res.len()))?;
    split(
        &res,
        &[
            ("infra-backend-v1", 0.7),
            ("infra-backend-v2", 0.3),
            ("infra-backend-v3", 0.0),
        ],
    )
}

fn invalid_backend(env: &Env, name: &str, reason: &str) -> Check {
    route_has(
        env,
        INFRA,
        name,
        "same-namespace",
        &[ACCEPTED, ("ResolvedRefs", "False", reason)],
    )?;
    let r = env.get("same-namespace", "any.example", "/", &[])?;
    answered(&r, 500, None, "GET / (unresolved backend)")
}

fn reference_grant(env: &Env) -> Check {
    route_has(
        env,
        INFRA,
        "reference-grant",
        "same-namespace",
        &[ACCEPTED, RESOLVED],
    )?;
    let r = env.get("same-namespace", "any.example", "/", &[])?;
    answered(&r, 200, Some("app-backend-v1"), "GET /")
}

fn invalid_cross_namespace_parent(env: &Env) -> Check {
    route_has(
        env,
        "gateway-conformance-web-backend",
        "invalid-cross-namespace-parent-ref",
        "same-namespace",
        &[("Accepted", "False", "NotAllowedByListeners")],
    )?;
    let r = env.get("same-namespace", "any.example", "/cross", &[])?;
    answered(&r, 404, None, "GET /cross")
}

fn disallowed_kind(env: &Env) -> Check {
    route_has(
        env,
        INFRA,
        "disallowed-kind",
        "tcproute-only",
        &[("Accepted", "False", "NotAllowedByListeners")],
    )
}

fn invalid_route_kind(env: &Env) -> Check {
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

fn secret_missing_reference_grant(env: &Env) -> Check {
    listener_has(
        env,
        "gateway-secret-missing-reference-grant",
        "https",
        &[("ResolvedRefs", "False", "RefNotPermitted")],
    )
    .map(drop)
}

fn secret_reference_grant_specific(env: &Env) -> Check {
    listener_has(
        env,
        "gateway-secret-reference-grant-specific",
        "https",
        &[RESOLVED],
    )
    .map(drop)
}

fn invalid_tls_configuration(env: &Env) -> Check {
    for gw in [
        "gateway-certificate-nonexistent-secret",
        "gateway-certificate-unsupported-kind",
        "gateway-certificate-malformed-secret",
    ] {
        listener_has(
            env,
            gw,
            "https",
            &[("ResolvedRefs", "False", "InvalidCertificateRef")],
        )?;
    }
    Ok(())
}

fn attached_routes(env: &Env) -> Check {
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

fn observed_generation_bump(env: &Env) -> Check {
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

fn https_listener(env: &Env) -> Check {
    listener_has(
        env,
        "same-namespace-with-https-listener",
        "https",
        &[RESOLVED],
    )?;
    let addr = env.gw("same-namespace-with-https-listener", 443)?;
    let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    let resolve = format!("example.org:{port}:127.0.0.1");
    let r = env
        .curl(
            None,
            &["--resolve", &resolve, "--cacert", &env.ca],
            &format!("https://example.org:{port}/"),
            1,
        )
        .pop()
        .ok_or("no answer over TLS")?;
    answered(
        &r,
        200,
        Some("infra-backend-v1"),
        "GET https://example.org/",
    )
}

// ---- mesh profile ----

const CLIENT: &str = "gateway-conformance-mesh/client-0";
const CONSUMER: &str = "gateway-conformance-mesh-consumer/client-0";

fn mesh_basic(env: &Env) -> Check {
    let r = env.pod_get(CLIENT, "http://echo/", &[])?;
    answered(&r, 200, Some("echo-v"), "client → echo")
}

fn mesh_simple(env: &Env) -> Check {
    let res = env.curl(Some(CLIENT), &[], "http://echo/", 20);
    let got = backends(&res);
    ensure(got.len() == 1 && got.get("echo-v1") == Some(&20), || {
        format!("want all 20 on echo-v1: {got:?}")
    })
}

fn mesh_matching(env: &Env) -> Check {
    for (path, headers, backend) in [
        ("/", &[][..], "echo-v1"),
        ("/example", &[], "echo-v1"),
        ("/v2", &[], "echo-v2"),
        ("/v2/example", &[], "echo-v2"),
        ("/v2example", &[], "echo-v1"),
        ("/", &["version: two"], "echo-v2"),
    ] {
        let r = env.pod_get(CLIENT, &format!("http://echo{path}"), headers)?;
        answered(&r, 200, Some(backend), &format!("echo{path} {headers:?}"))?;
    }
    Ok(())
}

fn mesh_weight(env: &Env) -> Check {
    until(|| {
        let got = backends(&env.curl(Some(CLIENT), &[], "http://echo/", 10));
        ensure(got.keys().all(|k| k.starts_with("echo-v")), || {
            format!("{got:?}")
        })
    })?;
    let res = env.curl(Some(CLIENT), &[], "http://echo/", 100);
    ensure(res.len() == 100, || format!("{} answers of 100", res.len()))?;
    split(&res, &[("echo-v1", 0.7), ("echo-v2", 0.3)])
}

fn mesh_consumer_route(env: &Env) -> Check {
    let url = "http://echo-v1.gateway-conformance-mesh/";
    let r = env.pod_get(CONSUMER, url, &[])?;
    answered(&r, 200, Some("echo-v1"), "consumer → echo-v1")?;
    ensure(
        r.resp_header("x-header-set").as_deref() == Some("set"),
        || format!("consumer: x-header-set {:?}", r.resp_header("x-header-set")),
    )?;
    let r = env.pod_get(CLIENT, url, &[])?;
    answered(&r, 200, Some("echo-v1"), "producer → echo-v1")?;
    ensure(r.resp_header("x-header-set").is_none(), || {
        "producer namespace got the consumer route's header".to_string()
    })
}

/// MeshFrontend: the Service's route applies to calls to the Service, not
/// to calls to one of its pods by address.
fn mesh_frontend(env: &Env) -> Check {
    let r = env.pod_get(CLIENT, "http://echo-v2/", &[])?;
    answered(&r, 200, Some("echo-v2"), "client → echo-v2 Service")?;
    ensure(
        r.resp_header("x-header-set").as_deref() == Some("set"),
        || format!("Service: x-header-set {:?}", r.resp_header("x-header-set")),
    )?;
    let ip = pod_ip(&env.mesh, "echo-v2-0");
    let r = env.pod_get(CLIENT, &format!("http://{ip}:8080/"), &[])?;
    answered(&r, 200, Some("echo-v2"), "client → echo-v2 pod IP")?;
    ensure(r.resp_header("x-header-set").is_none(), || {
        "pod IP: the Service's route applied".to_string()
    })
}

struct Scenario {
    profile: &'static str,
    /// The upstream test's ShortName.
    name: &'static str,
    files: &'static [&'static str],
    check: fn(&Env) -> Check,
}

const HTTP: &str = "GATEWAY-HTTP";
const MESH: &str = "MESH-HTTP";

fn invalid_nonexistent(env: &Env) -> Check {
    invalid_backend(env, "invalid-nonexistent-backend-ref", "BackendNotFound")
}
fn invalid_kind(env: &Env) -> Check {
    invalid_backend(env, "invalid-backend-ref-kind", "InvalidKind")
}
fn invalid_cross_ns_backend(env: &Env) -> Check {
    invalid_backend(
        env,
        "invalid-cross-namespace-backend-ref",
        "RefNotPermitted",
    )
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        profile: HTTP,
        name: "HTTPRouteSimpleSameNamespace",
        files: &["simple-same-namespace.yaml"],
        check: simple_same_namespace,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteCrossNamespace",
        files: &["cross-namespace.yaml"],
        check: cross_namespace,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteExactPathMatching",
        files: &["exact-path-matching.yaml"],
        check: exact_path_matching,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteMatching",
        files: &["matching.yaml"],
        check: matching,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteMatchingAcrossRoutes",
        files: &["matching-across-routes.yaml"],
        check: matching_across_routes,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteHeaderMatching",
        files: &["header-matching.yaml"],
        check: header_matching,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteHostnameIntersection",
        files: &["hostname-intersection.yaml"],
        check: hostname_intersection,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteListenerHostnameMatching",
        files: &["listener-hostname-matching.yaml"],
        check: listener_hostname_matching,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteRequestHeaderModifier",
        files: &["request-header-modifier.yaml"],
        check: request_header_modifier,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteWeight",
        files: &["weight.yaml"],
        check: weight,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteInvalidNonExistentBackendRef",
        files: &["invalid-nonexistent-backend.yaml"],
        check: invalid_nonexistent,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteInvalidBackendRefUnknownKind",
        files: &["invalid-backend-kind.yaml"],
        check: invalid_kind,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteInvalidCrossNamespaceBackendRef",
        files: &["invalid-cross-namespace-backend.yaml"],
        check: invalid_cross_ns_backend,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteReferenceGrant",
        files: &["reference-grant.yaml"],
        check: reference_grant,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteInvalidCrossNamespaceParentRef",
        files: &["invalid-cross-namespace-parent.yaml"],
        check: invalid_cross_namespace_parent,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteDisallowedKind",
        files: &["disallowed-kind.yaml"],
        check: disallowed_kind,
    },
    Scenario {
        profile: HTTP,
        name: "GatewayInvalidRouteKind",
        files: &["invalid-route-kind.yaml"],
        check: invalid_route_kind,
    },
    Scenario {
        profile: HTTP,
        name: "GatewaySecretMissingReferenceGrant",
        files: &["secret-missing-reference-grant.yaml"],
        check: secret_missing_reference_grant,
    },
    Scenario {
        profile: HTTP,
        name: "GatewaySecretReferenceGrantSpecific",
        files: &["secret-reference-grant-specific.yaml"],
        check: secret_reference_grant_specific,
    },
    Scenario {
        profile: HTTP,
        name: "GatewayInvalidTLSConfiguration",
        files: &["invalid-tls-configuration.yaml"],
        check: invalid_tls_configuration,
    },
    Scenario {
        profile: HTTP,
        name: "GatewayWithAttachedRoutes",
        files: &["attached-routes.yaml"],
        check: attached_routes,
    },
    Scenario {
        profile: HTTP,
        name: "GatewayObservedGenerationBump",
        files: &["observed-generation-bump.yaml"],
        check: observed_generation_bump,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteHTTPSListener",
        files: &["https-listener.yaml"],
        check: https_listener,
    },
    Scenario {
        profile: MESH,
        name: "MeshBasic",
        files: &[],
        check: mesh_basic,
    },
    Scenario {
        profile: MESH,
        name: "MeshHTTPRouteSimpleSameNamespace",
        files: &["mesh-simple-same-namespace.yaml"],
        check: mesh_simple,
    },
    Scenario {
        profile: MESH,
        name: "MeshHTTPRouteMatching",
        files: &["mesh-matching.yaml"],
        check: mesh_matching,
    },
    Scenario {
        profile: MESH,
        name: "MeshHTTPRouteWeight",
        files: &["mesh-weight.yaml"],
        check: mesh_weight,
    },
    Scenario {
        profile: MESH,
        name: "MeshConsumerRoute",
        files: &["mesh-consumer-route.yaml"],
        check: mesh_consumer_route,
    },
    Scenario {
        profile: MESH,
        name: "MeshFrontend",
        files: &["mesh-frontend.yaml"],
        check: mesh_frontend,
    },
];

#[test]
fn gateway_api_conformance_core_http_and_mesh() {
    let mesh = Local::new();
    let (ca, cert, key) = certs("gateway-conformance-ca", "example.org");
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let env = Env {
        ca: mesh.file("ca.pem", &ca),
        cert_b64: b64(&cert),
        key_b64: b64(&key),
        mesh,
    };
    let base = env.data("base.yaml");
    env.mesh.ok(&["up", "-f", &base]);

    let only = std::env::var("GWCONF_ONLY").ok();
    let mut results: Vec<(&str, &str, Result<(), String>, Duration)> = Vec::new();
    for s in SCENARIOS {
        if only.as_deref().is_some_and(|o| !s.name.contains(o)) {
            continue;
        }
        let started = Instant::now();
        let files: Vec<String> = s.files.iter().map(|f| env.data(f)).collect();
        let mut args = vec!["apply"];
        for f in &files {
            args.extend(["-f", f.as_str()]);
        }
        let res = if files.is_empty() {
            until(|| (s.check)(&env))
        } else {
            let out = env.mesh.meshctl(&args);
            if out.status.success() {
                until(|| (s.check)(&env))
            } else {
                Err(format!("apply refused: {}", text(&out)))
            }
        };
        if !files.is_empty() {
            args[0] = "delete";
            env.mesh.ok(&args);
        }
        println!(
            "{:<12} {:<44} {}",
            s.profile,
            s.name,
            if res.is_ok() { "pass" } else { "FAIL" }
        );
        results.push((s.profile, s.name, res, started.elapsed()));
    }
    println!("\nprofile       passed / listed");
    for p in [HTTP, MESH] {
        let listed = results.iter().filter(|r| r.0 == p).count();
        let passed = results.iter().filter(|r| r.0 == p && r.2.is_ok()).count();
        println!("{p:<12}  {passed} / {listed}");
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(p, n, r, t)| r.as_ref().err().map(|e| format!("{p} {n} ({t:?}): {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
}
