//! Waiting for a positive signal: the one polling helper the tests share.
//!
//! A test that changes something waits until the effect is observable (a
//! counter moved, a version was served, a file appeared) rather than sleeping
//! a fixed time; on timeout it panics naming what it waited for. Both forms
//! poll every 20 ms and return how long the wait took (printed by tests that
//! care about latency, never asserted on).

use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns true; panics after `limit` naming `what`.
pub async fn eventually(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
    start.elapsed()
}

/// [`eventually`] for tests without an async runtime (the thread sleeps).
pub fn eventually_blocking(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
    start.elapsed()
}
