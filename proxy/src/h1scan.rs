//! A pure, incremental scan of the HTTP/1 request bytes a client sends, for
//! the checks hyper does not make: a line ending without CR (bare LF) in the
//! request line or headers, a request target longer than [`MAX_URI_BYTES`],
//! and an invalid chunked body, all caught before hyper sees the request so
//! nothing of it is forwarded. It follows the message framing (head,
//! `Content-Length` or chunked body, next head) exactly as hyper does; anything
//! it does not follow with certainty (upgrades, CONNECT, HTTP/2, odd framing
//! headers) turns it off for the rest of the connection and leaves the
//! decision to hyper, which is always at least as strict on what it accepts.

/// Longest request target accepted; longer ones get 414. 32 KiB: twice what
/// common edges (AWS ALB, Cloudflare) accept in a request line, so anything that
/// crossed the internet fits, and half of the 64 KiB head buffer, so a long URI
/// still leaves room for headers. Heads above 64 KiB stay 431 (hyper's limit).
pub const MAX_URI_BYTES: usize = 32 * 1024;

/// Longest incomplete head the scan holds back; past it the bytes go to hyper,
/// whose own limit (`max_buf_size`, 64 KiB in `conn.rs`) answers 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why a request is refused before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    BareLf,
    UriTooLong,
    BadChunk,
}

impl Reject {
    pub fn status(self) -> u16 {
        match self {
            Reject::UriTooLong => 414,
            Reject::BareLf | Reject::BadChunk => 400,
        }
    }
    /// The token carried by the local request that answers it.
    pub fn token(self) -> &'static str {
        match self {
            Reject::BareLf => "bare-lf",
            Reject::UriTooLong => "uri-too-long",
            Reject::BadChunk => "invalid-chunk",
        }
    }
    pub fn from_token(t: &str) -> Option<Reject> {
        [Reject::BareLf, Reject::UriTooLong, Reject::BadChunk]
            .into_iter()
            .find(|r| r.token() == t)
    }
    pub fn message(self) -> &'static str {
        match self {
            Reject::BareLf => "line ending without CR in the request head\n",
            Reject::UriTooLong => "request target longer than 32768 bytes\n",
            Reject::BadChunk => "invalid chunk in the chunked request body\n",
        }
    }
}

/// How the body after a head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the next byte starts the next head.
    None,
    Length(u64),
    Chunked,
    /// Not followed (upgrade, CONNECT, HTTP/2 preface, unusual headers).
    Untracked,
}

/// Whether `head` (a request line and headers up to the empty line) may go to
/// hyper, and how its body is framed.
pub fn analyze(head: &[u8]) -> Result<Framing, Reject> {
    if line_ends(head).any(|i| i == 0 || head[i - 1] != b'\r') {
        return Err(Reject::BareLf);
    }
    let mut lines = split_lines(head).map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Ok(Framing::Untracked),
    };
    if target.len() > MAX_URI_BYTES {
        return Err(Reject::UriTooLong);
    }
    if !matches!(version, b"HTTP/1.1" | b"HTTP/1.0") || method == b"CONNECT" {
        return Ok(Framing::Untracked);
    }
    let (mut length, mut chunked, mut lengths, mut encodings) = (None, false, 0, 0);
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Ok(Framing::Untracked);
        };
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Ok(Framing::Untracked);
        }
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length = crate::h1fields::content_length(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            return Ok(Framing::Untracked);
        }
    }
    Ok(match (lengths, encodings, length, chunked) {
        (0, 0, _, _) => Framing::None,
        (1, 0, Some(0), _) => Framing::None,
        (1, 0, Some(n), _) => Framing::Length(n),
        (0, 1, _, true) => Framing::Chunked,
        _ => Framing::Untracked,
    })
}

/// Where a complete head ends (the index after its empty line), looking for
/// line ends from `from` on (earlier ones were already looked at).
pub fn head_end(head: &[u8], from: usize) -> Option<usize> {
    // Only line ends can end a head: jump between them (eight bytes at a
    // time) rather than test every byte, which was most of this scan's cost.
    line_ends(head.get(from..)?)
        .map(|i| from + i)
        .find(|&p| {
            (p >= 1 && head[p - 1] == b'\n')
                || (p >= 2 && head[p - 1] == b'\r' && head[p - 2] == b'\n')
        })
        .map(|p| p + 1)
}

/// The index of every LF in `bytes`, in order. Eight bytes are tested at a
/// time (a word with an LF byte has a zero byte after XOR with LFs), so a
/// head of a few hundred bytes costs a few dozen steps, not one per byte.
/// Plain code rather than the `memchr` crate: a new dependency of this crate
/// renames all its symbols, and `proxy/symbol-order.txt` names them.
fn line_ends(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            let rest = &bytes[at..];
            if let Some(word) = rest.first_chunk::<8>() {
                let x = u64::from_ne_bytes(*word) ^ LFS;
                if x.wrapping_sub(ONES) & !x & HIGHS == 0 {
                    at += 8;
                    continue;
                }
            }
            // An LF in the next eight bytes (or the tail): find it bytewise.
            let end = rest.len().min(8);
            match rest[..end].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    at += i + 1;
                    return Some(at - 1);
                }
                None => at += end,
            }
        }
        None
    })
}

/// `head` split at each LF, as `split(|&b| b == b'\n')` would (the LF
/// themselves are not in the lines).
fn split_lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    line_ends(head)
        .chain(std::iter::once(head.len()))
        .map(move |end| {
            let line = &head[start..end];
            start = end + 1;
            line
        })
}

/// Whether an incomplete head's request target is already too long (checked
/// once the head outgrows the limit; methods longer than 32 bytes are left to
/// hyper).
pub fn target_too_long(partial: &[u8]) -> bool {
    if partial.len() <= MAX_URI_BYTES {
        return false;
    }
    let Some(sp) = partial.iter().take(32).position(|&b| b == b' ') else {
        return false;
    };
    let target = &partial[sp + 1..];
    let window = &target[..target.len().min(MAX_URI_BYTES + 1)];
    window.len() > MAX_URI_BYTES && !window.iter().any(|&b| matches!(b, b' ' | b'\r' | b'\n'))
}

/// hyper's chunked-body states, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Ext(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    /// The body ended; the next byte starts the next head.
    Done,
}

/// Advances a chunked body over `bytes`: the new state and how many bytes it
/// took (fewer than `bytes.len()` only when the body ended).
pub fn chunk_step(mut state: Chunk, bytes: &[u8]) -> Result<(Chunk, usize), Reject> {
    let mut i = 0;
    while i < bytes.len() && state != Chunk::Done {
        if let Chunk::Data(rem) = state {
            let take = usize::try_from(rem)
                .unwrap_or(usize::MAX)
                .min(bytes.len() - i);
            i += take;
            let rem = rem - take as u64;
            state = if rem == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data(rem)
            };
            continue;
        }
        let b = bytes[i];
        i += 1;
        let hex = |size: u64| -> Result<Chunk, Reject> {
            let d = (b as char).to_digit(16).ok_or(Reject::BadChunk)?;
            size.checked_mul(16)
                .and_then(|s| s.checked_add(u64::from(d)))
                .map(Chunk::Size)
                .ok_or(Reject::BadChunk)
        };
        state = match (state, b) {
            (Chunk::Start, _) => hex(0)?,
            (Chunk::Size(s), b'\t' | b' ') | (Chunk::SizeLws(s), b'\t' | b' ') => Chunk::SizeLws(s),
            (Chunk::Size(s), b';') | (Chunk::SizeLws(s), b';') => Chunk::Ext(s),
            (Chunk::Size(s), b'\r') | (Chunk::SizeLws(s), b'\r') | (Chunk::Ext(s), b'\r') => {
                Chunk::SizeLf(s)
            }
            (Chunk::Size(s), _) => hex(s)?,
            (Chunk::Ext(_), b'\n') => return Err(Reject::BadChunk),
            (Chunk::Ext(s), _) => Chunk::Ext(s),
            (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
            (Chunk::SizeLf(s), b'\n') => Chunk::Data(s),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Start,
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::EndCr, _) | (Chunk::Trailer, _) if b != b'\r' => Chunk::Trailer,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            (Chunk::EndLf, b'\n') => Chunk::Done,
            _ => return Err(Reject::BadChunk),
        };
    }
    Ok((state, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_framing() {
        let ok = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(analyze(ok), Ok(Framing::Length(5)));
        assert_eq!(head_end(ok, 0), Some(ok.len()));
        assert_eq!(
            analyze(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            analyze(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Framing::None)
        );
        for untracked in [
            &b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length : 1\r\n\r\n",
            b"POST / HTTP/1.1\r\n folded\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                analyze(untracked),
                Ok(Framing::Untracked),
                "{}",
                String::from_utf8_lossy(untracked)
            );
        }
    }

    #[test]
    fn bare_lf_anywhere_in_the_head_is_refused() {
        assert_eq!(
            analyze(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Err(Reject::BareLf)
        );
        assert_eq!(
            analyze(b"GET / HTTP/1.1\r\nHost: a\n\r\n"),
            Err(Reject::BareLf)
        );
        assert_eq!(
            analyze(b"GET / HTTP/1.1\r\nHost: a\r\n\n"),
            Err(Reject::BareLf)
        );
        // A bare-LF head still ends where hyper would end it.
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        // Resuming from a later offset finds an end that straddles reads.
        let h = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(head_end(h, h.len() - 1), Some(h.len()));
    }

    #[test]
    fn line_searches_agree_with_a_byte_at_a_time_scan() {
        // The byte-at-a-time forms these searches replaced, as references.
        fn head_end_ref(head: &[u8], from: usize) -> Option<usize> {
            (from..head.len()).find_map(|p| {
                let empty_line = head[p] == b'\n'
                    && ((p >= 1 && head[p - 1] == b'\n')
                        || (p >= 2 && head[p - 1] == b'\r' && head[p - 2] == b'\n'));
                empty_line.then_some(p + 1)
            })
        }
        let mut rng = fastrand::Rng::with_seed(17);
        for _ in 0..20_000 {
            // Mostly line-ending bytes, so heads end, straddle and go bare;
            // and bytes next to LF's bit pattern, for the word-wise test.
            let len = rng.usize(0..80);
            let bytes = [b'\r', b'\n', b'a', b':', b' ', 0x0b, 0x8a, 0x00, 0xff];
            let head: Vec<u8> = (0..len).map(|_| bytes[rng.usize(0..bytes.len())]).collect();
            let from = rng.usize(0..=len);
            assert_eq!(
                head_end(&head, from),
                head_end_ref(&head, from),
                "{head:?} {from}"
            );
            let lfs: Vec<usize> = (0..head.len()).filter(|&i| head[i] == b'\n').collect();
            assert_eq!(line_ends(&head).collect::<Vec<_>>(), lfs, "{head:?}");
            let ours: Vec<&[u8]> = split_lines(&head).collect();
            let std: Vec<&[u8]> = head.split(|&b| b == b'\n').collect();
            assert_eq!(ours, std, "{head:?}");
        }
        assert_eq!(head_end(b"GET", 4), None);
    }

    #[test]
    fn long_targets_get_414_before_the_head_completes() {
        let target = "a".repeat(MAX_URI_BYTES);
        let ok = format!("GET /{} HTTP/1.1\r\n\r\n", &target[1..]);
        assert_eq!(analyze(ok.as_bytes()), Ok(Framing::None));
        let long = format!("GET /{target} HTTP/1.1\r\n\r\n");
        assert_eq!(analyze(long.as_bytes()), Err(Reject::UriTooLong));
        // Incomplete: only the limit matters, not the rest of the head.
        assert!(target_too_long(format!("GET /{target}").as_bytes()));
        assert!(!target_too_long(format!("GET {target}").as_bytes()));
        assert!(Reject::UriTooLong
            .message()
            .contains(&MAX_URI_BYTES.to_string()));
        let headers = format!("GET / HTTP/1.1\r\nx-big: {target}");
        assert!(
            !target_too_long(headers.as_bytes()),
            "big headers are 431, not 414"
        );
    }

    #[test]
    fn chunked_bodies_follow_hypers_grammar() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nx-trailer: y\r\n\r\nGET";
        let (state, used) = chunk_step(Chunk::Start, body).unwrap();
        assert_eq!((state, used), (Chunk::Done, body.len() - 3));
        // Byte by byte gives the same result.
        let mut s = Chunk::Start;
        for b in &body[..body.len() - 3] {
            s = chunk_step(s, std::slice::from_ref(b)).unwrap().0;
        }
        assert_eq!(s, Chunk::Done);
        assert_eq!(
            chunk_step(Chunk::Start, b"a \t\r\n").unwrap().0,
            Chunk::Data(10)
        );
        for bad in [
            &b"zz\r\n"[..],
            b"5x\r\n",
            b"\r\n",
            b"5\n",
            b"5;a\nb\r\n",
            b"5 5\r\n",
            b"1\r\nab\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\n\r\r",
        ] {
            assert_eq!(
                chunk_step(Chunk::Start, bad),
                Err(Reject::BadChunk),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
