//! Server Name Indication and ALPN from a TLS ClientHello, read without consuming
//! it (the connection is passed through untouched): SNI for VirtualService `tls`
//! routes, ALPN to tell a sidecar's mTLS from an app's own TLS.

/// Returns the SNI host name if `buf` starts with a complete ClientHello record
/// carrying one. `None` for anything else (not TLS, truncated, no SNI).
pub fn parse(buf: &[u8]) -> Option<String> {
    // server_name list: 2-byte list length, then (type, 2-byte len, name).
    let data = extension(buf, 0)?;
    let name_len = usize::from(u16::from_be_bytes([*data.get(3)?, *data.get(4)?]));
    let name = data.get(5..5 + name_len)?;
    std::str::from_utf8(name).ok().map(str::to_ascii_lowercase)
}

/// The ALPN protocols a complete ClientHello offers (empty if it has none);
/// `None` when `buf` is not a complete ClientHello record.
pub fn alpn(buf: &[u8]) -> Option<Vec<Vec<u8>>> {
    extensions(buf)?;
    let Some(data) = extension(buf, 16) else {
        return Some(Vec::new());
    };
    // 2-byte list length, then (1-byte len, name)*.
    let mut out = Vec::new();
    let mut p = 2;
    while let Some(&len) = data.get(p) {
        let name = data.get(p + 1..p + 1 + usize::from(len))?;
        out.push(name.to_vec());
        p += 1 + usize::from(len);
    }
    Some(out)
}

/// The extensions block of a complete ClientHello record.
fn extensions(buf: &[u8]) -> Option<&[u8]> {
    // TLS record: type 22 (handshake), version, length.
    if buf.len() < 5 || buf[0] != 0x16 {
        return None;
    }
    let rec_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    let rec = buf.get(5..5 + rec_len)?;
    // Handshake: type 1 (ClientHello), 3-byte length.
    if rec.first()? != &1 {
        return None;
    }
    let mut p = 4;
    p += 2 + 32; // client version + random
    let sid = usize::from(*rec.get(p)?);
    p += 1 + sid;
    let cs = usize::from(u16::from_be_bytes([*rec.get(p)?, *rec.get(p + 1)?]));
    p += 2 + cs;
    let comp = usize::from(*rec.get(p)?);
    p += 1 + comp;
    let ext_len = usize::from(u16::from_be_bytes([*rec.get(p)?, *rec.get(p + 1)?]));
    p += 2;
    let end = (p + ext_len).min(rec.len());
    rec.get(p..end)
}

/// The body of extension `wanted` in a complete ClientHello.
fn extension(buf: &[u8], wanted: u16) -> Option<&[u8]> {
    let ext = extensions(buf)?;
    let mut p = 0;
    while p + 4 <= ext.len() {
        let ty = u16::from_be_bytes([ext[p], ext[p + 1]]);
        let len = usize::from(u16::from_be_bytes([ext[p + 2], ext[p + 3]]));
        let data = ext.get(p + 4..p + 4 + len)?;
        if ty == wanted {
            return Some(data);
        }
        p += 4 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with SNI `api.example.com`.
    fn hello(name: &str) -> Vec<u8> {
        let n = name.as_bytes();
        let mut sni = vec![0, 0];
        let list_len = (n.len() + 3) as u16;
        sni.extend((list_len + 2).to_be_bytes());
        sni.extend(list_len.to_be_bytes());
        sni.push(0);
        sni.extend((n.len() as u16).to_be_bytes());
        sni.extend(n);
        let mut body = vec![3, 3];
        body.extend([0u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // compression: null
        body.extend((sni.len() as u16).to_be_bytes());
        body.extend(&sni);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn reads_sni() {
        assert_eq!(
            parse(&hello("API.example.com")).as_deref(),
            Some("api.example.com")
        );
        let h = hello("x.y");
        assert_eq!(parse(&h[..h.len() - 2]), None, "truncated");
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(alpn(&hello("x.y")), Some(vec![]));
    }
}
