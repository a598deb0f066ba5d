//! Downstream connection hardening, the pure part: the HTTP/2 premature-reset
//! budget (Envoy's `premature_reset_total_stream_count` idea), the first-byte /
//! idle / GOAWAY-grace deadlines of one connection, the per-listener connection
//! cap, and the counters they feed. The I/O shell that applies them is
//! the `conn` module (HTTP) and the `tcp` module (opaque TCP), above this one.
//!
//! Why: a paced HTTP/2 rapid-reset client (a few dozen HEADERS+RST_STREAM per
//! millisecond) stays under h2's burst limit and could hold one connection for
//! hundreds of thousands of streams; silent connections were held forever.
//!
//! The parts are files of their own so each reads alone: the pure decisions
//! (`decisions`), a connection's shared state and the guards that feed it
//! (`conn_state`), the I/O wrapper that reads through it (`activity`), and
//! what a listener keeps across connections (`listener`).

mod activity;
mod conn_state;
mod decisions;
mod listener;

pub use activity::{Activity, READ_SLICE};
pub use conn_state::{ConnState, StreamGuard, Tracked};
pub use decisions::{
    decide, decide_tcp, is_protocol_violation, Facts, Next, Reason, ResetBudget, Timeouts,
    CONTROL_BYTES,
};
pub use listener::{should_log, CapPermit, ConnCap, ConnCounters, REFUSAL_LOG_INTERVAL};

#[cfg(test)]
mod tests;
