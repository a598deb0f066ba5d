//! `istio-iptables`-compatible flag parsing for `mesh-cni redirect`: the same short and
//! long flags, the same list syntax (`""`, `*`, comma lists with empty items ignored),
//! the environment variables Istio reads for settings that have no flag, and our
//! explicit flags for what Istio detects at run time (`--ipv6`, `--dns-servers-v4/-v6`).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use mesh_api::{InterceptionMode, RedirectParams, Selection};

/// A bad flag or value; the message names it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("unknown flag {0:?}")]
    Unknown(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("invalid value {value:?} for {flag}: {reason}")]
    Invalid {
        flag: String,
        value: String,
        reason: String,
    },
}

/// Which iptables implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Probe which one the host's nat table uses.
    #[default]
    Auto,
    Nft,
    Legacy,
}

/// Everything `mesh-cni redirect` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectArgs {
    pub params: RedirectParams,
    pub dry_run: bool,
    pub backend: BackendChoice,
}

fn invalid(flag: &str, value: &str, reason: impl ToString) -> FlagError {
    FlagError::Invalid {
        flag: flag.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn items(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>, FlagError>
where
    T::Err: std::fmt::Display,
{
    items(v)
        .map(|i| i.parse::<T>().map_err(|e| invalid(flag, i, e)))
        .collect()
}

fn parse_ports(flag: &str, v: &str) -> Result<Vec<u16>, FlagError> {
    let ports: Vec<u16> = parse_list(flag, v)?;
    if ports.contains(&0) {
        return Err(invalid(flag, v, "port 0 is not a port"));
    }
    Ok(ports)
}

fn parse_selection<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Selection<T>, FlagError>
where
    T::Err: std::fmt::Display,
{
    if v.trim() == "*" {
        return Ok(Selection::All);
    }
    let list = parse_list(flag, v)?;
    Ok(if list.is_empty() {
        Selection::None
    } else {
        Selection::Only(list)
    })
}

fn parse_nets(flag: &str, v: &str) -> Result<Vec<IpNet>, FlagError> {
    if v.trim() == "*" {
        return Err(invalid(flag, v, "'*' is not allowed here"));
    }
    parse_list(flag, v)
}

fn parse_bool(flag: &str, v: &str) -> Result<bool, FlagError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(invalid(flag, v, "expected true or false")),
    }
}

fn parse_ifaces(flag: &str, v: &str) -> Result<Vec<String>, FlagError> {
    items(v)
        .map(|i| {
            if i.len() > 15 || i.contains('/') || i.contains(char::is_whitespace) {
                Err(invalid(flag, i, "not a valid interface name"))
            } else {
                Ok(i.to_string())
            }
        })
        .collect()
}

/// Flags that `istio-iptables` also reads from the environment (long name upper-cased,
/// `-` as `_`), plus Istio's aliases; `true` marks boolean flags.
const ENV_FLAGS: &[(&str, &[&str], bool)] = &[
    ("--inbound-capture-port", &["INBOUND_CAPTURE_PORT"], false),
    ("--inbound-tunnel-port", &["INBOUND_TUNNEL_PORT"], false),
    ("--proxy-uid", &["PROXY_UID"], false),
    ("--proxy-gid", &["PROXY_GID"], false),
    (
        "--istio-inbound-interception-mode",
        &["ISTIO_INBOUND_INTERCEPTION_MODE"],
        false,
    ),
    (
        "--istio-inbound-tproxy-mark",
        &["ISTIO_INBOUND_TPROXY_MARK"],
        false,
    ),
    (
        "--istio-inbound-tproxy-route-table",
        &["ISTIO_INBOUND_TPROXY_ROUTE_TABLE"],
        false,
    ),
    ("--istio-inbound-ports", &["ISTIO_INBOUND_PORTS"], false),
    (
        "--istio-local-exclude-ports",
        &["ISTIO_LOCAL_EXCLUDE_PORTS"],
        false,
    ),
    ("--istio-outbound-ports", &["ISTIO_OUTBOUND_PORTS"], false),
    (
        "--istio-local-outbound-ports-exclude",
        &["ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"],
        false,
    ),
    ("--istio-service-cidr", &["ISTIO_SERVICE_CIDR"], false),
    (
        "--istio-service-exclude-cidr",
        &["ISTIO_SERVICE_EXCLUDE_CIDR"],
        false,
    ),
    ("--kube-virt-interfaces", &["KUBE_VIRT_INTERFACES"], false),
    (
        "--istio-exclude-interfaces",
        &["ISTIO_EXCLUDE_INTERFACES"],
        false,
    ),
    ("--dry-run", &["DRY_RUN"], true),
    (
        "--redirect-dns",
        &["REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"],
        true,
    ),
    ("--capture-all-dns", &["CAPTURE_ALL_DNS"], true),
    ("--drop-invalid", &["DROP_INVALID", "INVALID_DROP"], true),
    ("--dual-stack", &["DUAL_STACK"], true),
];

/// The environment's flag settings as argv (command-line flags come after and win).
fn env_args(env: &impl Fn(&str) -> Option<String>) -> Result<Vec<String>, FlagError> {
    let mut out = Vec::new();
    for (flag, names, boolean) in ENV_FLAGS {
        let Some((name, value)) = names.iter().find_map(|n| env(n).map(|v| (*n, v))) else {
            continue;
        };
        let pair = if *boolean {
            vec![format!("{flag}={value}")]
        } else {
            vec![flag.to_string(), value.clone()]
        };
        // Validate alone so an error names the variable, not a flag nobody typed.
        parse_argv(&pair, &|_| None).map_err(|e| match e {
            FlagError::Invalid { value, reason, .. } => FlagError::Invalid {
                flag: name.to_string(),
                value,
                reason,
            },
            other => other,
        })?;
        out.extend(pair);
    }
    Ok(out)
}

/// Parses `istio-iptables` flags (argv without the program/subcommand name), with the
/// environment (read through `env`) providing defaults and the env-only settings.
pub fn parse(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<RedirectArgs, FlagError> {
    let mut all = env_args(&env)?;
    all.extend(args.iter().cloned());
    parse_argv(&all, &env)
}

fn parse_argv(
    args: &[String],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<RedirectArgs, FlagError> {
    let mut p = RedirectParams::default();
    let mut dry_run = false;
    let mut backend = BackendChoice::Auto;
    let mut gid_given = false;

    if let Some(v) = env("ISTIO_OUTBOUND_OWNER_GROUPS") {
        p.owner_groups_include = parse_selection("ISTIO_OUTBOUND_OWNER_GROUPS", &v)?;
    }
    if let Some(v) = env("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE") {
        p.owner_groups_exclude = parse_list("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", &v)?;
    }
    if let Some(v) = env("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR") {
        p.host_ipv4_loopback_cidr = v
            .trim()
            .parse::<Ipv4Net>()
            .map_err(|e| invalid("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", &v, e))?;
    }

    let mut i = 0;
    while i < args.len() {
        let raw = &args[i];
        i += 1;
        let (flag, inline) = match raw.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (raw.clone(), None),
        };
        let boolean = |inline: &Option<String>| -> Result<bool, FlagError> {
            inline.as_deref().map_or(Ok(true), |v| parse_bool(&flag, v))
        };
        match flag.as_str() {
            "-n" | "--dry-run" => {
                dry_run = boolean(&inline)?;
                continue;
            }
            "--redirect-dns" => {
                p.redirect_dns = boolean(&inline)?;
                continue;
            }
            "--capture-all-dns" => {
                p.capture_all_dns = boolean(&inline)?;
                continue;
            }
            "--drop-invalid" => {
                p.drop_invalid = boolean(&inline)?;
                continue;
            }
            "--ipv6" => {
                p.enable_ipv6 = boolean(&inline)?;
                continue;
            }
            "--dual-stack" => {
                p.dual_stack = boolean(&inline)?;
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .ok_or_else(|| FlagError::MissingValue(flag.clone()))?;
                i += 1;
                v.clone()
            }
        };
        let f = flag.as_str();
        match f {
            "-p" | "--envoy-port" => p.proxy_port = one_port(f, &value)?,
            "-z" | "--inbound-capture-port" => p.inbound_capture_port = one_port(f, &value)?,
            "-e" | "--inbound-tunnel-port" => p.inbound_tunnel_port = one_port(f, &value)?,
            "-u" | "--proxy-uid" => p.proxy_uids = non_empty(f, &value, parse_list(f, &value)?)?,
            "-g" | "--proxy-gid" => {
                p.proxy_gids = non_empty(f, &value, parse_list(f, &value)?)?;
                gid_given = true;
            }
            "-m" | "--istio-inbound-interception-mode" => {
                p.interception_mode = match value.trim() {
                    "TPROXY" => InterceptionMode::Tproxy,
                    "NONE" => InterceptionMode::None,
                    // Like Istio: anything else (including "") means REDIRECT.
                    "REDIRECT" | "" => InterceptionMode::Redirect,
                    other => return Err(invalid(f, other, "expected REDIRECT, TPROXY or NONE")),
                }
            }
            "-t" | "--istio-inbound-tproxy-mark" => {
                p.tproxy_mark = value.trim().parse().map_err(|e| invalid(f, &value, e))?
            }
            "-r" | "--istio-inbound-tproxy-route-table" => {
                p.tproxy_route_table = value.trim().parse().map_err(|e| invalid(f, &value, e))?
            }
            "-b" | "--istio-inbound-ports" => {
                p.inbound_ports_include = parse_selection(f, &value)?;
                if let Selection::Only(v) = &p.inbound_ports_include {
                    if v.contains(&0) {
                        return Err(invalid(f, &value, "port 0 is not a port"));
                    }
                }
            }
            "-d" | "--istio-local-exclude-ports" => {
                p.inbound_ports_exclude = parse_ports(f, &value)?
            }
            "-q" | "--istio-outbound-ports" => p.outbound_ports_include = parse_ports(f, &value)?,
            "-o" | "--istio-local-outbound-ports-exclude" => {
                p.outbound_ports_exclude = parse_ports(f, &value)?
            }
            "-i" | "--istio-service-cidr" => {
                p.outbound_ip_ranges_include = parse_selection(f, &value)?
            }
            "-x" | "--istio-service-exclude-cidr" => {
                p.outbound_ip_ranges_exclude = parse_nets(f, &value)?
            }
            "-k" | "--kube-virt-interfaces" => {
                p.reroute_virtual_interfaces = parse_ifaces(f, &value)?
            }
            "-c" | "--istio-exclude-interfaces" => p.exclude_interfaces = parse_ifaces(f, &value)?,
            "--dns-servers-v4" => p.dns_servers_v4 = parse_list::<Ipv4Addr>(f, &value)?,
            "--dns-servers-v6" => p.dns_servers_v6 = parse_list::<Ipv6Addr>(f, &value)?,
            "--iptables-backend" => {
                backend = match value.trim() {
                    "auto" => BackendChoice::Auto,
                    "nft" => BackendChoice::Nft,
                    "legacy" => BackendChoice::Legacy,
                    other => return Err(invalid(f, other, "expected auto, nft or legacy")),
                }
            }
            _ => return Err(FlagError::Unknown(raw.clone())),
        }
    }
    if !gid_given {
        // istio-iptables: the GIDs default to the UIDs.
        p.proxy_gids = p.proxy_uids.clone();
    }
    Ok(RedirectArgs {
        params: p,
        dry_run,
        backend,
    })
}

fn one_port(flag: &str, v: &str) -> Result<u16, FlagError> {
    match v.trim().parse::<u16>() {
        Ok(0) => Err(invalid(flag, v, "port 0 is not a port")),
        Ok(p) => Ok(p),
        Err(e) => Err(invalid(flag, v, e)),
    }
}

fn non_empty<T>(flag: &str, v: &str, list: Vec<T>) -> Result<Vec<T>, FlagError> {
    if list.is_empty() {
        Err(invalid(flag, v, "must not be empty"))
    } else {
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::RedirectDefaults;
    use std::collections::BTreeMap;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn round_trips_to_flags() {
        let mut ann = BTreeMap::new();
        for (k, v) in [
            (
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
                "10.0.0.0/8,fd00::/8",
            ),
            (
                "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                "10.96.0.1/32",
            ),
            ("traffic.sidecar.istio.io/includeInboundPorts", "8080,9090"),
            ("traffic.sidecar.istio.io/excludeOutboundPorts", "5432"),
            ("traffic.sidecar.istio.io/includeOutboundPorts", "3306"),
            ("traffic.sidecar.istio.io/kubevirtInterfaces", "net1"),
            ("traffic.sidecar.istio.io/excludeInterfaces", "eth9"),
            ("sidecar.istio.io/interceptionMode", "TPROXY"),
        ] {
            ann.insert(k.to_string(), v.to_string());
        }
        let defaults = RedirectDefaults {
            redirect_dns: true,
            drop_invalid: true,
            ..RedirectDefaults::default()
        };
        let mut p = RedirectParams::for_pod(&ann, &defaults).unwrap();
        p.enable_ipv6 = true;
        p.dns_servers_v4 = vec!["10.96.0.10".parse().unwrap()];
        p.dns_servers_v6 = vec!["fd00::10".parse().unwrap()];
        p.proxy_gids = vec![1337, 7];
        p.inbound_tunnel_port = 15009;
        for params in [p, RedirectParams::default(), {
            RedirectParams::for_pod(&BTreeMap::new(), &RedirectDefaults::default()).unwrap()
        }] {
            let parsed = parse(&params.to_flags(), no_env).unwrap();
            assert_eq!(parsed.params, params, "flags {:?}", params.to_flags());
        }
    }

    #[test]
    fn environment_sets_flags_and_flags_win() {
        let env = |k: &str| match k {
            "ISTIO_INBOUND_PORTS" => Some("8080".to_string()),
            "ISTIO_META_DNS_CAPTURE" => Some("true".to_string()),
            "PROXY_UID" => Some("7".to_string()),
            _ => None,
        };
        let r = parse(&["-u".to_string(), "9".to_string()], env).unwrap();
        assert_eq!(r.params.inbound_ports_include, Selection::Only(vec![8080]));
        assert!(r.params.redirect_dns);
        assert_eq!(r.params.proxy_uids, vec![9]);
        let e = parse(&[], |k| {
            (k == "ISTIO_INBOUND_PORTS").then(|| "x".to_string())
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("ISTIO_INBOUND_PORTS") && e.to_string().contains("\"x\""),
            "{e}"
        );
    }

    #[test]
    fn gid_defaults_to_uid_and_long_forms_work() {
        let a: Vec<String> = ["--proxy-uid=3,4", "--istio-inbound-ports", "*", "-n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = parse(&a, no_env).unwrap();
        assert_eq!(r.params.proxy_gids, vec![3, 4]);
        assert_eq!(r.params.inbound_ports_include, Selection::All);
        assert!(r.dry_run);
    }

    #[test]
    fn bad_values_are_named() {
        for (args, needle) in [
            (vec!["-p", "70000"], "70000"),
            (vec!["-x", "*"], "-x"),
            (vec!["-i", "10.0.0.0/33"], "10.0.0.0/33"),
            (vec!["-m", "MAGIC"], "MAGIC"),
            (vec!["--bogus"], "--bogus"),
            (vec!["-b"], "-b"),
            (vec!["-u", ""], "-u"),
            (vec!["--dns-servers-v4", "1.2.3"], "1.2.3"),
        ] {
            let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let e = parse(&a, no_env).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        let e = parse(&[], |k| {
            (k == "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR").then(|| "nope".to_string())
        })
        .unwrap_err();
        assert!(e.to_string().contains("nope"));
    }
}
