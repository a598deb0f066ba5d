//! Measuring helpers: waiting for a count to reach its total (with
//! progress lines and a timeout), percentiles of sorted durations,
//! milliseconds for the report, and the report table's row type.
//! A leaf: it imports no sibling.

use std::time::{Duration, Instant};

/// A row of the final table: metric, value, goal.
pub type Row = (String, String, String);

/// Polls until `done() == total`, printing progress; panics after `timeout`.
pub async fn wait_all(what: &str, total: usize, timeout: Duration, done: impl Fn() -> usize) {
    let t = Instant::now();
    let mut said = Instant::now();
    loop {
        let n = done();
        if n >= total {
            return;
        }
        if t.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}: {n}/{total}");
        }
        if said.elapsed() >= Duration::from_secs(5) {
            println!(
                "    ... {what}: {n}/{total} after {:.1}s",
                t.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `p`th percentile of `sorted` (nearest rank; zero when empty).
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let k = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[k.clamp(1, sorted.len()) - 1]
}

/// `d` in milliseconds, rounded to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
