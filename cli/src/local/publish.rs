//! Publishing Service ports on the host's loopback, as a NodePort does in a
//! cluster: every port of a `LoadBalancer` or `NodePort` Service (the ingress
//! gateway's) gets a free `127.0.0.1` port, kept for the life of the mesh and
//! recorded in its state; the forwarder ([`super::forward`]) sends connections
//! to the Service's ready endpoints. `meshctl local service-url` reads them.

use std::time::Duration;

use serde_json::Value;

use super::forward::{Entry, Table};
use super::node;
use super::proc;
use super::state::{write_file, RunDir, ServiceState, State};

/// What `service-url` could not answer (exit code 1, one line).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UrlError {
    #[error("no service {name:?} in namespace {namespace} (known: {known})")]
    NoService {
        name: String,
        namespace: String,
        known: String,
    },
    #[error(
        "service {namespace}/{name} has no ports published on the host (only LoadBalancer \
         and NodePort Services are; its ports stay inside the mesh)"
    )]
    NotPublished { name: String, namespace: String },
    #[error("service {namespace}/{name} has no published port {port} (published: {have})")]
    NoPort {
        name: String,
        namespace: String,
        port: u16,
        have: String,
    },
}

/// Whether a Service's ports are published on the host.
pub fn is_published(svc: &Value) -> bool {
    matches!(
        svc["spec"]["type"].as_str(),
        Some("LoadBalancer" | "NodePort")
    )
}

/// `(port, nodePort)` of the Service ports that name their `nodePort`.
pub fn node_ports(svc: &Value) -> Vec<(u16, u16)> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p["port"].as_u64()?).ok()?;
            let node = u16::try_from(p["nodePort"].as_u64()?).ok()?;
            Some((port, node))
        })
        .collect()
}

/// Host ports for `ports`: the one already assigned to a port keeps it, new
/// ports get one from `free`.
pub fn assign(
    ports: &[(u16, String)],
    before: &[(u16, u16)],
    mut free: impl FnMut() -> std::io::Result<u16>,
) -> std::io::Result<Vec<(u16, u16)>> {
    ports
        .iter()
        .map(|(p, _)| match before.iter().find(|(q, _)| q == p) {
            Some(&(_, h)) => Ok((*p, h)),
            None => Ok((*p, free()?)),
        })
        .collect()
}

/// A port nothing on the host's loopback listens on now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// [`free_port`], other than those in `used` (recorded for ports whose
/// forwarder is not listening yet); a few tries, then an error.
pub fn free_port_except(used: &[u16]) -> std::io::Result<u16> {
    for _ in 0..32 {
        let p = free_port()?;
        if !used.contains(&p) {
            return Ok(p);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free port on 127.0.0.1 outside the ones already published",
    ))
}

/// The forwarder's table for the current endpoints.
pub fn table(st: &State) -> Table {
    let mut t = Table::new();
    for svc in &st.services {
        for &(port, host) in &svc.published {
            let target = svc
                .ports
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| port.to_string());
            let targets = node::endpoints(st, svc, &target)
                .into_iter()
                .map(|(ip, p)| format!("{ip}:{p}"))
                .collect();
            t.insert(
                host,
                Entry {
                    service: format!("{}/{}", svc.namespace, svc.name),
                    port,
                    targets,
                },
            );
        }
    }
    t
}

/// Writes the table and (re)starts the forwarder when the set of host ports
/// changed or it is not running; stops it when nothing is published.
pub fn sync(run: &RunDir, st: &mut State) -> anyhow::Result<()> {
    let t = table(st);
    write_file(&run.forward_table(), &serde_json::to_string_pretty(&t)?)?;
    let ports: Vec<u16> = t.keys().copied().collect();
    let running = st.forwarder.as_ref().is_some_and(proc::alive);
    if running && ports == st.forwarded_ports {
        return Ok(());
    }
    if let Some(f) = st.forwarder.take() {
        proc::stop(&f, Duration::from_secs(3));
    }
    st.forwarded_ports.clear();
    run.save(st)?;
    if ports.is_empty() {
        return Ok(());
    }
    let mut cmd = std::process::Command::new(&st.bins["meshctl"]);
    cmd.args(["local", "forward", "--netns", &st.node_netns, "--table"])
        .arg(run.forward_table());
    for p in &ports {
        cmd.args(["--port", &p.to_string()]);
    }
    let p = proc::spawn_command("forwarder", cmd, &run.logs().join("forwarder.log"))?;
    st.forwarder = Some(p.clone());
    st.forwarded_ports = ports;
    run.save(st)?;
    proc::wait_for_log(&p, "meshctl forwarder listening", Duration::from_secs(10))
}

/// `service-url`: `127.0.0.1:HOSTPORT` for `port`, or `PORT HOSTPORT` lines.
pub fn service_url(
    services: &[ServiceState],
    name: &str,
    namespace: &str,
    port: Option<u16>,
) -> Result<String, UrlError> {
    let Some(svc) = services
        .iter()
        .find(|s| s.name == name && s.namespace == namespace)
    else {
        let mut known: Vec<String> = services
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect();
        known.sort();
        return Err(UrlError::NoService {
            name: name.into(),
            namespace: namespace.into(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    if svc.published.is_empty() {
        return Err(UrlError::NotPublished {
            name: name.into(),
            namespace: namespace.into(),
        });
    }
    match port {
        None => Ok(svc
            .published
            .iter()
            .map(|(p, h)| format!("{p} {h}\n"))
            .collect()),
        Some(port) => match svc.published.iter().find(|(p, _)| *p == port) {
            Some((_, h)) => Ok(format!("127.0.0.1:{h}\n")),
            None => Err(UrlError::NoPort {
                name: name.into(),
                namespace: namespace.into(),
                port,
                have: svc
                    .published
                    .iter()
                    .map(|(p, _)| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        },
    }
}

/// What `up` prints for each published Service.
pub fn addresses(st: &State) -> Vec<String> {
    st.services
        .iter()
        .filter(|s| !s.published.is_empty())
        .map(|s| {
            let ports: Vec<String> = s
                .published
                .iter()
                .map(|(p, h)| format!("{p} → 127.0.0.1:{h}"))
                .collect();
            format!(
                "service {}/{} published on the host: {}",
                s.namespace,
                s.name,
                ports.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, published: Vec<(u16, u16)>) -> ServiceState {
        ServiceState {
            name: name.into(),
            namespace: "istio-system".into(),
            vip: Some("10.96.0.10".into()),
            selector: [("istio".to_string(), "ingressgateway".to_string())].into(),
            ports: vec![(80, "8080".into()), (443, "8443".into())],
            published,
        }
    }

    #[test]
    fn host_ports_are_kept_and_new_ones_allocated() {
        let ports = vec![(80, "8080".to_string()), (443, "8443".to_string())];
        let mut next = 40000;
        let mut free = || {
            next += 1;
            Ok(next)
        };
        assert_eq!(
            assign(&ports, &[(443, 31443)], &mut free).unwrap(),
            [(80, 40001), (443, 31443)]
        );
        assert_eq!(assign(&[], &[(443, 31443)], &mut free).unwrap(), []);
        assert!(free_port().unwrap() > 0);
        let taken = free_port().unwrap();
        assert_ne!(free_port_except(&[taken]).unwrap(), taken);
        let np = serde_json::json!({"spec": {"ports": [
            {"port": 80, "nodePort": 30080}, {"port": 443}, {"port": 81, "nodePort": 70000}
        ]}});
        assert_eq!(node_ports(&np), [(80, 30080)]);
        let lb = serde_json::json!({"spec": {"type": "LoadBalancer"}});
        let np = serde_json::json!({"spec": {"type": "NodePort"}});
        let ci = serde_json::json!({"spec": {}});
        assert!(is_published(&lb) && is_published(&np) && !is_published(&ci));
    }

    #[test]
    fn service_url_answers_and_errors() {
        let s = vec![
            svc("istio-ingressgateway", vec![(80, 31080), (443, 31443)]),
            svc("istio-egressgateway", vec![]),
        ];
        let url = |n: &str, ns: &str, p| service_url(&s, n, ns, p);
        assert_eq!(
            url("istio-ingressgateway", "istio-system", Some(80)).unwrap(),
            "127.0.0.1:31080\n"
        );
        assert_eq!(
            url("istio-ingressgateway", "istio-system", None).unwrap(),
            "80 31080\n443 31443\n"
        );
        let e = url("istio-ingressgateway", "istio-system", Some(8080))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "service istio-system/istio-ingressgateway has no published port 8080 (published: 80, 443)"
        );
        let e = url("istio-egressgateway", "istio-system", None).unwrap_err();
        assert!(matches!(e, UrlError::NotPublished { .. }), "{e}");
        let e = url("istio-ingressgateway", "default", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("no service \"istio-ingressgateway\" in namespace default (known: istio-system/istio-egressgateway, istio-system/istio-ingressgateway)"), "{e}");
    }
}
