//! Counts, in the bytes a downstream connection sends, the HTTP/2 frames that
//! make the server write an answer on its own: PING and SETTINGS without the
//! ACK flag. Pure: fed the bytes as they are read, it only parses frame
//! headers (9 bytes each) and skips payloads; hyper's h2 still parses
//! everything. A connection that does not open with the HTTP/2 preface
//! (HTTP/1) is not scanned.
//!
//! Why: a SETTINGS or PING flood costs the sidecar one ACK per frame; a byte
//! budget cannot tell such frames from a large request header block, so it had
//! to be generous (256 KiB, ~15,000 PINGs per connection). Counting the frames
//! themselves lets the budget be small ([`ControlBucket`]).

use std::time::Duration;

use tokio::time::Instant;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Matching the client preface; `usize` bytes of it seen so far.
    Preface(usize),
    /// Not HTTP/2 (or a malformed stream): nothing more is scanned.
    Off,
    /// Reading a frame header; `len` of its 9 bytes seen so far.
    Header { buf: [u8; 9], len: usize },
    /// Skipping a frame payload: this many bytes left.
    Payload(usize),
}

/// The frame-header scanner of one connection.
#[derive(Debug, Clone)]
pub struct H2Scan {
    state: State,
}

impl Default for H2Scan {
    fn default() -> Self {
        H2Scan {
            state: State::Preface(0),
        }
    }
}

impl H2Scan {
    /// Feeds the next bytes read; returns how many control frames needing an
    /// answer (PING, SETTINGS without ACK) started in them.
    pub fn feed(&mut self, mut data: &[u8]) -> u32 {
        let mut found = 0;
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return found,
                State::Preface(seen) => {
                    let n = (PREFACE.len() - *seen).min(data.len());
                    if data[..n] != PREFACE[*seen..*seen + n] {
                        self.state = State::Off;
                        return found;
                    }
                    *seen += n;
                    data = &data[n..];
                    if *seen == PREFACE.len() {
                        self.state = State::Header {
                            buf: [0; 9],
                            len: 0,
                        };
                    }
                }
                State::Header { buf, len } => {
                    let n = (9 - *len).min(data.len());
                    buf[*len..*len + n].copy_from_slice(&data[..n]);
                    *len += n;
                    data = &data[n..];
                    if *len == 9 {
                        let payload = usize::from(buf[0]) << 16
                            | usize::from(buf[1]) << 8
                            | usize::from(buf[2]);
                        let (kind, flags) = (buf[3], buf[4]);
                        if matches!(kind, PING | SETTINGS) && flags & ACK == 0 {
                            found += 1;
                        }
                        self.state = if payload == 0 {
                            State::Header {
                                buf: [0; 9],
                                len: 0,
                            }
                        } else {
                            State::Payload(payload)
                        };
                    }
                }
                State::Payload(left) => {
                    let n = (*left).min(data.len());
                    *left -= n;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = State::Header {
                            buf: [0; 9],
                            len: 0,
                        };
                    }
                }
            }
        }
        found
    }
}

/// The control frames a connection may send while no request is in flight:
/// a burst of [`ControlBucket::BURST`], refilled at [`ControlBucket::PER_SEC`].
/// Real clients send a SETTINGS or two when they connect and a keepalive PING
/// now and then (gRPC's default is one per 2 hours, and servers answer more
/// than one per 5 minutes with GOAWAY); a flood spends the burst in
/// microseconds.
#[derive(Debug, Clone)]
pub struct ControlBucket {
    tokens: u32,
    last: Instant,
}

impl ControlBucket {
    pub const BURST: u32 = 100;
    pub const PER_SEC: u32 = 10;

    pub fn new(now: Instant) -> ControlBucket {
        ControlBucket {
            tokens: Self::BURST,
            last: now,
        }
    }

    /// Takes `n` tokens at `now`; `false` once the bucket is empty (a flood).
    pub fn take(&mut self, n: u32, now: Instant) -> bool {
        let step = Duration::from_secs(1) / Self::PER_SEC;
        let earned = (now.duration_since(self.last).as_nanos() / step.as_nanos()) as u32;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(Self::BURST);
            self.last += step * earned;
        }
        match self.tokens.checked_sub(n) {
            Some(t) => {
                self.tokens = t;
                true
            }
            None => {
                self.tokens = 0;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn flood() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend(frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 100]));
        b.extend(frame(SETTINGS, ACK, &[]));
        // A HEADERS frame whose payload looks like PING headers: skipped.
        b.extend(frame(0x1, 0x4, &frame(PING, 0, &[0; 8])));
        for _ in 0..5 {
            b.extend(frame(PING, 0, b"12345678"));
        }
        b.extend(frame(PING, ACK, b"12345678"));
        b
    }

    #[test]
    fn counts_unacked_ping_and_settings_only() {
        assert_eq!(H2Scan::default().feed(&flood()), 6);
    }

    #[test]
    fn any_split_of_the_bytes_counts_the_same() {
        let bytes = flood();
        for cut in 0..bytes.len() {
            let mut s = H2Scan::default();
            let n = s.feed(&bytes[..cut]) + s.feed(&bytes[cut..]);
            assert_eq!(n, 6, "cut at {cut}");
        }
        let mut s = H2Scan::default();
        assert_eq!(bytes.chunks(1).map(|c| s.feed(c)).sum::<u32>(), 6);
    }

    #[test]
    fn http1_is_not_scanned() {
        let mut s = H2Scan::default();
        let mut b = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".to_vec();
        b.extend(frame(PING, 0, b"12345678"));
        assert_eq!(s.feed(&b), 0);
        assert_eq!(s.feed(&frame(PING, 0, b"12345678")), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_its_rate() {
        let mut b = ControlBucket::new(Instant::now());
        assert!(b.take(ControlBucket::BURST, Instant::now()));
        assert!(!b.take(1, Instant::now()), "burst spent");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.take(1, Instant::now()), "one token per 100 ms");
        assert!(!b.take(1, Instant::now()));
        // A keepalive PING every 10 s, forever, never runs out.
        let mut b = ControlBucket::new(Instant::now());
        for _ in 0..1000 {
            tokio::time::advance(Duration::from_secs(10)).await;
            assert!(b.take(1, Instant::now()));
        }
        // Refill is capped at the burst.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(b.take(ControlBucket::BURST, Instant::now()));
        assert!(!b.take(1, Instant::now()));
    }
}
