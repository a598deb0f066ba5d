//! Access log lines on stdout, one per request or TCP connection: Envoy's default
//! text format as Istio configures it, or the same fields as JSON.

use std::io::Write;
use std::net::SocketAddr;

use crate::config::{AccessLog, Config};

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

pub fn http(cfg: &Config, e: HttpEntry<'_>) {
    let line = match cfg.access_log {
        AccessLog::Off => return,
        AccessLog::Text => format!(
            "[{}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} - \"-\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} - -\n",
            now(), e.method, e.path, e.protocol, e.code, e.flags, e.details, e.bytes_received, e.bytes_sent,
            e.duration_ms, e.user_agent, e.request_id, e.authority, e.upstream_host, e.upstream_cluster,
            e.downstream_local, e.downstream_remote
        ),
        AccessLog::Json => {
            let v = serde_json::json!({
                "start_time": now(), "method": e.method, "path": e.path, "protocol": e.protocol,
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
    };
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
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

pub fn tcp(cfg: &Config, e: TcpEntry<'_>) {
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
    let line = match cfg.access_log {
        AccessLog::Off => return,
        AccessLog::Text => format!(
            "[{}] \"- - -\" 0 {flags} - - \"-\" {rx} {tx} {ms} - \"-\" \"-\" \"-\" \"-\" \"{upstream}\" {cluster} - {local} {remote} - -\n",
            now()
        ),
        AccessLog::Json => format!(
            "{}\n",
            serde_json::json!({"start_time": now(), "protocol": "tcp", "response_flags": flags,
                "bytes_received": rx, "bytes_sent": tx, "duration": ms, "upstream_host": upstream,
                "upstream_cluster": cluster, "downstream_local_address": local.to_string(),
                "downstream_remote_address": remote.to_string(),
                "downstream_peer_uri_san": peer_principal, "connection_security_policy": security})
        ),
    };
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_778), (2026, 11, 21));
    }
}
