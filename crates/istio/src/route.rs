//! Route -> VirtualService `NAME` (the mesh's view) and DestinationRule
//! `NAME` (a subset per version). The HTTP routes follow DESIGN.md's
//! normative algorithm, in order: match routes (whole service), host
//! majors (ingress only), path majors, the default major last without a
//! match. [`http_routes`] is shared with the ingress VirtualService.
//!
//! A service without a Route gets neither: plain Service behaviour.

use packlight_model::Version;
use packlight_model::ir::{
    MajorAddress, MatchItem, Mesh, RouteTable, Service, StringMatcher, VERSION_HEADER,
};
use packlight_model::routing::{Vantage, major_path};
use serde_json::{Map, Value, json};

use crate::meta::{Labels, NETWORKING, compact, duration, host_regex, object, prefix_regex};

/// Every Route's VirtualService and DestinationRule.
pub fn render(mesh: &Mesh) -> Vec<Value> {
    let mut out = Vec::new();
    for svc in mesh.services.values() {
        let Some(table) = &svc.route else { continue };
        let (ns, name) = (svc.key.namespace.as_str(), svc.key.name.as_str());
        let mut labels = Labels::managed().service(name);
        if let Some(src) = &svc.route_source {
            labels = labels.source(src);
        }
        out.push(object(
            NETWORKING,
            "VirtualService",
            ns,
            name,
            &labels,
            json!({
                "hosts": [svc.key.fqdn()],
                "http": http_routes(svc, table, Vantage::Mesh, ""),
            }),
        ));
        out.push(object(
            NETWORKING,
            "DestinationRule",
            ns,
            name,
            &labels,
            destination_rule(svc, table),
        ));
    }
    out
}

fn destination_rule(svc: &Service, table: &RouteTable) -> Value {
    let subsets: Vec<Value> = svc
        .versions()
        .iter()
        .map(|v| json!({"name": v.subset(), "labels": {"version": v.to_string()}}))
        .collect();
    let mut spec = json!({"host": svc.key.fqdn(), "subsets": subsets});
    if let Some(cb) = &table.circuit_breaker {
        let mut policy = Map::new();
        let outlier = compact(json!({
            "consecutive5xxErrors": cb.consecutive_5xx,
            "interval": cb.interval.map(duration),
            "baseEjectionTime": cb.base_ejection.map(duration),
        }));
        if outlier.as_object().is_some_and(|o| !o.is_empty()) {
            policy.insert("outlierDetection".into(), outlier);
        }
        if let Some(max) = cb.max_connections {
            policy.insert(
                "connectionPool".into(),
                json!({"tcp": {"maxConnections": max}}),
            );
        }
        spec["trafficPolicy"] = Value::Object(policy);
    }
    spec
}

/// The HTTP routes of one service's table, seen from `vantage`, in the
/// normative order. At the ingress every match is AND-ed with the ingress
/// prefix, host majors come first and path majors are `<prefix>/vN`.
/// Route names start with `name_prefix`.
pub fn http_routes(
    svc: &Service,
    table: &RouteTable,
    vantage: Vantage<'_>,
    name_prefix: &str,
) -> Vec<Value> {
    let ingress_uri = match vantage {
        Vantage::Mesh => None,
        Vantage::Ingress { prefix } => Some(json!({"regex": prefix_regex(prefix)})),
    };
    let with_uri = |mut m: Map<String, Value>| {
        if let Some(uri) = &ingress_uri {
            m.insert("uri".into(), uri.clone());
        }
        Value::Object(m)
    };
    let mut out = Vec::new();
    for (i, rule) in table.match_routes.iter().enumerate() {
        let matches: Vec<Value> = rule
            .items
            .iter()
            .map(|item| with_uri(match_request(item)))
            .collect();
        let dest = vec![destination(svc, &rule.version, None)];
        out.push(route(
            table,
            svc,
            &format!("{name_prefix}match-{i}"),
            Some(matches),
            dest,
        ));
    }
    if matches!(vantage, Vantage::Ingress { .. }) {
        for m in &table.majors {
            if let MajorAddress::Host(host) = &m.address {
                let mut cond = Map::new();
                cond.insert("authority".into(), json!({"regex": host_regex(host)}));
                let dest = m
                    .weights
                    .iter()
                    .map(|w| destination(svc, &w.version, Some(w.weight)))
                    .collect();
                out.push(route(
                    table,
                    svc,
                    &format!("{name_prefix}major-{}-host", m.major),
                    Some(vec![with_uri(cond)]),
                    dest,
                ));
            }
        }
    }
    for m in &table.majors {
        if let MajorAddress::PathPrefix(p) = &m.address {
            let cond = json!({"uri": {"regex": prefix_regex(&major_path(p, vantage))}});
            let dest = m
                .weights
                .iter()
                .map(|w| destination(svc, &w.version, Some(w.weight)))
                .collect();
            out.push(route(
                table,
                svc,
                &format!("{name_prefix}major-{}", m.major),
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
            .map(|w| destination(svc, &w.version, Some(w.weight)))
            .collect();
        let matches = ingress_uri.as_ref().map(|uri| vec![json!({"uri": uri})]);
        out.push(route(
            table,
            svc,
            &format!("{name_prefix}default"),
            matches,
            dest,
        ));
    }
    out
}

fn match_request(item: &MatchItem) -> Map<String, Value> {
    let conds = |list: &[(String, StringMatcher)]| -> Map<String, Value> {
        list.iter()
            .map(|(k, m)| (k.clone(), string_match(m)))
            .collect()
    };
    let mut m = Map::new();
    if !item.headers.is_empty() {
        m.insert("headers".into(), Value::Object(conds(&item.headers)));
    }
    if !item.query.is_empty() {
        m.insert("queryParams".into(), Value::Object(conds(&item.query)));
    }
    m
}

fn string_match(m: &StringMatcher) -> Value {
    match m {
        StringMatcher::Exact(s) => json!({"exact": s}),
        StringMatcher::Prefix(s) => json!({"prefix": s}),
        StringMatcher::Regex(s) => json!({"regex": s}),
    }
}

/// A destination: the version's subset, its share, and the version
/// header on the response.
pub fn destination(svc: &Service, version: &Version, weight: Option<u32>) -> Value {
    let mut d = json!({
        "destination": target(svc, version),
        "headers": {"response": {"set": {VERSION_HEADER: version.to_string()}}},
    });
    if let Some(w) = weight {
        d["weight"] = json!(w);
    }
    d
}

fn target(svc: &Service, version: &Version) -> Value {
    let mut t = json!({"host": svc.key.fqdn(), "subset": version.subset()});
    if let Some(port) = svc.port() {
        t["port"] = json!({"number": port});
    }
    t
}

fn route(
    table: &RouteTable,
    svc: &Service,
    name: &str,
    matches: Option<Vec<Value>>,
    dest: Vec<Value>,
) -> Value {
    let mut r = json!({"name": name, "route": dest});
    if let Some(m) = matches {
        r["match"] = Value::Array(m);
    }
    if let Some(t) = table.timeout {
        r["timeout"] = json!(duration(t));
    }
    let retries = &table.retries;
    r["retries"] = if retries.attempts == 0 {
        json!({"attempts": 0})
    } else {
        compact(json!({
            "attempts": retries.attempts,
            "perTryTimeout": retries.per_try_timeout.map(duration),
            "retryOn": (!retries.on.is_empty()).then(|| retries.on.join(",")),
        }))
    };
    if let Some(mirror) = &table.mirror {
        r["mirror"] = target(svc, &mirror.version);
        r["mirrorPercentage"] = json!({"value": f64::from(mirror.percent)});
    }
    r
}
