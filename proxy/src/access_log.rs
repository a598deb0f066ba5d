//! Access log lines on stdout, one per request or TCP connection: Envoy's default
//! text format as Istio configures it, the same fields as JSON, or the mesh
//! config's `accessLogFormat` ([`format`]). Which one is decided live: the
//! `--access-log` flag when given, else the view the agent sent last.

mod format;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_api::accesslog::{AccessLogView, Encoding, Format};

use crate::config::AccessLog;

/// What the access log writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Off,
    Text,
    Json,
    Custom(Format),
}

/// The access log in force: `flag` (`--access-log`) when given wins (standalone
/// use), else the view's setting. A view format the proxy cannot compile (the
/// agent refuses those first) falls back to the default line of its encoding.
pub fn mode(flag: Option<AccessLog>, view: Option<&AccessLogView>) -> Mode {
    match (flag, view) {
        (Some(AccessLog::Off), _) | (None, None) => Mode::Off,
        (Some(AccessLog::Text), _) => Mode::Text,
        (Some(AccessLog::Json), _) => Mode::Json,
        (None, Some(v)) => match mesh_api::accesslog::compile(v) {
            Ok(Some(f)) => Mode::Custom(f),
            Ok(None) => default_of(v.encoding),
            Err(e) => {
                tracing::warn!(error = %e, "access log format refused; default line used");
                default_of(v.encoding)
            }
        },
    }
}

fn default_of(e: Encoding) -> Mode {
    match e {
        Encoding::Text => Mode::Text,
        Encoding::Json => Mode::Json,
    }
}

/// The current [`Mode`], replaced whenever a view is installed.
pub struct Live(arc_swap::ArcSwap<Mode>);

impl Live {
    pub fn new(flag: Option<AccessLog>) -> Live {
        Live(arc_swap::ArcSwap::from_pointee(mode(flag, None)))
    }

    /// Applies a newly installed view's setting (kept when it is the same).
    pub fn apply(&self, flag: Option<AccessLog>, view: Option<&AccessLogView>) {
        let m = mode(flag, view);
        if *self.0.load_full() != m {
            tracing::info!(access_log = ?m, "access log setting applied");
            self.0.store(Arc::new(m));
        }
    }

    pub fn on(&self) -> bool {
        **self.0.load() != Mode::Off
    }

    pub fn current(&self) -> Arc<Mode> {
        self.0.load_full()
    }
}

pub struct HttpEntry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub code: u16,
    pub flags: &'a str,
    /// `%RESPONSE_CODE_DETAILS%` (`-` when the upstream answered).
    pub details: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub user_agent: &'a str,
    pub request_id: &'a str,
    pub authority: &'a str,
    pub upstream_host: &'a str,
    pub upstream_cluster: &'a str,
    pub downstream_local: SocketAddr,
    pub downstream_remote: SocketAddr,
    /// The downstream peer's verified SPIFFE identity (inbound mTLS), or `unknown`.
    pub peer_principal: &'a str,
    /// `mutual_tls`, `none` or `unknown`, as in the metrics.
    pub security: &'a str,
}

fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn http(live: &Live, e: HttpEntry<'_>) {
    if let Some(line) = http_line(&live.current(), &e, &now()) {
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

/// One request's line (with its newline) in `mode`, or `None` when off.
pub fn http_line(mode: &Mode, e: &HttpEntry<'_>, now: &str) -> Option<String> {
    Some(match mode {
        Mode::Off => return None,
        Mode::Custom(f) => format::render(f, e, now),
        Mode::Text => format!(
            "[{}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} - \"-\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} - -\n",
            now, e.method, e.path, e.protocol, e.code, e.flags, e.details, e.bytes_received, e.bytes_sent,
            e.duration_ms, e.user_agent, e.request_id, e.authority, e.upstream_host, e.upstream_cluster,
            e.downstream_local, e.downstream_remote
        ),
        Mode::Json => {
            let v = serde_json::json!({
                "start_time": now, "method": e.method, "path": e.path, "protocol": e.protocol,
                "response_code": e.code, "response_flags": e.flags, "response_code_details": e.details, "bytes_received": e.bytes_received,
                "bytes_sent": e.bytes_sent, "duration": e.duration_ms, "user_agent": e.user_agent,
                "request_id": e.request_id, "authority": e.authority, "upstream_host": e.upstream_host,
                "upstream_cluster": e.upstream_cluster, "downstream_local_address": e.downstream_local.to_string(),
                "downstream_remote_address": e.downstream_remote.to_string(),
                "downstream_peer_uri_san": e.peer_principal,
                "connection_security_policy": e.security,
            });
            format!("{v}\n")
        }
    })
}

/// One TCP connection's access-log fields.
pub struct TcpEntry<'a> {
    pub cluster: &'a str,
    pub upstream: &'a str,
    pub flags: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub downstream_local: SocketAddr,
    pub downstream_remote: SocketAddr,
    pub peer_principal: &'a str,
    pub security: &'a str,
}

pub fn tcp(live: &Live, e: TcpEntry<'_>) {
    if let Some(line) = tcp_line(&live.current(), e, &now()) {
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

/// One TCP connection's line (with its newline) in `mode`, or `None` when off.
/// A custom format sees a TCP connection as Envoy does: no request headers,
/// response code 0.
pub fn tcp_line(mode: &Mode, e: TcpEntry<'_>, now: &str) -> Option<String> {
    if let Mode::Custom(f) = mode {
        let h = HttpEntry {
            method: "",
            path: "",
            protocol: "",
            code: 0,
            flags: e.flags,
            details: "-",
            bytes_received: e.bytes_received,
            bytes_sent: e.bytes_sent,
            duration_ms: e.duration_ms,
            user_agent: "",
            request_id: "",
            authority: "",
            upstream_host: e.upstream,
            upstream_cluster: e.cluster,
            downstream_local: e.downstream_local,
            downstream_remote: e.downstream_remote,
            peer_principal: e.peer_principal,
            security: e.security,
        };
        return Some(format::render(f, &h, now));
    }
    let TcpEntry {
        cluster,
        upstream,
        flags,
        bytes_received: rx,
        bytes_sent: tx,
        duration_ms: ms,
        downstream_local: local,
        downstream_remote: remote,
        peer_principal,
        security,
    } = e;
    Some(match mode {
        Mode::Off | Mode::Custom(_) => return None,
        Mode::Text => format!(
            "[{}] \"- - -\" 0 {flags} - - \"-\" {rx} {tx} {ms} - \"-\" \"-\" \"-\" \"-\" \"{upstream}\" {cluster} - {local} {remote} - -\n",
            now
        ),
        Mode::Json => format!(
            "{}\n",
            serde_json::json!({"start_time": now, "protocol": "tcp", "response_flags": flags,
                "bytes_received": rx, "bytes_sent": tx, "duration": ms, "upstream_host": upstream,
                "upstream_cluster": cluster, "downstream_local_address": local.to_string(),
                "downstream_remote_address": remote.to_string(),
                "downstream_peer_uri_san": peer_principal, "connection_security_policy": security})
        ),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_778), (2026, 11, 21));
    }

    use super::*;
    use mesh_api::accesslog::{AccessLogView, Encoding};

    fn view(encoding: Encoding, format: Option<&str>) -> AccessLogView {
        AccessLogView {
            encoding,
            format: format.map(Into::into),
        }
    }

    /// The flag, when given, wins; else the view decides; no view: off.
    #[test]
    fn flag_overrides_view() {
        let json = view(Encoding::Json, None);
        assert_eq!(mode(None, None), Mode::Off);
        assert_eq!(mode(None, Some(&json)), Mode::Json);
        assert_eq!(mode(Some(AccessLog::Off), Some(&json)), Mode::Off);
        assert_eq!(mode(Some(AccessLog::Text), Some(&json)), Mode::Text);
        assert_eq!(mode(None, Some(&view(Encoding::Text, None))), Mode::Text);
        let custom = view(Encoding::Text, Some("%RESPONSE_CODE%"));
        assert!(matches!(mode(None, Some(&custom)), Mode::Custom(_)));
        // A format the agent should have refused: the default line, not silence.
        let bad = view(Encoding::Json, Some("%NOPE%"));
        assert_eq!(mode(None, Some(&bad)), Mode::Json);
    }

    #[test]
    fn live_setting_changes_in_place() {
        let live = Live::new(None);
        assert!(!live.on());
        live.apply(None, Some(&view(Encoding::Text, Some("%DURATION%"))));
        assert!(live.on());
        live.apply(None, None);
        assert!(!live.on());
    }

    fn tcp_entry() -> TcpEntry<'static> {
        TcpEntry {
            cluster: "outbound|9000||db",
            upstream: "10.0.0.9:9000",
            flags: "-",
            bytes_received: 10,
            bytes_sent: 20,
            duration_ms: 5,
            downstream_local: "10.96.0.9:9000".parse().unwrap(),
            downstream_remote: "10.0.0.1:4000".parse().unwrap(),
            peer_principal: "unknown",
            security: "none",
        }
    }

    /// The default TCP line is unchanged; a custom format sees code 0 and no headers.
    #[test]
    fn tcp_lines() {
        assert_eq!(
            tcp_line(&Mode::Text, tcp_entry(), "T").unwrap(),
            "[T] \"- - -\" 0 - - - \"-\" 10 20 5 - \"-\" \"-\" \"-\" \"-\" \"10.0.0.9:9000\" \
             outbound|9000||db - 10.96.0.9:9000 10.0.0.1:4000 - -\n"
        );
        let Mode::Custom(f) = mode(
            None,
            Some(&view(
                Encoding::Text,
                Some("%RESPONSE_CODE% %REQ(:PATH)% %UPSTREAM_HOST%"),
            )),
        ) else {
            panic!("custom")
        };
        assert_eq!(
            tcp_line(&Mode::Custom(f), tcp_entry(), "T").unwrap(),
            "0 - 10.0.0.9:9000\n"
        );
        assert_eq!(tcp_line(&Mode::Off, tcp_entry(), "T"), None);
    }
}
