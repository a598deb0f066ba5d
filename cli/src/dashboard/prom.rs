//! The dashboard's metric input: Prometheus text as the sidecars serve it on
//! 15090 (`/stats/prometheus`), per-second rates from two scrapes of it, and
//! the same rates as Prometheus's own query API answers them (`--prometheus`).
//! Either way the graph is built from [`Sample`]s whose value is a rate.

use std::collections::BTreeMap;

use serde_json::Value;

pub type Labels = BTreeMap<String, String>;

/// One series: metric name, labels, value (a counter, or a rate once derived).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// The metric families the graph reads (everything else in a scrape is skipped).
pub const FAMILIES: [&str; 5] = [
    "istio_requests_total",
    "istio_request_duration_milliseconds_bucket",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
    "istio_tcp_connections_opened_total",
];

/// Why a Prometheus answer cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromError {
    #[error("prometheus answered {status:?}: {error}")]
    Status { status: String, error: String },
    #[error("prometheus answer has no vector result: {0:.200}")]
    Shape(String),
}

/// The samples of the [`FAMILIES`] in Prometheus text; malformed lines and
/// other metrics are skipped (one odd line must not blank the graph).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    if line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !FAMILIES.contains(&name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(mut b) = rest.strip_prefix('{') {
        loop {
            b = b.trim_start_matches([',', ' ']);
            if let Some(after) = b.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = b.find('=')?;
            let key = b[..eq].trim();
            b = b[eq + 1..].strip_prefix('"')?;
            let mut val = String::new();
            let mut it = b.char_indices();
            let end = loop {
                match it.next()? {
                    (_, '\\') => {
                        let (_, e) = it.next()?;
                        val.push(if e == 'n' { '\n' } else { e });
                    }
                    (i, '"') => break i,
                    (_, c) => val.push(c),
                }
            };
            labels.insert(key.to_string(), val);
            b = &b[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Per-second rates of `new` over `old`, `dt` seconds apart. A series absent
/// from `old` started at 0 (the sidecar creates a series with its first
/// request); a counter that went down was reset (restart) and counts from 0.
pub fn rates(old: &[Sample], new: &[Sample], dt: f64) -> Vec<Sample> {
    let before: BTreeMap<(&str, &Labels), f64> = old
        .iter()
        .map(|s| ((s.name.as_str(), &s.labels), s.value))
        .collect();
    new.iter()
        .map(|s| {
            let prev = before
                .get(&(s.name.as_str(), &s.labels))
                .copied()
                .unwrap_or(0.0);
            let delta = if s.value >= prev {
                s.value - prev
            } else {
                s.value
            };
            Sample {
                value: if dt > 0.0 { delta / dt } else { 0.0 },
                ..s.clone()
            }
        })
        .collect()
}

/// Every series of `new` with rate 0 (a pod seen once: its edges exist, their
/// rate is not known yet).
pub fn zero(new: &[Sample]) -> Vec<Sample> {
    new.iter()
        .map(|s| Sample {
            value: 0.0,
            ..s.clone()
        })
        .collect()
}

/// Labels the graph groups by (what the Prometheus queries keep).
pub const GROUP: [&str; 9] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_service_name",
    "destination_service_namespace",
    "destination_service",
    "destination_workload",
    "destination_workload_namespace",
    "connection_security_policy",
];

/// The PromQL for one family's per-second rate over `window`, grouped as the
/// graph needs it.
pub fn query(family: &str, window: &str) -> String {
    let mut by: Vec<&str> = GROUP.to_vec();
    if family == "istio_requests_total" {
        by.push("response_code");
    }
    if family.ends_with("_bucket") {
        by.push("le");
    }
    format!("sum(rate({family}[{window}])) by ({})", by.join(", "))
}

/// An `/api/v1/query` answer (instant vector) as samples named `family`.
pub fn from_query(family: &str, v: &Value) -> Result<Vec<Sample>, PromError> {
    if v["status"] != "success" {
        return Err(PromError::Status {
            status: v["status"].as_str().unwrap_or("?").to_string(),
            error: v["error"].as_str().unwrap_or_default().to_string(),
        });
    }
    let result = v["data"]["result"]
        .as_array()
        .ok_or_else(|| PromError::Shape(v.to_string()))?;
    Ok(result
        .iter()
        .filter_map(|s| {
            let labels = s["metric"]
                .as_object()?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = s["value"][1].as_str()?.parse::<f64>().ok()?;
            Some(Sample {
                name: family.to_string(),
                labels,
                value: if value.is_finite() { value } else { 0.0 },
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE istio_requests_total counter\n\
istio_requests_total{reporter=\"source\",source_workload=\"productpage-v1\",destination_service_name=\"reviews\",response_code=\"200\"} 10\n\
istio_requests_total{reporter=\"source\",source_workload=\"a \\\"q\\\" b\",response_code=\"503\",} 2\n\
istio_request_duration_milliseconds_bucket{reporter=\"source\",le=\"+Inf\"} 12\n\
istio_build{component=\"proxy\"} 1\n\
garbage line\n\
istio_requests_total{broken 3\n";

    #[test]
    fn parses_the_families_it_needs_with_escapes_and_skips_the_rest() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 3, "{s:#?}");
        assert_eq!(s[0].labels["destination_service_name"], "reviews");
        assert_eq!(s[0].value, 10.0);
        assert_eq!(s[1].labels["source_workload"], "a \"q\" b");
        assert_eq!(s[1].labels["response_code"], "503");
        assert_eq!(s[2].labels["le"], "+Inf");
    }

    #[test]
    fn rates_count_new_series_from_zero_and_survive_resets() {
        let old = parse("istio_requests_total{a=\"1\"} 10\nistio_requests_total{a=\"2\"} 50\n");
        let new = parse(
            "istio_requests_total{a=\"1\"} 30\nistio_requests_total{a=\"2\"} 4\nistio_requests_total{a=\"3\"} 6\n",
        );
        let r: Vec<f64> = rates(&old, &new, 2.0).iter().map(|s| s.value).collect();
        assert_eq!(r, [10.0, 2.0, 3.0]);
        assert!(zero(&new).iter().all(|s| s.value == 0.0));
    }

    #[test]
    fn reads_prometheus_answers_and_names_its_errors() {
        let v: Value = serde_json::from_str(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"reporter":"source","response_code":"200"},"value":[1,"0.5"]}]}}"#).unwrap();
        let s = from_query("istio_requests_total", &v).unwrap();
        assert_eq!(s[0].value, 0.5);
        assert_eq!(s[0].labels["response_code"], "200");
        let v: Value =
            serde_json::from_str(r#"{"status":"error","error":"parse error at char 5"}"#).unwrap();
        assert_eq!(
            from_query("x", &v).unwrap_err().to_string(),
            "prometheus answered \"error\": parse error at char 5"
        );
        let q = query("istio_request_duration_milliseconds_bucket", "1m");
        assert!(q.starts_with(
            "sum(rate(istio_request_duration_milliseconds_bucket[1m])) by (reporter, "
        ));
        assert!(q.ends_with(", le)"), "{q}");
    }
}
