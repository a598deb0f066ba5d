//! What every scenario works with: the shared [`Env`] (the local mesh plus
//! the test certificate), the [`Resp`] of one request, and the ways to reach
//! the mesh — a scenario file filled in for `apply`, a Gateway's published
//! port, curl from the host or from a pod, and the status the agent computed
//! for an object. A leaf module: it imports none of the scenario files.

use crate::common::{text, EchoReply, Local};
use serde_json::Value;
use std::time::Duration;

pub const INFRA: &str = "gateway-conformance-infra";
pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gateway-api");
/// How long one scenario may take to converge (config push + pod start).
pub const CONVERGE: Duration = Duration::from_secs(40);

pub type Check = Result<(), String>;

pub struct Env {
    pub mesh: Local,
    /// Base64 of a certificate/key for `example.org` (Secrets of the TLS scenarios).
    pub cert_b64: String,
    pub key_b64: String,
    /// Path of the CA that signed it (curl `--cacert`).
    pub ca: String,
}

/// One answer: status code, the echo app's report, response headers (lower-case).
pub struct Resp {
    pub code: u16,
    pub echo: Option<EchoReply>,
    pub headers: Value,
}

impl Resp {
    pub fn pod(&self) -> &str {
        self.echo.as_ref().map(|e| e.pod.as_str()).unwrap_or("-")
    }
    pub fn req_header(&self, name: &str) -> Option<&str> {
        self.echo.as_ref()?.headers.get(name).map(String::as_str)
    }
    pub fn resp_header(&self, name: &str) -> Option<String> {
        Some(self.headers[name].get(0)?.as_str()?.to_string())
    }
}

impl Env {
    /// A scenario file with the test certificate filled in, written for `apply`.
    pub fn data(&self, name: &str) -> String {
        let text = std::fs::read_to_string(format!("{DATA}/{name}"))
            .unwrap()
            .replace("CERT_B64", &self.cert_b64)
            .replace("KEY_B64", &self.key_b64);
        self.mesh.file(name, &text)
    }

    /// `host:port` of a Gateway's published port.
    pub fn gw(&self, gateway: &str, port: u16) -> Result<String, String> {
        let out = self.mesh.meshctl(&[
            "service-url",
            &format!("{gateway}-istio"),
            "-n",
            INFRA,
            "--port",
            &port.to_string(),
        ]);
        if !out.status.success() {
            return Err(format!(
                "no published port {port} of {gateway}: {}",
                text(&out)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `n` requests by one curl, from the host (`pod` None) or from a pod.
    pub fn curl(&self, pod: Option<&str>, args: &[&str], url: &str, n: usize) -> Vec<Resp> {
        let url = if n > 1 {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}call=[1-{n}]")
        } else {
            url.to_string()
        };
        let mut argv = vec![
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n@@%{http_code}@@%{header_json}@@END\n",
        ];
        argv.extend_from_slice(args);
        argv.push(&url);
        let out = match pod {
            Some(p) => self.mesh.exec(p, None, &argv),
            None => std::process::Command::new(argv[0])
                .args(&argv[1..])
                .output()
                .unwrap(),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .split("@@END\n")
            .filter_map(|chunk| {
                let (body, rest) = chunk.rsplit_once("\n@@")?;
                let (code, headers) = rest.split_once("@@")?;
                Some(Resp {
                    code: code.parse().unwrap_or(0),
                    echo: serde_json::from_str(body.trim()).ok(),
                    headers: serde_json::from_str(headers).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// One GET through a Gateway's published HTTP port with `Host: host`.
    pub fn get(
        &self,
        gateway: &str,
        host: &str,
        path: &str,
        headers: &[&str],
    ) -> Result<Resp, String> {
        let addr = self.gw(gateway, 80)?;
        let h = format!("Host: {host}");
        let mut args = vec!["-H", h.as_str()];
        for x in headers {
            args.extend(["-H", x]);
        }
        self.curl(None, &args, &format!("http://{addr}{path}"), 1)
            .pop()
            .ok_or_else(|| format!("no answer from {gateway} for {host}{path}"))
    }

    /// One GET from a mesh client pod.
    pub fn pod_get(&self, pod: &str, url: &str, headers: &[&str]) -> Result<Resp, String> {
        let mut args = Vec::new();
        for x in headers {
            args.extend(["-H", *x]);
        }
        self.curl(Some(pod), &args, url, 1)
            .pop()
            .ok_or_else(|| format!("no answer from {pod} to {url}"))
    }

    /// The status the agent computed for `kind/ns/name`, if any.
    pub fn status(&self, obj: &str) -> Option<Value> {
        let out = self.mesh.meshctl(&["status", obj]);
        if !out.status.success() {
            return None;
        }
        serde_yaml_ng::from_slice(&out.stdout).ok()
    }
}
