//! Route -> VirtualService `NAME` (the mesh's view) and DestinationRule
//! `NAME` (a subset per version). The HTTP routes follow DESIGN.md's
//! normative algorithm, in order: match routes (whole service), host
//! majors (ingress only), path majors, the default major last without a
//! match. [`http_routes`] is shared with the ingress VirtualService.
//!
//! A service without a Route gets neither: plain Service behaviour.

use std::borrow::Cow;
use std::collections::BTreeMap;

use packlight_model::Version;
use packlight_model::ir::{MajorAddress, MatchItem, RouteTable, Service, StringMatcher};
use packlight_model::routing::{Vantage, major_path};
use serde_json::Value;

use crate::Scope;
use crate::meta::{Labels, duration, host_regex, prefix_regex};
use crate::object::{
    ConnectionPool, DestinationRuleSpec, HttpRoute, Kind, MatchRequest, MaxConnections, Object,
    OutlierDetection, Percentage, PortNumber, Regex, ResponseHeaders, Retries, RouteDestination,
    Spec, StringMatch, Subset, Target, TrafficPolicy, VirtualServiceSpec,
};

/// The route objects of `kind` (VirtualService, DestinationRule) in one
/// namespace.
pub(crate) fn emit<'a>(
    scope: &Scope<'_, 'a>,
    kind: Kind,
    skip: &dyn Fn(&Service) -> bool,
    out: &mut Vec<Object<'a>>,
) {
    if !matches!(kind, Kind::VirtualService | Kind::DestinationRule) {
        return;
    }
    for &svc in scope.services {
        let Some(table) = &svc.route else { continue };
        if skip(svc) {
            continue;
        }
        let (ns, name) = (svc.key.namespace.as_str(), svc.key.name.as_str());
        let mut labels = Labels::managed().service(name);
        if let Some(src) = &svc.route_source {
            labels = labels.source(src);
        }
        let spec = if kind == Kind::VirtualService {
            Spec::VirtualService(VirtualServiceSpec {
                hosts: [svc.key.fqdn()],
                http: typed_http_routes(svc, table, Vantage::Mesh, ""),
            })
        } else {
            Spec::DestinationRule(destination_rule(svc, table))
        };
        out.push(Object::typed(kind, ns, name, labels, spec));
    }
}

fn destination_rule(svc: &Service, table: &RouteTable) -> DestinationRuleSpec {
    let subsets = svc
        .versions()
        .iter()
        .map(|v| Subset {
            version: v.to_string(),
            name: v.subset(),
        })
        .collect();
    let traffic_policy = table.circuit_breaker.as_ref().map(|cb| {
        let outlier = OutlierDetection {
            base_ejection_time: cb.base_ejection.map(duration),
            consecutive_5xx_errors: cb.consecutive_5xx,
            interval: cb.interval.map(duration),
        };
        let empty = outlier.base_ejection_time.is_none()
            && outlier.consecutive_5xx_errors.is_none()
            && outlier.interval.is_none();
        TrafficPolicy {
            connection_pool: cb.max_connections.map(|max| ConnectionPool {
                tcp: MaxConnections {
                    max_connections: max,
                },
            }),
            outlier_detection: (!empty).then_some(outlier),
        }
    });
    DestinationRuleSpec {
        host: svc.key.fqdn(),
        subsets,
        traffic_policy,
    }
}

/// The HTTP routes of one service's table, seen from `vantage`, in the
/// normative order, as JSON. At the ingress every match is AND-ed with
/// the ingress prefix, host majors come first and path majors are
/// `<prefix>/vN`. Route names start with `name_prefix`.
pub fn http_routes(
    svc: &Service,
    table: &RouteTable,
    vantage: Vantage<'_>,
    name_prefix: &str,
) -> Vec<Value> {
    typed_http_routes(svc, table, vantage, name_prefix)
        .iter()
        // Plain data with string keys: serialising it cannot fail.
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect()
}

/// [`http_routes`], typed.
pub(crate) fn typed_http_routes<'a>(
    svc: &'a Service,
    table: &'a RouteTable,
    vantage: Vantage<'_>,
    name_prefix: &str,
) -> Vec<HttpRoute<'a>> {
    let ingress_uri = match vantage {
        Vantage::Mesh => None,
        Vantage::Ingress { prefix } => Some(Regex {
            regex: prefix_regex(prefix),
        }),
    };
    let with_uri = |mut m: MatchRequest<'a>| {
        if let Some(uri) = &ingress_uri {
            m.uri = Some(uri.clone());
        }
        m
    };
    let host = Cow::Owned(svc.key.fqdn());
    let retries = retries(table);
    let mut out = Vec::new();
    for (i, rule) in table.match_routes.iter().enumerate() {
        let matches: Vec<MatchRequest> = rule
            .items
            .iter()
            .map(|item| with_uri(match_request(item)))
            .collect();
        let dest = vec![destination(svc, &host, &rule.version, None)];
        out.push(route(
            table,
            svc,
            &host,
            &retries,
            format!("{name_prefix}match-{i}"),
            Some(matches),
            dest,
        ));
    }
    if matches!(vantage, Vantage::Ingress { .. }) {
        for m in &table.majors {
            if let MajorAddress::Host(h) = &m.address {
                let cond = MatchRequest {
                    authority: Some(Regex {
                        regex: host_regex(h),
                    }),
                    ..MatchRequest::default()
                };
                let dest = m
                    .weights
                    .iter()
                    .map(|w| destination(svc, &host, &w.version, Some(w.weight)))
                    .collect();
                out.push(route(
                    table,
                    svc,
                    &host,
                    &retries,
                    format!("{name_prefix}major-{}-host", m.major),
                    Some(vec![with_uri(cond)]),
                    dest,
                ));
            }
        }
    }
    for m in &table.majors {
        if let MajorAddress::PathPrefix(p) = &m.address {
            let cond = MatchRequest {
                uri: Some(Regex {
                    regex: prefix_regex(&major_path(p, vantage)),
                }),
                ..MatchRequest::default()
            };
            let dest = m
                .weights
                .iter()
                .map(|w| destination(svc, &host, &w.version, Some(w.weight)))
                .collect();
            out.push(route(
                table,
                svc,
                &host,
                &retries,
                format!("{name_prefix}major-{}", m.major),
                Some(vec![cond]),
                dest,
            ));
        }
    }
    let default = table.major(table.default_major).or(table.majors.first());
    if let Some(m) = default {
        let dest = m
            .weights
            .iter()
            .map(|w| destination(svc, &host, &w.version, Some(w.weight)))
            .collect();
        let matches = ingress_uri.as_ref().map(|uri| {
            vec![MatchRequest {
                uri: Some(uri.clone()),
                ..MatchRequest::default()
            }]
        });
        out.push(route(
            table,
            svc,
            &host,
            &retries,
            format!("{name_prefix}default"),
            matches,
            dest,
        ));
    }
    out
}

fn match_request(item: &MatchItem) -> MatchRequest<'_> {
    // Collected into maps as JSON objects would be: sorted, last wins.
    fn conds(list: &[(String, StringMatcher)]) -> BTreeMap<&str, StringMatch<'_>> {
        list.iter()
            .map(|(k, m)| (k.as_str(), string_match(m)))
            .collect()
    }
    MatchRequest {
        headers: (!item.headers.is_empty()).then(|| conds(&item.headers)),
        query_params: (!item.query.is_empty()).then(|| conds(&item.query)),
        ..MatchRequest::default()
    }
}

fn string_match(m: &StringMatcher) -> StringMatch<'_> {
    match m {
        StringMatcher::Exact(s) => StringMatch("exact", s),
        StringMatcher::Prefix(s) => StringMatch("prefix", s),
        StringMatcher::Regex(s) => StringMatch("regex", s),
    }
}

/// A destination: the version's subset, its share, and the version
/// header on the response.
fn destination<'a>(
    svc: &Service,
    host: &Cow<'a, str>,
    version: &Version,
    weight: Option<u32>,
) -> RouteDestination<'a> {
    RouteDestination {
        destination: target(svc, host, version),
        headers: ResponseHeaders {
            version: version.to_string(),
        },
        weight,
    }
}

fn target<'a>(svc: &Service, host: &Cow<'a, str>, version: &Version) -> Target<'a> {
    Target {
        host: host.clone(),
        port: svc.port().map(|number| PortNumber { number }),
        subset: version.subset(),
    }
}

fn retries(table: &RouteTable) -> Retries<'_> {
    let r = &table.retries;
    if r.attempts == 0 {
        Retries {
            attempts: 0,
            per_try_timeout: None,
            retry_on: None,
        }
    } else {
        Retries {
            attempts: r.attempts,
            per_try_timeout: r.per_try_timeout.map(duration),
            retry_on: (!r.on.is_empty()).then(|| Cow::Owned(r.on.join(","))),
        }
    }
}

fn route<'a>(
    table: &RouteTable,
    svc: &Service,
    host: &Cow<'a, str>,
    retries: &Retries<'a>,
    name: String,
    matches: Option<Vec<MatchRequest<'a>>>,
    dest: Vec<RouteDestination<'a>>,
) -> HttpRoute<'a> {
    HttpRoute {
        matches,
        mirror: table.mirror.as_ref().map(|m| target(svc, host, &m.version)),
        mirror_percentage: table.mirror.as_ref().map(|m| Percentage {
            value: f64::from(m.percent),
        }),
        name,
        retries: retries.clone(),
        route: dest,
        timeout: table.timeout.map(duration),
    }
}
