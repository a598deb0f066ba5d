//! Mesh profile (MESH-HTTP, GAMMA) scenarios: requests from a client pod to
//! the mesh echo Service, routed by HTTPRoutes whose parent is the Service
//! (matching, weights, consumer routes, Service vs pod address).

use crate::checks::{answered, backends, ensure, split, until};
use crate::common::pod_ip;
use crate::env::{Check, Env};

const CLIENT: &str = "gateway-conformance-mesh/client-0";
const CONSUMER: &str = "gateway-conformance-mesh-consumer/client-0";

pub fn mesh_basic(env: &Env) -> Check {
    let r = env.pod_get(CLIENT, "http://echo/", &[])?;
    answered(&r, 200, Some("echo-v"), "client → echo")
}

pub fn mesh_simple(env: &Env) -> Check {
    let res = env.curl(Some(CLIENT), &[], "http://echo/", 20);
    let got = backends(&res);
    ensure(got.len() == 1 && got.get("echo-v1") == Some(&20), || {
        format!("want all 20 on echo-v1: {got:?}")
    })
}

pub fn mesh_matching(env: &Env) -> Check {
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

pub fn mesh_weight(env: &Env) -> Check {
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

pub fn mesh_consumer_route(env: &Env) -> Check {
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
pub fn mesh_frontend(env: &Env) -> Check {
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
