//! What a listener keeps across its connections: the cap on how many are open
//! at once (and how often a refusal is logged), and the connection counters
//! the metrics endpoint renders. Per listener, not per connection, hence
//! apart from a connection's state.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::decisions::Reason;

/// At most `max` connections at once on one listener.
#[derive(Debug)]
pub struct ConnCap {
    max: usize,
    live: Arc<AtomicUsize>,
    last_log: Mutex<Option<Instant>>,
}

/// One admitted connection; frees its slot when dropped.
#[derive(Debug)]
pub struct CapPermit(Arc<AtomicUsize>);

impl Drop for CapPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refusals are logged at most once per this interval (a flood must not flood the log).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Whether a refusal at `now` is logged, given the last logged one.
pub fn should_log(last: Option<Instant>, now: Instant, interval: Duration) -> bool {
    last.is_none_or(|l| now.duration_since(l) >= interval)
}

impl ConnCap {
    pub fn new(max: usize) -> ConnCap {
        ConnCap {
            max,
            live: Arc::new(AtomicUsize::new(0)),
            last_log: Mutex::new(None),
        }
    }

    /// A slot, or `None` when `max` connections are open.
    pub fn admit(&self) -> Option<CapPermit> {
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(CapPermit(self.live.clone()))
    }

    /// Whether this refusal should be logged (once per interval).
    pub fn log_refusal(&self) -> bool {
        let now = Instant::now();
        let mut last = self.last_log.lock().expect("cap log lock");
        if should_log(*last, now, REFUSAL_LOG_INTERVAL) {
            *last = Some(now);
            true
        } else {
            false
        }
    }
}

/// Connection-level counters, rendered with the other metrics.
#[derive(Debug, Default)]
pub struct ConnCounters {
    pub overflow_outbound: AtomicU64,
    pub overflow_inbound: AtomicU64,
    pub reset_flood: AtomicU64,
    pub control_flood: AtomicU64,
    pub first_byte: AtomicU64,
    pub http_idle: AtomicU64,
    pub grace_over: AtomicU64,
    pub tcp_idle: AtomicU64,
    pub protocol_error: AtomicU64,
    /// Connections refused because their peer is penalized (the `penalty` box).
    pub penalized_reset: AtomicU64,
    pub penalized_control: AtomicU64,
    pub penalized_protocol: AtomicU64,
}

impl ConnCounters {
    pub fn closed(&self, r: Reason) {
        let c = match r {
            Reason::FirstByte => &self.first_byte,
            Reason::Idle => &self.http_idle,
            Reason::ResetFlood => &self.reset_flood,
            Reason::ControlFlood => &self.control_flood,
            Reason::GraceOver => &self.grace_over,
            Reason::TcpIdle => &self.tcp_idle,
            Reason::ProtocolError => &self.protocol_error,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection refused at accept: its peer is penalized for `r`.
    pub fn penalized(&self, r: Reason) {
        let c = match r {
            Reason::ResetFlood => &self.penalized_reset,
            Reason::ProtocolError => &self.penalized_protocol,
            _ => &self.penalized_control,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        counter_family(
            out,
            "mesh_downstream_cx_overflow_total",
            "listener",
            &[
                ("outbound", &self.overflow_outbound),
                ("inbound", &self.overflow_inbound),
            ],
        );
        counter_family(
            out,
            "mesh_downstream_cx_closed_total",
            "reason",
            &[
                ("h2_premature_reset", &self.reset_flood),
                ("control_flood", &self.control_flood),
                ("first_byte_timeout", &self.first_byte),
                ("http_idle_timeout", &self.http_idle),
                ("goaway_grace_over", &self.grace_over),
                ("tcp_idle_timeout", &self.tcp_idle),
                ("h2_protocol_error", &self.protocol_error),
            ],
        );
        counter_family(
            out,
            "mesh_downstream_cx_penalized_total",
            "reason",
            &[
                ("h2_premature_reset", &self.penalized_reset),
                ("control_flood", &self.penalized_control),
                ("h2_protocol_error", &self.penalized_protocol),
            ],
        );
    }
}

/// One counter family with one label, a line per value.
fn counter_family(out: &mut String, name: &str, label: &str, values: &[(&str, &AtomicU64)]) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# TYPE {name} counter");
    for (v, c) in values {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{v}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
}
