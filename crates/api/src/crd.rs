//! The CustomResourceDefinitions, with the CEL rules that one object alone
//! can be checked by (`x-kubernetes-validations`) and patterns for
//! durations, hosts and paths. What depends on other objects is checked by
//! `packlight-model` and reported in status.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::{AccessPolicy, EgressPolicy, IngressPolicy, MeshPolicy, Microservice, Route};

/// The API group of every packlight resource.
pub const GROUP: &str = "packlight.dev";
/// The API version of every packlight resource.
pub const VERSION: &str = "v1alpha1";

/// A Go-style duration: `500ms`, `5s`, `1m30s`, `1h`.
const DURATION: &str = r"^([0-9]{1,6}(\.[0-9]{1,6})?(ms|s|m|h)){1,4}$";
/// An egress host entry: DNS name or `*.` wildcard, or an IPv4 address or
/// CIDR, each optionally with `:port`.
const EGRESS_HOST: &str = r"^((\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?|[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?)(:[0-9]{1,5})?$";
/// A host name served by the ingress (no port).
const INGRESS_HOST: &str =
    r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// An absolute path prefix.
const PATH: &str = r"^/[^?#\s]*$";
/// An HTTP method token.
const METHOD: &str = r"^[A-Z]{1,16}$";

/// The major of a version string, in CEL.
fn major(var: &str) -> String {
    // substring/indexOf, not split: the API server's cost estimator
    // bounds them by the version's maxLength, while split's list is unbounded.
    format!("{var}.version.substring(0, {var}.version.indexOf('.'))")
}

/// The sum of the effective weights of the weight rules in `var`'s major
/// (a weight rule without `weight` counts 100), in CEL.
fn major_sum(var: &str) -> String {
    format!(
        "self.rules.filter(q, !has(q.matches) && {} == {}).map(q, has(q.weight) ? q.weight : 100).sum()",
        major("q"),
        major(var)
    )
}

/// All CRDs, in the order of [`crate::KINDS`].
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        with_rules(Microservice::crd(), microservice_rules),
        with_rules(Route::crd(), route_rules),
        with_rules(EgressPolicy::crd(), egress_rules),
        with_rules(AccessPolicy::crd(), access_rules),
        with_rules(MeshPolicy::crd(), mesh_rules),
        with_rules(IngressPolicy::crd(), ingress_rules),
    ]
}

fn with_rules(crd: CustomResourceDefinition, add: fn(&mut Value)) -> CustomResourceDefinition {
    // The CRD types round-trip through JSON losslessly; a failure here would
    // be a bug in k8s-openapi, so the unpatched CRD is the safe fallback.
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    if let Some(schema) = value.pointer_mut("/spec/versions/0/schema/openAPIV3Schema") {
        add(schema);
        drop_unsigned_formats(schema);
    }
    serde_json::from_value(value).unwrap_or(crd)
}

/// schemars marks unsigned integers `format: uint32`, a format the API
/// server does not know (and warns about on every apply); the ranges
/// (`minimum`) already say what it means.
fn drop_unsigned_formats(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unsigned_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unsigned_formats),
        _ => {}
    }
}

/// The schema node at `path` below `schema`: names walk `properties`, `[]`
/// walks `items`, `{}` walks `additionalProperties`. Missing nodes are
/// created, so a typo in a path shows up in the golden CRD test.
fn node<'a>(schema: &'a mut Value, path: &[&str]) -> &'a mut Value {
    let mut at = schema;
    for step in path {
        at = match *step {
            "[]" => &mut at["items"],
            "{}" => &mut at["additionalProperties"],
            name => &mut at["properties"][name],
        };
    }
    at
}

fn rule(schema: &mut Value, path: &[&str], rule: Value) {
    let at = node(schema, path);
    match at["x-kubernetes-validations"].as_array_mut() {
        Some(list) => list.push(rule),
        None => at["x-kubernetes-validations"] = json!([rule]),
    }
}

fn pattern(schema: &mut Value, path: &[&str], pattern: &str, max_len: u32) {
    let at = node(schema, path);
    at["pattern"] = json!(pattern);
    at["maxLength"] = json!(max_len);
}

fn microservice_rules(s: &mut Value) {
    rule(
        s,
        &["spec"],
        json!({
            "rule": "self.versions.all(v, self.versions.exists_one(w, w.version == v.version))",
            "message": "each version may be listed once; remove the duplicate from spec.versions",
            "fieldPath": ".versions",
        }),
    );
    rule(
        s,
        &["spec", "versions", "[]"],
        json!({
            "rule": "!(has(self.command) && has(self.endpoints))",
            "message": "give either command (packlight starts it) or endpoints (already running), not both",
        }),
    );
    pattern(
        s,
        &["spec", "versions", "[]", "endpoints", "[]"],
        r"^[^\s:]+:[0-9]{1,5}$",
        260,
    );
}

fn route_rules(s: &mut Value) {
    let spec = &["spec"];
    rule(
        s,
        spec,
        json!({
            "rule": "self.rules.exists(r, !has(r.matches))",
            "message": "a Route needs at least one weight rule (version + weight); add one per major",
            "fieldPath": ".rules",
        }),
    );
    // The message names the highest major that is off and its sum. The API
    // server's cost estimator refuses comprehensions over filtered lists,
    // string concatenation of computed values and n³ nesting, and CRD CEL
    // has no cel.bind: so one map computes, per weight rule of a major that
    // is off, `major * 100000 + sum` (a sum is at most 64 * 100), its max
    // picks one, and format() splits it again.
    let off = format!(
        "self.rules.map(r, has(r.matches) || {sum} == 100 ? -1 : int({maj}) * 100000 + {sum}).max()",
        sum = major_sum("r"),
        maj = major("r"),
    );
    rule(
        s,
        spec,
        json!({
            "rule": format!("self.rules.all(r, has(r.matches) || {} == 100)", major_sum("r")),
            "messageExpression": format!(
                "'weights of major %d sum to %d, not 100; make the weights of each major add up to exactly 100'.format([({off}) / 100000, ({off}) % 100000])"
            ),
            "fieldPath": ".rules",
            "reason": "FieldValueInvalid",
        }),
    );
    rule(
        s,
        spec,
        json!({
            "rule": "self.rules.all(r, has(r.matches) || self.rules.filter(q, !has(q.matches) && q.version == r.version).size() == 1)",
            "message": "a version may have one weight rule only; merge the duplicates",
            "fieldPath": ".rules",
        }),
    );
    rule(
        s,
        spec,
        json!({
            "rule": format!("!has(self.defaultMajor) || self.rules.exists(r, !has(r.matches) && {} == self.defaultMajor)", major("r")),
            "messageExpression": "'defaultMajor ' + self.defaultMajor + ' has no weight rule; name a major that has one'",
            "fieldPath": ".defaultMajor",
        }),
    );
    rule(
        s,
        spec,
        json!({
            "rule": format!("!has(self.majors) || self.majors.all(m, self.rules.exists(r, !has(r.matches) && {} == m))", major("r")),
            "message": "spec.majors names a major without weight rules; remove it or add its weights",
            "fieldPath": ".majors",
        }),
    );
    rule(
        s,
        &["spec", "rules", "[]"],
        json!({
            "rule": "!(has(self.weight) && has(self.matches))",
            "message": "a rule has either weight (weight rule) or matches (match rule), not both; split it into two rules",
        }),
    );
    let string_match = json!({
        "rule": "(has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.regex) ? 1 : 0) == 1",
        "message": "give exactly one of exact, prefix, regex",
    });
    let item = &["spec", "rules", "[]", "matches", "[]"];
    rule(
        s,
        item,
        json!({
            "rule": "(has(self.headers) ? size(self.headers) : 0) + (has(self.queryParams) ? size(self.queryParams) : 0) > 0",
            "message": "a match item needs at least one header or query condition",
        }),
    );
    rule(
        s,
        &[item, &["headers", "{}"][..]].concat(),
        string_match.clone(),
    );
    rule(
        s,
        &[item, &["queryParams", "{}"][..]].concat(),
        string_match,
    );
    rule(
        s,
        &[item, &["queryParams", "{}"][..]].concat(),
        json!({
            "rule": "!has(self.prefix)",
            "message": "query parameters match by exact or regex only (Istio has no query prefix); use regex: 'abc.*'",
        }),
    );
    rule(
        s,
        &["spec", "majors", "{}"],
        json!({
            "rule": "has(self.pathPrefix) != has(self.host)",
            "message": "give exactly one of pathPrefix, host",
        }),
    );
    pattern(s, &["spec", "majors", "{}", "pathPrefix"], PATH, 256);
    pattern(s, &["spec", "majors", "{}", "host"], INGRESS_HOST, 253);
    pattern(s, &["spec", "timeout"], DURATION, 32);
    pattern(s, &["spec", "retries", "perTryTimeout"], DURATION, 32);
    pattern(s, &["spec", "circuitBreaker", "interval"], DURATION, 32);
    pattern(s, &["spec", "circuitBreaker", "baseEjection"], DURATION, 32);
    pattern(
        s,
        &["spec", "retries", "on", "[]"],
        r"^([a-z0-9-]{1,32}|[1-5][0-9][0-9])$",
        32,
    );
    let headers = node(s, &[item, &["headers"][..]].concat());
    headers["x-kubernetes-validations"] = json!([{
        "rule": "self.all(k, k.matches('^[A-Za-z0-9!#$%&*+.^_`|~-]+$'))",
        "message": "header names are HTTP tokens (letters, digits, - _ . ...)",
    }]);
}

fn egress_rules(s: &mut Value) {
    pattern(s, &["spec", "hosts", "[]"], EGRESS_HOST, 260);
    rule(
        s,
        &["spec"],
        json!({
            "rule": "self.hosts.all(h, self.hosts.exists_one(g, g == h))",
            "message": "each host may be listed once; remove the duplicate",
            "fieldPath": ".hosts",
        }),
    );
}

fn access_rules(s: &mut Value) {
    rule(
        s,
        &["spec", "allow", "[]"],
        json!({
            "rule": "(has(self.from) && size(self.from) > 0) || (has(self.ingress) && self.ingress)",
            "message": "an allow rule names its callers: from: [service, ...] or ingress: true",
        }),
    );
    pattern(s, &["spec", "allow", "[]", "methods", "[]"], METHOD, 16);
    pattern(
        s,
        &["spec", "allow", "[]", "paths", "[]"],
        r"^(\*|/[^?#\s]*|\*[^?#\s]*)$",
        256,
    );
    pattern(
        s,
        &["spec", "allow", "[]", "from", "[]"],
        r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        127,
    );
}

fn mesh_rules(s: &mut Value) {
    rule(
        s,
        &[],
        json!({
            "rule": "self.metadata.name == 'default'",
            "message": "a MeshPolicy must be named default (one per namespace)",
        }),
    );
}

fn ingress_rules(s: &mut Value) {
    pattern(s, &["spec", "hosts", "[]"], INGRESS_HOST, 253);
    pattern(s, &["spec", "routes", "[]", "pathPrefix"], PATH, 256);
    pattern(s, &["spec", "csrf", "exclude", "[]"], PATH, 256);
    pattern(s, &["spec", "login", "exclude", "[]"], PATH, 256);
    pattern(s, &["spec", "login", "loginUrl"], PATH, 256);
    pattern(s, &["spec", "cors", "maxAge"], DURATION, 32);
    pattern(s, &["spec", "cors", "allowMethods", "[]"], METHOD, 16);
    rule(
        s,
        &["spec"],
        json!({
            "rule": "self.routes.all(r, self.routes.exists_one(q, q.pathPrefix == r.pathPrefix))",
            "message": "each pathPrefix may be routed once; remove the duplicate",
            "fieldPath": ".routes",
        }),
    );
    rule(
        s,
        &["spec", "cors"],
        json!({
            "rule": "!(has(self.allowCredentials) && self.allowCredentials && self.allowOrigins.exists(o, o == '*'))",
            "message": "allowCredentials cannot be used with the origin '*'; list the origins",
        }),
    );
    pattern(
        s,
        &["spec", "cors", "allowOrigins", "[]"],
        r"^(\*|https?://[^/\s]+)$",
        256,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_crd_in_the_group() {
        let crds = crds();
        assert_eq!(crds.len(), crate::KINDS.len());
        for (crd, kind) in crds.iter().zip(crate::KINDS) {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.names.kind, kind);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.versions[0].name, VERSION);
        }
    }

    #[test]
    fn rules_land_on_existing_schema_nodes() {
        // A rule written at a path that the derived schema lacks would
        // create a node without a type: structural schemas forbid that.
        for crd in crds() {
            let v = serde_json::to_value(&crd).unwrap();
            let schema = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            check_typed(schema, &crd.spec.names.kind, "");
        }
    }

    fn check_typed(s: &Value, kind: &str, at: &str) {
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                assert!(
                    v.get("type").is_some() || v.get("x-kubernetes-int-or-string").is_some(),
                    "{kind}: {at}.{k} has no type: {v}"
                );
                check_typed(v, kind, &format!("{at}.{k}"));
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(v) = s.get(key).filter(|v| v.is_object()) {
                assert!(
                    v.get("type").is_some(),
                    "{kind}: {at}.{key} has no type: {v}"
                );
                check_typed(v, kind, &format!("{at}[]"));
            }
        }
    }
}
