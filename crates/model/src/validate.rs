//! Single-resource validation: each resource on its own, into the pieces
//! of the IR it defines. Cross-resource rules live in [`crate::build`].
//! Every error names the field path and says what to do.

use std::collections::{BTreeMap, BTreeSet};

use packlight_api as api;

use crate::diagnostic::{Diagnostic, ResourceId};
use crate::ir::*;
use crate::parse;
use crate::version::Version;

/// Collects the errors of one resource.
pub(crate) struct Check<'a> {
    pub id: &'a ResourceId,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Check<'a> {
    pub fn new(id: &'a ResourceId) -> Self {
        Check {
            id,
            diags: Vec::new(),
        }
    }

    pub fn error(
        &mut self,
        path: impl Into<String>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::error(msg).on(self.id).at(path).hint(hint));
    }

    pub fn ok(&self) -> bool {
        !self.diags.iter().any(Diagnostic::is_error)
    }

    fn version(&mut self, path: &str, s: &str) -> Option<Version> {
        match s.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(path, format!("{e}"), "write MAJOR.MINOR, e.g. \"1.0\"");
                None
            }
        }
    }

    fn duration(&mut self, path: &str, s: Option<&String>) -> Option<std::time::Duration> {
        let s = s?;
        match parse::duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, e, "write a duration such as 500ms, 5s, 1m30s or 1h");
                None
            }
        }
    }

    fn prefix(&mut self, path: &str, s: &str) -> Option<String> {
        match parse::path_prefix(s) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(path, e, "write an absolute path such as /httpbin");
                None
            }
        }
    }
}

/// A Microservice, checked.
/// Service names the generated per-namespace objects use: a service of
/// that name would collide with them (the selector-less Sidecar `default`
/// of `egress: deny`, the AuthorizationPolicy `deny-all` of `access: deny`).
pub const RESERVED_SERVICE_NAMES: [&str; 2] = ["default", "deny-all"];

/// Rejects a reserved service name at `path`.
fn not_reserved(c: &mut Check<'_>, path: &str, name: &str) {
    if RESERVED_SERVICE_NAMES.contains(&name) {
        c.error(
            path,
            format!("the service name {name:?} is reserved"),
            "packlight names the namespace's own Sidecar `default` and AuthorizationPolicy `deny-all`; rename the service",
        );
    }
}

pub(crate) fn microservice(c: &mut Check<'_>, m: &api::Microservice) -> Workload {
    let spec = &m.spec;
    let name = c.id.name.clone();
    not_reserved(c, "metadata.name", &name);
    if spec.port == 0 {
        c.error("spec.port", "port 0 is not a port", "use 1-65535");
    }
    if spec.versions.is_empty() {
        c.error("spec.versions", "no versions", "list at least one version");
    }
    let mut versions = BTreeMap::new();
    for (i, v) in spec.versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let Some(ver) = c.version(&format!("{path}.version"), &v.version) else {
            continue;
        };
        if v.command.is_some() && v.endpoints.is_some() {
            c.error(
                &path,
                "both command and endpoints are given",
                "give command (packlight starts it) or endpoints (already running), not both",
            );
        }
        if let Some(cmd) = &v.command
            && (cmd.is_empty() || cmd[0].is_empty())
        {
            c.error(
                format!("{path}.command"),
                "empty command",
                "name the program to run first",
            );
        }
        if let Some(r) = v.replicas
            && r < 0
        {
            c.error(
                format!("{path}.replicas"),
                "negative replicas",
                "use 0 or more",
            );
        }
        let mut endpoints = Vec::new();
        for (j, e) in v.endpoints.iter().flatten().enumerate() {
            match e
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            {
                Some((h, p)) if !h.is_empty() && p > 0 => endpoints.push(Endpoint {
                    host: h.trim_matches(['[', ']']).to_string(),
                    port: p,
                }),
                _ => c.error(
                    format!("{path}.endpoints[{j}]"),
                    format!("{e:?} is not host:port"),
                    "write e.g. 127.0.0.1:9001",
                ),
            }
        }
        let dep = VersionDeployment {
            image: v.image.clone(),
            replicas: v.replicas.unwrap_or(1),
            command: v.command.clone(),
            endpoints,
        };
        if versions.insert(ver.clone(), dep).is_some() {
            c.error(
                format!("{path}.version"),
                format!("version {ver} is listed twice"),
                "remove the duplicate",
            );
        }
    }
    Workload {
        source: c.id.clone(),
        port: spec.port,
        protocol: match spec.protocol {
            api::Protocol::Http => Protocol::Http,
            api::Protocol::Grpc => Protocol::Grpc,
            api::Protocol::Tcp => Protocol::Tcp,
        },
        versions,
    }
}

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// A Route, checked, into its table.
pub(crate) fn route(c: &mut Check<'_>, r: &api::Route) -> Option<RouteTable> {
    let spec = &r.spec;
    not_reserved(c, "spec.service", &spec.service);
    if !crate::resource::is_dns_label(&spec.service) {
        c.error(
            "spec.service",
            format!("{:?} is not a service name", spec.service),
            "name a Microservice of this namespace",
        );
    }
    let mut match_routes = Vec::new();
    // major -> (first rule index, versions with weights)
    let mut majors: BTreeMap<u32, (usize, Vec<WeightedVersion>)> = BTreeMap::new();
    let mut weighted: BTreeSet<Version> = BTreeSet::new();
    // Majors with a duplicate weight rule: their sum would mislead.
    let mut duplicated: BTreeSet<u32> = BTreeSet::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        let Some(version) = c.version(&format!("{path}.version"), &rule.version) else {
            continue;
        };
        match (&rule.weight, &rule.matches) {
            (Some(_), Some(_)) => c.error(
                &path,
                "a rule has both weight and matches",
                "split it: a weight rule (version + weight) and a match rule (version + matches)",
            ),
            (_, Some(items)) => {
                if items.is_empty() {
                    c.error(
                        format!("{path}.matches"),
                        "empty matches",
                        "add a header or query condition, or remove matches",
                    );
                }
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(j, m)| match_item(c, &format!("{path}.matches[{j}]"), m))
                    .collect();
                match_routes.push(MatchRoute { version, items });
            }
            (weight, None) => {
                let w = weight.unwrap_or(100);
                if w > 100 {
                    c.error(
                        format!("{path}.weight"),
                        format!("weight {w} is over 100"),
                        "use 0-100",
                    );
                }
                if !weighted.insert(version.clone()) {
                    c.error(
                        format!("{path}.version"),
                        format!("version {version} has two weight rules"),
                        "merge them into one",
                    );
                    duplicated.insert(version.major);
                    continue;
                }
                majors
                    .entry(version.major)
                    .or_insert_with(|| (i, Vec::new()))
                    .1
                    .push(WeightedVersion { version, weight: w });
            }
        }
    }
    if majors.is_empty() && c.ok() {
        c.error(
            "spec.rules",
            "no weight rule",
            "a Route needs at least one weight rule (version + weight, or a version alone for 100)",
        );
    }
    for (major, (first, weights)) in majors.iter().filter(|(m, _)| !duplicated.contains(m)) {
        let sum: u32 = weights.iter().map(|w| w.weight).sum();
        if sum != 100 {
            let list = weights
                .iter()
                .map(|w| format!("{}={}", w.version, w.weight))
                .collect::<Vec<_>>()
                .join(", ");
            c.error(
                format!("spec.rules[{first}].weight"),
                format!("weights of major {major} sum to {sum} ({list}), not 100"),
                format!("make the weights of major {major} add up to exactly 100"),
            );
        }
    }
    let default_major = match &spec.default_major {
        Some(s) => match s.parse::<u32>() {
            Ok(m) if majors.contains_key(&m) => m,
            Ok(m) => {
                c.error(
                    "spec.defaultMajor",
                    format!("major {m} has no weight rule"),
                    "name a major that has weight rules, or add its weights",
                );
                m
            }
            Err(_) => {
                c.error(
                    "spec.defaultMajor",
                    format!("{s:?} is not a major number"),
                    "write e.g. \"1\"",
                );
                0
            }
        },
        None => majors.keys().next().copied().unwrap_or(0),
    };
    let mut addresses: BTreeMap<u32, MajorAddress> = majors
        .keys()
        .map(|m| (*m, MajorAddress::PathPrefix(format!("/v{m}"))))
        .collect();
    for (key, m) in &spec.majors {
        let path = format!("spec.majors.{key}");
        let Ok(n) = key.parse::<u32>() else {
            c.error(
                &path,
                format!("{key:?} is not a major number"),
                "key majors by their number, e.g. \"2\"",
            );
            continue;
        };
        if !majors.contains_key(&n) {
            c.error(
                &path,
                format!("major {n} has no weight rule"),
                "remove it, or add weight rules for its versions",
            );
            continue;
        }
        match (&m.path_prefix, &m.host) {
            (Some(p), None) => {
                if let Some(p) = c.prefix(&format!("{path}.pathPrefix"), p) {
                    if p == "/" {
                        c.error(
                            format!("{path}.pathPrefix"),
                            "/ would address every request",
                            "use a real prefix; the default major takes the rest",
                        );
                    }
                    addresses.insert(n, MajorAddress::PathPrefix(p));
                }
            }
            (None, Some(h)) => match parse::dns_name(h, false) {
                Ok(h) => {
                    addresses.insert(n, MajorAddress::Host(h));
                }
                Err(e) => c.error(
                    format!("{path}.host"),
                    e,
                    "write a host name such as v2.example.com",
                ),
            },
            _ => c.error(
                &path,
                "give exactly one of pathPrefix, host",
                "e.g. {host: v2.example.com}",
            ),
        }
    }
    // Two majors must not be addressed the same way or one below the other.
    let addrs: Vec<(u32, &MajorAddress)> = addresses.iter().map(|(m, a)| (*m, a)).collect();
    for (i, (m1, a1)) in addrs.iter().enumerate() {
        for (m2, a2) in &addrs[i + 1..] {
            let clash = match (a1, a2) {
                (MajorAddress::PathPrefix(p1), MajorAddress::PathPrefix(p2)) => {
                    parse::under_prefix(p1, p2) || parse::under_prefix(p2, p1)
                }
                (MajorAddress::Host(h1), MajorAddress::Host(h2)) => h1 == h2,
                _ => false,
            };
            if clash {
                c.error(
                    "spec.majors",
                    format!("majors {m1} and {m2} are addressed by overlapping prefixes or the same host"),
                    "give each major its own prefix or host",
                );
            }
        }
    }
    let timeout = c.duration("spec.timeout", spec.timeout.as_ref());
    let retries = match &spec.retries {
        None => RetryPolicy::istio_default(),
        Some(r) => {
            if r.attempts > 10 {
                c.error(
                    "spec.retries.attempts",
                    format!("{} attempts", r.attempts),
                    "use at most 10",
                );
            }
            for (i, on) in r.on.iter().enumerate() {
                let code =
                    on.len() == 3 && on.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
                if !code && !RETRY_ON.contains(&on.as_str()) {
                    c.error(
                        format!("spec.retries.on[{i}]"),
                        format!("{on:?} is not a retry condition"),
                        format!("use a status code or one of {}", RETRY_ON.join(", ")),
                    );
                }
            }
            RetryPolicy {
                attempts: r.attempts,
                per_try_timeout: c
                    .duration("spec.retries.perTryTimeout", r.per_try_timeout.as_ref()),
                on: if r.on.is_empty() && r.attempts > 0 {
                    RetryPolicy::istio_default().on
                } else {
                    r.on.clone()
                },
            }
        }
    };
    let mirror = spec.mirror.as_ref().and_then(|m| {
        let version = c.version("spec.mirror.version", &m.version)?;
        let percent = m.percent.unwrap_or(100);
        if percent > 100 {
            c.error(
                "spec.mirror.percent",
                format!("{percent}% is over 100"),
                "use 0-100",
            );
        }
        Some(MirrorPolicy { version, percent })
    });
    let circuit_breaker = spec
        .circuit_breaker
        .as_ref()
        .map(|cb| CircuitBreakerPolicy {
            consecutive_5xx: cb.consecutive5xx,
            interval: c.duration("spec.circuitBreaker.interval", cb.interval.as_ref()),
            base_ejection: c.duration(
                "spec.circuitBreaker.baseEjection",
                cb.base_ejection.as_ref(),
            ),
            max_connections: cb.max_connections,
        });
    if !c.ok() {
        return None;
    }
    Some(RouteTable {
        match_routes,
        majors: majors
            .into_iter()
            .map(|(major, (_, weights))| MajorScope {
                major,
                address: addresses
                    .remove(&major)
                    .unwrap_or_else(|| MajorAddress::PathPrefix(format!("/v{major}"))),
                weights,
            })
            .collect(),
        default_major,
        timeout,
        retries,
        mirror,
        circuit_breaker,
    })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn match_item(c: &mut Check<'_>, path: &str, m: &api::RequestMatch) -> MatchItem {
    if m.headers.is_empty() && m.query_params.is_empty() {
        c.error(
            path,
            "empty match item",
            "add headers or queryParams; an empty item would match everything",
        );
    }
    let mut item = MatchItem::default();
    for (name, sm) in &m.headers {
        let p = format!("{path}.headers.{name}");
        if !is_token(name) {
            c.error(
                &p,
                format!("{name:?} is not a header name"),
                "use letters, digits and - _ .",
            );
            continue;
        }
        if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
            c.error(
                &p,
                format!("{name:?} cannot be matched here"),
                "match hosts through majors: {host: ...}",
            );
            continue;
        }
        if let Some(m) = matcher(c, &p, sm, true) {
            item.headers.push((name.to_ascii_lowercase(), m));
        }
    }
    for (name, sm) in &m.query_params {
        let p = format!("{path}.queryParams.{name}");
        if name.is_empty() || name.len() > 128 || name.contains(['&', '=', '#', ' ']) {
            c.error(
                &p,
                format!("{name:?} is not a query parameter name"),
                "use a plain name",
            );
            continue;
        }
        if let Some(m) = matcher(c, &p, sm, false) {
            item.query.push((name.clone(), m));
        }
    }
    item.headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seen = BTreeSet::new();
    for (name, _) in &item.headers {
        if !seen.insert(name.clone()) {
            c.error(
                path,
                format!("header {name:?} is listed twice (names are case-insensitive)"),
                "keep one",
            );
        }
    }
    item
}

fn matcher(
    c: &mut Check<'_>,
    path: &str,
    m: &api::StringMatch,
    prefix_ok: bool,
) -> Option<StringMatcher> {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), None, None) => Some(StringMatcher::Exact(e.clone())),
        (None, Some(p), None) if prefix_ok => {
            if p.is_empty() {
                c.error(
                    format!("{path}.prefix"),
                    "empty prefix",
                    "an empty prefix matches everything; use regex: '.*' to say so",
                );
                return None;
            }
            Some(StringMatcher::Prefix(p.clone()))
        }
        (None, Some(_), None) => {
            c.error(
                format!("{path}.prefix"),
                "query parameters match by exact or regex only (Istio has no query prefix)",
                "use regex: 'abc.*' instead",
            );
            None
        }
        (None, None, Some(r)) => match parse::re2(r) {
            Ok(()) => Some(StringMatcher::Regex(r.clone())),
            Err(e) => {
                c.error(format!("{path}.regex"), e, "write an RE2 regex (no backreferences or look-around); it must match the whole value");
                None
            }
        },
        _ => {
            c.error(
                path,
                "give exactly one of exact, prefix, regex",
                "e.g. {exact: \"1\"}",
            );
            None
        }
    }
}

/// An EgressPolicy, checked.
pub(crate) fn egress(c: &mut Check<'_>, e: &api::EgressPolicy) -> EgressGrant {
    let mut hosts = Vec::new();
    for (i, h) in e.spec.hosts.iter().enumerate() {
        match parse::egress_host(h) {
            Ok(host) => {
                if hosts.contains(&host) {
                    c.error(
                        format!("spec.hosts[{i}]"),
                        format!("{h:?} is listed twice"),
                        "remove the duplicate",
                    );
                } else {
                    hosts.push(host);
                }
            }
            Err(msg) => c.error(
                format!("spec.hosts[{i}]"),
                msg,
                "write a DNS name, *.domain, a.b.c.d or a.b.c.d/n, optionally with :port",
            ),
        }
    }
    if e.spec.hosts.is_empty() {
        c.error("spec.hosts", "no hosts", "list at least one host");
    }
    if let Some(s) = &e.spec.service
        && !crate::resource::is_dns_label(s)
    {
        c.error(
            "spec.service",
            format!("{s:?} is not a service name"),
            "name a Microservice of this namespace",
        );
    }
    hosts.sort();
    EgressGrant {
        namespace: c.id.namespace.clone(),
        service: e
            .spec
            .service
            .as_ref()
            .map(|s| ServiceKey::new(c.id.namespace.clone(), s.clone())),
        hosts,
    }
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// An AccessPolicy, checked: the callee and its rules.
pub(crate) fn access(c: &mut Check<'_>, a: &api::AccessPolicy) -> (ServiceKey, Vec<AccessRule>) {
    let ns = &c.id.namespace.clone();
    not_reserved(c, "spec.service", &a.spec.service);
    if !crate::resource::is_dns_label(&a.spec.service) {
        c.error(
            "spec.service",
            format!("{:?} is not a service name", a.spec.service),
            "name a Microservice of this namespace",
        );
    }
    if a.spec.allow.is_empty() {
        c.error(
            "spec.allow",
            "no allow rules",
            "add one; to deny everyone use MeshPolicy access: deny without an AccessPolicy",
        );
    }
    let mut rules = Vec::new();
    for (i, rule) in a.spec.allow.iter().enumerate() {
        let path = format!("spec.allow[{i}]");
        if rule.from.is_empty() && !rule.ingress {
            c.error(
                &path,
                "the rule names no caller",
                "add from: [service, ...] or ingress: true",
            );
        }
        let mut from = Vec::new();
        for (j, f) in rule.from.iter().enumerate() {
            let (fns, name) = f.split_once('/').unwrap_or((ns.as_str(), f.as_str()));
            if !crate::resource::is_dns_label(fns) || !crate::resource::is_dns_label(name) {
                c.error(
                    format!("{path}.from[{j}]"),
                    format!("{f:?} is not a caller"),
                    "write service or namespace/service",
                );
                continue;
            }
            from.push(ServiceKey::new(fns, name));
        }
        from.sort();
        from.dedup();
        let mut methods = Vec::new();
        for (j, m) in rule.methods.iter().enumerate() {
            let up = m.to_ascii_uppercase();
            if !METHODS.contains(&up.as_str()) {
                c.error(
                    format!("{path}.methods[{j}]"),
                    format!("{m:?} is not an HTTP method"),
                    format!("use one of {}", METHODS.join(", ")),
                );
            } else if !methods.contains(&up) {
                methods.push(up);
            }
        }
        let mut paths = Vec::new();
        for (j, p) in rule.paths.iter().enumerate() {
            let ok = p == "*"
                || (p.starts_with('/')
                    && !p[..p.len() - 1].contains('*')
                    && !p.contains(['?', '#']))
                || (p.starts_with('*') && !p[1..].contains('*') && p.len() > 1);
            if !ok {
                c.error(
                    format!("{path}.paths[{j}]"),
                    format!("{p:?} is not a path rule"),
                    "write an exact path /a/b, a prefix /a/*, a suffix *.html, or *",
                );
            } else {
                paths.push(p.clone());
            }
        }
        rules.push(AccessRule {
            from,
            ingress: rule.ingress,
            methods,
            paths,
        });
    }
    (ServiceKey::new(ns.clone(), a.spec.service.clone()), rules)
}

/// A MeshPolicy, checked.
pub(crate) fn mesh(c: &mut Check<'_>, m: &api::MeshPolicy) -> NamespacePolicy {
    if c.id.name != "default" {
        c.error(
            "metadata.name",
            format!("a MeshPolicy must be named default, not {:?}", c.id.name),
            "rename it to default: there is one per namespace",
        );
    }
    NamespacePolicy {
        source: Some(c.id.clone()),
        mtls_strict: m.spec.mtls == api::MtlsMode::Strict,
        access_deny: m.spec.access == api::DefaultAction::Deny,
        egress_deny: m.spec.egress == api::DefaultAction::Deny,
    }
}

/// An IngressPolicy, checked.
pub(crate) fn ingress(c: &mut Check<'_>, i: &api::IngressPolicy) -> Ingress {
    let spec = &i.spec;
    let ns = c.id.namespace.clone();
    let mut hosts = Vec::new();
    for (j, h) in spec.hosts.iter().enumerate() {
        match parse::dns_name(h, true) {
            Ok(h) if !hosts.contains(&h) => hosts.push(h),
            Ok(h) => c.error(
                format!("spec.hosts[{j}]"),
                format!("{h:?} is listed twice"),
                "remove the duplicate",
            ),
            Err(e) => c.error(
                format!("spec.hosts[{j}]"),
                e,
                "write a host name such as data.example.com",
            ),
        }
    }
    if spec.hosts.is_empty() {
        c.error(
            "spec.hosts",
            "no hosts",
            "list the host names this ingress serves",
        );
    }
    let mut routes: Vec<IngressRoute> = Vec::new();
    for (j, r) in spec.routes.iter().enumerate() {
        let path = format!("spec.routes[{j}]");
        let Some(prefix) = c.prefix(&format!("{path}.pathPrefix"), &r.path_prefix) else {
            continue;
        };
        if !crate::resource::is_dns_label(&r.service) {
            c.error(
                format!("{path}.service"),
                format!("{:?} is not a service name", r.service),
                "name a Microservice of this namespace",
            );
            continue;
        }
        if routes.iter().any(|x| x.path_prefix == prefix) {
            c.error(
                format!("{path}.pathPrefix"),
                format!("{prefix} is routed twice"),
                "remove the duplicate",
            );
            continue;
        }
        routes.push(IngressRoute {
            path_prefix: prefix,
            service: ServiceKey::new(ns.clone(), r.service.clone()),
        });
    }
    if spec.routes.is_empty() {
        c.error(
            "spec.routes",
            "no routes",
            "add {pathPrefix: /x, service: x}",
        );
    }
    // Longest prefix first, so Envoy's first match is the most specific.
    routes.sort_by(|a, b| {
        b.path_prefix
            .len()
            .cmp(&a.path_prefix.len())
            .then_with(|| a.path_prefix.cmp(&b.path_prefix))
    });
    let cors = spec.cors.as_ref().map(|cors| {
        for (j, o) in cors.allow_origins.iter().enumerate() {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.split_once("://").map(|x| x.1).unwrap_or("").contains('/')
                    && !o.contains(char::is_whitespace)
                    && o.split_once("://").is_some_and(|x| !x.1.is_empty()));
            if !ok {
                c.error(
                    format!("spec.cors.allowOrigins[{j}]"),
                    format!("{o:?} is not an origin"),
                    "write scheme://host[:port], e.g. https://console.example.com",
                );
            }
        }
        if cors.allow_credentials && cors.allow_origins.iter().any(|o| o == "*") {
            c.error(
                "spec.cors.allowCredentials",
                "credentials cannot be allowed for the origin *",
                "list the origins",
            );
        }
        let mut methods = Vec::new();
        for (j, m) in cors.allow_methods.iter().enumerate() {
            let up = m.to_ascii_uppercase();
            if !METHODS.contains(&up.as_str()) {
                c.error(
                    format!("spec.cors.allowMethods[{j}]"),
                    format!("{m:?} is not an HTTP method"),
                    format!("use one of {}", METHODS.join(", ")),
                );
            } else if !methods.contains(&up) {
                methods.push(up);
            }
        }
        for (field, list) in [
            ("allowHeaders", &cors.allow_headers),
            ("exposeHeaders", &cors.expose_headers),
        ] {
            for (j, h) in list.iter().enumerate() {
                if !is_token(h) {
                    c.error(
                        format!("spec.cors.{field}[{j}]"),
                        format!("{h:?} is not a header name"),
                        "use letters, digits and -",
                    );
                }
            }
        }
        CorsPolicy {
            allow_origins: cors.allow_origins.clone(),
            allow_methods: methods,
            allow_headers: cors.allow_headers.clone(),
            expose_headers: cors.expose_headers.clone(),
            allow_credentials: cors.allow_credentials,
            max_age: c.duration("spec.cors.maxAge", cors.max_age.as_ref()),
        }
    });
    let csrf = spec
        .csrf
        .as_ref()
        .filter(|x| x.enabled)
        .map(|x| CsrfPolicy {
            exclude: x
                .exclude
                .iter()
                .enumerate()
                .filter_map(|(j, p)| c.prefix(&format!("spec.csrf.exclude[{j}]"), p))
                .collect(),
        });
    let login = spec.login.as_ref().map(|l| {
        let login_url = l
            .login_url
            .as_ref()
            .and_then(|u| c.prefix("spec.login.loginUrl", u))
            .unwrap_or_else(|| "/login".to_string());
        let mut exclude: Vec<String> = l
            .exclude
            .iter()
            .enumerate()
            .filter_map(|(j, p)| c.prefix(&format!("spec.login.exclude[{j}]"), p))
            .collect();
        if !exclude.contains(&login_url) {
            exclude.push(login_url.clone());
        }
        exclude.sort();
        LoginPolicy { login_url, exclude }
    });
    let rate_limit = spec.rate_limit.as_ref().map(|r| {
        if r.requests == 0 {
            c.error(
                "spec.rateLimit.requests",
                "0 requests would refuse everything",
                "use 1 or more",
            );
        }
        RateLimitPolicy {
            requests: r.requests,
            period: std::time::Duration::from_secs(match r.per {
                api::RatePeriod::Second => 1,
                api::RatePeriod::Minute => 60,
                api::RatePeriod::Hour => 3600,
            }),
        }
    });
    Ingress {
        namespace: ns,
        hosts,
        routes,
        cors,
        csrf,
        login,
        rate_limit,
    }
}
