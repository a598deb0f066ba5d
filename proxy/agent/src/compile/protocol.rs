//! Port protocol selection with Istio's rules: UDP from the Service port protocol,
//! then `appProtocol`, then the port name's prefix (`http-web` → HTTP); anything
//! else is `UNKNOWN`, meaning the proxy sniffs the protocol.

/// Maps a protocol token (case-insensitive) to Istio's protocol name.
pub fn parse(token: &str) -> Option<&'static str> {
    Some(match token.to_ascii_lowercase().as_str() {
        "http" => "HTTP",
        "http2" => "HTTP2",
        "https" => "HTTPS",
        "grpc" => "GRPC",
        "grpc-web" => "GRPC-WEB",
        "tls" => "TLS",
        "tcp" => "TCP",
        "udp" => "UDP",
        "mongo" => "MONGO",
        "redis" => "REDIS",
        "mysql" => "MYSQL",
        // Kubernetes' standard appProtocol values.
        "kubernetes.io/h2c" => "HTTP2",
        "kubernetes.io/ws" => "HTTP",
        "kubernetes.io/wss" => "HTTPS",
        _ => return None,
    })
}

/// Protocol of a Kubernetes Service port.
pub fn for_service_port(
    name: Option<&str>,
    l4: Option<&str>,
    app_protocol: Option<&str>,
) -> &'static str {
    if l4.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
        return "UDP";
    }
    if let Some(p) = app_protocol.and_then(parse) {
        return p;
    }
    let name = name.unwrap_or("");
    let prefix = name.split_once('-').map_or(name, |(p, _)| p);
    parse(prefix).unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::for_service_port as p;

    #[test]
    fn istio_port_naming_rules() {
        assert_eq!(p(Some("http"), None, None), "HTTP");
        assert_eq!(p(Some("http-web"), None, None), "HTTP");
        assert_eq!(p(Some("HTTP2-x"), None, None), "HTTP2");
        assert_eq!(p(Some("grpc-web"), None, None), "GRPC");
        assert_eq!(p(Some("tcp-db"), Some("TCP"), None), "TCP");
        assert_eq!(p(Some("web"), None, None), "UNKNOWN");
        assert_eq!(p(None, None, None), "UNKNOWN");
        assert_eq!(p(Some("web"), None, Some("https")), "HTTPS");
        assert_eq!(p(Some("tcp"), None, Some("kubernetes.io/h2c")), "HTTP2");
        assert_eq!(p(Some("http"), Some("UDP"), None), "UDP");
        assert_eq!(p(Some("redis"), None, Some("bogus")), "REDIS");
    }
}
