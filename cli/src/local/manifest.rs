//! Reading the YAML given to `meshctl local`: Kubernetes objects become the
//! namespaces, services and pods to create; Istio resources and Secrets go to
//! the agent as written; kinds a local node has no use for (ConfigMaps...) are
//! reported and skipped. Errors name the file and the document.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// One pod to create: a workload replica or a bare Pod.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    /// `(apiVersion, kind, name)` of the controller, for the injector's workload name.
    pub owner: Option<(String, String, String)>,
    /// A Pod object (metadata + spec) as the API server would hold it.
    pub pod: Value,
}

/// Everything read from the inputs.
#[derive(Debug, Default, Clone)]
pub struct Manifest {
    /// Namespace documents: name → labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub services: Vec<Value>,
    pub service_accounts: Vec<Value>,
    pub pods: Vec<PodSpec>,
    /// `networking.istio.io` / `security.istio.io` / `telemetry.istio.io` and
    /// Gateway API (`gateway.networking.k8s.io`) objects, with their source.
    pub mesh: Vec<(String, Value)>,
    /// Secrets (gateway `credentialName`s), checked and with `stringData`
    /// folded into `data` as the API server stores them.
    pub secrets: Vec<Value>,
    /// `Kind ns/name` of what was skipped.
    pub skipped: Vec<String>,
    /// ServiceMeshControlPlanes, with their source ([`super::smcp`]).
    pub smcps: Vec<(String, Value)>,
    /// Messages about accepted objects that are not applied.
    pub notes: Vec<String>,
    /// ServiceMeshMemberRolls / ServiceMeshMembers, with their source.
    pub membership: Vec<(String, Value)>,
}

/// The YAML/JSON files named by `-f`: files as given, folders recursively, sorted.
pub fn files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            collect(input, &mut found)?;
            found.sort();
            out.extend(found);
        } else if input.is_file() {
            out.push(input.clone());
        } else {
            bail!("{}: no such file or folder", input.display());
        }
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Every object of the inputs (Lists flattened), each with `file#doc` for messages.
pub fn objects(inputs: &[PathBuf]) -> anyhow::Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for path in files(inputs)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let at = format!("{} (document {})", path.display(), i + 1);
            let v: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| anyhow::anyhow!("{at}: not valid YAML: {e}"))?;
            if v.is_null() {
                continue;
            }
            if !v.is_object() {
                bail!("{at}: expected a Kubernetes object, found {v}");
            }
            if v["kind"] == "List" {
                for item in v["items"].as_array().cloned().unwrap_or_default() {
                    out.push((at.clone(), item));
                }
            } else {
                out.push((at, v));
            }
        }
    }
    Ok(out)
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_mesh_kind(api_version: &str) -> bool {
    api_version.starts_with("networking.istio.io/")
        || api_version.starts_with("security.istio.io/")
        || api_version.starts_with("telemetry.istio.io/")
        || is_gateway_api(api_version)
}

/// `gateway.networking.k8s.io` objects go to the agent like Istio's (it
/// translates them); a Gateway of a deployed class also brings its pods.
pub fn is_gateway_api(api_version: &str) -> bool {
    api_version.starts_with("gateway.networking.k8s.io/")
}

/// Sorts the objects into a [`Manifest`]; `default_ns` is used where a document
/// names none (like `kubectl apply -n`).
pub fn read(inputs: &[PathBuf], default_ns: &str) -> anyhow::Result<Manifest> {
    from_objects(objects(inputs)?, default_ns)
}

/// [`read`] over objects already parsed (each with where it came from).
pub fn from_objects(objs: Vec<(String, Value)>, default_ns: &str) -> anyhow::Result<Manifest> {
    let mut m = Manifest::default();
    // Generated objects (a Gateway API Gateway's deployment) join the queue.
    let mut queue: std::collections::VecDeque<(String, Value)> = objs.into();
    while let Some((at, mut v)) = queue.pop_front() {
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let api = v["apiVersion"].as_str().unwrap_or_default().to_string();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if kind.is_empty() || api.is_empty() {
            bail!("{at}: missing apiVersion or kind");
        }
        if name.is_empty() {
            bail!("{at}: {kind} has no metadata.name");
        }
        if kind != "Namespace" && v["metadata"]["namespace"].as_str().is_none() {
            v["metadata"]["namespace"] = json!(default_ns);
        }
        let ns = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "Namespace" => {
                m.namespaces
                    .insert(name, labels_of(&v["metadata"]["labels"]));
            }
            "Service" => m.services.push(v),
            "ServiceAccount" => m.service_accounts.push(v),
            "Secret" if api == "v1" => m.secrets.push(
                super::secret::normalize(v).with_context(|| format!("{at}: Secret {ns}/{name}"))?,
            ),
            "Pod" => m.pods.push(PodSpec {
                name: name.clone(),
                namespace: ns,
                owner: None,
                pod: pod_object(&name, &v["metadata"], &v["spec"])
                    .with_context(|| format!("{at}: Pod {name}"))?,
            }),
            "Deployment" | "StatefulSet" | "ReplicaSet" | "DaemonSet" => {
                let replicas = match kind.as_str() {
                    "DaemonSet" => 1,
                    _ => v["spec"]["replicas"].as_u64().unwrap_or(1),
                };
                if replicas > 20 {
                    bail!("{at}: {kind} {name} asks for {replicas} replicas; a local node runs at most 20 per workload");
                }
                let tmpl = &v["spec"]["template"];
                if !tmpl["spec"]["containers"].is_array() {
                    bail!("{at}: {kind} {name} has no spec.template.spec.containers");
                }
                for n in 0..replicas {
                    let pod_name = format!("{name}-{n}");
                    let mut meta = tmpl["metadata"].clone();
                    if !meta.is_object() {
                        meta = json!({});
                    }
                    meta["namespace"] = json!(ns);
                    m.pods.push(PodSpec {
                        name: pod_name.clone(),
                        namespace: ns.clone(),
                        owner: Some((api.clone(), kind.clone(), name.clone())),
                        pod: pod_object(&pod_name, &meta, &tmpl["spec"])
                            .with_context(|| format!("{at}: {kind} {name}"))?,
                    });
                }
            }
            "Gateway" if api.starts_with("gateway.networking.k8s.io/") => {
                for o in gateway_api_deployment(&at, &v)? {
                    queue.push_back((format!("{at} (deployment of Gateway {ns}/{name})"), o));
                }
                m.mesh.push((at, v));
            }
            _ if super::smcp::is_smcp(&v) => m.smcps.push((at, v)),
            _ if super::smcp::is_membership(&v) => m.membership.push((at, v)),
            _ if is_mesh_kind(&api) => m.mesh.push((at, v)),
            _ => m.skipped.push(format!("{kind} {ns}/{name}")),
        }
    }
    Ok(m)
}

/// What Istio's automated deployment makes for a Gateway API Gateway of class
/// `istio` or `mesh` ([`mesh_api::gatewayapi::deploy`]): its ServiceAccount,
/// Deployment and Service, run here like the installed gateways. Other
/// classes get nothing.
fn gateway_api_deployment(at: &str, v: &Value) -> anyhow::Result<Vec<Value>> {
    use mesh_api::gatewayapi::{self, deploy, GatewayApiResource};
    let gw = match gatewayapi::parse(v) {
        Ok(Some(GatewayApiResource::Gateway(g))) => g,
        Ok(_) => return Ok(Vec::new()),
        Err(e) => bail!("{at}: {e}"),
    };
    if !deploy::is_deployed_class(&gw.spec.gateway_class_name) {
        return Ok(Vec::new());
    }
    deploy::objects(&gw).with_context(|| at.to_string())
}

fn pod_object(name: &str, meta: &Value, spec: &Value) -> anyhow::Result<Value> {
    let containers = spec["containers"]
        .as_array()
        .context("spec.containers is not a list")?;
    if containers.is_empty() {
        bail!("spec.containers is empty");
    }
    let mut metadata = json!({
        "name": name,
        "namespace": meta["namespace"],
    });
    for k in ["labels", "annotations"] {
        if meta[k].is_object() {
            metadata[k] = meta[k].clone();
        }
    }
    let mut spec = spec.clone();
    if spec["serviceAccountName"].as_str().is_none() {
        spec["serviceAccountName"] = json!("default");
    }
    spec["nodeName"] = json!("local");
    Ok(json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}))
}

/// Container ports of a pod's app containers: (container name, port, port name).
pub fn container_ports(pod: &Value) -> Vec<(String, u16, Option<String>)> {
    let mut out = Vec::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let cname = c["name"].as_str().unwrap_or_default().to_string();
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(port) = p["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
            {
                let pname = p["name"].as_str().map(str::to_string);
                out.push((cname.clone(), port, pname));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::gateway;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bookinfo_becomes_pods_services_and_mesh_resources() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/bookinfo");
        let m = read(
            &[
                PathBuf::from(root).join("platform/bookinfo.yaml"),
                PathBuf::from(root).join("networking/destination-rule-all.yaml"),
            ],
            "default",
        )
        .unwrap();
        let names: Vec<&str> = m.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "details-v1-0",
                "ratings-v1-0",
                "reviews-v1-0",
                "reviews-v2-0",
                "reviews-v3-0",
                "productpage-v1-0"
            ]
        );
        assert_eq!(m.services.len(), 4);
        assert_eq!(m.mesh.len(), 4);
        let reviews = &m.pods[3].pod;
        assert_eq!(reviews["metadata"]["labels"]["version"], "v2");
        assert_eq!(reviews["spec"]["serviceAccountName"], "bookinfo-reviews");
        assert_eq!(container_ports(reviews)[0].1, 9080);
    }

    #[test]
    fn a_gateway_api_gateway_of_our_class_brings_its_deployment() {
        let gw = |name: &str, class: &str| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": name},
                "spec": {"gatewayClassName": class,
                         "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
        };
        let objs = vec![
            ("a.yaml#1".to_string(), gw("edge", "istio")),
            ("a.yaml#2".to_string(), gw("other", "cilium")),
        ];
        let m = from_objects(objs, "shop").unwrap();
        let pods: Vec<(&str, &str)> = m
            .pods
            .iter()
            .map(|p| (p.namespace.as_str(), p.name.as_str()))
            .collect();
        assert_eq!(pods, [("shop", "edge-istio-0")]);
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.services[0]["metadata"]["name"], "edge-istio");
        assert_eq!(m.service_accounts.len(), 1);
        // Both Gateways still go to the agent (its translation's input).
        assert_eq!(m.mesh.len(), 2);
        // Bound to an existing gateway Service (manual deployment): nothing made.
        let mut manual = gw("bound", "istio");
        manual["spec"]["addresses"] = json!([{"type": "Hostname", "value": "istio-ingressgateway.istio-system.svc.cluster.local"}]);
        let m = from_objects(vec![("c.yaml#1".into(), manual)], "shop").unwrap();
        assert!(m.pods.is_empty() && m.services.is_empty(), "{:?}", m.pods);
        // A bad one is refused naming where it came from.
        let mut bad = gw("edge", "istio");
        bad["metadata"]["annotations"] = json!({"networking.istio.io/service-type": "Bogus"});
        let e = from_objects(vec![("b.yaml#3".into(), bad)], "shop").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("b.yaml#3") && e.contains("\"Bogus\""), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_document() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "bad.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\nkind: Pod\n",
        );
        let e = read(&[p], "default").unwrap_err().to_string();
        assert!(e.contains("bad.yaml (document 2)"), "{e}");
        assert!(e.contains("missing apiVersion"), "{e}");
        let p = write(dir.path(), "bad2.yaml", "a: [1\n");
        let e = read(&[p], "default").unwrap_err().to_string();
        assert!(e.contains("bad2.yaml (document 1): not valid YAML"), "{e}");
        let e = read(&[dir.path().join("missing.yaml")], "default")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.yaml: no such file"), "{e}");
    }

    #[test]
    fn replicas_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
        );
        let m = read(&[p], "shop").unwrap();
        let names: Vec<&str> = m.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web-0", "web-1", "web-2"]);
        assert_eq!(m.pods[0].namespace, "shop");
        assert_eq!(m.pods[0].pod["spec"]["serviceAccountName"], "default");
        assert_eq!(m.skipped, ["ConfigMap shop/c"]);
    }

    #[test]
    fn the_injector_makes_the_gateway_pod_a_router_without_capture() {
        let objs = gateway::install(&[gateway::Kind::Ingress])
            .into_iter()
            .map(|v| ("gateways".to_string(), v))
            .collect();
        let m = from_objects(objs, "default").unwrap();
        assert!(m.namespaces.contains_key(gateway::NAMESPACE));
        let [spec] = m.pods.as_slice() else {
            panic!("{:?}", m.pods)
        };
        assert_eq!(spec.name, "istio-ingressgateway-0");
        assert_eq!(spec.namespace, gateway::NAMESPACE);
        let mut pod = spec.pod.clone();
        let mesh = mesh_webhook::MeshConfig::default();
        let ctx = mesh_webhook::InjectContext {
            min_kubelet_version: None,
            workload: None,
            namespace: Some(gateway::NAMESPACE.into()),
        };
        let typed: mesh_webhook::Pod = serde_json::from_value(pod.clone()).unwrap();
        assert!(matches!(
            mesh_webhook::decide(&typed, None, &mesh),
            mesh_webhook::Decision::Inject
        ));
        mesh_webhook::inject::mutate(&mut pod, &mesh, &ctx).unwrap();
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["name"], "istio-proxy");
        assert_eq!(c["args"], json!(["router"]));
        assert!(pod["spec"]["initContainers"].is_null(), "{pod:#}");
        assert_eq!(
            pod["spec"]["serviceAccountName"],
            "istio-ingressgateway-service-account"
        );
        assert_eq!(pod["metadata"]["labels"]["istio"], "ingressgateway");
    }
}
