//! Parsers for the small value languages inside resources: durations,
//! path prefixes, egress hosts, regexes, ingress hosts.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::ir::EgressHost;

/// A Go-style duration (`500ms`, `5s`, `1m30s`, `1h`), at least 1 ms, at
/// most a day.
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{s:?} is not a duration: {why}");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("no unit"))?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num.len() > 13 || num.matches('.').count() > 1 {
            return Err(bad("not a number"));
        }
        let value: f64 = num.parse().map_err(|_| bad("not a number"))?;
        let (unit, next) = if let Some(t) = tail.strip_prefix("ms") {
            (0.001, t)
        } else if let Some(t) = tail.strip_prefix('s') {
            (1.0, t)
        } else if let Some(t) = tail.strip_prefix('m') {
            (60.0, t)
        } else if let Some(t) = tail.strip_prefix('h') {
            (3600.0, t)
        } else {
            return Err(bad("unknown unit (ms, s, m, h)"));
        };
        total += value * unit;
        rest = next;
    }
    let d = Duration::from_secs_f64(total);
    if d < Duration::from_millis(1) {
        return Err(bad("shorter than 1ms"));
    }
    if d > Duration::from_secs(86_400) {
        return Err(bad("longer than a day"));
    }
    // Whole milliseconds: what every output can express exactly.
    Ok(Duration::from_millis(d.as_millis() as u64))
}

/// A segment-aware path prefix: absolute, no query or fragment, no `.`/`..`
/// segments, no empty segment; the trailing `/` is dropped (`/` stays).
pub fn path_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with /"));
    }
    if s.contains(['?', '#']) || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} must be a plain path (no query, fragment or spaces)"
        ));
    }
    if s == "/" {
        return Ok(s.to_string());
    }
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    for seg in trimmed[1..].split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!("{s:?} has an empty, . or .. segment"));
        }
    }
    Ok(trimmed.to_string())
}

/// True when `path` (without query) is `prefix` or below it, by segments.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A DNS name, lower case, optionally starting with `*.`.
pub fn dns_name(s: &str, allow_wildcard: bool) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let body = match lower.strip_prefix("*.") {
        Some(b) if allow_wildcard => b,
        Some(_) => return Err(format!("{s:?}: wildcards are not allowed here")),
        None => lower.as_str(),
    };
    if body.is_empty() || body.len() > 253 {
        return Err(format!("{s:?} is not a DNS name"));
    }
    for label in body.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("{s:?} is not a DNS name (label {label:?})"));
        }
    }
    if body.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "{s:?} looks like an IP address; write it as a.b.c.d or a.b.c.d/n"
        ));
    }
    Ok(lower)
}

/// An egress whitelist entry.
pub fn egress_host(s: &str) -> Result<EgressHost, String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{s:?}: {p:?} is not a port (1-65535)"))?;
            (h, Some(port))
        }
        None => (s, None),
    };
    let ports = port.map(|p| vec![p]).unwrap_or_else(|| vec![80, 443]);
    let looks_ip = host
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/');
    if looks_ip {
        let net = if host.contains('/') {
            host.parse::<Ipv4Net>()
                .map_err(|_| format!("{s:?} is not an IPv4 CIDR (a.b.c.d/n)"))?
        } else {
            let ip: Ipv4Addr = host
                .parse()
                .map_err(|_| format!("{s:?} is not an IPv4 address"))?;
            Ipv4Net::from(ip)
        };
        if net.network() != net.addr() {
            return Err(format!(
                "{s:?} has host bits set; write the network address {}",
                net.trunc()
            ));
        }
        return Ok(EgressHost::Cidr { net, ports });
    }
    let name = dns_name(host, true)?;
    if name.ends_with(".svc.cluster.local") || name.ends_with(".cluster.local") {
        return Err(format!(
            "{s:?} is inside the mesh; mesh services need no egress entry (use an AccessPolicy)"
        ));
    }
    Ok(EgressHost::Dns { name, ports })
}

/// Checks an RE2-compatible regex (the `regex` crate's syntax is RE2's:
/// no backreferences, no look-around) and that it is not too large.
pub fn re2(s: &str) -> Result<(), String> {
    if s.len() > 256 {
        return Err("regex longer than 256 characters".into());
    }
    regex::RegexBuilder::new(&format!("^(?:{s})$"))
        .size_limit(1 << 20)
        .build()
        .map(|_| ())
        .map_err(|e| {
            let text = e.to_string();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&text);
            format!(
                "{s:?} is not an RE2 regex: {}",
                last.trim().trim_start_matches("error: ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "5", "s", "5x", "-1s", "0s", "2d", "1..2s", "48h"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_are_segment_aware() {
        assert_eq!(path_prefix("/httpbin/").unwrap(), "/httpbin");
        assert!(path_prefix("httpbin").is_err());
        assert!(path_prefix("/a/../b").is_err());
        assert!(under_prefix("/v1", "/v1"));
        assert!(under_prefix("/v1/x", "/v1"));
        assert!(!under_prefix("/v10", "/v1"));
        assert!(under_prefix("/anything", "/"));
    }

    #[test]
    fn egress_hosts() {
        assert_eq!(
            egress_host("www.aliyun.com").unwrap(),
            EgressHost::Dns {
                name: "www.aliyun.com".into(),
                ports: vec![80, 443]
            }
        );
        assert_eq!(
            egress_host("api.example.com:8443").unwrap(),
            EgressHost::Dns {
                name: "api.example.com".into(),
                ports: vec![8443]
            }
        );
        assert!(
            egress_host("*.oss-cn-hangzhou.aliyuncs.com")
                .unwrap()
                .is_wildcard()
        );
        assert_eq!(
            egress_host("10.0.0.0/24:5432").unwrap(),
            EgressHost::Cidr {
                net: "10.0.0.0/24".parse().unwrap(),
                ports: vec![5432]
            }
        );
        assert!(egress_host("10.0.0.1/24:5432").is_err());
        assert!(egress_host("example.com:0").is_err());
        assert!(egress_host("example.com:99999").is_err());
        assert!(egress_host("a..b").is_err());
        assert!(egress_host("httpbin.demo.svc.cluster.local").is_err());
    }

    #[test]
    fn regexes_are_re2() {
        assert!(re2("abc.*").is_ok());
        assert!(re2(r"(a)\1").is_err());
        assert!(re2("(?=a)").is_err());
        assert!(re2("(").is_err());
    }
}
