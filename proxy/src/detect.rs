//! Protocol detection for ports without a declared protocol: peek at the first
//! bytes the client sends. A client that sends nothing within the window is
//! treated as TCP immediately, so server-first protocols (the server speaks
//! first: SMTP, MySQL) are never delayed beyond the window, and the peeked bytes
//! stay in the socket for whoever handles the connection.

use std::time::Duration;

use tokio::net::TcpStream;

/// What the first bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0`), i.e. h2c prior knowledge.
    Http2,
    Tls,
    Tcp,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Classifies a prefix; `None` means "need more bytes".
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return Some(Detected::Tls);
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Some(Detected::Http2)
        } else {
            None
        };
    }
    let mut maybe = false;
    for m in METHODS {
        let k = buf.len().min(m.len());
        if buf[..k] == m[..k] {
            if k == m.len() {
                return Some(Detected::Http1);
            }
            maybe = true;
        }
    }
    if maybe {
        None
    } else {
        Some(Detected::Tcp)
    }
}

/// Peeks until the prefix is classified, the client goes quiet for `window`, or
/// the connection closes.
pub async fn detect(stream: &TcpStream, window: Duration) -> Detected {
    let mut buf = [0u8; 32];
    let deadline = tokio::time::Instant::now() + window;
    let mut last = 0;
    loop {
        let peek = tokio::time::timeout_at(deadline, stream.peek(&mut buf));
        match peek.await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                return classify(&buf[..last]).unwrap_or(Detected::Tcp)
            }
            Ok(Ok(n)) => {
                if let Some(d) = classify(&buf[..n]) {
                    return d;
                }
                if n == last {
                    // Peeked bytes keep the socket readable, so wait a little for
                    // more instead of spinning (bounded by the window).
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                last = n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Detected::Http2)
        );
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(&[0x16, 3, 1]), Some(Detected::Tls));
        assert_eq!(classify(b"\x00\x01binary"), Some(Detected::Tcp));
        assert_eq!(classify(b"ping\n"), Some(Detected::Tcp));
        assert_eq!(classify(b"POSTMAN"), Some(Detected::Tcp));
    }
}
