//! The ingress gateway's EnvoyFilters: CSRF and the local rate limit,
//! which Istio has no API for. One shared EnvoyFilter inserts both
//! filters, disabled; each IngressPolicy's EnvoyFilter enables them per
//! virtual host and turns CSRF off on its exempt routes by name.

use packlight_model::ir::{Ingress, RateLimitPolicy};
use serde_json::{Value, json};

use crate::RenderOptions;
use crate::ingress::GATEWAY_PORT;
use crate::meta::{Labels, NETWORKING_ALPHA3, duration, object};

/// The shared EnvoyFilter inserting the CSRF and local rate limit filters.
pub const FILTERS_NAME: &str = "packlight-ingress-filters";

/// The CSRF filter's name.
pub const CSRF: &str = "envoy.filters.http.csrf";
const CSRF_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy";
const RATELIMIT: &str = "envoy.filters.http.local_ratelimit";
const RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
fn percent(n: u32) -> Value {
    json!({"default_value": {"numerator": n, "denominator": "HUNDRED"}})
}

fn runtime_percent(key: &str, n: u32) -> Value {
    json!({"runtime_key": key, "default_value": {"numerator": n, "denominator": "HUNDRED"}})
}

fn filter_patch(value: Value) -> Value {
    json!({
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": "GATEWAY",
            "listener": {"filterChain": {"filter": {
                "name": "envoy.filters.network.http_connection_manager",
                "subFilter": {"name": "envoy.filters.http.router"},
            }}},
        },
        "patch": {"operation": "INSERT_BEFORE", "value": value},
    })
}

pub fn shared_filters(opts: &RenderOptions) -> Value {
    object(
        NETWORKING_ALPHA3,
        "EnvoyFilter",
        &opts.gateway_namespace,
        FILTERS_NAME,
        &Labels::managed(),
        json!({
            "workloadSelector": {"labels": opts.gateway_selector},
            // Istio's own filters first: a relative insertion needs them.
            "priority": 10,
            "configPatches": [
                filter_patch(json!({"name": CSRF, "typed_config": {
                    "@type": CSRF_TYPE,
                    "filter_enabled": percent(0),
                }})),
                filter_patch(json!({"name": RATELIMIT, "typed_config": {
                    "@type": RATELIMIT_TYPE,
                    "stat_prefix": "packlight_ingress_ratelimit",
                }})),
            ],
        }),
    )
}

fn rate_limit(r: &RateLimitPolicy) -> Value {
    json!({
        "@type": RATELIMIT_TYPE,
        "stat_prefix": "packlight_ingress_ratelimit",
        "token_bucket": {
            "max_tokens": r.requests,
            "tokens_per_fill": r.requests,
            "fill_interval": duration(r.period),
        },
        "filter_enabled": runtime_percent("packlight_ratelimit_enabled", 100),
        "filter_enforced": runtime_percent("packlight_ratelimit_enforced", 100),
        "status": {"code": "TooManyRequests"},
    })
}

/// A policy's EnvoyFilter spec: filters enabled on its hosts, CSRF off
/// on its `exempt` routes.
pub fn vhost_filters(ing: &Ingress, exempt: &[String], opts: &RenderOptions) -> Value {
    let mut per_filter = serde_json::Map::new();
    if ing.csrf.is_some() {
        let origins: Vec<Value> = ing
            .cors
            .iter()
            .flat_map(|c| c.allow_origins.iter())
            .filter(|o| *o != "*")
            // Envoy's CSRF filter compares the Origin's host[:port], scheme
            // dropped: `https://a.example` is given as `a.example`.
            .map(|o| json!({"exact": o.split_once("://").map_or(o.as_str(), |(_, h)| h)}))
            .collect();
        let mut csrf = json!({"@type": CSRF_TYPE, "filter_enabled": percent(100)});
        if !origins.is_empty() {
            csrf["additional_origins"] = json!(origins);
        }
        per_filter.insert(CSRF.into(), csrf);
    }
    if let Some(r) = &ing.rate_limit {
        per_filter.insert(RATELIMIT.into(), rate_limit(r));
    }
    let patches: Vec<Value> = ing
        .hosts
        .iter()
        .map(|h| {
            json!({
                "applyTo": "VIRTUAL_HOST",
                "match": {
                    "context": "GATEWAY",
                    "routeConfiguration": {"portNumber": GATEWAY_PORT, "vhost": {"name": format!("{h}:{GATEWAY_PORT}")}},
                },
                "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": per_filter}},
            })
        })
        .collect();
    let off = json!({"typed_per_filter_config": {CSRF: {"@type": CSRF_TYPE, "filter_enabled": percent(0)}}});
    let off = &off;
    let route_patches = ing.hosts.iter().flat_map(|h| {
        exempt.iter().map(move |name| {
            json!({
                "applyTo": "HTTP_ROUTE",
                "match": {
                    "context": "GATEWAY",
                    "routeConfiguration": {
                        "portNumber": GATEWAY_PORT,
                        "vhost": {"name": format!("{h}:{GATEWAY_PORT}"), "route": {"name": name}},
                    },
                },
                "patch": {"operation": "MERGE", "value": off.clone()},
            })
        })
    });
    let patches: Vec<Value> = patches.into_iter().chain(route_patches).collect();
    json!({"workloadSelector": {"labels": opts.gateway_selector}, "configPatches": patches})
}
