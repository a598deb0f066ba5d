//! Runs in which requests failed. Their figures describe a proxy that did not
//! carry the load (a stalled connection costs no CPU), so a run with any is
//! named on stderr and the benchmark exits with [`EXIT_FAILED_REQUESTS`]
//! after writing its report, rather than leaving only a number in the
//! errors column.

use crate::run::RunRecord;

/// The exit status of a run that completed with failed requests.
pub const EXIT_FAILED_REQUESTS: u8 = 3;

/// One line per run with failed requests, in run order.
pub fn failed_runs(runs: &[RunRecord]) -> Vec<String> {
    runs.iter()
        .filter(|r| r.load.errors > 0)
        .map(|r| {
            format!(
                "{} on {}, repetition {}: {} of {} requests failed (first: {})",
                r.scenario,
                r.variant.name(),
                r.rep,
                r.load.errors,
                r.load.ok + r.load.errors,
                r.load.first_error.as_deref().unwrap_or("no message")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadResult;
    use crate::run::Mtls;
    use crate::topology::Variant;

    fn run(variant: &str, errors: u64, first: Option<&str>) -> RunRecord {
        RunRecord {
            rep: 2,
            scenario: "tcp-echo-1kb-1000rps".into(),
            variant: Variant::parse(variant).expect("variant"),
            mtls: Mtls::Off,
            load: LoadResult {
                ok: 13_448,
                errors,
                first_error: first.map(str::to_string),
                ..Default::default()
            },
            sidecars: None,
            spans: None,
        }
    }

    #[test]
    fn only_runs_with_errors_are_named() {
        let runs = [
            run("direct", 0, None),
            run("mesh-proxy", 48, Some("timed out after 5s")),
            run("envoy", 1, None),
        ];
        assert_eq!(
            failed_runs(&runs),
            [
                "tcp-echo-1kb-1000rps on mesh-proxy, repetition 2: 48 of 13496 requests failed (first: timed out after 5s)",
                "tcp-echo-1kb-1000rps on envoy, repetition 2: 1 of 13449 requests failed (first: no message)",
            ]
        );
        assert!(failed_runs(&runs[..1]).is_empty());
    }
}
