//! Single-resource checks of Telemetry: the spec's own rules
//! ([`mesh_api::telemetry::TelemetrySpec::validate`]) as an error, the parts
//! this mesh accepts without applying as warnings. Provider names are checked
//! against the mesh config when the snapshot is compiled.

use super::report::Report;
use mesh_api::telemetry::TelemetrySpec;

pub fn telemetry(r: &mut Report<'_>, s: &TelemetrySpec) {
    if let Err(e) = s.validate() {
        r.error(e.field, e.value, e.reason);
    }
    for (field, why) in s.unsupported() {
        r.warn(field, (), why);
    }
}
