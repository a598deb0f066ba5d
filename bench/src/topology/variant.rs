//! What a variant is and what it is configured with: names, UIDs, addresses,
//! binaries and the mesh-proxy view. Pure data, no processes: the report and
//! the CLI need only this part.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use mesh_api::syncapi::{Endpoint, ProxyView, Service, ServicePort};
use mesh_api::tracing::{TracingProvider, TracingView};
use serde::{Deserialize, Serialize};

use crate::ports::{HOST, PORTS};

/// UID of the application and the load generator.
pub const APP_UID: u32 = 1000;
/// UID of the sidecars (Istio's proxy UID, excluded from capture).
pub const PROXY_UID: u32 = 1337;
/// The service's cluster IP in the meshed variants (captured, never routed).
pub const VIP: &str = "10.96.0.10";
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// No sidecars; the app ports are excluded from capture; the client calls
    /// the server pod's address.
    Direct,
    Envoy,
    MeshProxy,
    /// Envoy with mutual TLS 1.3 between the sidecars (certificates from the bench root).
    EnvoyMtls,
    /// mesh-proxy with auto mTLS, its certificates issued by mesh-agent's CA (same root).
    MeshProxyMtls,
    /// Ingress: a client without sidecar → Envoy as the gateway → an Envoy
    /// sidecar → the app.
    EnvoyGateway,
    /// Ingress: a client without sidecar → `mesh-proxy router` → a mesh-proxy
    /// sidecar → the app.
    MeshProxyGateway,
    /// mesh-proxy with tracing at Istio's default 1 % sampling, spans to the
    /// bench's Zipkin sink (`mesh-proxy` is the same with tracing off).
    #[serde(rename = "mesh-proxy-tracing-1")]
    MeshProxyTracing1,
    /// mesh-proxy with every request traced (100 % sampling).
    #[serde(rename = "mesh-proxy-tracing-100")]
    MeshProxyTracing100,
}

impl Variant {
    pub const ALL: [Variant; 9] = [
        Variant::Direct,
        Variant::Envoy,
        Variant::MeshProxy,
        Variant::EnvoyMtls,
        Variant::MeshProxyMtls,
        Variant::EnvoyGateway,
        Variant::MeshProxyGateway,
        Variant::MeshProxyTracing1,
        Variant::MeshProxyTracing100,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Envoy => "envoy",
            Variant::MeshProxy => "mesh-proxy",
            Variant::EnvoyMtls => "envoy-mtls",
            Variant::MeshProxyMtls => "mesh-proxy-mtls",
            Variant::EnvoyGateway => "envoy-gateway",
            Variant::MeshProxyGateway => "mesh-proxy-gateway",
            Variant::MeshProxyTracing1 => "mesh-proxy-tracing-1",
            Variant::MeshProxyTracing100 => "mesh-proxy-tracing-100",
        }
    }
    /// The sampling percentage of the tracing variants.
    pub fn tracing_percent(self) -> Option<f64> {
        match self {
            Variant::MeshProxyTracing1 => Some(1.0),
            Variant::MeshProxyTracing100 => Some(100.0),
            _ => None,
        }
    }
    pub fn mtls(self) -> bool {
        matches!(self, Variant::EnvoyMtls | Variant::MeshProxyMtls)
    }
    pub fn is_envoy(self) -> bool {
        matches!(
            self,
            Variant::Envoy | Variant::EnvoyMtls | Variant::EnvoyGateway
        )
    }
    /// Client → gateway → server sidecar → app (the ingress scenarios).
    pub fn is_gateway(self) -> bool {
        matches!(self, Variant::EnvoyGateway | Variant::MeshProxyGateway)
    }
    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// Programs the deployments run.
#[derive(Debug, Clone)]
pub struct Bins {
    pub cni: PathBuf,
    pub proxy: PathBuf,
    pub agent: PathBuf,
    pub bench: PathBuf,
    pub envoy: Option<PathBuf>,
}

/// The tracing of a `percent` variant: Zipkin to the bench's sink, no custom tags.
pub(crate) fn tracing(sink: &crate::zipkin::ZipkinSink, percent: f64) -> TracingView {
    TracingView {
        provider: Some(TracingProvider::Zipkin {
            address: sink.addr.clone(),
        }),
        sampling: percent,
        ..Default::default()
    }
}

pub(crate) fn view(server: IpAddr, mtls: bool) -> ProxyView {
    let port = |name: &str, port: u16, protocol: &str| ServicePort {
        name: name.into(),
        port,
        target_port: Some(port),
        protocol: protocol.into(),
    };
    ProxyView {
        version: 1,
        services: vec![std::sync::Arc::new(Service {
            hostname: HOST.into(),
            namespace: "default".into(),
            origin: "Kubernetes".into(),
            addresses: vec![VIP.into()],
            ports: vec![
                port("http", PORTS.http, "HTTP"),
                port("http2", PORTS.h2, "HTTP2"),
                port("tcp", PORTS.tcp, "TCP"),
            ],
            endpoints: vec![Endpoint {
                address: server.to_string(),
                labels: if mtls {
                    BTreeMap::from([
                        ("app".into(), "bench-server".into()),
                        ("security.istio.io/tlsMode".into(), "istio".into()),
                    ])
                } else {
                    BTreeMap::from([("app".into(), "bench-server".into())])
                },
                ready: true,
                ..Default::default()
            }],
            ..Default::default()
        })],
        outbound_traffic_policy: "ALLOW_ANY".into(),
        inbound: mesh_api::syncapi::InboundPolicy {
            // Like the Envoy variant's `require_client_certificate`.
            mtls_mode: if mtls { "STRICT" } else { "PERMISSIVE" }.into(),
            ..Default::default()
        },
        ..Default::default()
    }
}
