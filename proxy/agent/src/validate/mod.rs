//! Validation of Istio resources, modelled on Istio's validation webhook and the
//! `istioctl analyze` reference checks: each finding names the resource
//! (`Kind/namespace/name`), the field path and the offending value.
//!
//! [`validate`] checks one resource on its own (what Istio's webhook does);
//! [`crate::compile`] adds cross-resource checks (subset references, conflicting
//! hosts). Errors reject the resource; warnings (unknown fields, odd but legal
//! settings) are reported and the resource still applies.

mod checks;
mod networking;
mod report;
mod security;
mod telemetry;
mod unknown;

pub use checks::valid_host;
pub use report::{Finding, Report, Severity};

use mesh_api::gatewayapi::GatewayApiResource;
use mesh_api::resource::IstioResource;

/// Checks one resource on its own. The result is empty for a clean resource.
pub fn validate(resource: &IstioResource) -> Vec<Finding> {
    let key = resource.key();
    let mut r = Report::new(&key);
    checks::metadata(&mut r, resource.meta());
    match resource {
        IstioResource::VirtualService(x) => networking::virtual_service(&mut r, &x.spec),
        IstioResource::DestinationRule(x) => networking::destination_rule(&mut r, &x.spec),
        IstioResource::Gateway(x) => networking::gateway(&mut r, &x.spec),
        IstioResource::ServiceEntry(x) => networking::service_entry(&mut r, &x.spec),
        IstioResource::Sidecar(x) => networking::sidecar(&mut r, &x.spec),
        IstioResource::PeerAuthentication(x) => security::peer_authentication(&mut r, &x.spec),
        IstioResource::AuthorizationPolicy(x) => security::authorization_policy(&mut r, &x.spec),
        IstioResource::Telemetry(x) => telemetry::telemetry(&mut r, &x.spec),
    }
    unknown::report(&mut r, resource.kind(), &resource.spec_json());
    r.findings
}

/// Checks one Gateway API object: metadata, then the upstream schema and CEL
/// rules ([`mesh_api::gatewayapi::validate`]); every violation is an error, as
/// the API server would have refused the object. Unknown fields are not
/// reported: newer upstream fields (e.g. `sessionPersistence`) are legitimate.
pub fn validate_gateway_api(resource: &GatewayApiResource) -> Vec<Finding> {
    let key = resource.key();
    let mut r = Report::new(&key);
    checks::metadata(&mut r, resource.meta());
    for (path, message) in mesh_api::gatewayapi::validate(resource) {
        r.error(path, (), message);
    }
    r.findings
}

/// True when any finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}
