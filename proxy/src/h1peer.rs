//! The peer metadata header sent once per HTTP/1 connection between two
//! sidecars, instead of on every message.
//!
//! Between sidecars, every request carries the caller's metadata and every
//! answer the callee's ([`crate::peer`]): some 300 bytes each way that never
//! change on a connection, and that each side writes, encrypts, decrypts and
//! scans again per message. Sending it once cut the mTLS server sidecar from
//! 53.2 k to 49.0 k instructions per request and the client from 52.8 k to
//! 51.0 k (callgrind). Here each end of a connection served by the own
//! HTTP/1 server or client remembers the last value it received and tells
//! the other end so, once, by appending [`KEEPS`] to the value; an end told so
//! leaves the header out while its value is unchanged, and the other end puts
//! the remembered value back before anything above the wire sees the message.
//!
//! An end that never says it remembers (an older sidecar, hyper's client or
//! server, an app) always gets the header, so mixed versions keep their
//! labels. What is remembered is what the peer sent on that very connection:
//! no more trusted than the header itself (the principal never comes from
//! it, see [`crate::peer::PeerCache::source`]).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

use crate::h1repeat::{BadPart, Repeats};

/// Appended to the peer metadata value, once per connection and direction:
/// "I keep the last value you sent on this connection". Parsers of the value
/// ignore unknown fields, so an end that does not know it reads the value as
/// it always did.
pub(crate) const KEEPS: &[u8] = b";kept=1";

/// The header's name as it is written (`crate::peer::HEADER`).
const NAME: &[u8] = b"x-mesh-peer-metadata";

/// Whether a header line's name is the peer metadata header.
pub(crate) fn is_peer(name: &[u8]) -> bool {
    name.len() == NAME.len() && name.eq_ignore_ascii_case(NAME)
}

/// How to write the peer metadata header of an outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sending {
    /// Leave it out: the peer keeps this very value.
    Omit,
    /// Write it as it is.
    Plain,
    /// Write it followed by [`KEEPS`].
    Tell,
}

/// One connection's end of the exchange.
#[derive(Debug, Default)]
pub struct PeerMemo {
    /// This end appended [`KEEPS`] on this connection.
    told: bool,
    /// The other end did.
    peer_keeps: bool,
    /// The value this end wrote last.
    sent: Option<HeaderValue>,
    /// The value the other end wrote last, without [`KEEPS`].
    received: Option<HeaderValue>,
    /// The head being parsed had the header.
    in_head: bool,
}

impl PeerMemo {
    /// How to write `value` on an outgoing message, noting that it was.
    pub(crate) fn send(&mut self, value: &HeaderValue) -> Sending {
        let same = self
            .sent
            .as_ref()
            .is_some_and(|s| s.as_bytes() == value.as_bytes());
        if self.peer_keeps && same {
            return Sending::Omit;
        }
        if !same {
            self.sent = Some(value.clone());
        }
        if self.told {
            Sending::Plain
        } else {
            self.told = true;
            Sending::Tell
        }
    }

    /// One header line of a received head (`value` a slice of `head`), as
    /// [`Repeats::parse`] makes it; the peer metadata line without
    /// [`KEEPS`], and noted.
    pub(crate) fn parse(
        &mut self,
        repeats: &mut Repeats,
        head: &Bytes,
        name: &[u8],
        value: &[u8],
    ) -> Result<(HeaderName, HeaderValue), BadPart> {
        if !is_peer(name) {
            return repeats.parse(head, name, value);
        }
        let line = repeats.parse(head, name, self.strip(value))?;
        self.received(&line.1);
        self.in_head = true;
        Ok(line)
    }

    /// Called after the lines of a received head: the value to add to it, if
    /// it had none and stands for the last one received.
    pub(crate) fn end_head(&mut self) -> Option<HeaderValue> {
        if std::mem::take(&mut self.in_head) {
            return None;
        }
        self.missing().cloned()
    }

    /// A received peer metadata value: the value without [`KEEPS`], which,
    /// if it was there, says the peer keeps ours.
    fn strip<'a>(&mut self, value: &'a [u8]) -> &'a [u8] {
        match value.strip_suffix(KEEPS) {
            Some(v) => {
                self.peer_keeps = true;
                v
            }
            None => value,
        }
    }

    /// Notes the value a received head carried (after [`PeerMemo::strip`]).
    fn received(&mut self, value: &HeaderValue) {
        let same = self
            .received
            .as_ref()
            .is_some_and(|r| r.as_bytes() == value.as_bytes());
        if !same {
            self.received = Some(value.clone());
        }
    }

    /// The value a received head without the header stands for: the last one
    /// received, once this end has said it keeps it (before that, the peer
    /// never leaves it out, and a head without it has none).
    pub(crate) fn missing(&self) -> Option<&HeaderValue> {
        self.received.as_ref().filter(|_| self.told)
    }
}

/// Inserts the header line for `value` at `at` in `out` (a head being
/// encoded), as `how` says: nothing when the peer keeps it.
pub(crate) fn insert(out: &mut Vec<u8>, at: usize, value: &HeaderValue, how: Sending) {
    if how == Sending::Omit {
        return;
    }
    let keeps = if how == Sending::Tell { KEEPS } else { b"" };
    let line = NAME
        .iter()
        .chain(b": ")
        .chain(value.as_bytes())
        .chain(keeps);
    out.splice(at..at, line.chain(b"\r\n").copied());
}

/// Appends the header line for `value` as `how` says.
pub(crate) fn write(out: &mut Vec<u8>, value: &HeaderValue, how: Sending) {
    let at = out.len();
    insert(out, at, value, how);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn a_value_is_left_out_only_once_the_peer_keeps_it() {
        let mut m = PeerMemo::default();
        let a = v("workload=a");
        assert_eq!(m.send(&a), Sending::Tell);
        // The peer has not said it keeps anything: always written.
        assert_eq!(m.send(&a), Sending::Plain);
        assert_eq!(m.strip(b"workload=b;kept=1"), b"workload=b");
        assert_eq!(m.send(&a), Sending::Omit);
        assert_eq!(m.send(&a), Sending::Omit);
        // A new value is written, then kept in its turn.
        let b = v("workload=a2");
        assert_eq!(m.send(&b), Sending::Plain);
        assert_eq!(m.send(&b), Sending::Omit);
    }

    #[test]
    fn a_missing_value_is_the_last_received_once_this_end_told() {
        let mut m = PeerMemo::default();
        m.received(&v("workload=b"));
        // Not told yet: the peer never leaves it out, so none is meant.
        assert_eq!(m.missing(), None);
        assert_eq!(m.send(&v("workload=a")), Sending::Tell);
        assert_eq!(m.missing(), Some(&v("workload=b")));
        m.received(&v("workload=c"));
        assert_eq!(m.missing(), Some(&v("workload=c")));
        assert_eq!(m.missing().cloned(), Some(v("workload=c")));
        // A value without the marker leaves `peer_keeps` alone.
        let mut m = PeerMemo::default();
        assert_eq!(m.strip(b"workload=b"), b"workload=b");
        assert!(!m.peer_keeps);
        assert_eq!(m.strip(b";kept=1"), b"");
        assert!(m.peer_keeps);
    }

    #[test]
    fn lines_are_written_and_inserted_alike() {
        let a = v("workload=a");
        for how in [Sending::Omit, Sending::Plain, Sending::Tell] {
            let mut written = b"GET / HTTP/1.1\r\n".to_vec();
            write(&mut written, &a, how);
            written.extend_from_slice(b"\r\nbody");
            let mut inserted = b"GET / HTTP/1.1\r\n\r\nbody".to_vec();
            insert(&mut inserted, 16, &a, how);
            assert_eq!(
                String::from_utf8_lossy(&inserted),
                String::from_utf8_lossy(&written),
                "{how:?}"
            );
        }
        let mut out = Vec::new();
        write(&mut out, &a, Sending::Tell);
        assert_eq!(out, b"x-mesh-peer-metadata: workload=a;kept=1\r\n");
        assert!(is_peer(b"X-Mesh-Peer-Metadata"));
        assert!(!is_peer(b"x-mesh-peer-metadatb"));
        assert_eq!(crate::peer::HEADER.as_str().as_bytes(), NAME);
    }

    #[test]
    fn heads_without_the_header_get_the_kept_value() {
        let mut m = PeerMemo::default();
        let mut r = Repeats::default();
        let head = Bytes::from_static(b"x-mesh-peer-metadata: workload=b;kept=1");
        let (name, value) = m.parse(&mut r, &head, &head[..20], &head[22..]).unwrap();
        assert_eq!(
            (name.as_str(), value.as_bytes()),
            ("x-mesh-peer-metadata", &b"workload=b"[..])
        );
        assert_eq!(m.end_head(), None, "the head had it");
        // Not told: a head without it has none.
        assert_eq!(m.end_head(), None);
        m.send(&v("workload=a"));
        assert_eq!(m.end_head(), Some(v("workload=b")));
        let other = Bytes::from_static(b"host: x");
        m.parse(&mut r, &other, &other[..4], &other[6..]).unwrap();
        assert_eq!(m.end_head(), Some(v("workload=b")));
        assert!(m.peer_keeps);
        let bad = Bytes::from_static(b"x-mesh-peer-metadata: ");
        assert_eq!(
            m.parse(&mut r, &bad, &bad[..20], &bad[22..]).err(),
            Some(BadPart::Value)
        );
    }
}
