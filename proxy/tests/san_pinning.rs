//! SAN pinning for auto mTLS / ISTIO_MUTUAL, as Istio does it: the client's
//! sidecar accepts a server only if its SPIFFE identity is one of the
//! destination's expected identities, which are the service accounts its
//! endpoints' pods declare, or the DestinationRule's `subjectAltNames`.
//! `liar-0` declares service account `liar` but its sidecar holds a valid mesh
//! certificate for `echo`: calls to the `liar` service must be refused.

mod common;
mod meshnet;

use common::*;
use meshnet::*;

const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: default\nspec:\n  clusterIP: 10.96.0.20\n  selector:\n    app: echo\n  ports:\n  - name: http\n    port: 8080\n    targetPort: 8080\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: liar\n  namespace: default\nspec:\n  clusterIP: 10.96.0.40\n  selector:\n    app: liar\n  ports:\n  - name: http\n    port: 8080\n    targetPort: 8080\n";

fn dr(host: &str, sans: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: pin\n  namespace: default\nspec:\n  host: {host}\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n      subjectAltNames: [{sans}]\n")
}

fn until(pod: &Pod, url: &str, code: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (c, body) = status(pod, &[url]);
        if c == code {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {code}: last {c} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn client_refuses_a_server_with_another_mesh_identity() {
    let t0 = Instant::now();
    let specs = [
        CLIENT,
        PodSpec {
            name: "echo-0",
            pod_sa: "echo",
            token_sa: Some("echo"),
            labels: &[("app", "echo"), MESHED],
        },
        PodSpec {
            name: "liar-0",
            pod_sa: "liar",
            token_sa: Some("echo"),
            labels: &[("app", "liar"), MESHED],
        },
    ];
    let mut m = MeshNet::new(SERVICES, &specs, &["--access-log", "json"]);
    let client = m.pod("client-0");
    // The right identity: served.
    let (c, body) = status(client, &["http://10.96.0.20:8080/ok"]);
    assert_eq!(c, "200", "{body}");
    // A valid mesh certificate with the wrong identity: 503, flagged UF.
    let (c, body) = status(client, &["http://10.96.0.40:8080/must-not-arrive"]);
    assert_eq!(c, "503", "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(client);
        let flagged = metric_sum(
            &text,
            "istio_requests_total",
            &[
                "destination_service=\"liar.default.svc.cluster.local\"",
                "response_code=\"503\"",
                // Upstream connect failure, after Istio's default retries.
                "response_flags=\"URX,UF\"",
            ],
        );
        if flagged >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = m
        .sidecar(0)
        .wait_for_line("wrong mesh identity", Duration::from_secs(5))
        .unwrap();
    assert!(
        line.contains("spiffe://cluster.local/ns/default/sa/echo")
            && line.contains("spiffe://cluster.local/ns/default/sa/liar"),
        "{line}"
    );
    // The liar's app never saw the request.
    assert!(m.procs[2][0]
        .wait_for_line("/must-not-arrive", Duration::from_millis(500))
        .is_err());

    // DestinationRule subjectAltNames override the endpoints' accounts: naming
    // the identity the liar really has lets the call through...
    write(
        &m.config.0,
        "dr.yaml",
        dr(
            "liar.default.svc.cluster.local",
            "spiffe://cluster.local/ns/default/sa/echo",
        ),
    );
    until(m.pod("client-0"), "http://10.96.0.40:8080/pinned", "200");
    // ...and pinning the honest service to another identity refuses it.
    write(
        &m.config.0,
        "dr.yaml",
        dr(
            "echo.default.svc.cluster.local",
            "spiffe://cluster.local/ns/default/sa/someone-else",
        ),
    );
    until(m.pod("client-0"), "http://10.96.0.20:8080/pinned", "503");
    // Without a rule the liar is refused again and echo served again.
    std::fs::remove_file(m.config.0.join("dr.yaml")).unwrap();
    until(m.pod("client-0"), "http://10.96.0.20:8080/back", "200");
    let (c, _) = status(m.pod("client-0"), &["http://10.96.0.40:8080/again"]);
    assert_eq!(c, "503");
    eprintln!("san pinning e2e took {:?}", t0.elapsed());
}
