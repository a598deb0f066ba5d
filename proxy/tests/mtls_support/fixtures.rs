//! The node the mTLS tests run on (agent with CA, echo server, client, a plain
//! pod and a raw sink), its services, and reading a counter from metrics text.

use crate::common::ECHO_SERVICE;
use crate::meshnet::{MeshNet, PodSpec, CLIENT, ECHO, ECHO_VIP, MESHED};

pub(crate) const SVC_VIP: &str = ECHO_VIP;
pub(crate) const SINK_VIP: &str = "10.96.0.30";
const SINK_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: sink\n  namespace: default\nspec:\n  clusterIP: 10.96.0.30\n  selector:\n    app: sink\n  ports:\n  - name: http\n    port: 7000\n    targetPort: 7000\n";

/// A node with an agent (CA on) and, in this order, a meshed echo server, a
/// meshed client, `plain-0` (no sidecar) and `sink-0` (no sidecar, but labelled
/// as meshed: a raw listener there poses as a meshed endpoint).
pub(crate) fn mesh(agent_extra: &[&str], proxy_extra: &[&str]) -> MeshNet {
    let specs = [
        ECHO,
        CLIENT,
        PodSpec {
            name: "plain-0",
            pod_sa: "plain",
            token_sa: None,
            labels: &[("app", "plain")],
        },
        PodSpec {
            name: "sink-0",
            pod_sa: "sink",
            token_sa: None,
            labels: &[("app", "sink"), MESHED],
        },
    ];
    let services = format!("{ECHO_SERVICE}---\n{SINK_SERVICE}");
    MeshNet::with(&services, &specs, agent_extra, proxy_extra)
}

/// An unlabelled counter's value.
pub(crate) fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0.0)
}
