//! The fake's HTTP side: one handler that records the request, parses the
//! path the way the API server does (`/api/v1` or `/apis/GROUP/VERSION`, then
//! an optional `namespaces/NS`, the resource, an optional name and
//! subresource) and answers from the store of [`Fake`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::reply::{query_param, status};
use super::store::{cluster_scoped, Fake, Seen};

fn ok(v: &Value, code: StatusCode) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

/// A parsed resource path.
struct Target {
    /// Collection of every namespace, e.g. `/api/v1/pods` (the store's key).
    collection: String,
    ns: Option<String>,
    name: Option<String>,
    /// What follows the name (`proxy/...`, `portforward`, `status`).
    sub: Option<String>,
}

fn parse(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => (Some(ns.to_string()), {
            let mut r = vec![*plural];
            r.extend_from_slice(rest);
            r
        }),
        _ => (None, rest.to_vec()),
    };
    let plural = rest.first().filter(|p| !p.is_empty())?;
    Some(Target {
        collection: format!("{prefix}/{plural}"),
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: (rest.len() > 2).then(|| rest[2..].join("/")),
    })
}

/// Records the request, answers it, and records the answer's status.
pub async fn route(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|a| a.to_str().ok())
        .map(String::from);
    let uri = req.uri().to_string();
    let uri = uri.find("/").map(|i| uri[i..].to_string()).unwrap_or(uri);
    let i = {
        let mut db = fake.db();
        db.requests.push(Seen {
            method: req.method().to_string(),
            uri,
            auth: auth.clone(),
            status: 0,
        });
        db.requests.len() - 1
    };
    let resp = answer(&fake, req, auth.as_deref()).await;
    if let Some(r) = fake.db().requests.get_mut(i) {
        r.status = resp.status().as_u16();
    }
    resp
}

async fn answer(fake: &Arc<Fake>, req: Request, auth: Option<&str>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let want = fake.db().token.clone();
    if let Some(t) = want {
        if auth != Some(format!("Bearer {t}").as_str()) {
            return status(401, "Unauthorized", "Unauthorized".into());
        }
    }
    let not_found = || status(404, "NotFound", format!("the server could not find {path}"));
    if method == Method::POST && path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        let body = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let tr = serde_json::from_slice::<Value>(&body).unwrap_or_default();
        return ok(&fake.review(&tr), StatusCode::CREATED);
    }
    let Some(t) = parse(&path) else {
        return not_found();
    };
    if fake.db().absent.contains(&t.collection) {
        return not_found();
    }
    let kind_of = |c: &str| c.rsplit('/').next().unwrap_or_default().to_string();
    if let Some(sub) = &t.sub {
        // Cluster-scoped objects (GatewayClass) have a status too.
        let Some(name) = &t.name else {
            return not_found();
        };
        let ns = &t.ns.clone().unwrap_or_default();
        if t.collection == "/api/v1/pods" && sub == "portforward" {
            return super::portforward::handle(fake.clone(), ns, name, &query, req).await;
        }
        if t.collection == "/api/v1/pods" && sub.starts_with("proxy") {
            return proxy(fake, ns, name, sub.trim_start_matches("proxy")).await;
        }
        if sub == "status" && req.method() == Method::PATCH {
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            return patch_status(fake, &t, name, &body);
        }
        return not_found();
    }
    let merge = req
        .headers()
        .get("content-type")
        .is_some_and(|c| c.as_bytes().starts_with(b"application/merge-patch+json"));
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let key = |ns: &Option<String>, name: &str| {
        let ns = if cluster_scoped(&t.collection) {
            String::new()
        } else {
            ns.clone().unwrap_or_default()
        };
        (ns, name.to_string())
    };
    let stored = |name: &str| {
        fake.db()
            .objects
            .get(&t.collection)
            .and_then(|m| m.get(&key(&t.ns, name)))
            .cloned()
    };
    let missing = |name: &str| {
        status(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind_of(&t.collection)),
        )
    };
    match (method, &t.name) {
        (Method::GET, None) => {
            if !query_param(&query, "watch").is_some_and(|w| w == "true" || w == "1") {
                fake.lists_held(&t.collection).await;
            }
            list_or_watch(fake.clone(), &t.collection, t.ns.as_deref(), &query)
        }
        (Method::GET, Some(name)) => {
            // Read first, then wait: racing readers all see the same state.
            let obj = stored(name);
            if let Some(b) = fake.held(auth) {
                let _ = tokio::time::timeout(Duration::from_secs(5), b.wait()).await;
            }
            match obj {
                Some(o) => ok(&o, StatusCode::OK),
                None => missing(name),
            }
        }
        (Method::POST, None) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON".into());
            };
            if let Some(ns) = &t.ns {
                obj["metadata"]["namespace"] = ns.clone().into();
            }
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // Checked and stored under one lock: two racing creates, one wins.
            let mut db = fake.db();
            let exists = db
                .objects
                .get(&t.collection)
                .is_some_and(|m| m.contains_key(&key(&t.ns, &name)));
            if exists {
                let c = kind_of(&t.collection);
                return status(
                    409,
                    "AlreadyExists",
                    format!("{c} \"{name}\" already exists"),
                );
            }
            ok(
                &fake.store_locked(&mut db, &t.collection, obj),
                StatusCode::CREATED,
            )
        }
        (Method::PUT, Some(name)) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON".into());
            };
            if let Some(ns) = &t.ns {
                obj["metadata"]["namespace"] = ns.clone().into();
            }
            let mut db = fake.db();
            let Some(cur_rv) = db
                .objects
                .get(&t.collection)
                .and_then(|m| m.get(&key(&t.ns, name)))
                .map(|c| c["metadata"]["resourceVersion"].clone())
            else {
                drop(db);
                return missing(name);
            };
            let want = &obj["metadata"]["resourceVersion"];
            if !want.is_null() && *want != cur_rv {
                let c = kind_of(&t.collection);
                return status(409, "Conflict", format!("Operation cannot be fulfilled on {c} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"));
            }
            ok(
                &fake.store_locked(&mut db, &t.collection, obj),
                StatusCode::OK,
            )
        }
        (Method::PATCH, Some(name)) => {
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "patch is not JSON".into());
            };
            if patch.is_array() || merge {
                // RFC 6902 (a failed `test`, someone wrote in between, is a
                // conflict) or RFC 7386 merge patch (null removes a key).
                let json6902 = if patch.is_array() {
                    let Ok(p) = serde_json::from_value::<json_patch::Patch>(patch.clone()) else {
                        return status(400, "BadRequest", "not an RFC 6902 patch".into());
                    };
                    Some(p)
                } else {
                    None
                };
                // Read, patch and write under one lock, as etcd's transaction.
                let mut db = fake.db();
                let Some(mut obj) = db
                    .objects
                    .get(&t.collection)
                    .and_then(|m| m.get(&key(&t.ns, name)))
                    .cloned()
                else {
                    drop(db);
                    return missing(name);
                };
                match &json6902 {
                    Some(p) => {
                        if let Err(e) = json_patch::patch(&mut obj, p) {
                            return status(409, "Conflict", e.to_string());
                        }
                    }
                    None => json_patch::merge(&mut obj, &patch),
                }
                return ok(
                    &fake.store_locked(&mut db, &t.collection, obj),
                    StatusCode::OK,
                );
            }
            // Server-side apply: the applied object is stored as sent, but
            // `status` (a subresource) stays as it was.
            let mut obj = patch;
            if let Some(ns) = &t.ns {
                obj["metadata"]["namespace"] = ns.clone().into();
            }
            obj["metadata"]["name"] = name.clone().into();
            if obj.get("status").is_none() {
                if let Some(st) = stored(name).and_then(|o| o.get("status").cloned()) {
                    obj["status"] = st;
                }
            }
            let kind = super::store::kind_of(&obj);
            fake.apply(obj.clone());
            let ns = t.ns.clone().unwrap_or_default();
            let stored = fake.get(&kind, &ns, name).unwrap_or(obj);
            ok(&stored, StatusCode::OK)
        }
        (Method::DELETE, Some(name)) => {
            let k = key(&t.ns, name);
            let mut db = fake.db();
            let Some(mut obj) = db.objects.get_mut(&t.collection).and_then(|m| m.remove(&k)) else {
                drop(db);
                return missing(name);
            };
            db.rv += 1;
            obj["metadata"]["resourceVersion"] = db.rv.to_string().into();
            fake.record_deleted(&mut db, &t.collection, obj.clone());
            ok(&obj, StatusCode::OK)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{path}: method not allowed"),
        ),
    }
}

fn list_or_watch(fake: Arc<Fake>, path: &str, ns: Option<&str>, query: &str) -> Response {
    let q: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let in_ns = |obj: &Value| ns.is_none_or(|n| obj["metadata"]["namespace"] == n);
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let sel = query_param(query, "labelSelector").unwrap_or_default();
        let matches = |p: &Value| {
            sel.split(',').filter(|s| !s.is_empty()).all(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                p["metadata"]["labels"][k] == v
            })
        };
        let mut db = fake.db();
        db.lists += 1;
        let items: Vec<Value> = db
            .objects
            .get(path)
            .map(|m| {
                m.values()
                    .filter(|o| in_ns(o) && matches(o))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let body = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": db.rv.to_string()}, "items": items});
        return ok(&body, StatusCode::OK);
    }
    let path = path.to_string();
    let ns = ns.map(String::from);
    let in_ns = move |ev: &Value| {
        ns.as_ref()
            .is_none_or(|n| ev["object"]["metadata"]["namespace"] == *n)
    };
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel::<bytes::Bytes>();
    let line = |v: &Value| bytes::Bytes::from(format!("{v}\n"));
    // Subscribe before reading the backlog so nothing falls in between.
    let mut live = fake.live.subscribe();
    let mut backlog_rv = from;
    {
        let mut db = fake.db();
        if from < db.compacted {
            db.gone += 1;
            let status = json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 410, "reason": "Expired", "message": format!("too old resource version: {from} ({})", db.compacted)}});
            let _ = tx.send(line(&status));
            drop(tx);
            return stream_response(rx);
        }
        for (rv, p, ev) in &db.log {
            if *rv > from && *p == path && in_ns(ev) {
                let _ = tx.send(line(ev));
                backlog_rv = *rv;
            }
        }
    }
    let mut dropped = fake.drop_watches.subscribe();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let event_rv = |ev: &Value| -> u64 {
        ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    tokio::spawn(async move {
        // Newest version this stream has delivered; a bookmark may only claim
        // a version once every event of this collection up to it was sent
        // (the API server's guarantee), so a stream that missed events during
        // a partition never bookmarks past them.
        let mut delivered = backlog_rv;
        let mut tick = tokio::time::interval(fake.bookmark_every);
        loop {
            tokio::select! {
                _ = dropped.changed() => return,
                ev = live.recv() => match ev {
                    // Skips what the backlog already sent.
                    Ok((p, ev)) if p == path && event_rv(&ev) > delivered => {
                        delivered = event_rv(&ev);
                        if in_ns(&ev) && tx.send(line(&ev)).is_err() { return }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let mut out = Vec::new();
                    let rv = {
                        let mut db = fake.db();
                        if db.partitioned { continue }
                        // Under the lock every recorded event is already in
                        // the channel: send those first, then the bookmark.
                        while let Ok((p, ev)) = live.try_recv() {
                            if p == path && event_rv(&ev) > delivered {
                                delivered = event_rv(&ev);
                                out.push(ev);
                            }
                        }
                        if db.missed.get(&path).is_some_and(|m| *m > delivered) { None } else {
                            db.bookmarks += 1;
                            Some(db.rv)
                        }
                    };
                    for ev in out.iter().filter(|e| in_ns(e)) {
                        if tx.send(line(ev)).is_err() { return }
                    }
                    let Some(rv) = rv else { continue };
                    let bm = json!({"type": "BOOKMARK", "object": {"kind": "Bookmark", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}}});
                    if tx.send(line(&bm)).is_err() { return }
                }
            }
        }
    });
    stream_response(rx)
}

fn stream_response(rx: mpsc::UnboundedReceiver<bytes::Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::new(Body::from_stream(stream))
}

/// `pods/[https:]NAME:PORT/proxy/PATH`: the API server dials the pod; here the
/// real process registered in `backends` answers (through curl: plain HTTP, or
/// TLS without verification, as the API server does towards pods).
async fn proxy(fake: &Arc<Fake>, ns: &str, target: &str, sub: &str) -> Response {
    let target = target.trim_start_matches("https:");
    let (pod, port) = target.rsplit_once(':').unwrap_or((target, ""));
    if fake.get("Pod", ns, pod).is_none() {
        return status(404, "NotFound", format!("pods \"{pod}\" not found"));
    }
    let backend = fake.db().backends.get(&format!("{ns}/{target}")).cloned();
    let Some(base) = backend else {
        // What a real API server says when nothing listens on the pod's port.
        return status(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: dial tcp 10.1.0.1:{port}: connect: connection refused"),
        );
    };
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("{base}{sub}"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    match code.parse::<u16>() {
        Ok(c) if c >= 100 => (StatusCode::from_u16(c).unwrap(), body.to_string()).into_response(),
        _ => status(
            503,
            "ServiceUnavailable",
            format!(
                "error trying to reach service: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
    }
}

/// The `status` subresource: a merge patch of which only `status` counts
/// (the API server ignores the rest there).
fn patch_status(fake: &Arc<Fake>, t: &Target, name: &str, body: &[u8]) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "patch is not JSON".into());
    };
    let ns = if cluster_scoped(&t.collection) {
        String::new()
    } else {
        t.ns.clone().unwrap_or_default()
    };
    let mut db = fake.db();
    let Some(mut obj) = db
        .objects
        .get(&t.collection)
        .and_then(|m| m.get(&(ns, name.to_string())))
        .cloned()
    else {
        drop(db);
        return status(404, "NotFound", format!("{name:?} not found"));
    };
    let mut st = obj["status"].take();
    json_patch::merge(&mut st, &patch["status"]);
    obj["status"] = st;
    ok(
        &fake.store_locked(&mut db, &t.collection, obj),
        StatusCode::OK,
    )
}
