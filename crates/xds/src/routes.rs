//! A service's RouteTable as Envoy routes, in DESIGN.md's normative order:
//! match routes (whole service), host majors (ingress only), path majors,
//! the default major last (the default major's own path route is left out
//! when no later path major overlaps it: the default route does the same). Shared by the sidecar's outbound routes and the
//! ingress gateway. A service without a Route gets one route to its
//! subset-less cluster, without the version header.

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RetryPolicy, Route, RouteAction, RouteMatch,
    WeightedCluster, header_matcher, query_parameter_matcher, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use packlight_model::Version;
use packlight_model::ir::{
    MajorAddress, MajorScope, MatchItem, RouteTable, Service, StringMatcher, VERSION_HEADER,
};
use packlight_model::parse::under_prefix;
use packlight_model::routing::{Vantage, major_path};

use crate::names;
use crate::proto::{
    duration, host_regex, percent, prefix_regex, regex, set_header, string_matcher, u32v,
};

/// The path a route is confined to: a segment-aware prefix.
fn path_match(prefix: &str) -> route_match::PathSpecifier {
    if prefix == "/" {
        route_match::PathSpecifier::Prefix("/".to_string())
    } else {
        route_match::PathSpecifier::SafeRegex(regex(&prefix_regex(prefix)))
    }
}

/// The narrower of two segment-aware prefixes, `None` when disjoint.
pub fn intersect(a: &str, b: &str) -> Option<String> {
    if under_prefix(a, b) {
        Some(a.to_string())
    } else if under_prefix(b, a) {
        Some(b.to_string())
    } else {
        None
    }
}

fn string_match(m: &StringMatcher) -> MatchPattern {
    match m {
        StringMatcher::Exact(s) => MatchPattern::Exact(s.clone()),
        StringMatcher::Prefix(s) => MatchPattern::Prefix(s.clone()),
        StringMatcher::Regex(s) => MatchPattern::SafeRegex(regex(s)),
    }
}

fn header(name: &str, m: MatchPattern) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            string_matcher(m),
        )),
        ..Default::default()
    }
}

fn item_match(item: &MatchItem, path: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(path_match(path)),
        headers: item
            .headers
            .iter()
            .map(|(k, m)| header(k, string_match(m)))
            .collect(),
        query_parameters: item
            .query
            .iter()
            .map(|(k, m)| QueryParameterMatcher {
                name: k.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string_matcher(string_match(m)),
                    ),
                ),
            })
            .collect(),
        ..Default::default()
    }
}

fn retry(table: &RouteTable) -> RetryPolicy {
    let (codes, on): (Vec<&String>, Vec<&String>) = table
        .retries
        .on
        .iter()
        .partition(|c| c.bytes().all(|b| b.is_ascii_digit()));
    let mut on: Vec<String> = on.into_iter().cloned().collect();
    if !codes.is_empty() && !on.iter().any(|c| c == "retriable-status-codes") {
        on.push("retriable-status-codes".to_string());
    }
    RetryPolicy {
        retry_on: on.join(","),
        num_retries: Some(u32v(table.retries.attempts)),
        per_try_timeout: table.retries.per_try_timeout.map(duration),
        retriable_status_codes: codes.iter().filter_map(|c| c.parse().ok()).collect(),
        ..Default::default()
    }
}

/// The route action for weighted versions of `svc`.
fn action(svc: &Service, port: u16, table: &RouteTable, dest: &[(&Version, u32)]) -> RouteAction {
    let clusters = dest
        .iter()
        .map(|(v, w)| weighted_cluster::ClusterWeight {
            name: names::outbound_cluster(&svc.key, port, Some(v)),
            weight: Some(u32v(*w)),
            response_headers_to_add: vec![set_header(VERSION_HEADER, &v.to_string())],
            ..Default::default()
        })
        .collect();
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters,
                ..Default::default()
            },
        )),
        // No Route timeout: none at all, as Istio (Envoy would use 15s).
        timeout: Some(duration(table.timeout.unwrap_or_default())),
        retry_policy: Some(retry(table)),
        request_mirror_policies: table
            .mirror
            .iter()
            .map(|m| route_action::RequestMirrorPolicy {
                cluster: names::outbound_cluster(&svc.key, port, Some(&m.version)),
                runtime_fraction: Some(percent(m.percent)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn route(name: String, m: RouteMatch, a: RouteAction) -> Route {
    Route {
        name,
        r#match: Some(m),
        action: Some(route::Action::Route(a)),
        ..Default::default()
    }
}

/// The routes for `svc` seen from `vantage`, confined to `within` (a
/// segment-aware prefix; `/` for none). Route names start with `name`.
pub fn service_routes(svc: &Service, vantage: Vantage<'_>, within: &str, name: &str) -> Vec<Route> {
    let Some(port) = svc.port() else {
        return Vec::new();
    };
    let base = match vantage {
        Vantage::Mesh => "/".to_string(),
        Vantage::Ingress { prefix } => prefix.to_string(),
    };
    let Some(scope) = intersect(&base, within) else {
        return Vec::new();
    };
    let Some(table) = &svc.route else {
        let cluster = names::outbound_cluster(&svc.key, port, None);
        let a = RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
            timeout: Some(duration(std::time::Duration::ZERO)),
            ..Default::default()
        };
        let m = RouteMatch {
            path_specifier: Some(path_match(&scope)),
            ..Default::default()
        };
        return vec![route(format!("{name}default"), m, a)];
    };
    let mut out = Vec::new();
    for (i, rule) in table.match_routes.iter().enumerate() {
        let a = action(svc, port, table, &[(&rule.version, 100)]);
        for (j, item) in rule.items.iter().enumerate() {
            out.push(route(
                format!("{name}match-{i}-{j}"),
                item_match(item, &scope),
                a.clone(),
            ));
        }
    }
    if matches!(vantage, Vantage::Ingress { .. }) {
        for m in &table.majors {
            if let MajorAddress::Host(host) = &m.address {
                let rm = RouteMatch {
                    path_specifier: Some(path_match(&scope)),
                    headers: vec![header(
                        ":authority",
                        MatchPattern::SafeRegex(regex(&host_regex(host))),
                    )],
                    ..Default::default()
                };
                let a = action(svc, port, table, &weights(m));
                out.push(route(format!("{name}major-{}-host", m.major), rm, a));
            }
        }
    }
    let default = table.major(table.default_major).or(table.majors.first());
    let paths: Vec<(&MajorScope, String)> = table
        .majors
        .iter()
        .filter_map(|m| match &m.address {
            MajorAddress::PathPrefix(p) => Some((m, intersect(&major_path(p, vantage), &scope)?)),
            MajorAddress::Host(_) => None,
        })
        .collect();
    for (i, (m, path)) in paths.iter().enumerate() {
        // The default major's own path route is left out when no later
        // path major overlaps it (the model refuses overlapping majors;
        // checked all the same): what it matches lies within `scope` and
        // passes the later ones, so the default route takes the same
        // requests to the same weights. One route and one regex less for
        // Envoy to build, for every caller, at every change.
        if default.is_some_and(|d| d.major == m.major)
            && paths[i + 1..]
                .iter()
                .all(|(_, later)| intersect(later, path).is_none())
        {
            continue;
        }
        let rm = RouteMatch {
            path_specifier: Some(path_match(path)),
            ..Default::default()
        };
        let a = action(svc, port, table, &weights(m));
        out.push(route(format!("{name}major-{}", m.major), rm, a));
    }
    if let Some(m) = default {
        let rm = RouteMatch {
            path_specifier: Some(path_match(&scope)),
            ..Default::default()
        };
        let a = action(svc, port, table, &weights(m));
        out.push(route(format!("{name}default"), rm, a));
    }
    out
}

fn weights(m: &MajorScope) -> Vec<(&Version, u32)> {
    m.weights.iter().map(|w| (&w.version, w.weight)).collect()
}

#[cfg(test)]
mod tests {
    use super::intersect;

    #[test]
    fn intersect_is_segment_aware() {
        assert_eq!(intersect("/a", "/a/b").as_deref(), Some("/a/b"));
        assert_eq!(intersect("/a/b", "/a").as_deref(), Some("/a/b"));
        assert_eq!(intersect("/a", "/ab"), None);
        assert_eq!(intersect("/", "/x").as_deref(), Some("/x"));
    }
}
