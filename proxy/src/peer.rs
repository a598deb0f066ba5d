//! Peer metadata exchange: the outbound proxy tells the inbound proxy who is
//! calling (and the inbound proxy answers with who was called) in one header,
//! so both sides report `source_*` and `destination_*` metric labels, as
//! Istio's metadata exchange does. The header never reaches the apps, and it
//! goes only to mesh endpoints (see [`for_endpoint`]): an external host or an
//! unmeshed server never learns the caller's workload, namespace or identity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::metrics::Workload;

/// Parsed once: every proxied request removes or sets it, and a `&str` name
/// is parsed and validated again on each such call.
pub const HEADER: http::HeaderName = http::HeaderName::from_static("x-mesh-peer-metadata");

/// `workload=..;namespace=..;principal=..;app=..;version=..;service=..;revision=..`
pub fn encode(w: &Workload) -> http::HeaderValue {
    let clean = |s: &str| s.replace([';', '=', '\r', '\n'], "_");
    let v = format!(
        "workload={};namespace={};principal={};app={};version={};service={};revision={}",
        clean(&w.workload),
        clean(&w.namespace),
        clean(&w.principal),
        clean(&w.app),
        clean(&w.version),
        clean(&w.canonical_service),
        clean(&w.canonical_revision)
    );
    http::HeaderValue::from_str(&v)
        .unwrap_or_else(|_| http::HeaderValue::from_static("workload=unknown"))
}

/// Whether requests to an endpoint secured as `tls` carry this workload's
/// metadata (and whether its answer's metadata is believed): only a mesh
/// endpoint, one with a sidecar (`security.istio.io/tlsMode: istio`, auto
/// mTLS) or one the DestinationRule says speaks `ISTIO_MUTUAL`. Plaintext
/// (unmeshed pods, `DISABLE`, ServiceEntry hosts without a sidecar) and TLS
/// origination to external servers never do.
pub fn for_endpoint(tls: &crate::mtls::UpstreamTls) -> bool {
    use crate::mtls::UpstreamTls;
    matches!(tls, UpstreamTls::Auto(_) | UpstreamTls::IstioMutual(_))
}

/// Parses a peer header; unknown fields are ignored, missing ones are `unknown`.
pub fn decode(v: &http::HeaderValue) -> Arc<Workload> {
    let mut w = (*Workload::unknown()).clone();
    if let Ok(s) = v.to_str() {
        for (k, val) in s.split(';').filter_map(|kv| kv.split_once('=')) {
            let val: Arc<str> = Arc::from(val);
            match k {
                "workload" => w.workload = val,
                "namespace" => w.namespace = val,
                "principal" => w.principal = val,
                "app" => w.app = val,
                "version" => w.version = val,
                "service" => w.canonical_service = val,
                "revision" => w.canonical_revision = val,
                _ => {}
            }
        }
    }
    Arc::new(w)
}

/// Whether `uri` is exactly `spiffe://<td>/ns/<ns>/sa/<sa>` of `id`, without
/// formatting it.
fn is_uri_of(uri: &str, id: &mesh_api::Identity) -> bool {
    let rest = uri.strip_prefix("spiffe://");
    let rest = rest.and_then(|r| r.strip_prefix(id.trust_domain.as_str()));
    let rest = rest.and_then(|r| r.strip_prefix("/ns/"));
    let rest = rest.and_then(|r| r.strip_prefix(id.namespace.as_str()));
    let rest = rest.and_then(|r| r.strip_prefix("/sa/"));
    rest == Some(id.service_account.as_str())
}

/// A decoded header: as sent, and with principal `unknown`.
type Decoded = (Arc<Workload>, Arc<Workload>);

/// Most entries a [`PeerCache`] keeps before it starts over.
const CACHE_LIMIT: usize = 512;

/// Decoded peer headers by their exact bytes. A sidecar talks to few distinct
/// workloads, so each header is parsed (seven allocations) once, not on every
/// request. Bounded: when full it is cleared, so a peer sending ever-new
/// headers costs at most the uncached path.
#[derive(Default)]
pub struct PeerCache {
    map: Mutex<Entries>,
}

/// The decoded headers, and the one looked up last: a connection between two
/// sidecars carries the same header on every message, and comparing its 300
/// bytes is cheaper than hashing them and probing the map (together with the
/// series fast path in `metrics`, 0.8 k fewer instructions per mTLS request
/// on each side, callgrind).
#[derive(Default)]
struct Entries {
    map: HashMap<Arc<[u8]>, Decoded, foldhash::fast::RandomState>,
    last: Option<(Arc<[u8]>, Decoded)>,
}

impl PeerCache {
    /// The calling workload for metrics. The principal is what the peer proved
    /// with its certificate (`verified`), never what the header claims:
    /// `unknown` without mTLS.
    pub fn source(
        &self,
        header: &http::HeaderValue,
        verified: Option<&mesh_api::Identity>,
    ) -> Arc<Workload> {
        let (sent, anonymous) = self.lookup(header);
        match verified {
            None => anonymous,
            Some(id) if is_uri_of(&sent.principal, id) => sent,
            Some(id) => {
                let mut w = (*sent).clone();
                w.principal = Arc::from(id.to_string().as_str());
                Arc::new(w)
            }
        }
    }

    /// The called workload, as its sidecar describes itself.
    pub fn destination(&self, header: &http::HeaderValue) -> Arc<Workload> {
        self.lookup(header).0
    }

    fn lookup(&self, header: &http::HeaderValue) -> (Arc<Workload>, Arc<Workload>) {
        let key = header.as_bytes();
        {
            let mut m = self.map.lock().expect("peer cache lock");
            if let Some((k, hit)) = &m.last {
                if **k == *key {
                    return hit.clone();
                }
            }
            if let Some((k, hit)) = m.map.get_key_value(key) {
                let found = (k.clone(), hit.clone());
                m.last = Some(found.clone());
                return found.1;
            }
        }
        let sent = decode(header);
        let mut anon = (*sent).clone();
        anon.principal = Arc::from("unknown");
        let entry = (sent, Arc::new(anon));
        let key: Arc<[u8]> = key.into();
        let mut m = self.map.lock().expect("peer cache lock");
        if m.map.len() >= CACHE_LIMIT {
            m.map.clear();
        }
        m.map.insert(key.clone(), entry.clone());
        m.last = Some((key, entry.clone()));
        entry
    }
}

/// A label map as endpoints share it (one per pod, see `snapshot::Endpoint`).
type Labels = std::collections::BTreeMap<String, String>;

/// One endpoint workload: the inputs held, so their addresses stay theirs.
struct EndpointEntry {
    labels: Arc<Labels>,
    namespace: Arc<str>,
    workload: Arc<Workload>,
}

/// The destination of requests whose answer carries no peer metadata
/// (plaintext and unmeshed endpoints), from the endpoint's labels
/// ([`Workload::of_endpoint`]): built once per label map instead of on every
/// request (seven strings and an allocation each, 2 % of a plaintext
/// sidecar's instructions per request). Keyed by the label map's address,
/// which the entry's own reference keeps from being reused. Bounded like
/// [`PeerCache`]: a config push makes new label maps, and the old entries go
/// when the cache fills and starts over.
#[derive(Default)]
pub struct EndpointWorkloads {
    map: Mutex<HashMap<usize, EndpointEntry, foldhash::fast::RandomState>>,
}

impl EndpointWorkloads {
    pub fn get(&self, labels: &Arc<Labels>, namespace: &Arc<str>) -> Arc<Workload> {
        let key = Arc::as_ptr(labels) as usize;
        let mut m = self.map.lock().expect("endpoint workload lock");
        match m.get(&key) {
            Some(e) if Arc::ptr_eq(&e.labels, labels) && e.namespace == *namespace => {
                return e.workload.clone();
            }
            _ => {}
        }
        let workload = Workload::of_endpoint(labels, namespace);
        if m.len() >= CACHE_LIMIT {
            m.clear();
        }
        m.insert(
            key,
            EndpointEntry {
                labels: labels.clone(),
                namespace: namespace.clone(),
                workload: workload.clone(),
            },
        );
        workload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_never_trusts_the_claimed_principal() {
        let mut w = (*Workload::unknown()).clone();
        w.workload = Arc::from("productpage-v1");
        w.principal = Arc::from("spiffe://cluster.local/ns/default/sa/bookinfo-productpage");
        let h = encode(&w);
        let cache = PeerCache::default();
        let id = |sa: &str| mesh_api::Identity {
            trust_domain: "cluster.local".into(),
            namespace: "default".into(),
            service_account: sa.into(),
        };
        // Proven identity equal to the claim: the cached value, twice the same.
        let a = cache.source(&h, Some(&id("bookinfo-productpage")));
        let b = cache.source(&h, Some(&id("bookinfo-productpage")));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a.workload, "productpage-v1");
        // Another proven identity wins over the claim; no identity → unknown.
        let c = cache.source(&h, Some(&id("bookinfo-productpagex")));
        assert_eq!(
            &*c.principal,
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpagex"
        );
        assert_eq!(&*cache.source(&h, None).principal, "unknown");
        assert_eq!(&*cache.destination(&h).principal, &*w.principal);
    }

    #[test]
    fn cache_is_bounded() {
        let cache = PeerCache::default();
        for i in 0..(CACHE_LIMIT * 2 + 3) {
            let mut w = (*Workload::unknown()).clone();
            w.workload = Arc::from(format!("w{i}").as_str());
            let got = cache.destination(&encode(&w));
            assert_eq!(&*got.workload, format!("w{i}").as_str());
        }
        assert!(cache.map.lock().unwrap().map.len() <= CACHE_LIMIT);
    }

    #[test]
    fn the_last_header_and_the_map_give_the_same_workloads() {
        let cache = PeerCache::default();
        let named = |name: &str| {
            let mut w = (*Workload::unknown()).clone();
            w.workload = Arc::from(name);
            encode(&w)
        };
        let (a, b) = (named("a"), named("b"));
        let first = cache.destination(&a);
        // The last one looked up; then from the map after another.
        assert!(Arc::ptr_eq(&cache.destination(&a), &first));
        assert_eq!(&*cache.destination(&b).workload, "b");
        assert!(Arc::ptr_eq(&cache.destination(&a), &first));
        assert_eq!(&*cache.destination(&b).workload, "b");
        // Equal bytes in another value hit as well.
        let a2 = http::HeaderValue::from_bytes(a.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&cache.destination(&a2), &first));
    }

    #[test]
    fn only_mesh_endpoints_get_metadata() {
        use crate::mtls::UpstreamTls;
        let sans: crate::mtls::originate::Sans = Vec::<String>::new().into();
        assert!(for_endpoint(&UpstreamTls::Auto(sans.clone())));
        assert!(for_endpoint(&UpstreamTls::IstioMutual(sans)));
        assert!(!for_endpoint(&UpstreamTls::Plaintext));
    }

    #[test]
    fn round_trip() {
        let mut w = (*Workload::unknown()).clone();
        w.workload = Arc::from("reviews-v1");
        w.version = Arc::from("v1;x=y");
        let back = decode(&encode(&w));
        assert_eq!(&*back.workload, "reviews-v1");
        assert_eq!(&*back.version, "v1_x_y");
        assert_eq!(&*back.namespace, "unknown");
    }

    #[test]
    fn endpoint_workloads_are_built_once_per_label_map() {
        let cache = EndpointWorkloads::default();
        let labels = Arc::new(Labels::from([
            ("app".to_string(), "reviews".to_string()),
            ("version".to_string(), "v2".to_string()),
        ]));
        let (shop, books): (Arc<str>, Arc<str>) = (Arc::from("shop"), Arc::from("books"));
        let a = cache.get(&labels, &shop);
        assert!(Arc::ptr_eq(&a, &cache.get(&labels, &shop)));
        assert_eq!(
            (&*a.app, &*a.version, &*a.namespace),
            ("reviews", "v2", "shop")
        );
        // Equal labels in another map, or another namespace: their own values.
        let copy = Arc::new((*labels).clone());
        assert!(!Arc::ptr_eq(&a, &cache.get(&copy, &shop)));
        assert_eq!(&*cache.get(&labels, &books).namespace, "books");
        for _ in 0..CACHE_LIMIT * 2 {
            cache.get(&Arc::new(Labels::new()), &shop);
        }
        assert!(cache.map.lock().unwrap().len() <= CACHE_LIMIT);
    }
}
