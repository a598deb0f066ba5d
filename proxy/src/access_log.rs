//! Access log lines on stdout, one per request or TCP connection: Envoy's default
//! text format as Istio configures it, the same fields as JSON, or the mesh
//! config's `accessLogFormat` ([`format`]). Which one is decided live: the
//! `--access-log` flag when given, else the view the agent sent last. A
//! Telemetry's `filter.expression` ([`mesh_api::accessfilter`]) decides per
//! request whether its line is written.

mod entry;
mod format;

pub use entry::HttpEntry;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_api::accessfilter::{Filter, Request};
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

/// The access log in force: what is written, and for which requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub mode: Mode,
    /// `None`: every request. The `--access-log` flag logs every request.
    pub filter: Option<Filter>,
    /// Request headers the filter reads: what a request keeps for it.
    pub headers: Vec<String>,
}

/// The filter of a view. One the proxy cannot parse (the agent refuses
/// those first) logs every request rather than none, with a warning.
pub fn filter(flag: Option<AccessLog>, view: Option<&AccessLogView>) -> Option<Filter> {
    let expr = view.filter(|_| flag.is_none())?.filter.as_deref()?;
    Filter::parse(expr)
        .map_err(
            |e| tracing::warn!(error = %e, "access log filter refused; every request is logged"),
        )
        .ok()
}

/// The current [`Setting`], replaced whenever a view is installed.
pub struct Live(arc_swap::ArcSwap<Setting>);

impl Live {
    pub fn new(flag: Option<AccessLog>) -> Live {
        Live(arc_swap::ArcSwap::from_pointee(Setting {
            mode: mode(flag, None),
            filter: None,
            headers: Vec::new(),
        }))
    }

    /// Applies a newly installed view's setting (kept when it is the same).
    pub fn apply(&self, flag: Option<AccessLog>, view: Option<&AccessLogView>) {
        let filter = filter(flag, view);
        let next = Setting {
            mode: mode(flag, view),
            headers: filter.as_ref().map(Filter::headers).unwrap_or_default(),
            filter,
        };
        if *self.0.load_full() != next {
            tracing::info!(access_log = ?next.mode, filter = ?view.and_then(|v| v.filter.as_deref()),
                "access log setting applied");
            self.0.store(Arc::new(next));
        }
    }

    pub fn on(&self) -> bool {
        self.0.load().mode != Mode::Off
    }

    pub fn current(&self) -> Arc<Setting> {
        self.0.load_full()
    }

    /// The current setting without taking a reference (the per-request path).
    pub fn peek(&self) -> arc_swap::Guard<Arc<Setting>> {
        self.0.load()
    }
}

/// Whether `filter` lets the request's line through (no filter: every line).
pub fn admits(filter: Option<&Filter>, e: &HttpEntry<'_>) -> bool {
    filter.is_none_or(|f| {
        f.matches(&Request {
            code: e.code,
            method: e.method,
            path: e.path,
            host: e.authority,
            protocol: e.protocol,
            request_id: e.request_id,
            user_agent: e.user_agent,
            headers: e.headers,
            mtls: e.security == "mutual_tls",
        })
    })
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
    let cur = live.current();
    if !admits(cur.filter.as_ref(), &e) {
        return;
    }
    if let Some(line) = http_line(&cur.mode, &e, &now()) {
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
    let cur = live.current();
    if let Some(line) = tcp_line(&cur.mode, cur.filter.as_ref(), e, &now()) {
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

/// A TCP connection as a custom format and a filter see it.
fn tcp_as_http<'a>(e: &'a TcpEntry<'_>) -> HttpEntry<'a> {
    HttpEntry {
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
        headers: &[],
    }
}

/// One TCP connection's line (with its newline) in `mode`, or `None` when off
/// or when `filter` does not admit it. A custom format and a filter see a TCP
/// connection as Envoy does: no request headers, response code 0.
pub fn tcp_line(
    mode: &Mode,
    filter: Option<&Filter>,
    e: TcpEntry<'_>,
    now: &str,
) -> Option<String> {
    if !admits(filter, &tcp_as_http(&e)) {
        return None;
    }
    if let Mode::Custom(f) = mode {
        return Some(format::render(f, &tcp_as_http(&e), now));
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
            filter: None,
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

    fn http_entry(code: u16, headers: &[(String, String)]) -> HttpEntry<'_> {
        HttpEntry {
            method: "GET",
            path: "/x",
            protocol: "HTTP/1.1",
            code,
            flags: "-",
            details: "-",
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 1,
            user_agent: "curl",
            request_id: "r",
            authority: "web",
            upstream_host: "-",
            upstream_cluster: "-",
            downstream_local: "10.0.0.1:80".parse().unwrap(),
            downstream_remote: "10.0.0.2:5000".parse().unwrap(),
            peer_principal: "unknown",
            security: "none",
            headers,
        }
    }

    /// A view's filter decides per request; the headers it names are what a
    /// request keeps; the flag logs everything.
    #[test]
    fn filter_decides_per_request() {
        let live = Live::new(None);
        let mut v = view(Encoding::Text, None);
        v.filter = Some("response.code >= 400 || request.headers['X-Debug'] == '1'".into());
        live.apply(None, Some(&v));
        let cur = live.current();
        assert_eq!(cur.headers, ["x-debug"]);
        let f = cur.filter.as_ref();
        assert!(admits(f, &http_entry(503, &[])));
        assert!(!admits(f, &http_entry(200, &[])));
        let dbg = [("x-debug".to_string(), "1".to_string())];
        assert!(admits(f, &http_entry(200, &dbg)));
        // TCP connections have code 0: not admitted by a code filter.
        assert_eq!(tcp_line(&Mode::Text, f, tcp_entry(), "T"), None);
        // The flag, when given, logs every request.
        live.apply(Some(AccessLog::Text), Some(&v));
        assert!(live.current().filter.is_none());
        // A filter the agent should have refused: every request, not none.
        v.filter = Some("response.code >>".into());
        live.apply(None, Some(&v));
        assert!(live.current().filter.is_none() && live.on());
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
            tcp_line(&Mode::Text, None, tcp_entry(), "T").unwrap(),
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
            tcp_line(&Mode::Custom(f), None, tcp_entry(), "T").unwrap(),
            "0 - 10.0.0.9:9000\n"
        );
        assert_eq!(tcp_line(&Mode::Off, None, tcp_entry(), "T"), None);
    }
}
