//! The pure decisions about a downstream connection: its reset budget, its
//! deadlines, and what its watchdog does next, free of I/O and clocks so they
//! are tested with paused time.

use std::time::Duration;

use tokio::time::Instant;

/// When a connection has spent its premature-reset budget: at least
/// `min_streams` streams opened and more than `max_premature_pct` percent of them
/// reset by the client before the response started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetBudget {
    pub min_streams: u64,
    pub max_premature_pct: u64,
}

impl ResetBudget {
    /// 100 streams keeps a browser or gRPC client that cancels now and then far
    /// from the limit while a flood is cut within ~100 streams (Envoy waits for
    /// 500; we act earlier because a reset stream costs us an upstream dial).
    pub const DEFAULT: ResetBudget = ResetBudget {
        min_streams: 100,
        max_premature_pct: 50,
    };

    pub fn exceeded(&self, opened: u64, premature: u64) -> bool {
        opened >= self.min_streams
            && premature.saturating_mul(100) > opened.saturating_mul(self.max_premature_pct)
    }
}

/// The deadlines of one downstream HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection that has sent no byte by then is closed (no response: there
    /// is no request to answer).
    pub first_byte: Duration,
    /// No request started, no response byte moved for this long: GOAWAY /
    /// `Connection: close`. Control frames (PING, SETTINGS) do not count, like
    /// Envoy's `idle_timeout` which counts requests, not bytes.
    pub idle: Duration,
    /// How long a connection told to go away may take to finish its streams.
    pub close_grace: Duration,
}

/// Why a connection is being closed (the counter it bumps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    FirstByte,
    Idle,
    ResetFlood,
    /// Bytes kept coming with no request in flight: a PING or SETTINGS flood.
    ControlFlood,
    /// Told to go away, but streams did not finish within the grace.
    GraceOver,
    /// Opaque TCP with no byte either way for the TCP idle timeout.
    TcpIdle,
    /// h2 itself ended the connection with a GOAWAY for the peer's protocol
    /// violation (a CONTINUATION flood past the header limit, a burst of
    /// resets, a malformed frame).
    ProtocolError,
}

/// What the watchdog of a connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing yet: look again at this instant (or when something happens).
    CheckAt(Instant),
    /// Start a graceful close (GOAWAY / `Connection: close`).
    GoAway(Reason),
    /// Drop the connection now.
    Close(Reason),
}

/// What the watchdog knows about a connection at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub started: Instant,
    pub first_byte: bool,
    pub last_progress: Instant,
    pub reset_exceeded: bool,
    /// More than [`CONTROL_BYTES`] read, or more PING/SETTINGS frames than
    /// [`crate::h2scan::ControlBucket`] allows, while no request was in flight.
    pub control_flood: bool,
    pub going_away_since: Option<Instant>,
}

/// The watchdog's decision; pure so timers are tested with paused time.
pub fn decide(now: Instant, f: &Facts, t: &Timeouts) -> Next {
    if let Some(since) = f.going_away_since {
        let end = since + t.close_grace;
        return if now >= end {
            Next::Close(Reason::GraceOver)
        } else {
            Next::CheckAt(end)
        };
    }
    let first_byte_end = f.started + t.first_byte;
    if !f.first_byte && now >= first_byte_end {
        return Next::Close(Reason::FirstByte);
    }
    if f.reset_exceeded {
        return Next::GoAway(Reason::ResetFlood);
    }
    if f.control_flood {
        return Next::GoAway(Reason::ControlFlood);
    }
    let idle_end = f.last_progress + t.idle;
    if now >= idle_end {
        return Next::GoAway(Reason::Idle);
    }
    // The watchdog only wakes at deadlines: while no byte has come, the next
    // one is the earlier of both (the first byte does not wake it).
    if f.first_byte {
        Next::CheckAt(idle_end)
    } else {
        Next::CheckAt(first_byte_end.min(idle_end))
    }
}

/// What a connection may send while no request is in flight before it is told
/// to go away. A request's own headers arrive before it is in flight (at most
/// 64 KiB, the header limits), so 256 KiB is never reached by a real client;
/// a PING flood reaches it after ~15,000 PINGs.
pub const CONTROL_BYTES: u64 = 256 * 1024;

/// Whether a connection's error is h2 having sent GOAWAY for the peer's
/// protocol violation (searched down the error's sources: hyper wraps it).
pub fn is_protocol_violation(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<h2::Error>() {
            return h.is_go_away() && h.is_library();
        }
        cur = err.source();
    }
    false
}

/// The watchdog of an opaque TCP connection: closed once no byte moved either
/// way for `idle`.
pub fn decide_tcp(now: Instant, last_io: Instant, idle: Duration) -> Next {
    let end = last_io + idle;
    if now >= end {
        Next::Close(Reason::TcpIdle)
    } else {
        Next::CheckAt(end)
    }
}
