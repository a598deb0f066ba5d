//! Single-resource checks of the networking kinds, following Istio's webhook rules.

use super::checks::*;
use super::report::Report;
use mesh_api::networking::*;

pub fn virtual_service(r: &mut Report<'_>, s: &VirtualServiceSpec) {
    if s.hosts.is_empty() {
        r.error(
            "spec.hosts",
            (),
            "virtual service must have at least one host",
        );
    }
    for (i, h) in s.hosts.iter().enumerate() {
        host(r, &format!("spec.hosts[{i}]"), h, true);
    }
    unique(r, "spec.hosts", s.hosts.iter().map(String::as_str), "host");
    for (i, g) in s.gateways.iter().enumerate() {
        gateway_ref(r, &format!("spec.gateways[{i}]"), g);
    }
    for (i, h) in s.http.iter().enumerate() {
        for (j, m) in h.match_.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                gateway_ref(r, &format!("spec.http[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    for (i, t) in s.tls.iter().enumerate() {
        for (j, m) in t.match_.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                gateway_ref(r, &format!("spec.tls[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    for (i, t) in s.tcp.iter().enumerate() {
        for (j, m) in t.match_.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                gateway_ref(r, &format!("spec.tcp[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    export_to(r, "spec.exportTo", &s.export_to);
    if s.http.is_empty() && s.tls.is_empty() && s.tcp.is_empty() {
        r.error(
            "spec",
            (),
            "http, tls or tcp must be provided in a virtual service",
        );
    }
    for (i, h) in s.http.iter().enumerate() {
        http_route(r, &format!("spec.http[{i}]"), h);
    }
    for (i, t) in s.tls.iter().enumerate() {
        let p = format!("spec.tls[{i}]");
        if t.match_.is_empty() {
            r.error(
                format!("{p}.match"),
                (),
                "TLS route must have at least one match",
            );
        }
        for (j, m) in t.match_.iter().enumerate() {
            let mp = format!("{p}.match[{j}]");
            if m.sni_hosts.is_empty() {
                r.error(
                    format!("{mp}.sniHosts"),
                    (),
                    "TLS match must have at least one SNI host",
                );
            }
            for (k, h) in m.sni_hosts.iter().enumerate() {
                host(r, &format!("{mp}.sniHosts[{k}]"), h, true);
            }
            for (k, c) in m.destination_subnets.iter().enumerate() {
                cidr(r, &format!("{mp}.destinationSubnets[{k}]"), c);
            }
            if let Some(pt) = m.port {
                port(r, &format!("{mp}.port"), pt);
            }
        }
        route_destinations(r, &p, t.route.iter().map(|d| (&d.destination, d.weight)));
    }
    for (i, t) in s.tcp.iter().enumerate() {
        let p = format!("spec.tcp[{i}]");
        for (j, m) in t.match_.iter().enumerate() {
            let mp = format!("{p}.match[{j}]");
            for (k, c) in m.destination_subnets.iter().enumerate() {
                cidr(r, &format!("{mp}.destinationSubnets[{k}]"), c);
            }
            if let Some(c) = &m.source_subnet {
                cidr(r, &format!("{mp}.sourceSubnet"), c);
            }
            if let Some(pt) = m.port {
                port(r, &format!("{mp}.port"), pt);
            }
        }
        route_destinations(r, &p, t.route.iter().map(|d| (&d.destination, d.weight)));
    }
}

/// A VirtualService `gateways` entry: `mesh`, `name` or `namespace/name`.
fn gateway_ref(r: &mut Report<'_>, path: &str, g: &str) {
    let ok = g == "mesh"
        || match g.split_once('/') {
            Some((ns, name)) => dns1123_label(ns) && dns1123_subdomain_like(name),
            None => dns1123_subdomain_like(g),
        };
    if !ok {
        r.error(path, g, "gateway must be 'mesh' or [namespace/]name");
    }
}

fn dns1123_subdomain_like(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(dns1123_label)
}

fn http_route(r: &mut Report<'_>, p: &str, h: &HttpRoute) {
    for (j, m) in h.match_.iter().enumerate() {
        let mp = format!("{p}.match[{j}]");
        for (f, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                // The proxy compiles `uri` in the ignoreUriCase form when it is set.
                let ic = f == "uri" && m.ignore_uri_case == Some(true);
                string_match(r, &format!("{mp}.{f}"), sm, ic);
            }
        }
        for (f, map) in [
            ("headers", &m.headers),
            ("queryParams", &m.query_params),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (k, sm) in map {
                if k.is_empty() {
                    r.error(format!("{mp}.{f}"), k, "header name must not be empty");
                }
                if f != "queryParams" && k.chars().any(|c| c.is_ascii_uppercase()) {
                    r.error(format!("{mp}.{f}.{k}"), k, "header name must be lower case");
                }
                if sm.exact.is_none()
                    && sm.prefix.is_none()
                    && sm.regex.is_none()
                    && f == "withoutHeaders"
                {
                    continue;
                }
                string_match(r, &format!("{mp}.{f}.{k}"), sm, false);
            }
        }
        if let Some(pt) = m.port {
            port(r, &format!("{mp}.port"), pt);
        }
    }
    let actions = [
        !h.route.is_empty(),
        h.redirect.is_some(),
        h.direct_response.is_some(),
        h.delegate.is_some(),
    ];
    match actions.iter().filter(|b| **b).count() {
        0 => r.error(
            p,
            (),
            "HTTP route must have one of route, redirect, directResponse or delegate",
        ),
        1 => {}
        _ => r.error(
            p,
            (),
            "route, redirect, directResponse and delegate are mutually exclusive",
        ),
    }
    if h.redirect.is_some() && h.rewrite.is_some() {
        r.error(
            format!("{p}.rewrite"),
            (),
            "rewrite cannot be combined with redirect",
        );
    }
    route_destinations(r, p, h.route.iter().map(|d| (&d.destination, d.weight)));
    duration(r, &format!("{p}.timeout"), h.timeout.as_ref());
    if let Some(rt) = &h.retries {
        if rt.attempts < 0 {
            r.error(
                format!("{p}.retries.attempts"),
                rt.attempts,
                "attempts cannot be negative",
            );
        }
        duration(
            r,
            &format!("{p}.retries.perTryTimeout"),
            rt.per_try_timeout.as_ref(),
        );
    }
    if let Some(f) = &h.fault {
        if f.delay.is_none() && f.abort.is_none() {
            r.error(
                format!("{p}.fault"),
                (),
                "fault must have a delay or an abort",
            );
        }
        if let Some(d) = &f.delay {
            if d.fixed_delay.is_none() {
                r.error(
                    format!("{p}.fault.delay.fixedDelay"),
                    (),
                    "fixedDelay is required",
                );
            }
            duration(
                r,
                &format!("{p}.fault.delay.fixedDelay"),
                d.fixed_delay.as_ref(),
            );
            if let Some(pc) = &d.percentage {
                percent(r, &format!("{p}.fault.delay.percentage.value"), pc.value);
            }
        }
        if let Some(a) = &f.abort {
            match (a.http_status, &a.grpc_status) {
                (Some(s), None) if !(200..=599).contains(&s) => r.error(
                    format!("{p}.fault.abort.httpStatus"),
                    s,
                    "HTTP status must be in [200, 599]",
                ),
                (None, None) => r.error(
                    format!("{p}.fault.abort"),
                    (),
                    "abort needs httpStatus or grpcStatus",
                ),
                (Some(_), Some(_)) => r.error(
                    format!("{p}.fault.abort"),
                    (),
                    "httpStatus and grpcStatus are mutually exclusive",
                ),
                _ => {}
            }
            if let Some(pc) = &a.percentage {
                percent(r, &format!("{p}.fault.abort.percentage.value"), pc.value);
            }
        }
    }
    if let Some(rd) = &h.redirect {
        if let Some(c) = rd.redirect_code {
            if !(300..=399).contains(&c) {
                r.error(
                    format!("{p}.redirect.redirectCode"),
                    c,
                    "redirect code must be 3xx",
                );
            }
        }
        if let Some(pt) = rd.port {
            port(r, &format!("{p}.redirect.port"), pt);
        }
    }
    if let Some(dr) = &h.direct_response {
        if !(200..=599).contains(&dr.status) {
            r.error(
                format!("{p}.directResponse.status"),
                dr.status,
                "status must be in [200, 599]",
            );
        }
    }
    if let Some(rw) = &h.rewrite {
        if let Some(rr) = &rw.uri_regex_rewrite {
            regex(r, &format!("{p}.rewrite.uriRegexRewrite.match"), &rr.match_);
            if rw.uri.is_some() {
                r.error(
                    format!("{p}.rewrite"),
                    (),
                    "uri and uriRegexRewrite are mutually exclusive",
                );
            }
        }
    }
    if let Some(m) = &h.mirror {
        destination(r, &format!("{p}.mirror"), m);
    }
    if let Some(m) = &h.mirror_percentage {
        percent(r, &format!("{p}.mirrorPercentage.value"), m.value);
    }
    if let Some(c) = &h.cors_policy {
        for (k, o) in c.allow_origins.iter().enumerate() {
            string_match(r, &format!("{p}.corsPolicy.allowOrigins[{k}]"), o, false);
        }
        duration(r, &format!("{p}.corsPolicy.maxAge"), c.max_age.as_ref());
    }
}

fn destination(r: &mut Report<'_>, p: &str, d: &Destination) {
    host(r, &format!("{p}.host"), &d.host, false);
    if let Some(sub) = &d.subset {
        if !dns1123_subdomain_like(sub) {
            r.error(format!("{p}.subset"), sub, "subset must be a DNS-1123 name");
        }
    }
    if let Some(n) = d.port.as_ref().and_then(|p| p.number) {
        port(r, &format!("{p}.port.number"), n);
    }
}

/// Destinations of one route: each valid, weights non-negative and summing to 100
/// when there is more than one destination (Istio's rule for weighted routes).
fn route_destinations<'d>(
    r: &mut Report<'_>,
    p: &str,
    dests: impl Iterator<Item = (&'d Destination, Option<i32>)>,
) {
    let dests: Vec<_> = dests.collect();
    let mut sum: i64 = 0;
    for (j, (d, w)) in dests.iter().enumerate() {
        destination(r, &format!("{p}.route[{j}].destination"), d);
        if let Some(w) = w {
            if *w < 0 {
                r.error(
                    format!("{p}.route[{j}].weight"),
                    w,
                    "weight must not be negative",
                );
            }
            sum += i64::from(*w);
        }
    }
    let any_weight = dests.iter().any(|(_, w)| w.is_some());
    if dests.len() > 1 && any_weight && sum != 100 {
        r.error(
            format!("{p}.route"),
            sum,
            "total destination weight must be 100",
        );
    }
    if dests.len() == 1 && any_weight && sum != 100 && sum != 0 {
        r.error(
            format!("{p}.route[0].weight"),
            sum,
            "a single destination's weight must be 100 or unset",
        );
    }
}

const LB: [&str; 6] = [
    "UNSPECIFIED",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
    "LEAST_CONN",
];
const CLIENT_TLS: [&str; 4] = ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];

pub fn destination_rule(r: &mut Report<'_>, s: &DestinationRuleSpec) {
    host(r, "spec.host", &s.host, true);
    export_to(r, "spec.exportTo", &s.export_to);
    if let Some(tp) = &s.traffic_policy {
        traffic_policy(r, "spec.trafficPolicy", tp);
    }
    unique(
        r,
        "spec.subsets",
        s.subsets.iter().map(|x| x.name.as_str()),
        "subset name",
    );
    for (i, sub) in s.subsets.iter().enumerate() {
        let p = format!("spec.subsets[{i}]");
        if !dns1123_subdomain_like(&sub.name) {
            r.error(
                format!("{p}.name"),
                &sub.name,
                "subset name must be a DNS-1123 name",
            );
        }
        if let Some(tp) = &sub.traffic_policy {
            traffic_policy(r, &format!("{p}.trafficPolicy"), tp);
        }
    }
}

fn traffic_policy(r: &mut Report<'_>, p: &str, tp: &TrafficPolicy) {
    policy_parts(
        r,
        p,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    let mut seen = std::collections::BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = format!("{p}.portLevelSettings[{i}]");
        match pl.port.as_ref().and_then(|x| x.number) {
            None => r.error(
                format!("{pp}.port"),
                (),
                "port-level settings need a port number",
            ),
            Some(n) => {
                port(r, &format!("{pp}.port.number"), n);
                if !seen.insert(n) {
                    r.error(
                        format!("{pp}.port.number"),
                        n,
                        "duplicate port-level settings for this port",
                    );
                }
            }
        }
        policy_parts(
            r,
            &pp,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
}

fn policy_parts(
    r: &mut Report<'_>,
    p: &str,
    lb: Option<&LoadBalancerSettings>,
    cp: Option<&ConnectionPoolSettings>,
    od: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        one_of(
            r,
            &format!("{p}.loadBalancer.simple"),
            lb.simple.as_ref(),
            &LB,
        );
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            r.error(
                format!("{p}.loadBalancer"),
                (),
                "simple and consistentHash are mutually exclusive",
            );
        }
    }
    if let Some(cp) = cp {
        if let Some(t) = &cp.tcp {
            duration(
                r,
                &format!("{p}.connectionPool.tcp.connectTimeout"),
                t.connect_timeout.as_ref(),
            );
            duration(
                r,
                &format!("{p}.connectionPool.tcp.idleTimeout"),
                t.idle_timeout.as_ref(),
            );
            if t.max_connections.is_some_and(|m| m < 0) {
                r.error(
                    format!("{p}.connectionPool.tcp.maxConnections"),
                    t.max_connections,
                    "must not be negative",
                );
            }
        }
        if let Some(h) = &cp.http {
            duration(
                r,
                &format!("{p}.connectionPool.http.idleTimeout"),
                h.idle_timeout.as_ref(),
            );
            one_of(
                r,
                &format!("{p}.connectionPool.http.h2UpgradePolicy"),
                h.h2_upgrade_policy.as_ref(),
                &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"],
            );
        }
    }
    if let Some(od) = od {
        duration(
            r,
            &format!("{p}.outlierDetection.interval"),
            od.interval.as_ref(),
        );
        duration(
            r,
            &format!("{p}.outlierDetection.baseEjectionTime"),
            od.base_ejection_time.as_ref(),
        );
        for (f, v) in [
            ("maxEjectionPercent", od.max_ejection_percent),
            ("minHealthPercent", od.min_health_percent),
        ] {
            if let Some(v) = v {
                if !(0..=100).contains(&v) {
                    r.error(
                        format!("{p}.outlierDetection.{f}"),
                        v,
                        "must be in [0, 100]",
                    );
                }
            }
        }
    }
    if let Some(t) = tls {
        let tp = format!("{p}.tls");
        one_of(r, &format!("{tp}.mode"), t.mode.as_ref(), &CLIENT_TLS);
        let has_files = t.client_certificate.is_some()
            || t.private_key.is_some()
            || t.ca_certificates.is_some();
        match t.mode.as_deref() {
            Some("ISTIO_MUTUAL") if has_files || t.credential_name.is_some() => r.error(
                &tp,
                t.mode.as_ref(),
                "cannot specify client certificates, CA certificates or credentialName when mode is ISTIO_MUTUAL",
            ),
            Some("MUTUAL") if t.credential_name.is_none() && (t.client_certificate.is_none() || t.private_key.is_none()) => r.error(
                &tp,
                t.mode.as_ref(),
                "mode MUTUAL needs clientCertificate and privateKey (files in the pod)",
            ),
            Some("DISABLE") if has_files || t.credential_name.is_some() || t.sni.is_some() => {
                r.error(&tp, t.mode.as_ref(), "TLS settings given but mode is DISABLE")
            }
            _ => {}
        }
        // Istio's sidecars fetch credentialName through SDS from a Secret; we do
        // not yet, and must not silently send plaintext instead.
        if t.credential_name.is_some() {
            r.error(
                format!("{tp}.credentialName"),
                t.credential_name.as_ref(),
                "credentialName is not supported for sidecars yet; use clientCertificate/privateKey/caCertificates files",
            );
        }
        if t.credential_name.is_some()
            && (t.client_certificate.is_some() || t.private_key.is_some())
        {
            r.error(
                format!("{tp}.credentialName"),
                t.credential_name.as_ref(),
                "credentialName and clientCertificate/privateKey are mutually exclusive",
            );
        }
    }
}

const SERVER_TLS: [&str; 6] = [
    "PASSTHROUGH",
    "SIMPLE",
    "MUTUAL",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
    "OPTIONAL_MUTUAL",
];

pub fn gateway(r: &mut Report<'_>, s: &GatewaySpec) {
    if s.servers.is_empty() {
        r.error("spec.servers", (), "gateway must have at least one server");
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, srv) in s.servers.iter().enumerate() {
        let p = format!("spec.servers[{i}]");
        match &srv.port {
            None => r.error(format!("{p}.port"), (), "server must have a port"),
            Some(pt) => {
                port(r, &format!("{p}.port.number"), pt.number);
                protocol(r, &format!("{p}.port.protocol"), pt.protocol.as_ref());
                if pt.protocol.is_none() {
                    r.error(format!("{p}.port.protocol"), (), "protocol is required");
                }
                if let Some(n) = &pt.name {
                    if !names.insert(n.clone()) {
                        r.error(format!("{p}.port.name"), n, "duplicate server port name");
                    }
                }
                let proto = pt.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
                if (proto == "HTTPS" || proto == "TLS") && srv.tls.is_none() {
                    r.error(
                        format!("{p}.tls"),
                        (),
                        format!("server on protocol {proto} must have tls settings"),
                    );
                }
            }
        }
        if srv.hosts.is_empty() {
            r.error(
                format!("{p}.hosts"),
                (),
                "server must have at least one host",
            );
        }
        for (j, h) in srv.hosts.iter().enumerate() {
            let hp = format!("{p}.hosts[{j}]");
            let (ns, name) = h.split_once('/').unwrap_or(("", h));
            if !(ns.is_empty() || ns == "." || ns == "*" || dns1123_label(ns)) {
                r.error(
                    &hp,
                    h,
                    "namespace part must be '.', '*' or a namespace name",
                );
            }
            host(r, &hp, name, true);
        }
        let proto = srv
            .port
            .as_ref()
            .and_then(|pt| pt.protocol.as_deref())
            .unwrap_or("")
            .to_ascii_uppercase();
        if let Some(t) = &srv.tls {
            let tp = format!("{p}.tls");
            one_of(r, &format!("{tp}.mode"), t.mode.as_ref(), &SERVER_TLS);
            let terminates = proto == "HTTPS" || proto == "TLS";
            // Istio's default mode is SIMPLE: an HTTPS/TLS server without a mode
            // must name its certificate all the same.
            let mode = t
                .mode
                .clone()
                .or_else(|| terminates.then(|| "SIMPLE".to_string()));
            if matches!(mode.as_deref(), Some("PASSTHROUGH" | "AUTO_PASSTHROUGH")) && !terminates {
                r.error(
                    format!("{tp}.mode"),
                    t.mode.as_ref(),
                    format!(
                        "mode {} needs protocol TLS or HTTPS, not {proto:?}",
                        mode.as_deref().unwrap_or("")
                    ),
                );
            }
            let versions = ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];
            for (f, v) in [
                ("minProtocolVersion", &t.min_protocol_version),
                ("maxProtocolVersion", &t.max_protocol_version),
            ] {
                one_of(r, &format!("{tp}.{f}"), v.as_ref(), &versions);
            }
            if let (Some(lo), Some(hi)) = (&t.min_protocol_version, &t.max_protocol_version) {
                let rank = |v: &str| versions.iter().position(|x| *x == v);
                if let (Some(a), Some(b)) = (rank(lo), rank(hi)) {
                    if a > 0 && b > 0 && a > b {
                        r.error(
                            format!("{tp}.minProtocolVersion"),
                            lo,
                            format!("minProtocolVersion is above maxProtocolVersion {hi}"),
                        );
                    }
                }
            }
            let has_cert = t.server_certificate.is_some() || t.private_key.is_some();
            let cred = t.credential_name.is_some() || !t.credential_names.is_empty();
            match mode.as_deref() {
                Some("SIMPLE") | Some("MUTUAL") | Some("OPTIONAL_MUTUAL")
                    if !cred && (t.server_certificate.is_none() || t.private_key.is_none()) =>
                {
                    r.error(
                        &tp,
                        t.mode.as_ref(),
                        "needs serverCertificate and privateKey, or credentialName",
                    )
                }
                Some("MUTUAL") | Some("OPTIONAL_MUTUAL")
                    if !cred && t.ca_certificates.is_none() =>
                {
                    r.error(
                        &tp,
                        t.mode.as_ref(),
                        "mode MUTUAL needs caCertificates, or credentialName",
                    )
                }
                Some("PASSTHROUGH") | Some("AUTO_PASSTHROUGH") | Some("ISTIO_MUTUAL")
                    if has_cert || cred =>
                {
                    r.error(
                        &tp,
                        t.mode.as_ref(),
                        "certificates cannot be set with this TLS mode",
                    )
                }
                _ => {}
            }
            if cred && has_cert {
                r.error(
                    format!("{tp}.credentialName"),
                    t.credential_name.as_ref(),
                    "credentialName and serverCertificate/privateKey are mutually exclusive",
                );
            }
        }
    }
}

pub fn service_entry(r: &mut Report<'_>, s: &ServiceEntrySpec) {
    if s.hosts.is_empty() {
        r.error(
            "spec.hosts",
            (),
            "service entry must have at least one host",
        );
    }
    for (i, h) in s.hosts.iter().enumerate() {
        host(r, &format!("spec.hosts[{i}]"), h, true);
        if h == "*" {
            r.error(
                format!("spec.hosts[{i}]"),
                h,
                "host '*' is not allowed in a service entry",
            );
        }
    }
    unique(r, "spec.hosts", s.hosts.iter().map(String::as_str), "host");
    for (i, a) in s.addresses.iter().enumerate() {
        cidr(r, &format!("spec.addresses[{i}]"), a);
    }
    export_to(r, "spec.exportTo", &s.export_to);
    one_of(
        r,
        "spec.location",
        s.location.as_ref(),
        &["MESH_EXTERNAL", "MESH_INTERNAL"],
    );
    one_of(
        r,
        "spec.resolution",
        s.resolution.as_ref(),
        &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"],
    );
    if s.ports.is_empty() {
        r.error(
            "spec.ports",
            (),
            "service entry must have at least one port",
        );
    }
    let mut nums = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, pt) in s.ports.iter().enumerate() {
        let p = format!("spec.ports[{i}]");
        port(r, &format!("{p}.number"), pt.number);
        if !nums.insert(pt.number) {
            r.error(format!("{p}.number"), pt.number, "duplicate port number");
        }
        protocol(r, &format!("{p}.protocol"), pt.protocol.as_ref());
        match &pt.name {
            None => r.error(format!("{p}.name"), (), "port name is required"),
            Some(n) if !names.insert(n.clone()) => {
                r.error(format!("{p}.name"), n, "duplicate port name")
            }
            _ => {}
        }
        if let Some(t) = pt.target_port {
            port(r, &format!("{p}.targetPort"), t);
        }
    }
    let resolution = s.resolution.as_deref().unwrap_or("NONE");
    if resolution == "STATIC" && s.endpoints.is_empty() && s.workload_selector.is_none() {
        r.error(
            "spec.endpoints",
            (),
            "resolution STATIC needs endpoints or a workloadSelector",
        );
    }
    if !s.endpoints.is_empty() && s.workload_selector.is_some() {
        r.error(
            "spec.workloadSelector",
            (),
            "endpoints and workloadSelector are mutually exclusive",
        );
    }
    if resolution == "DNS" && s.endpoints.is_empty() {
        for (i, h) in s.hosts.iter().enumerate() {
            if h.starts_with('*') {
                r.error(
                    format!("spec.hosts[{i}]"),
                    h,
                    "wildcard host cannot be resolved with DNS",
                );
            }
        }
    }
    for (i, ep) in s.endpoints.iter().enumerate() {
        let p = format!("spec.endpoints[{i}]");
        match ep.address.as_deref() {
            None | Some("") => r.error(format!("{p}.address"), (), "endpoint address is required"),
            Some(a)
                if resolution == "STATIC"
                    && a.parse::<std::net::IpAddr>().is_err()
                    && !a.starts_with("unix://") =>
            {
                r.error(
                    format!("{p}.address"),
                    a,
                    "resolution STATIC needs IP addresses",
                )
            }
            Some(a)
                if resolution != "STATIC"
                    && !valid_host(a)
                    && a.parse::<std::net::IpAddr>().is_err() =>
            {
                r.error(
                    format!("{p}.address"),
                    a,
                    "endpoint address must be an IP or DNS name",
                )
            }
            _ => {}
        }
        for (name, num) in &ep.ports {
            if !names.contains(name) {
                r.error(
                    format!("{p}.ports.{name}"),
                    name,
                    "port name does not match any port of the service entry",
                );
            }
            port(r, &format!("{p}.ports.{name}"), *num);
        }
    }
}

pub fn sidecar(r: &mut Report<'_>, s: &SidecarSpec) {
    for (i, ing) in s.ingress.iter().enumerate() {
        let p = format!("spec.ingress[{i}]");
        match &ing.port {
            None => r.error(format!("{p}.port"), (), "ingress listener must have a port"),
            Some(pt) => {
                port(r, &format!("{p}.port.number"), pt.number);
                protocol(r, &format!("{p}.port.protocol"), pt.protocol.as_ref());
            }
        }
        one_of(
            r,
            &format!("{p}.captureMode"),
            ing.capture_mode.as_ref(),
            &["DEFAULT", "IPTABLES", "NONE"],
        );
    }
    for (i, eg) in s.egress.iter().enumerate() {
        let p = format!("spec.egress[{i}]");
        if eg.hosts.is_empty() {
            r.error(
                format!("{p}.hosts"),
                (),
                "egress listener must have at least one host",
            );
        }
        for (j, h) in eg.hosts.iter().enumerate() {
            let hp = format!("{p}.hosts[{j}]");
            match h.split_once('/') {
                None => r.error(&hp, h, "egress host must be namespace/dnsName"),
                Some((ns, name)) => {
                    if !(ns == "." || ns == "*" || ns == "~" || dns1123_label(ns)) {
                        r.error(
                            &hp,
                            h,
                            "namespace part must be '.', '*', '~' or a namespace name",
                        );
                    }
                    host(r, &hp, name, true);
                }
            }
        }
        if let Some(pt) = &eg.port {
            port(r, &format!("{p}.port.number"), pt.number);
            protocol(r, &format!("{p}.port.protocol"), pt.protocol.as_ref());
        }
        one_of(
            r,
            &format!("{p}.captureMode"),
            eg.capture_mode.as_ref(),
            &["DEFAULT", "IPTABLES", "NONE"],
        );
    }
    if let Some(o) = &s.outbound_traffic_policy {
        one_of(
            r,
            "spec.outboundTrafficPolicy.mode",
            o.mode.as_ref(),
            &["REGISTRY_ONLY", "ALLOW_ANY"],
        );
    }
}
