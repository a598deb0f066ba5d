//! The gateway part of a [`crate::syncapi::ProxyView`]: what a gateway proxy
//! (`mesh-proxy router`, Istio's `proxy router`) listens on and how it routes.
//!
//! The agent does every Kubernetes-level decision (which Gateways select the pod,
//! Service port → targetPort, `ns/host` scoping, which VirtualServices bind to
//! which server, reading `credentialName` Secrets); the proxy only binds the
//! listeners, picks a server per connection (SNI, then `:authority`) and routes
//! with the same code as the sidecar. Key material travels in the view (as
//! Istio's SDS does) and must never be logged or dumped: show
//! [`TlsCredential::source`] and the certificate's serial, expiry and SANs.

use crate::networking::VirtualServiceSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything gateway-specific in one proxy's view. `None` in a sidecar's view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayView {
    /// One listener per port the gateway pod binds, sorted by `port`.
    pub listeners: Vec<GatewayListener>,
    /// VirtualServices bound to at least one server, keyed `namespace/name`.
    /// Their `gateways` lists (top level and per `match`) are rewritten to the
    /// full `namespace/name` form (a bare name is the VirtualService's
    /// namespace; `mesh` stays `mesh`), so the proxy never resolves names.
    pub virtual_services: BTreeMap<String, VirtualServiceSpec>,
    /// Problems the agent found while building this view that disable part of
    /// it (a missing or malformed Secret, a server without port): one line
    /// each, naming the Gateway, the server and the value. Shown by
    /// `proxy-status` and the proxy's config dump.
    pub warnings: Vec<String>,
}

/// A port the gateway listens on and the Gateway servers that share it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayListener {
    /// The port the proxy binds: the `targetPort` of the gateway Service port
    /// whose number is the server's `port.number` (80 → 8080), else the number.
    pub port: u16,
    /// `port.number` as written in the Gateway.
    pub service_port: u16,
    /// Servers on this port, in Istio's order (Gateway creation time, then name,
    /// then index in `servers`).
    pub servers: Vec<GatewayServer>,
}

/// One `servers[i]` entry of a Gateway, resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// Index in the Gateway's `servers`.
    pub index: usize,
    /// `port.name`.
    pub port_name: String,
    /// `port.protocol`, upper case: `HTTP`, `HTTPS`, `HTTP2`, `GRPC`, `TLS`, `TCP`
    /// (`MONGO`, `REDIS`, ... are carried as `TCP`).
    pub protocol: String,
    /// `hosts` without their `namespace/` part: `*`, `example.com`, `*.example.com`.
    pub hosts: Vec<String>,
    /// `tls.httpsRedirect` on a plaintext server: every request gets a 301 to
    /// `https://<host><path>`.
    pub https_redirect: bool,
    /// TLS this server terminates or passes through; `None` for plaintext.
    pub tls: Option<GatewayTls>,
    /// VirtualServices bound to this server (keys of
    /// [`GatewayView::virtual_services`]), in precedence order. `http` routes
    /// apply to HTTP/HTTPS/HTTP2/GRPC servers (and TLS-terminating ones),
    /// `tls` routes to PASSTHROUGH servers, `tcp` routes to the rest.
    pub virtual_services: Vec<String>,
    /// `defaultEndpoint` (`127.0.0.1:PORT` or `unix://...`), when set.
    pub default_endpoint: Option<String>,
}

/// Server-side TLS of one gateway server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayTls {
    /// `SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL`, `PASSTHROUGH`, `ISTIO_MUTUAL` or
    /// `AUTO_PASSTHROUGH` (the agent fills Istio's default, `SIMPLE`).
    pub mode: String,
    /// The certificate, key and client CA for SIMPLE / MUTUAL / OPTIONAL_MUTUAL,
    /// from the `credentialName` Secret(s) (or the files named by
    /// `serverCertificate`/`privateKey`/`caCertificates`, see `files`).
    pub credential: Option<TlsCredential>,
    /// Paths in the gateway pod when the server names files instead of a Secret.
    pub files: Option<TlsFiles>,
    /// Set when this server's TLS cannot be served (missing Secret, no
    /// `tls.key`, a PEM that does not parse, cert/key mismatch): the proxy
    /// serves nothing for this server, the others keep serving.
    pub error: Option<String>,
    /// Client certificate SANs accepted (MUTUAL / OPTIONAL_MUTUAL); empty: any
    /// certificate the CA signed.
    pub subject_alt_names: Vec<String>,
    /// `TLSV1_0` .. `TLSV1_3`, as in Istio (the proxy supports 1.2 and 1.3 and
    /// says so when asked for less).
    pub min_protocol_version: Option<String>,
    pub max_protocol_version: Option<String>,
    /// Cipher suite names as Envoy spells them (`ECDHE-RSA-AES128-GCM-SHA256`);
    /// empty: the proxy's defaults.
    pub cipher_suites: Vec<String>,
}

/// Certificate material of one server (PEM text).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsCredential {
    /// Where it came from: `namespace/secret-name` (plus `, namespace/name-cacert`
    /// when the CA came from the `-cacert` Secret).
    pub source: String,
    /// The server certificate chain, leaf first.
    pub cert_chain: String,
    /// The private key. Never logged, never in a config dump.
    pub private_key: String,
    /// Client CA bundle (MUTUAL / OPTIONAL_MUTUAL): `ca.crt` / `cacert`.
    pub ca_certificates: Option<String>,
    /// Certificate revocation list (`ca.crl`).
    pub ca_crl: Option<String>,
}

/// File paths of a server's TLS material inside the gateway pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsFiles {
    pub server_certificate: String,
    pub private_key: String,
    pub ca_certificates: Option<String>,
}

impl TlsCredential {
    /// A copy safe to show: the key replaced by a marker of its length.
    pub fn redacted(&self) -> TlsCredential {
        TlsCredential {
            private_key: format!("[redacted: {} bytes]", self.private_key.len()),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_the_key_bytes() {
        let c = TlsCredential {
            source: "istio-system/cred".into(),
            cert_chain: "CERT".into(),
            private_key: "-----BEGIN PRIVATE KEY-----\nSECRET\n".into(),
            ..Default::default()
        };
        let r = c.redacted();
        assert!(!r.private_key.contains("SECRET"), "{}", r.private_key);
        assert_eq!(r.cert_chain, "CERT");
    }

    #[test]
    fn empty_view_round_trips() {
        let v = GatewayView::default();
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<GatewayView>(&json).unwrap(), v);
    }
}
