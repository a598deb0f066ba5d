//! The embedded trace collector of a local mesh: a Zipkin v2 receiver
//! (`POST /api/v2/spans`, JSON) that `meshctl local up` starts in the node
//! namespace on the pods' gateway address, port 9411, so every sidecar reaches
//! it as a cluster's sidecars reach `zipkin.istio-system:9411`. It keeps the
//! last spans in memory (a bounded ring) and answers Zipkin's query API
//! (`GET /api/v2/traces`, `GET /api/v2/services`) for `meshctl local dashboard`.
//!
//! It is the mesh's tracing backend only when the user's mesh config names
//! none: [`with_default_backend`] adds its address as
//! `defaultConfig.tracing.zipkin.address` to the mesh config the agent reads,
//! unless tracing is off or the config has its own backend (a legacy zipkin
//! address or a `defaultProviders.tracing` provider), which wins as in Istio.
//! Sampling is left alone: Istio's default of 1 % applies unless the mesh
//! config sets `defaultConfig.tracing.sampling`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use crate::zipkin::{parse_batch, Store};

/// The collector's port on the node's gateway address (Zipkin's).
pub const PORT: u16 = 9411;
/// Spans kept in memory by default.
pub const DEFAULT_SPANS: usize = 10_000;
/// The line the collector prints once it listens (`up` waits for it).
pub const READY: &str = "meshctl trace collector listening";

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("binding the trace collector to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("trace collector: {0}")]
    Io(#[from] std::io::Error),
    #[error("mesh config: {0}")]
    MeshConfig(String),
}

/// The mesh config text the agent reads, and whether the embedded collector is
/// its tracing backend: `user` unchanged when tracing is off or it names a
/// backend of its own, else `user` with `defaultConfig.tracing.zipkin.address`
/// set to `address`.
pub fn with_default_backend(user: &str, address: &str) -> Result<(String, bool), CollectorError> {
    let mut v: Value = if user.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml_ng::from_str(user).map_err(|e| CollectorError::MeshConfig(e.to_string()))?
    };
    if v.is_null() {
        v = Value::Object(Default::default());
    }
    let Some(map) = v.as_object_mut() else {
        return Err(CollectorError::MeshConfig(format!(
            "{v} is not a YAML mapping"
        )));
    };
    let tracing_off = map.get("enableTracing") == Some(&Value::Bool(false));
    let has_provider = map
        .get("defaultProviders")
        .and_then(|d| d.get("tracing"))
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let has_zipkin = map
        .get("defaultConfig")
        .and_then(|d| d.get("tracing"))
        .and_then(|t| t.get("zipkin"))
        .and_then(|z| z.get("address"))
        .and_then(Value::as_str)
        .is_some_and(|a| !a.trim().is_empty());
    if tracing_off || has_provider || has_zipkin {
        return Ok((user.to_string(), false));
    }
    let dc = object_at(map, "defaultConfig", "defaultConfig")?;
    let t = object_at(dc, "tracing", "defaultConfig.tracing")?;
    t.insert("zipkin".into(), serde_json::json!({ "address": address }));
    let text =
        serde_yaml_ng::to_string(&v).map_err(|e| CollectorError::MeshConfig(e.to_string()))?;
    Ok((text, true))
}

/// `map[key]` as a mapping, created when absent or null; `path` names it in
/// the error when it is something else.
fn object_at<'a>(
    map: &'a mut serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, CollectorError> {
    let v = map
        .entry(key)
        .or_insert_with(|| Value::Object(Default::default()));
    if v.is_null() {
        *v = Value::Object(Default::default());
    }
    let shown = v.to_string();
    v.as_object_mut()
        .ok_or_else(|| CollectorError::MeshConfig(format!("{path} is {shown}")))
}

type Shared = Arc<Mutex<Store>>;

/// The collector's routes over `store`.
pub fn router(store: Shared) -> Router {
    Router::new()
        .route("/api/v2/spans", post(receive))
        .route("/api/v2/traces", get(traces))
        .route("/api/v2/services", get(services))
        .with_state(store)
}

async fn receive(State(store): State<Shared>, body: axum::body::Bytes) -> Response {
    match parse_batch(&body) {
        Ok(spans) => {
            store.lock().expect("span store").add(spans);
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct TracesQuery {
    limit: Option<usize>,
}

async fn traces(State(store): State<Shared>, Query(q): Query<TracesQuery>) -> Response {
    let t = store
        .lock()
        .expect("span store")
        .traces(q.limit.unwrap_or(10));
    Json(t).into_response()
}

async fn services(State(store): State<Shared>) -> Response {
    let mut names: Vec<String> = store
        .lock()
        .expect("span store")
        .traces(usize::MAX)
        .iter()
        .flatten()
        .map(|s| s.service().to_string())
        .collect();
    names.sort();
    names.dedup();
    Json(names).into_response()
}

/// Runs the collector on `listen` until killed (`meshctl local collector`).
pub fn serve(listen: SocketAddr, spans: usize) -> Result<(), CollectorError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| CollectorError::Bind {
                addr: listen,
                source,
            })?;
        println!("{READY} on {listen} (last {spans} spans kept)");
        let store = Arc::new(Mutex::new(Store::new(spans)));
        axum::serve(l, router(store)).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "10.22.0.1:9411";

    fn zipkin_of(text: &str) -> Option<String> {
        let v: Value = serde_yaml_ng::from_str(text).unwrap();
        v["defaultConfig"]["tracing"]["zipkin"]["address"]
            .as_str()
            .map(str::to_string)
    }

    #[test]
    fn the_collector_is_the_backend_only_when_the_mesh_config_names_none() {
        // No mesh config, or one without a backend: the collector, with the
        // user's fields (sampling included) kept.
        let (t, used) = with_default_backend("", ADDR).unwrap();
        assert!(used);
        assert_eq!(zipkin_of(&t).as_deref(), Some(ADDR));
        let user = "accessLogFile: /dev/stdout\ndefaultConfig:\n  tracing:\n    sampling: 100\n";
        let (t, used) = with_default_backend(user, ADDR).unwrap();
        assert!(used);
        let v: Value = serde_yaml_ng::from_str(&t).unwrap();
        assert_eq!(v["defaultConfig"]["tracing"]["sampling"], 100);
        assert_eq!(v["accessLogFile"], "/dev/stdout");
        assert_eq!(zipkin_of(&t).as_deref(), Some(ADDR));
        // The parsed result is a mesh config the agent accepts.
        mesh_webhook::config::parse_mesh_config(&t).unwrap();

        // The user's own backend wins, and the text is left as written.
        for own in [
            "defaultConfig:\n  tracing:\n    zipkin: {address: zipkin.obs:9411}\n",
            "extensionProviders:\n- name: otel\n  opentelemetry: {service: otel.obs, port: 4317}\ndefaultProviders:\n  tracing: [otel]\n",
            "enableTracing: false\n",
        ] {
            assert_eq!(
                with_default_backend(own, ADDR).unwrap(),
                (own.to_string(), false)
            );
        }
        assert!(matches!(
            with_default_backend("[1, 2]", ADDR),
            Err(CollectorError::MeshConfig(_))
        ));
    }

    #[tokio::test]
    async fn receives_spans_refuses_bad_ones_and_answers_traces() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let store = Arc::new(Mutex::new(Store::new(100)));
        tokio::spawn(async move { axum::serve(l, router(store)).await });
        let post = |body: &'static str| {
            let addr = addr.clone();
            async move {
                let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let req = format!("POST /api/v2/spans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                s.write_all(req.as_bytes()).await.unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let ok = post(r#"[{"traceId":"00000000000000010000000000000002","id":"00000000000000aa","kind":"SERVER","name":"get","timestamp":5,"duration":7,"localEndpoint":{"serviceName":"reviews.default"}}]"#).await;
        assert!(ok.starts_with("HTTP/1.1 202"), "{ok}");
        let bad = post(r#"[{"traceId":"zz","id":"00000000000000aa"}]"#).await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        assert!(bad.contains("traceId \"zz\""), "{bad}");
        let get = |path: &'static str| {
            let addr = addr.clone();
            tokio::task::spawn_blocking(move || crate::http_get::get_json(&addr, path).unwrap())
        };
        let got = get("/api/v2/traces?limit=5").await.unwrap();
        assert_eq!(got[0][0]["localEndpoint"]["serviceName"], "reviews.default");
        assert_eq!(
            got.as_array().unwrap().len(),
            1,
            "the bad batch was not kept"
        );
        let svcs = get("/api/v2/services").await.unwrap();
        assert_eq!(svcs, serde_json::json!(["reviews.default"]));
    }
}
