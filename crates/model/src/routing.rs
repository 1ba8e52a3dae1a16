//! The normative routing algorithm (DESIGN.md) evaluated on one request:
//! what both engines must do, used by the routing-table tests and the
//! console's preview. Translators render the same decisions as config.

use std::collections::BTreeMap;

use crate::ir::{MajorAddress, MatchItem, RouteTable, StringMatcher, WeightedVersion};
use crate::parse::under_prefix;
use crate::version::Version;

/// A request, as the router sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestSample {
    /// The path, without the query string.
    pub path: String,
    /// The Host/authority, possibly with a port.
    pub host: Option<String>,
    /// Headers; names are compared case-insensitively.
    pub headers: BTreeMap<String, String>,
    /// Query parameters (first value of each).
    pub query: BTreeMap<String, String>,
}

impl RequestSample {
    /// A request for `path_and_query` (`/v1/x?debug=true`).
    pub fn get(path_and_query: &str) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut q = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            q.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
        RequestSample {
            path: path.to_string(),
            query: q,
            ..Default::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .insert(name.to_ascii_lowercase(), value.to_string());
        self
    }

    /// Sets the host.
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_string());
        self
    }
}

/// Where a request is routed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vantage<'a> {
    /// A sidecar: path majors only.
    Mesh,
    /// The ingress gateway, under this ingress path prefix: majors are
    /// `<prefix>/vN`, and host majors apply.
    Ingress {
        /// The IngressPolicy route's path prefix.
        prefix: &'a str,
    },
}

/// Where the router sends a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A match rule pinned it (index into `match_routes`).
    Pinned {
        /// The version.
        version: Version,
        /// Which match rule.
        rule: usize,
    },
    /// The weights of one major decide.
    Weighted {
        /// The major.
        major: u32,
        /// Its weighted versions.
        weights: Vec<WeightedVersion>,
    },
}

impl Decision {
    /// The version when the decision is certain (pinned, or one version
    /// at 100), else `None`.
    pub fn single(&self) -> Option<&Version> {
        match self {
            Decision::Pinned { version, .. } => Some(version),
            Decision::Weighted { weights, .. } => {
                let live: Vec<_> = weights.iter().filter(|w| w.weight > 0).collect();
                match live.as_slice() {
                    [one] => Some(&one.version),
                    _ => None,
                }
            }
        }
    }
}

/// The full path a major is addressed by from a vantage point, e.g. `/v1`
/// in the mesh or `/httpbin/v1` at an ingress under `/httpbin`.
pub fn major_path(prefix: &str, vantage: Vantage<'_>) -> String {
    match vantage {
        Vantage::Mesh => prefix.to_string(),
        Vantage::Ingress { prefix: "/" } => prefix.to_string(),
        Vantage::Ingress { prefix: ingress } => format!("{ingress}{prefix}"),
    }
}

/// RE2 metacharacters: what [`escape_regex`] escapes.
pub const REGEX_META: &str = "\\.+*?()|[]{}^$";

/// Escapes RE2 metacharacters, so `s` matches itself.
pub fn escape_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if REGEX_META.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The full-match regex of a segment-aware path prefix, as both engines
/// render it: `/v1` matches `/v1` and `/v1/...`, never `/v10`; `/` matches
/// every path.
pub fn prefix_regex(prefix: &str) -> String {
    if prefix == "/" {
        "/.*".to_string()
    } else {
        format!("{}(/.*)?", escape_regex(prefix))
    }
}

/// The full-match regex of a host, with or without a port.
pub fn host_regex(host: &str) -> String {
    format!("{}(:[0-9]+)?", escape_regex(host))
}

/// A host matches with or without a port.
pub fn host_matches(want: &str, got: &str) -> bool {
    let got = got.to_ascii_lowercase();
    let bare = match got.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => got.as_str(),
    };
    bare == want
}

impl StringMatcher {
    /// Whether `value` satisfies this condition (regex: full match).
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(e) => value == e,
            StringMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StringMatcher::Regex(r) => regex::Regex::new(&format!("^(?:{r})$"))
                .map(|re| re.is_match(value))
                .unwrap_or(false),
        }
    }
}

impl MatchItem {
    /// AND of every condition.
    pub fn matches(&self, req: &RequestSample) -> bool {
        self.headers.iter().all(|(name, m)| {
            req.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .is_some_and(|(_, v)| m.matches(v))
        }) && self
            .query
            .iter()
            .all(|(name, m)| req.query.get(name).is_some_and(|v| m.matches(v)))
    }
}

impl RouteTable {
    /// Routes one request: match rules first (whole service), then the
    /// major it addresses (else the default major), then that major's
    /// weights.
    pub fn decide(&self, req: &RequestSample, vantage: Vantage<'_>) -> Decision {
        for (i, rule) in self.match_routes.iter().enumerate() {
            if rule.items.iter().any(|item| item.matches(req)) {
                return Decision::Pinned {
                    version: rule.version.clone(),
                    rule: i,
                };
            }
        }
        // Host majors first (at the ingress Envoy picks a virtual host by
        // Host before any route), then path majors.
        let by_host = self.majors.iter().find(|m| match &m.address {
            MajorAddress::Host(h) => {
                matches!(vantage, Vantage::Ingress { .. })
                    && req.host.as_deref().is_some_and(|got| host_matches(h, got))
            }
            MajorAddress::PathPrefix(_) => false,
        });
        let addressed = by_host.or_else(|| {
            self.majors.iter().find(|m| match &m.address {
                MajorAddress::PathPrefix(p) => under_prefix(&req.path, &major_path(p, vantage)),
                MajorAddress::Host(_) => false,
            })
        });
        let scope = addressed
            .or_else(|| self.major(self.default_major))
            .or(self.majors.first());
        match scope {
            Some(m) => Decision::Weighted {
                major: m.major,
                weights: m.weights.clone(),
            },
            // The model never builds a table without weights.
            None => Decision::Weighted {
                major: self.default_major,
                weights: Vec::new(),
            },
        }
    }
}
