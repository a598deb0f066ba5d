//! The agent's one typed Config, parsed from flags/env and validated before any
//! port is bound. Mesh-wide settings (trust domain, root namespace, outbound policy)
//! come from flags, or from the mesh config file (`--mesh-config`, the mesh-config
//! ConfigMap's `mesh` key) whose values win over the flags.

use crate::compile::{Settings, Visibility};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where objects come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    Files,
    Kubernetes,
}

/// `mesh-agent` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Config source.
    #[arg(long, value_enum, default_value = "files", env = "MESH_AGENT_SOURCE")]
    pub source: SourceKind,
    /// Folder of Kubernetes YAML (source=files), read recursively.
    #[arg(long, env = "MESH_AGENT_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Sync stream and CA address (Istio's 15012). With the CA on it speaks TLS
    /// and a subscription must carry its pod's token (as a CSR does) and is
    /// served only for pods of the token's namespace and service account.
    /// Without CA (no --ca-tokens in files mode) nobody can be authenticated:
    /// the port is plaintext, config-only and trusts its network.
    #[arg(long, default_value = "0.0.0.0:15012", env = "MESH_AGENT_LISTEN")]
    pub listen: SocketAddr,
    /// Optional plaintext config-only listener (Istio's 15010); refuses CSRs.
    /// It trusts its network: any pod's view to anyone who can reach it.
    #[arg(long, env = "MESH_AGENT_PLAINTEXT_LISTEN")]
    pub plaintext_listen: Option<SocketAddr>,
    /// Debug endpoint address (/debug/syncz).
    #[arg(
        long,
        default_value = "127.0.0.1:15014",
        env = "MESH_AGENT_DEBUG_LISTEN"
    )]
    pub debug_listen: SocketAddr,
    /// Readiness address (Istio's 8080): `GET /ready` answers `200` once the
    /// source has synced and the first snapshot is out, `503` before. For the
    /// kubelet, which probes the pod's IP; nothing else is served there (the
    /// debug listener, with the same check at `/healthz/ready`, stays on
    /// loopback).
    #[arg(long, env = "MESH_AGENT_READY_LISTEN")]
    pub ready_listen: Option<SocketAddr>,
    /// Name shown in proxy-status' AGENT column (defaults to the host name).
    #[arg(long, env = "POD_NAME")]
    pub agent_name: Option<String>,
    /// Kubernetes DNS suffix.
    #[arg(long, default_value = "cluster.local")]
    pub domain_suffix: String,
    /// Trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Namespace whose Sidecar/PeerAuthentication/AuthorizationPolicy apply mesh-wide.
    #[arg(long, default_value = "istio-system")]
    pub root_namespace: String,
    /// Outbound policy when no Sidecar sets one: ALLOW_ANY or REGISTRY_ONLY.
    #[arg(long, default_value = "ALLOW_ANY")]
    pub outbound_policy: String,
    /// Default service visibility without a Sidecar: on-demand (the default:
    /// what the namespace can reach, plus what a proxy looks up on first use
    /// that mesh would show: a captured connection to a Service VIP or pod IP,
    /// or an HTTP Host, its view lacks), namespace (only what the namespace can
    /// reach, no lookups) or mesh (everything exported up front, Istio's
    /// behaviour).
    #[arg(long, value_enum, default_value = "on-demand")]
    pub visibility: Visibility,
    /// Istio's PILOT_SCOPE_GATEWAY_TO_NAMESPACE: gateway pods get only the
    /// Gateways of their own namespace (`true`), not every namespace's.
    #[arg(
        long,
        env = "PILOT_SCOPE_GATEWAY_TO_NAMESPACE",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub scope_gateway_to_namespace: bool,
    /// Istio mesh config file (the mesh-config ConfigMap's `mesh` key). Its
    /// trustDomain, rootNamespace and outboundTrafficPolicy.mode override the
    /// flags; it is re-read on change (a bad edit keeps the last good config).
    #[arg(long, env = "MESH_AGENT_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// How often the mesh config file is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub mesh_reload_ms: u64,
    /// Quiet time that coalesces bursts of changes, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub debounce_ms: u64,
    /// OpenShift Service Mesh membership (Kubernetes source only): follow the
    /// ServiceMeshMemberRoll in the root namespace and the ServiceMeshMembers,
    /// label members, write their NetworkPolicies and serve only them.
    #[arg(long, env = "MESH_AGENT_MAISTRA_MEMBERS")]
    pub maistra_members: bool,
    /// Name of the ServiceMeshControlPlane this agent is (NetworkPolicy names,
    /// the `controlPlaneRef` ServiceMeshMembers must carry).
    #[arg(long, default_value = "basic", env = "MESH_AGENT_SMCP_NAME")]
    pub smcp_name: String,
    /// Write the member NetworkPolicies (the SMCP's
    /// `spec.security.manageNetworkPolicy`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_network_policy: bool,
    /// Kubernetes Gateway API controller (Kubernetes source only): deploy a
    /// `<gateway>-istio` Deployment/Service/ServiceAccount for every Gateway of
    /// class `istio` or `mesh`, make sure those GatewayClasses exist, and write
    /// the Gateway API objects' status. `--gateway-api=false` turns it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "MESH_AGENT_GATEWAY_API")]
    pub gateway_api: bool,
    #[command(flatten)]
    pub ca: CaArgs,
    /// Tracing compiled from the mesh config file (no flag of its own).
    #[arg(skip)]
    pub tracing: Option<mesh_api::tracing::TracingView>,
    /// Access log compiled from the mesh config file (no flag of its own).
    #[arg(skip)]
    pub access_log: Option<mesh_api::accesslog::AccessLogView>,
    /// The mesh config file's content, for Telemetry resolution (no flag of its own).
    #[arg(skip)]
    pub mesh: Option<std::sync::Arc<mesh_api::meshconfig::MeshConfig>>,
}

/// The mesh CA's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CaArgs {
    /// An Istio `cacerts` folder (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem); without it a self-signed root is generated at start.
    #[arg(long, env = "MESH_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Local credentials (files mode): `<token> <namespace> <service-account>`
    /// lines. They authenticate CSRs and subscriptions on 15012.
    #[arg(long, env = "MESH_CA_TOKENS")]
    pub ca_tokens: Option<PathBuf>,
    /// Where to publish the root bundle (local mode's `istio-ca-root-cert`).
    #[arg(long, env = "MESH_CA_ROOT_OUT")]
    pub ca_root_out: Option<PathBuf>,
    /// Longest workload certificate lifetime, in seconds (Istio's MAX_WORKLOAD_CERT_TTL, 90 days).
    #[arg(long, env = "MAX_WORKLOAD_CERT_TTL_SECONDS", default_value_t = 90 * 24 * 3600)]
    pub max_cert_ttl_secs: u64,
    /// How often --ca-dir is checked for changes (root rotation), in milliseconds.
    #[arg(long, env = "MESH_CA_RELOAD_MS", default_value_t = 5000)]
    pub ca_reload_ms: u64,
    /// Extra DNS names in the 15012 serving certificate (besides
    /// istiod.istio-system.svc and mesh-agent.istio-system.svc); repeatable.
    #[arg(
        long = "server-san",
        env = "MESH_AGENT_SERVER_SANS",
        value_delimiter = ','
    )]
    pub server_sans: Vec<String>,
    /// Lifetime of the 15012 serving certificate, in seconds (renewed at half).
    #[arg(long, default_value_t = 24 * 3600)]
    pub server_cert_ttl_secs: u64,
}

impl Default for CaArgs {
    fn default() -> Self {
        CaArgs {
            ca_dir: None,
            ca_tokens: None,
            ca_root_out: None,
            max_cert_ttl_secs: 90 * 24 * 3600,
            ca_reload_ms: 5000,
            server_sans: Vec::new(),
            server_cert_ttl_secs: 24 * 3600,
        }
    }
}

/// A config value that cannot work, and what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--source files needs --config-dir <folder>")]
    MissingConfigDir,
    #[error("--config-dir {0:?} is not a readable folder")]
    BadConfigDir(String),
    #[error("--outbound-policy {0:?} must be ALLOW_ANY or REGISTRY_ONLY")]
    OutboundPolicy(String),
    #[error("--{flag} {value:?} is not a valid {what}")]
    Name {
        flag: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("--debounce-ms {0} must be between 0 and 10000")]
    Debounce(u64),
    #[error("--ca-dir {0:?} is not a readable folder")]
    BadCaDir(String),
    #[error("--max-cert-ttl-secs must be at least 1")]
    MaxTtl,
    #[error("--{a} and --{b} are both {addr}")]
    SameAddress {
        a: &'static str,
        b: &'static str,
        addr: SocketAddr,
    },
    #[error("--ca-reload-ms must be between 100 and 3600000 (got {0})")]
    CaReload(u64),
    #[error("--server-san {0:?} is not a DNS name")]
    ServerSan(String),
    #[error("--server-cert-ttl-secs must be at least 2")]
    ServerTtl,
    #[error("--mesh-config: {0}")]
    MeshConfig(#[from] crate::meshfile::MeshFileError),
    #[error("--mesh-reload-ms must be between 10 and 3600000 (got {0})")]
    MeshReload(u64),
    #[error("--mesh-config {path}: {error} (the value comes from the file)")]
    MeshValue {
        path: String,
        error: Box<ConfigError>,
    },
}

impl Config {
    /// The config that `flags` give (without the program name), parsed exactly
    /// as `mesh-agent` parses its command line, defaults and all: for callers
    /// that embed the agent, and tests that want the real defaults.
    pub fn from_flags<I, T>(flags: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        #[derive(clap::Parser)]
        #[command(name = "mesh-agent")]
        struct Flags {
            #[command(flatten)]
            config: Config,
        }
        let argv = std::iter::once(std::ffi::OsString::from("mesh-agent"))
            .chain(flags.into_iter().map(Into::into));
        Ok(Flags::try_parse_from(argv)?.config)
    }

    /// The mesh config file, if one is configured.
    pub fn load_mesh(&self) -> Result<Option<crate::meshfile::MeshFile>, ConfigError> {
        match &self.mesh_config {
            None => Ok(None),
            Some(p) => Ok(Some(crate::meshfile::load(p)?)),
        }
    }

    /// This config with the mesh config's values in place of the flags.
    pub fn with_mesh(&self, m: &crate::meshfile::MeshFile) -> Config {
        let mut c = self.clone();
        c.trust_domain = m.mesh.trust_domain.clone();
        c.root_namespace = m.mesh.root_namespace.clone();
        c.outbound_policy = match m.mesh.outbound_traffic_policy.mode {
            mesh_api::meshconfig::OutboundMode::AllowAny => "ALLOW_ANY".into(),
            mesh_api::meshconfig::OutboundMode::RegistryOnly => "REGISTRY_ONLY".into(),
        };
        // validate() has already rejected a mesh config whose tracing does not compile.
        c.tracing = m.mesh.tracing_view(None).ok().flatten();
        // Likewise an access log format with an unknown operator.
        c.access_log = m.mesh.access_log_view().ok().flatten();
        c.mesh = Some(std::sync::Arc::new(m.mesh.clone()));
        let file = m.mesh.access_log_file.trim();
        if !file.is_empty() && file != "/dev/stdout" {
            // The sidecar's stdout is the container log, which is where
            // Istio users point accessLogFile; another path is not a file we write.
            tracing::info!(
                accessLogFile = file,
                "access log goes to the proxy's stdout"
            );
        }
        c
    }

    /// Checks everything that can be checked without binding, the mesh config
    /// file included (with its values applied).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(m) = self.load_mesh()? {
            if !(10..=3_600_000).contains(&self.mesh_reload_ms) {
                return Err(ConfigError::MeshReload(self.mesh_reload_ms));
            }
            let mut applied = self.with_mesh(&m);
            applied.mesh_config = None;
            return applied.validate().map_err(|e| ConfigError::MeshValue {
                path: self
                    .mesh_config
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                error: Box::new(e),
            });
        }
        self.validate_flags()
    }

    fn validate_flags(&self) -> Result<(), ConfigError> {
        if self.source == SourceKind::Files {
            let dir = self
                .config_dir
                .as_ref()
                .ok_or(ConfigError::MissingConfigDir)?;
            if std::fs::read_dir(dir).is_err() {
                return Err(ConfigError::BadConfigDir(dir.display().to_string()));
            }
        }
        if !matches!(self.outbound_policy.as_str(), "ALLOW_ANY" | "REGISTRY_ONLY") {
            return Err(ConfigError::OutboundPolicy(self.outbound_policy.clone()));
        }
        if !crate::validate::valid_host(&self.domain_suffix) || self.domain_suffix.contains('*') {
            return Err(ConfigError::Name {
                flag: "domain-suffix",
                value: self.domain_suffix.clone(),
                what: "DNS suffix",
            });
        }
        if mesh_api::Identity::new(&self.trust_domain, "ns", "sa").is_err() {
            return Err(ConfigError::Name {
                flag: "trust-domain",
                value: self.trust_domain.clone(),
                what: "trust domain",
            });
        }
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !label(&self.root_namespace) {
            return Err(ConfigError::Name {
                flag: "root-namespace",
                value: self.root_namespace.clone(),
                what: "namespace name",
            });
        }
        // It names NetworkPolicies (istio-mesh-<name>): a DNS label, with room.
        if self.maistra_members
            && !(mesh_api::meshconfig::is_dns_label(&self.smcp_name) && self.smcp_name.len() <= 40)
        {
            return Err(ConfigError::Name {
                flag: "smcp-name",
                value: self.smcp_name.clone(),
                what: "ServiceMeshControlPlane name (a DNS label of at most 40 characters)",
            });
        }
        if self.debounce_ms > 10_000 {
            return Err(ConfigError::Debounce(self.debounce_ms));
        }
        if let Some(dir) = &self.ca.ca_dir {
            if std::fs::read_dir(dir).is_err() {
                return Err(ConfigError::BadCaDir(dir.display().to_string()));
            }
        }
        if self.ca.max_cert_ttl_secs == 0 {
            return Err(ConfigError::MaxTtl);
        }
        let addrs: Vec<(&'static str, SocketAddr)> = [
            ("listen", Some(self.listen)),
            ("plaintext-listen", self.plaintext_listen),
            ("debug-listen", Some(self.debug_listen)),
            ("ready-listen", self.ready_listen),
        ]
        .into_iter()
        .filter_map(|(f, a)| Some((f, a?)))
        .collect();
        for (i, (a, addr)) in addrs.iter().enumerate() {
            if let Some((b, _)) = addrs[i + 1..]
                .iter()
                .find(|(_, other)| addr.port() != 0 && other == addr)
            {
                return Err(ConfigError::SameAddress { a, b, addr: *addr });
            }
        }
        if !(100..=3_600_000).contains(&self.ca.ca_reload_ms) {
            return Err(ConfigError::CaReload(self.ca.ca_reload_ms));
        }
        if let Some(bad) = self
            .ca
            .server_sans
            .iter()
            .find(|s| !crate::validate::valid_host(s) || s.contains('*'))
        {
            return Err(ConfigError::ServerSan(bad.clone()));
        }
        if self.ca.server_cert_ttl_secs < 2 {
            return Err(ConfigError::ServerTtl);
        }
        Ok(())
    }

    /// Compiler settings derived from the flags.
    pub fn settings(&self) -> Settings {
        Settings {
            domain_suffix: self.domain_suffix.clone(),
            root_namespace: self.root_namespace.clone(),
            outbound_policy: self.outbound_policy.clone(),
            visibility: self.visibility,
            trust_domain: self.trust_domain.clone(),
            scope_gateway_to_namespace: self.scope_gateway_to_namespace,
            tracing: self.tracing.clone(),
            access_log: self.access_log.clone(),
            mesh: self.mesh.clone(),
            members: None,
        }
    }

    /// The membership reconciler's settings, when it is on.
    pub fn members(&self) -> Option<crate::maistra::members::MembersConfig> {
        self.maistra_members
            .then(|| crate::maistra::members::MembersConfig {
                control_plane_namespace: self.root_namespace.clone(),
                smcp_name: self.smcp_name.clone(),
                manage_network_policy: self.manage_network_policy,
            })
    }

    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    /// The AGENT column value.
    pub fn agent_name(&self) -> String {
        self.agent_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "mesh-agent".into())
        })
    }
}

#[cfg(test)]
mod mesh_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_demand_is_the_default_visibility_and_the_others_stay_selectable() {
        let parse = |flags: &[&str]| Config::from_flags(flags.iter().copied()).unwrap();
        assert_eq!(parse(&[]).visibility, Visibility::OnDemand);
        assert_eq!(parse(&[]).settings().visibility, Visibility::OnDemand);
        for (flag, want) in [
            ("namespace", Visibility::Namespace),
            ("mesh", Visibility::Mesh),
            ("on-demand", Visibility::OnDemand),
        ] {
            assert_eq!(parse(&["--visibility", flag]).visibility, want);
        }
        let bad = Config::from_flags(["--visibility", "cluster"]).unwrap_err();
        assert!(bad.to_string().contains("cluster"), "{bad}");
    }
}
