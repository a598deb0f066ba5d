//! A service port compiled into a [`Cluster`]: its protocol, endpoints and
//! the DestinationRule settings that apply to it (a subset's own included).
//! Apart from the snapshot, whose indexes only place the clusters built here.

use std::sync::Arc;

use crate::lb::LbPolicy;

use super::endpoints::Endpoint;
use super::error::ResourceError;

/// How a port's traffic is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 or gRPC: upstream connections speak h2.
    Http2,
    Tcp,
    /// Unnamed port: sniff the first bytes.
    Unknown,
}

impl Protocol {
    /// Istio's protocol names (from port name prefix or `appProtocol`).
    pub fn from_istio(name: &str) -> Protocol {
        match name.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTP1" | "HTTP/1.1" => Protocol::Http1,
            "HTTP2" | "GRPC" | "GRPC-WEB" | "H2C" => Protocol::Http2,
            "" | "UNKNOWN" | "AUTO" => Protocol::Unknown,
            _ => Protocol::Tcp,
        }
    }
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http1 | Protocol::Http2)
    }
}

/// A service port and everything needed to carry a connection to it.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `outbound|<port>||<host>`, Istio's cluster name (the runtime table's
    /// key, which shares it).
    pub name: Arc<str>,
    pub host: Arc<str>,
    pub service_name: Arc<str>,
    pub namespace: Arc<str>,
    pub port: u16,
    pub protocol: Protocol,
    /// Ready endpoints, in one allocation (see [`EndpointRef`](super::EndpointRef)).
    pub endpoints: Arc<[Endpoint]>,
    pub lb: LbPolicy,
    /// DestinationRule connectionPool limits, if any.
    pub limits: Option<crate::limits::Limits>,
    /// DestinationRule outlierDetection, if any.
    pub outlier: Option<crate::outlier::OutlierConfig>,
    /// One endpoint the app called by its own address: the call goes to that
    /// pod, and the service's routes do not apply (they match service hosts).
    pub pinned: bool,
}

/// A subset's cluster: the service port's endpoints whose labels match the
/// subset's, with the subset's traffic policy where it sets one.
pub(super) fn subset_cluster(
    base: &Cluster,
    dr: &mesh_api::networking::DestinationRuleSpec,
    subset: &mesh_api::networking::Subset,
    service_sans: &[String],
    errors: &mut Vec<ResourceError>,
    warnings: &mut Vec<String>,
) -> Cluster {
    // The subset's own policy replaces the rule's top-level one where present.
    let mut effective = dr.clone();
    if let Some(tp) = &subset.traffic_policy {
        let top = effective
            .traffic_policy
            .get_or_insert_with(Default::default);
        if tp.load_balancer.is_some() {
            top.load_balancer = tp.load_balancer.clone();
        }
        if tp.connection_pool.is_some() {
            top.connection_pool = tp.connection_pool.clone();
        }
        if tp.outlier_detection.is_some() {
            top.outlier_detection = tp.outlier_detection.clone();
        }
        if !tp.port_level_settings.is_empty() {
            top.port_level_settings = tp.port_level_settings.clone();
        }
        if tp.tls.is_some() {
            top.tls = tp.tls.clone();
        }
    }
    let name = format!("outbound|{}|{}|{}", base.port, subset.name, base.host);
    let ctls = crate::mtls::originate::ClusterTls::compile(
        crate::mtls::originate::effective_tls(Some(dr), Some(subset), base.port).as_ref(),
        &base.host,
        service_sans,
    );
    tls_warning(&ctls, &name, warnings);
    let endpoints = base
        .endpoints
        .iter()
        .filter(|e| {
            subset
                .labels
                .iter()
                .all(|(k, v)| e.labels.get(k) == Some(v))
        })
        .map(|e| Endpoint {
            addr: e.addr,
            labels: e.labels.clone(),
            service_account: e.service_account.clone(),
            tls: ctls.for_endpoint(&e.labels),
        })
        .collect();
    Cluster {
        name: name.into(),
        host: base.host.clone(),
        service_name: base.service_name.clone(),
        namespace: base.namespace.clone(),
        port: base.port,
        protocol: base.protocol,
        endpoints,
        lb: LbPolicy::from_rule(Some(&effective), base.port),
        limits: crate::limits::Limits::from_rule(Some(&effective), base.port),
        outlier: outlier(Some(&effective), &base.host, base.port, errors),
        pinned: false,
    }
}

/// The cluster's outlier settings; a bad duration is a [`ResourceError`].
pub(super) fn outlier(
    rule: Option<&mesh_api::networking::DestinationRuleSpec>,
    host: &str,
    port: u16,
    errors: &mut Vec<ResourceError>,
) -> Option<crate::outlier::OutlierConfig> {
    crate::outlier::OutlierConfig::from_rule(rule, port).unwrap_or_else(|e| {
        errors.push(ResourceError {
            resource: format!("DestinationRule/{host}"),
            error: format!("trafficPolicy.outlierDetection.baseEjectionTime (port {port}): {e}"),
        });
        None
    })
}

/// TLS origination whose files cannot be used: applied (requests to the cluster
/// fail with 503 rather than going out in plaintext) and reported, since the
/// files are the pod's and may be fixed without a config change.
pub(super) fn tls_warning(
    ctls: &crate::mtls::originate::ClusterTls,
    cluster: &str,
    warnings: &mut Vec<String>,
) {
    if let crate::mtls::originate::ClusterTls::Originate(o) = ctls {
        if let Err(e) = &*o.0 {
            warnings.push(format!(
                "cluster {cluster}: TLS origination settings unusable ({e}); requests to it fail with 503"
            ));
        }
    }
}
