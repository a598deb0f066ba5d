//! The proxy's one typed configuration: command-line flags with Istio's
//! environment variables as fallbacks (what the injector sets on `istio-proxy`),
//! validated before any port is bound.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mesh_api::ports;

/// Why the configuration cannot be used; each names the flag and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--labels / ISTIO_META_POD_LABELS: {0}")]
    Labels(String),
    #[error("no config source: give --agent HOST:PORT, or --config-dir DIR / --view-file FILE (standalone)")]
    NoSource,
    #[error("--config-dir {0}: this mesh-proxy is built without the embedded agent; run a mesh-agent with --config-dir and give --agent HOST:PORT, or build mesh-proxy with `--features embedded-agent`")]
    NoEmbeddedAgent(String),
    #[error("--concurrency must be 1..=64, got {0}")]
    Concurrency(usize),
    #[error("{0}")]
    CpuPolicy(String),
    #[error("--{flag}: {value:?} is not a duration (e.g. 5s, 250ms)")]
    Duration { flag: &'static str, value: String },
    #[error("--local-rate-limit / MESH_LOCAL_RATE_LIMIT: {0}")]
    RateLimit(mesh_api::AnnotationError),
    #[error("--path-normalization: {0}")]
    PathNormalization(String),
    #[error("--ca-token-file is set but there is no CA address: give --ca-addr or --agent")]
    NoCa,
    #[error(transparent)]
    Transport(#[from] crate::mtls::certs::TransportError),
    #[error("--cert-ttl {0:?} must be at least 2s")]
    CertTtl(String),
    #[error("--{flag} {value:?} must be more than zero")]
    Zero { flag: &'static str, value: String },
    #[error("port {port} is used twice (--{a} and --{b})")]
    PortClash {
        port: u16,
        a: &'static str,
        b: &'static str,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = ports::OUTBOUND_CAPTURE)]
    pub outbound_port: u16,
    #[arg(long, default_value_t = ports::INBOUND_CAPTURE)]
    pub inbound_port: u16,
    #[arg(long, default_value_t = ports::ADMIN)]
    pub admin_port: u16,
    #[arg(long, default_value_t = ports::HEALTH)]
    pub health_port: u16,
    #[arg(long, default_value_t = ports::PROMETHEUS)]
    pub prometheus_port: u16,
    #[arg(long, default_value_t = ports::STATUS)]
    pub status_port: u16,
    /// Address the capture, health and metrics listeners bind (admin is always loopback).
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    #[arg(long, env = "POD_NAME", default_value = "unknown")]
    pub pod: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,
    #[arg(long, env = "INSTANCE_IP")]
    pub instance_ip: Option<IpAddr>,
    /// Workload name for metrics (Istio's ISTIO_META_WORKLOAD_NAME).
    #[arg(long, env = "ISTIO_META_WORKLOAD_NAME")]
    pub workload_name: Option<String>,
    /// Pod labels: `k=v,k2=v2` or a JSON object. Without it, the downward-API
    /// file the injector mounts (`--pod-labels-file`) is read.
    #[arg(long, env = "ISTIO_META_POD_LABELS", default_value = "")]
    pub labels: String,
    #[arg(long, default_value = "/etc/istio/pod/labels")]
    pub pod_labels_file: PathBuf,
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Standalone mode: a ProxyView (JSON or YAML) file, re-read when it changes.
    #[arg(long)]
    pub view_file: Option<PathBuf>,
    /// Standalone mode: a folder of Kubernetes + Istio YAML, served by an embedded
    /// agent (builds with the `embedded-agent` feature only).
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// The config-sync agent to subscribe to.
    #[arg(long, env = "MESH_AGENT_ADDR")]
    pub agent: Option<String>,
    /// Worker threads (1 = a single-threaded runtime, like Envoy `--concurrency 1`).
    #[arg(long, env = "PROXY_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// The threads' CPU scheduling class: `adaptive` (SCHED_BATCH while the
    /// CPUs have room, SCHED_OTHER while they are contended), `normal` or
    /// `batch` (see `sched.rs`).
    #[arg(long, env = "MESH_PROXY_CPU_POLICY", default_value = "adaptive")]
    pub cpu_policy: String,
    /// How long to wait for the first bytes of an undeclared protocol.
    #[arg(long, default_value = "100ms")]
    pub protocol_detection_timeout: String,
    /// A downstream HTTP connection that sends no byte within this is closed
    /// (only where HTTP is known: declared HTTP ports, or after mTLS with an
    /// HTTP ALPN; undeclared ports still fall back to TCP after detection, so
    /// server-first protocols keep working).
    #[arg(long, env = "MESH_HTTP_FIRST_BYTE_TIMEOUT", default_value = "15s")]
    pub http_first_byte_timeout: String,
    /// A downstream HTTP connection with no request started and no response
    /// byte moved for this long gets GOAWAY / `Connection: close` (Envoy's
    /// HTTP connection manager `idle_timeout` default, 1h).
    #[arg(long, env = "MESH_HTTP_IDLE_TIMEOUT", default_value = "1h")]
    pub http_idle_timeout: String,
    /// Opaque TCP connections with no byte either way for this long are closed
    /// (Istio's TCP proxy `idle_timeout` default, 1h).
    #[arg(long, env = "MESH_TCP_IDLE_TIMEOUT", default_value = "1h")]
    pub tcp_idle_timeout: String,
    /// At most this many connections at once per capture listener (inbound,
    /// outbound); connection N+1 is closed at once and counted in
    /// `mesh_downstream_cx_overflow_total`.
    #[arg(
        long,
        env = "MESH_MAX_CONNECTIONS_PER_LISTENER",
        default_value_t = 10_000
    )]
    pub max_connections_per_listener: usize,
    /// Grace period after a drain starts during which new inbound connections are still accepted.
    #[arg(long, default_value = "1s")]
    pub drain_grace: String,
    /// terminationDrainDuration: the longest in-flight work may take after a drain.
    #[arg(long, env = "TERMINATION_DRAIN_DURATION_SECONDS", default_value = "5s")]
    pub termination_drain_duration: String,
    /// Access log: `off`, `text` (Envoy's default format) or `json`, to stdout.
    /// Given, it overrides the mesh config's (the view's) access log setting.
    #[arg(long, default_value = "")]
    pub access_log: String,
    /// Local rate limit of inbound HTTP requests, e.g. `100/s` or
    /// `50/s;5/s,port=9080` (syntax: `mesh_api::ratelimit`).
    #[arg(long, env = "MESH_LOCAL_RATE_LIMIT", default_value = "")]
    pub local_rate_limit: String,
    /// Inbound path normalization before authorization (Istio's
    /// meshConfig.pathNormalization): NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES.
    #[arg(long, env = "MESH_PATH_NORMALIZATION", default_value = "MERGE_SLASHES")]
    pub path_normalization: String,
    /// The pod's credential for the mesh CA (Istio's projected token
    /// /var/run/secrets/tokens/istio-token; a local token file in local mode).
    /// Setting it turns on workload certificates and mTLS; it also
    /// authenticates the config subscription on the agent's TLS port (re-read
    /// at every connection, as projected tokens rotate).
    #[arg(long, env = "CA_TOKEN_FILE")]
    pub ca_token_file: Option<PathBuf>,
    /// The mesh CA (Istio's CA_ADDR); defaults to --agent.
    #[arg(long, env = "CA_ADDR")]
    pub ca_addr: Option<String>,
    /// Roots the agent's 15012 (config + CA) is verified with (default
    /// /var/run/secrets/istio/root-cert.pem, where pilot-agent reads it). TLS to
    /// the agent whenever this is given or the default file exists.
    #[arg(long, env = "CA_ROOT_CA")]
    pub ca_root_file: Option<PathBuf>,
    /// The name the agent's certificate must carry.
    #[arg(long, env = "ISTIOD_SAN", default_value = mesh_api::identity::ISTIOD_SERVER_NAME)]
    pub ca_server_name: String,
    /// Workload certificate lifetime asked of the CA (Istio's SECRET_TTL).
    #[arg(long, env = "SECRET_TTL", default_value = "24h")]
    pub cert_ttl: String,
    /// On-demand discovery: a service this proxy looked up and has not used
    /// (no request, no open connection) for this long leaves its view, and
    /// the agent is told to forget it; the next call looks it up again. `0`:
    /// never.
    #[arg(long, env = "MESH_ON_DEMAND_IDLE", default_value = "10m")]
    pub on_demand_idle: String,
    /// How often idle on-demand services are looked for (at most half of
    /// `--on-demand-idle` apart either way).
    #[arg(long, env = "MESH_ON_DEMAND_SWEEP", default_value = "30s")]
    pub on_demand_sweep: String,
}

/// What the proxy is: a sidecar (capture listeners 15001/15006) or a gateway
/// (`mesh-proxy router`, Istio's `proxy router`: no capture, listeners from the
/// Gateway servers in its view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Sidecar,
    Router,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Chosen by the subcommand (`sidecar`, the default, or `router`).
    pub mode: Mode,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub health: SocketAddr,
    pub prometheus: SocketAddr,
    pub status: SocketAddr,
    pub pod: String,
    pub namespace: String,
    pub service_account: String,
    pub instance_ip: Option<IpAddr>,
    pub workload_name: String,
    pub labels: BTreeMap<String, String>,
    pub trust_domain: String,
    pub source: Source,
    pub concurrency: usize,
    pub cpu_policy: crate::sched::CpuPolicy,
    pub detect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub http_idle_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    pub max_connections_per_listener: usize,
    pub drain_grace: Duration,
    pub drain_duration: Duration,
    /// `--access-log` when given; `None`: the view decides.
    pub access_log: Option<AccessLog>,
    pub rate_limits: Vec<mesh_api::ratelimit::Bucket>,
    pub path_normalization: crate::authz::normalize::PathNormalization,
    /// Where the workload certificate comes from (mTLS on), if anywhere.
    pub cert: Option<crate::mtls::certs::CertSource>,
    /// How the agent (config stream) is reached: TLS when a root file is there.
    pub agent_transport: mesh_api::syncclient::Transport,
    /// When services found on demand age out of the view; `None`: never.
    pub on_demand_idle: Option<mesh_api::syncidle::IdlePolicy>,
}

impl Config {
    /// Who this proxy says it is when it subscribes.
    pub fn identity(&self) -> mesh_api::syncapi::ProxyIdentity {
        mesh_api::syncapi::ProxyIdentity {
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            labels: self.labels.clone(),
            ips: self.instance_ip.iter().map(|ip| ip.to_string()).collect(),
            // A gateway asks for its Gateway servers' listeners.
            router: self.mode == Mode::Router,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    ViewFile(PathBuf),
    ConfigDir(PathBuf),
    Agent(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Text,
    Json,
}

/// Parses a duration flag: any mesh duration ([`mesh_api::values::duration`]:
/// `1.5s`, `250ms`, `1m30s`), or a bare number of seconds.
pub fn parse_duration(flag: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let v = v.trim();
    let bare = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let parsed = if bare {
        mesh_api::values::duration(&format!("{v}s"))
    } else {
        mesh_api::values::duration(v)
    };
    parsed.map_err(|_| ConfigError::Duration {
        flag,
        value: v.to_string(),
    })
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let s = s.trim();
    if s.starts_with('{') {
        return serde_json::from_str(s).map_err(|e| ConfigError::Labels(format!("{s:?}: {e}")));
    }
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(ConfigError::Labels(format!("{p:?} is not key=value"))),
        })
        .collect()
}

impl Args {
    pub fn validate(self) -> Result<Config, ConfigError> {
        if !(1..=64).contains(&self.concurrency) {
            return Err(ConfigError::Concurrency(self.concurrency));
        }
        let named = [
            ("outbound-port", self.outbound_port),
            ("inbound-port", self.inbound_port),
            ("admin-port", self.admin_port),
            ("health-port", self.health_port),
            ("prometheus-port", self.prometheus_port),
            ("status-port", self.status_port),
        ];
        for (i, (a, pa)) in named.iter().enumerate() {
            for (b, pb) in &named[i + 1..] {
                if pa == pb && *pa != 0 {
                    return Err(ConfigError::PortClash { port: *pa, a, b });
                }
            }
        }
        let cert_ttl = parse_duration("cert-ttl", &self.cert_ttl)?;
        if cert_ttl < Duration::from_secs(2) {
            return Err(ConfigError::CertTtl(self.cert_ttl.clone()));
        }
        // In a pod the injector mounts the token where Istio's agent looks for it.
        let default_token = std::path::Path::new(mesh_api::identity::CA_TOKEN_PATH);
        let token_file = self
            .ca_token_file
            .clone()
            .or_else(|| default_token.exists().then(|| default_token.to_path_buf()));
        let agent_transport = crate::mtls::certs::transport(
            self.ca_root_file.as_deref(),
            &self.ca_server_name,
            token_file.as_deref(),
        )?;
        let cert = match &token_file {
            None => None,
            Some(token_file) => Some(crate::mtls::certs::CertSource {
                transport: agent_transport.clone(),
                ca_addr: self
                    .ca_addr
                    .clone()
                    .or_else(|| self.agent.clone())
                    .ok_or(ConfigError::NoCa)?,
                token_file: token_file.clone(),
                ttl: cert_ttl,
                trust_domain: self.trust_domain.clone(),
            }),
        };
        let source = pick_source(
            self.view_file,
            self.config_dir,
            self.agent,
            cfg!(feature = "embedded-agent"),
        )?;
        let access_log = match self.access_log.as_str() {
            "" => None,
            "off" => Some(AccessLog::Off),
            "text" | "/dev/stdout" => Some(AccessLog::Text),
            "json" => Some(AccessLog::Json),
            other => {
                return Err(ConfigError::Labels(format!(
                    "--access-log {other:?}: expected off, text or json"
                )))
            }
        };
        let mut labels = parse_labels(&self.labels)?;
        if labels.is_empty() {
            if let Ok(text) = std::fs::read_to_string(&self.pod_labels_file) {
                labels = parse_downward_labels(&text);
            }
        }
        let workload_name = self
            .workload_name
            .unwrap_or_else(|| workload_from_pod(&self.pod));
        let positive = |flag: &'static str, v: &str| match parse_duration(flag, v)? {
            d if d.is_zero() => Err(ConfigError::Zero {
                flag,
                value: v.to_string(),
            }),
            d => Ok(d),
        };
        let first_byte_timeout =
            positive("http-first-byte-timeout", &self.http_first_byte_timeout)?;
        let http_idle_timeout = positive("http-idle-timeout", &self.http_idle_timeout)?;
        let tcp_idle_timeout = positive("tcp-idle-timeout", &self.tcp_idle_timeout)?;
        let on_demand_sweep = positive("on-demand-sweep", &self.on_demand_sweep)?;
        let on_demand_idle = match parse_duration("on-demand-idle", &self.on_demand_idle)? {
            d if d.is_zero() => None,
            ttl => Some(mesh_api::syncidle::IdlePolicy {
                ttl,
                sweep: on_demand_sweep,
            }),
        };
        if self.max_connections_per_listener == 0 {
            return Err(ConfigError::Zero {
                flag: "max-connections-per-listener",
                value: "0".into(),
            });
        }
        let at = |p: u16| SocketAddr::new(self.bind, p);
        Ok(Config {
            mode: Mode::Sidecar,
            outbound: at(self.outbound_port),
            inbound: at(self.inbound_port),
            admin: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), self.admin_port),
            health: at(self.health_port),
            prometheus: at(self.prometheus_port),
            status: at(self.status_port),
            pod: self.pod,
            namespace: self.namespace,
            service_account: self.service_account,
            instance_ip: self.instance_ip,
            workload_name,
            labels,
            trust_domain: self.trust_domain,
            source,
            concurrency: self.concurrency,
            cpu_policy: self.cpu_policy.parse().map_err(ConfigError::CpuPolicy)?,
            detect_timeout: parse_duration(
                "protocol-detection-timeout",
                &self.protocol_detection_timeout,
            )?,
            first_byte_timeout,
            http_idle_timeout,
            tcp_idle_timeout,
            max_connections_per_listener: self.max_connections_per_listener,
            drain_grace: parse_duration("drain-grace", &self.drain_grace)?,
            drain_duration: parse_duration(
                "termination-drain-duration",
                &self.termination_drain_duration,
            )?,
            access_log,
            rate_limits: mesh_api::ratelimit::parse(&self.local_rate_limit)
                .map_err(ConfigError::RateLimit)?,
            path_normalization: self
                .path_normalization
                .parse()
                .map_err(ConfigError::PathNormalization)?,
            cert,
            agent_transport,
            on_demand_idle,
        })
    }
}

/// The config source the flags select (a view file, then a config folder, then
/// the agent). `embedded`: this build can embed an agent for `--config-dir`.
fn pick_source(
    view_file: Option<PathBuf>,
    config_dir: Option<PathBuf>,
    agent: Option<String>,
    embedded: bool,
) -> Result<Source, ConfigError> {
    Ok(match (view_file, config_dir, agent) {
        (Some(f), _, _) => Source::ViewFile(f),
        (None, Some(d), _) if !embedded => {
            return Err(ConfigError::NoEmbeddedAgent(d.display().to_string()))
        }
        (None, Some(d), _) => Source::ConfigDir(d),
        (None, None, Some(a)) => Source::Agent(a),
        (None, None, None) => return Err(ConfigError::NoSource),
    })
}

/// The downward API's `labels` file: one `key="value"` per line.
fn parse_downward_labels(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// `reviews-v1-7d4b9c-x2x9z` → `reviews-v1` (Deployment pods), `ratings-v1-0` → `ratings-v1`.
fn workload_from_pod(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    match parts.len() {
        n if n >= 3 && parts[n - 1].len() == 5 && parts[n - 2].len() >= 5 => {
            parts[..n - 2].join("-")
        }
        n if n >= 2 && parts[n - 1].chars().all(|c| c.is_ascii_digit()) => parts[..n - 1].join("-"),
        _ => pod.to_string(),
    }
}

#[cfg(test)]
mod tests;
