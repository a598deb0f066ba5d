//! A checked ServiceMeshControlPlane mapped onto this mesh, with no I/O: the
//! mesh config it yields over a base config ([`mesh_config`]), the objects to
//! create in the control-plane namespace ([`render`]: gateway ServiceAccount,
//! Deployment, PodDisruptionBudget and Service, and the mesh-wide
//! PeerAuthentication), and the status to write back ([`status`]).
//!
//! The gateways are the objects of `manifests/base/gateways/ingress.yaml` and
//! `manifests/components/egress-gateway/egress.yaml`, embedded and re-targeted
//! (namespace, Service settings, owner), so an SMCP install and a kustomize
//! install run the same gateway pods.

use serde_json::{json, Value};

use super::smcp::{bad, SmcpCondition, SmcpError, SmcpSpec, SmcpStatus};
use super::smcp_check::{field_report, port_of, FieldReport};
use crate::meshconfig::{AccessLogEncoding, MeshConfig, OutboundMode};
use crate::meshtracing::{ExtensionProvider, ServicePort, TracingConfig};
use crate::redirect::Selection;

const INGRESS_YAML: &str = include_str!("../../../manifests/base/gateways/ingress.yaml");
const EGRESS_YAML: &str = include_str!("../../../manifests/components/egress-gateway/egress.yaml");

/// Name of the extension provider an SMCP's Jaeger tracing becomes.
pub const TRACING_PROVIDER: &str = "ossm-jaeger";
/// Jaeger's collector port for Zipkin-format spans.
pub const JAEGER_ZIPKIN_PORT: u32 = 9411;
/// Label on every object rendered for an SMCP: its name.
pub const OWNER_LABEL: &str = "maistra.io/owner-name";
/// `app.kubernetes.io/managed-by` value on rendered objects.
pub const MANAGED_BY: &str = "mesh-agent";

/// The SMCP that owns rendered objects (its `metadata.uid` for ownerReferences).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
}

/// Everything an SMCP turns into.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub mesh: MeshConfig,
    /// Gateway objects and the PeerAuthentication, in create order.
    pub objects: Vec<Value>,
    pub fields: FieldReport,
}

/// Maps `spec` over `base`: tracing, access log, outbound policy and the
/// redirect ranges/ports; the root namespace becomes the SMCP's namespace.
/// The result is validated as any mesh config is.
pub fn mesh_config(spec: &SmcpSpec, ns: &str, base: &MeshConfig) -> Result<MeshConfig, SmcpError> {
    spec.validate()?;
    let mut m = base.clone();
    m.root_namespace = ns.to_string();
    if let Some(t) = &spec.tracing {
        match spec.tracing_type() {
            "None" => m.enable_tracing = false,
            "Jaeger" | "Zipkin" => {
                let jaeger = spec
                    .addons
                    .as_ref()
                    .and_then(|a| a.jaeger.as_ref())
                    .and_then(|j| j.name.as_deref())
                    .unwrap_or("jaeger");
                m.enable_tracing = true;
                m.extension_providers.retain(|p| p.name != TRACING_PROVIDER);
                m.extension_providers.push(ExtensionProvider {
                    name: TRACING_PROVIDER.into(),
                    zipkin: Some(ServicePort {
                        service: format!("{jaeger}-collector.{ns}.svc"),
                        port: JAEGER_ZIPKIN_PORT,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                m.default_providers.tracing = vec![TRACING_PROVIDER.into()];
            }
            // Stackdriver: accepted, reported as ignored, nothing exported.
            _ => {}
        }
        if let Some(s) = t.sampling {
            let tc = m
                .default_config
                .tracing
                .get_or_insert_with(TracingConfig::default);
            tc.sampling = Some(s as f64 / 100.0);
        }
    }
    let proxy = spec.proxy.as_ref();
    if let Some(f) = proxy
        .and_then(|p| p.access_logging.as_ref())
        .and_then(|a| a.file.as_ref())
    {
        if let Some(n) = &f.name {
            m.access_log_file = n.clone();
        }
        match f.encoding.as_deref() {
            Some("JSON") => m.access_log_encoding = AccessLogEncoding::Json,
            Some("TEXT") => m.access_log_encoding = AccessLogEncoding::Text,
            _ => {}
        }
        if let Some(fmt) = &f.format {
            m.access_log_format = fmt.clone();
        }
    }
    let tc = proxy
        .and_then(|p| p.networking.as_ref())
        .and_then(|n| n.traffic_control.as_ref());
    if let Some(o) = tc.and_then(|t| t.outbound.as_ref()) {
        match o.policy.as_deref() {
            Some("REGISTRY_ONLY") => m.outbound_traffic_policy.mode = OutboundMode::RegistryOnly,
            Some("ALLOW_ANY") => m.outbound_traffic_policy.mode = OutboundMode::AllowAny,
            _ => {}
        }
        if let Some(r) = &o.included_ip_ranges {
            m.redirect.include_ip_ranges = if r.iter().any(|s| s == "*") {
                Selection::All
            } else if r.is_empty() {
                Selection::None
            } else {
                Selection::Only(r.iter().filter_map(|s| net(s)).collect())
            };
        }
        if let Some(r) = &o.excluded_ip_ranges {
            m.redirect.exclude_ip_ranges = r.iter().filter_map(|s| net(s)).collect();
        }
        if let Some(p) = &o.excluded_ports {
            m.redirect.exclude_outbound_ports = p.iter().filter_map(port_of).collect();
        }
    }
    if let Some(i) = tc.and_then(|t| t.inbound.as_ref()) {
        if let Some(p) = &i.included_ports {
            m.redirect.include_inbound_ports = if p.iter().any(|v| v.as_str() == Some("*")) {
                Selection::All
            } else if p.is_empty() {
                Selection::None
            } else {
                Selection::Only(p.iter().filter_map(port_of).collect())
            };
        }
        if let Some(p) = &i.excluded_ports {
            m.redirect.exclude_inbound_ports = p.iter().filter_map(port_of).collect();
        }
    }
    m.validate().map_err(|e| {
        let field = match e.field.as_str() {
            "accessLogFormat" => "spec.proxy.accessLogging.file.format".to_string(),
            "rootNamespace" => "metadata.namespace".to_string(),
            f => format!("(mesh config) {f}"),
        };
        bad(&field, e.value, e.reason)
    })?;
    Ok(m)
}

/// A CIDR, or a bare address as its host route (OSSM accepts both).
fn net(s: &str) -> Option<ipnet::IpNet> {
    s.parse()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// The mesh config, the objects and the field report of one SMCP.
pub fn render(spec: &SmcpSpec, owner: &Owner, base: &MeshConfig) -> Result<Rendered, SmcpError> {
    let mesh = mesh_config(spec, &owner.namespace, base)?;
    let mut objects = Vec::new();
    let gws = spec.gateways.as_ref();
    let all_on = gws.and_then(|g| g.enabled) != Some(false);
    for (yaml, gw) in [
        (INGRESS_YAML, gws.and_then(|g| g.ingress.as_ref())),
        (EGRESS_YAML, gws.and_then(|g| g.egress.as_ref())),
    ] {
        if !all_on || gw.and_then(|g| g.enabled) == Some(false) {
            continue;
        }
        let svc = gw.and_then(|g| g.service.as_ref());
        for mut obj in manifest(yaml) {
            retarget(&mut obj, owner);
            if obj["kind"] == "Service" {
                if let Some(s) = svc {
                    let spec = &mut obj["spec"];
                    if let Some(t) = &s.type_ {
                        spec["type"] = json!(t);
                    }
                    if let Some(ip) = &s.load_balancer_ip {
                        spec["loadBalancerIP"] = json!(ip);
                    }
                    if let Some(p) = &s.external_traffic_policy {
                        spec["externalTrafficPolicy"] = json!(p);
                    }
                    if let Some(ports) = &s.ports {
                        spec["ports"] = ports
                            .iter()
                            .map(|p| {
                                let mut o = json!({
                                    "name": p.name.clone().unwrap_or_else(|| format!("port-{}", p.port)),
                                    "port": p.port,
                                    "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                                });
                                o["targetPort"] = match &p.target_port {
                                    Some(t) => port_of(t).map(|n| json!(n)).unwrap_or(t.clone()),
                                    None => json!(p.port),
                                };
                                o
                            })
                            .collect();
                    }
                }
            }
            objects.push(obj);
        }
    }
    if let Some(pa) = peer_authentication(spec, owner) {
        objects.push(pa);
    }
    Ok(Rendered {
        mesh,
        objects,
        fields: field_report(spec),
    })
}

/// `security.dataPlane.mtls`: true is a STRICT `default` PeerAuthentication
/// in the root namespace, false a PERMISSIVE one; unset, none.
pub fn peer_authentication(spec: &SmcpSpec, owner: &Owner) -> Option<Value> {
    let mtls = spec
        .security
        .as_ref()
        .and_then(|s| s.data_plane.as_ref())
        .and_then(|d| d.mtls)?;
    let mut pa = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default"},
        "spec": {"mtls": {"mode": if mtls { "STRICT" } else { "PERMISSIVE" }}},
    });
    retarget(&mut pa, owner);
    Some(pa)
}

fn manifest(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// Namespace, owner label and ownerReference of a rendered object.
fn retarget(obj: &mut Value, owner: &Owner) {
    let md = &mut obj["metadata"];
    md["namespace"] = json!(owner.namespace);
    md["labels"][OWNER_LABEL] = json!(owner.name);
    md["labels"]["app.kubernetes.io/managed-by"] = json!(MANAGED_BY);
    if let Some(uid) = &owner.uid {
        md["ownerReferences"] = json!([{
            "apiVersion": "maistra.io/v2",
            "kind": "ServiceMeshControlPlane",
            "name": owner.name,
            "uid": uid,
            "controller": true,
        }]);
    }
}

/// Why a rendered gateway Deployment is not ready yet (`None`: all its
/// replicas are available), from the object as the API server returns it.
pub fn deployment_waiting(d: &Value) -> Option<String> {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let have = d["status"]["availableReplicas"].as_i64().unwrap_or(0);
    (have < want).then(|| {
        format!(
            "Deployment/{} ({have}/{want} available)",
            d["metadata"]["name"].as_str().unwrap_or_default()
        )
    })
}

/// `Ready`: the config is in force and every gateway Deployment of the SMCP
/// has its replicas available (`waiting` lists those that do not).
pub fn ready(waiting: &[String], now: &str) -> SmcpCondition {
    let ok = waiting.is_empty();
    SmcpCondition {
        type_: "Ready".into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: if ok {
            "ComponentsReady"
        } else {
            "ComponentsNotReady"
        }
        .into(),
        message: if ok {
            "mesh config in force; gateways available".into()
        } else {
            format!("mesh config in force; waiting for {}", waiting.join(", "))
        },
        last_transition_time: Some(now.into()),
    }
}

/// Replaces the `Ready` condition, keeping its transition time when its
/// status does not change.
pub fn set_ready(st: &mut SmcpStatus, mut c: SmcpCondition) {
    match st.conditions.iter_mut().find(|o| o.type_ == c.type_) {
        Some(o) => {
            if o.status == c.status {
                c.last_transition_time = o.last_transition_time.clone();
            }
            *o = c;
        }
        None => st.conditions.push(c),
    }
}

/// The status after one reconcile: `Reconciled` and `Ready` conditions with
/// the applied and ignored fields. A rejected spec keeps the previous `Ready`
/// (the last good config stays in force) and says why in `Reconciled`.
pub fn status(
    prev: Option<&SmcpStatus>,
    outcome: &Result<Rendered, SmcpError>,
    waiting: &[String],
    generation: Option<i64>,
    now: &str,
) -> SmcpStatus {
    let cond = |type_: &str, ok: bool, reason: &str, message: String| SmcpCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: Some(now.into()),
    };
    let mut conditions = match outcome {
        Ok(r) => {
            let msg = format!(
                "{} field(s) applied, {} ignored (see status.ignoredFields)",
                r.fields.applied.len(),
                r.fields.ignored.len()
            );
            vec![
                cond("Reconciled", true, "InstallSuccessful", msg),
                ready(waiting, now),
            ]
        }
        Err(e) => {
            let ready = prev
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"))
                .cloned()
                .unwrap_or_else(|| {
                    cond(
                        "Ready",
                        false,
                        "ValidationFailed",
                        "no valid spec applied yet".into(),
                    )
                });
            vec![
                cond(
                    "Reconciled",
                    false,
                    "ValidationFailed",
                    format!("{e}; the last good configuration stays in force"),
                ),
                ready,
            ]
        }
    };
    // A condition whose status did not change keeps its transition time.
    for c in &mut conditions {
        if let Some(p) = prev
            .and_then(|p| p.conditions.iter().find(|o| o.type_ == c.type_))
            .filter(|o| o.status == c.status)
        {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
    let (applied_fields, ignored_fields) = match outcome {
        Ok(r) => (r.fields.applied.clone(), r.fields.ignored.clone()),
        Err(_) => prev
            .map(|p| (p.applied_fields.clone(), p.ignored_fields.clone()))
            .unwrap_or_default(),
    };
    SmcpStatus {
        observed_generation: generation,
        conditions,
        applied_fields,
        ignored_fields,
    }
}

#[cfg(test)]
#[path = "smcp_tests.rs"]
mod tests;
