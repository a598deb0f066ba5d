//! Long header values a connection sends again and again, validated once.
//!
//! Building an `http::HeaderValue` checks every byte of the value, about ten
//! instructions a byte. On a mesh connection the longest values repeat on
//! every message: a sidecar's peer metadata (some 300 bytes on each request
//! and each answer, where an end does not keep it: see `crate::h1peer`), a
//! client's `user-agent`, a browser's cookies. Validating the peer metadata
//! was 2.6 k of the 55 k instructions each mTLS sidecar spent per request
//! (callgrind). A connection keeps the few long values it last saw;
//! a head that repeats one exactly shares it (a comparison and a reference
//! count) instead of checking it again.
//!
//! What is kept is a copy, not a slice of the head: a slice would keep the
//! connection's read buffer shared, so that each read allocated a new one.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

/// Shorter values are checked faster than they are looked up.
pub(crate) const MIN_LEN: usize = 64;

/// Values kept per connection: a sidecar sends one such value, a browser
/// behind a gateway a few (`user-agent`, `cookie`, `accept`).
const SLOTS: usize = 4;

/// The part of a header line that is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadPart {
    Name,
    Value,
}

/// The long header values one connection sent last.
#[derive(Default)]
pub(crate) struct Repeats {
    slots: Vec<(HeaderName, HeaderValue)>,
    /// The slot the next new value replaces, once all are taken.
    next: usize,
}

impl Repeats {
    /// The header `name: value` of the parsed head `head` (`value` is a slice
    /// of it): a long value this connection sent before is shared, any other
    /// value is a slice of `head` (no copy).
    pub(crate) fn parse(
        &mut self,
        head: &Bytes,
        name: &[u8],
        value: &[u8],
    ) -> Result<(HeaderName, HeaderValue), BadPart> {
        if value.len() >= MIN_LEN {
            if let Some(kept) = self.header(name, value) {
                return Ok(kept);
            }
        }
        Ok((
            HeaderName::from_bytes(name).map_err(|_| BadPart::Name)?,
            HeaderValue::from_maybe_shared(head.slice_ref(value)).map_err(|_| BadPart::Value)?,
        ))
    }

    /// The header `name: value`, shared with an earlier head of this
    /// connection when it repeats one; `None` when the name or value is not
    /// valid. For values of at least [`MIN_LEN`] bytes.
    fn header(&mut self, name: &[u8], value: &[u8]) -> Option<(HeaderName, HeaderValue)> {
        let found = self.slots.iter().find(|(n, v)| {
            let n = n.as_str().as_bytes();
            // Names arrive as the sender spells them, mostly in lower case.
            v.as_bytes() == value && (n == name || n.eq_ignore_ascii_case(name))
        });
        if let Some((n, v)) = found {
            return Some((n.clone(), v.clone()));
        }
        let kept = (
            HeaderName::from_bytes(name).ok()?,
            HeaderValue::from_bytes(value).ok()?,
        );
        // Same name, new value (a changing cookie): the old value is gone.
        match self.slots.iter().position(|(old, _)| *old == kept.0) {
            Some(i) => self.slots[i] = kept.clone(),
            None if self.slots.len() < SLOTS => self.slots.push(kept.clone()),
            None => {
                self.slots[self.next] = kept.clone();
                self.next = (self.next + 1) % SLOTS;
            }
        }
        Some(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(c: char) -> String {
        std::iter::repeat_n(c, MIN_LEN).collect()
    }

    #[test]
    fn a_repeated_value_is_shared_and_a_new_one_replaces_it() {
        let mut r = Repeats::default();
        let (a, b) = (long('a'), long('b'));
        let (n1, v1) = r.header(b"X-Mesh-Peer-Metadata", a.as_bytes()).unwrap();
        assert_eq!(n1, "x-mesh-peer-metadata");
        assert_eq!(v1, a.as_str());
        // Same bytes again (any case of the name): the very same value.
        let (_, v2) = r.header(b"x-mesh-peer-metadata", a.as_bytes()).unwrap();
        assert_eq!(v2.as_bytes().as_ptr(), v1.as_bytes().as_ptr());
        // A new value for the name replaces the old one in its slot.
        let (_, v3) = r.header(b"x-mesh-peer-metadata", b.as_bytes()).unwrap();
        assert_eq!(v3, b.as_str());
        assert_eq!(r.slots.len(), 1);
        let (_, v4) = r.header(b"x-mesh-peer-metadata", b.as_bytes()).unwrap();
        assert_eq!(v4.as_bytes().as_ptr(), v3.as_bytes().as_ptr());
    }

    #[test]
    fn invalid_bytes_are_refused_whether_or_not_kept() {
        let mut r = Repeats::default();
        let mut bad = long('a');
        bad.push('\u{7f}');
        assert!(r.header(b"user-agent", bad.as_bytes()).is_none());
        assert!(r.header(b"bad name", long('a').as_bytes()).is_none());
        assert!(r.slots.is_empty());
    }

    #[test]
    fn parse_names_the_bad_part_and_slices_short_values() {
        let mut r = Repeats::default();
        let head = Bytes::from(format!("short{}\u{7f}", long('a')));
        let (short, bad_long) = (&head[..5], &head[5..]);
        let (_, v) = r.parse(&head, b"x-a", short).unwrap();
        assert_eq!(v.as_bytes().as_ptr(), head.as_ptr(), "a slice, not a copy");
        assert_eq!(r.parse(&head, b"bad name", short), Err(BadPart::Name));
        assert_eq!(r.parse(&head, b"x-a", bad_long), Err(BadPart::Value));
        assert_eq!(
            r.parse(&head, b"x-a", &head[head.len() - 1..]),
            Err(BadPart::Value)
        );
    }

    #[test]
    fn at_most_four_values_are_kept_oldest_replaced_first() {
        let mut r = Repeats::default();
        let names = ["a", "b", "c", "d", "e", "f"];
        for n in names {
            r.header(n.as_bytes(), long('v').as_bytes()).unwrap();
        }
        let kept: Vec<&str> = r.slots.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(kept, ["e", "f", "c", "d"]);
    }
}
