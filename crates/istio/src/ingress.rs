//! IngressPolicy -> Gateway and, in the gateway's namespace, its filters
//! and login check; a VirtualService in the policy's namespace repeating
//! each target service's Route at the ingress.
//!
//! Names: objects in the gateway namespace are `NS-NAME` (two policies of
//! different namespaces never collide) and carry
//! `packlight.dev/source-namespace`, since they cannot have owner
//! references; the VirtualService is `ingress-NAME` in the policy's
//! namespace (never the service VirtualService `NAME`).
//!
//! CSRF and the local rate limit ([`crate::filters`]): one shared
//! EnvoyFilter [`crate::filters::FILTERS_NAME`] inserts both HTTP filters into the gateway, disabled
//! (CSRF at 0%, rate limit without a bucket); each policy's own
//! EnvoyFilter enables them on its hosts' virtual hosts
//! (`typed_per_filter_config`), so one policy's CSRF or limit never
//! applies to another policy's hosts. `csrf.exclude`: for each excluded
//! prefix, every ingress route whose path condition overlaps it gets a
//! copy narrowed to the overlap, placed right before it (so first-match
//! routing decides exactly as before) and named `ROUTE-csrf-exempt-K`;
//! the EnvoyFilter turns CSRF off on those routes by name
//! (`HTTP_ROUTE` patches).

use std::collections::BTreeSet;

use packlight_model::ResourceId;
use packlight_model::ir::{CorsPolicy, Ingress, Mesh};
use packlight_model::routing::Vantage;
use serde_json::{Value, json};

use crate::RenderOptions;
use crate::filters::{shared_filters, vhost_filters};
use crate::meta::{
    Labels, NETWORKING, NETWORKING_ALPHA3, SECURITY, SOURCE_NAMESPACE, duration, object,
    prefix_regex, regex_prefix,
};
use crate::object::Object;
use crate::route::http_routes;

/// The gateway port packlight serves (HTTP).
pub const GATEWAY_PORT: u16 = 80;

/// Every IngressPolicy's objects, plus the shared filters when needed.
pub fn render(mesh: &Mesh, opts: &RenderOptions) -> Vec<Value> {
    let mut out = Vec::new();
    for (id, ing) in &mesh.ingresses {
        out.extend(ingress(mesh, id, ing, opts));
    }
    if mesh.ingresses.values().any(needs_shared_filters) {
        out.push(shared_filters(opts));
    }
    out
}

/// True when the policy's filters (CSRF, rate limit) need the shared
/// EnvoyFilter [`crate::filters::FILTERS_NAME`] in the gateway's namespace.
pub fn needs_shared_filters(ing: &Ingress) -> bool {
    ing.csrf.is_some() || ing.rate_limit.is_some()
}

/// [`render`]'s objects, each with its kind.
pub(crate) fn objects(mesh: &Mesh, opts: &RenderOptions) -> Vec<Object<'static>> {
    render(mesh, opts)
        .into_iter()
        .filter_map(Object::from_value)
        .collect()
}

fn ingress(mesh: &Mesh, id: &ResourceId, ing: &Ingress, opts: &RenderOptions) -> Vec<Value> {
    let gw_ns = opts.gateway_namespace.as_str();
    // Istio refuses dots in Gateway names (`NS/NAME` references).
    let gw_name = format!("{}-{}", id.namespace, id.name.replace('.', "-"));
    let labels = Labels::managed().source(id);
    let (mut routes, exempt) = ingress_routes(mesh, ing);
    if let Some(login) = &ing.login {
        routes.insert(0, login_route(&login.login_url, opts));
    }
    let gw_labels = labels.clone().with(SOURCE_NAMESPACE, &id.namespace);
    let mut out = vec![
        object(
            NETWORKING,
            "Gateway",
            gw_ns,
            &gw_name,
            &gw_labels,
            json!({
                "selector": opts.gateway_selector,
                "servers": [{
                    "port": {"number": GATEWAY_PORT, "name": "http", "protocol": "HTTP"},
                    "hosts": ing.hosts.iter().map(|h| format!("{}/{h}", id.namespace)).collect::<Vec<_>>(),
                }],
            }),
        ),
        object(
            NETWORKING,
            "VirtualService",
            &id.namespace,
            &format!("ingress-{}", id.name),
            &labels,
            json!({
                "hosts": ing.hosts,
                "gateways": [format!("{gw_ns}/{gw_name}")],
                "http": routes,
            }),
        ),
    ];
    if ing.csrf.is_some() || ing.rate_limit.is_some() {
        out.push(object(
            NETWORKING_ALPHA3,
            "EnvoyFilter",
            gw_ns,
            &gw_name,
            &gw_labels,
            vhost_filters(ing, &exempt, opts),
        ));
    }
    if let Some(login) = &ing.login {
        let mut op = json!({"hosts": ing.hosts.iter().flat_map(|h| [h.clone(), format!("{h}:*")]).collect::<Vec<_>>()});
        let not_paths: Vec<String> = login.exclude.iter().flat_map(|p| prefix_paths(p)).collect();
        if !not_paths.is_empty() {
            op["notPaths"] = json!(not_paths);
        }
        out.push(object(
            SECURITY,
            "AuthorizationPolicy",
            gw_ns,
            &gw_name,
            &gw_labels,
            json!({
                "selector": {"matchLabels": opts.gateway_selector},
                "action": "CUSTOM",
                "provider": {"name": opts.login_provider},
                "rules": [{"to": [{"operation": op}]}],
            }),
        ));
    }
    out
}

/// The login page (`loginUrl` and below, segment-aware) goes to the login
/// service, first, as the standalone gateway does: browsers sent there by
/// the CUSTOM check reach it, and the check itself skips it (`notPaths`).
/// A client's own `x-packlight-user` never reaches the login service.
fn login_route(login_url: &str, opts: &RenderOptions) -> Value {
    json!({
        "name": "login",
        "match": [{"uri": {"regex": prefix_regex(login_url)}}],
        "route": [{"destination": {
            "host": opts.login_service,
            "port": {"number": opts.login_port},
        }}],
        "headers": {"request": {"remove": [crate::meta::USER_HEADER]}},
    })
}

/// A segment-aware prefix as AuthorizationPolicy paths: `/x`, `/x/*`.
fn prefix_paths(p: &str) -> Vec<String> {
    if p == "/" {
        vec!["*".to_string()]
    } else {
        vec![p.to_string(), format!("{p}/*")]
    }
}

/// The ingress VirtualService's routes, and the names of the routes
/// exempt from CSRF.
fn ingress_routes(mesh: &Mesh, ing: &Ingress) -> (Vec<Value>, Vec<String>) {
    let mut out = Vec::new();
    let mut exempt = Vec::new();
    let excluded: &[String] = ing
        .csrf
        .as_ref()
        .map(|c| c.exclude.as_slice())
        .unwrap_or_default();
    // Conditions emitted so far (routes and copies): a copy repeating one would
    // never match (Istio's validator reports such routes as unused).
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (i, r) in ing.routes.iter().enumerate() {
        let Some(svc) = mesh.services.get(&r.service) else {
            continue;
        };
        let name_prefix = format!("r{i}-{}-", r.service.name);
        let mut routes = match &svc.route {
            Some(table) => http_routes(
                svc,
                table,
                Vantage::Ingress {
                    prefix: &r.path_prefix,
                },
                &name_prefix,
            ),
            None => {
                let mut dest = json!({"host": svc.key.fqdn()});
                if let Some(port) = svc.port() {
                    dest["port"] = json!({"number": port});
                }
                vec![json!({
                    "name": format!("{name_prefix}default"),
                    "match": [{"uri": {"regex": prefix_regex(&r.path_prefix)}}],
                    "route": [{"destination": dest}],
                })]
            }
        };
        if let Some(cors) = &ing.cors {
            for route in &mut routes {
                route["corsPolicy"] = cors_policy(cors);
            }
        }
        for route in routes {
            let name = route["name"].as_str().unwrap_or_default().to_string();
            if excluded.iter().any(|e| covers(&route, e)) {
                // Every path of the route is excluded: exempt it whole.
                exempt.push(name);
            } else {
                for (k, prefix) in excluded.iter().enumerate() {
                    if let Some(copy) = narrowed(&route, prefix, k, &mut seen) {
                        exempt.push(format!("{name}-csrf-exempt-{k}"));
                        out.push(copy);
                    }
                }
            }
            for m in route["match"].as_array().into_iter().flatten() {
                seen.insert(m.to_string());
            }
            out.push(route);
        }
    }
    (out, exempt)
}

/// Segment-aware: `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

/// True when every path condition of `route` is under `excluded`.
fn covers(route: &Value, excluded: &str) -> bool {
    route["match"].as_array().is_some_and(|ms| {
        ms.iter().all(|m| {
            m["uri"]["regex"]
                .as_str()
                .and_then(regex_prefix)
                .is_some_and(|p| under(&p, excluded))
        })
    })
}

/// A copy of `route` limited to paths under `excluded`, or `None` when
/// no path of the route is, or an earlier copy already takes them all.
fn narrowed(route: &Value, excluded: &str, k: usize, seen: &mut BTreeSet<String>) -> Option<Value> {
    let matches: Vec<Value> = route["match"]
        .as_array()?
        .iter()
        .filter_map(|m| {
            let prefix = regex_prefix(m["uri"]["regex"].as_str()?)?;
            let overlap = if under(excluded, &prefix) {
                excluded.to_string()
            } else if under(&prefix, excluded) {
                prefix
            } else {
                return None;
            };
            let mut m = m.clone();
            m["uri"] = json!({"regex": prefix_regex(&overlap)});
            seen.insert(m.to_string()).then_some(m)
        })
        .collect();
    if matches.is_empty() {
        return None;
    }
    let mut copy = route.clone();
    copy["match"] = Value::Array(matches);
    copy["name"] = json!(format!("{}-csrf-exempt-{k}", route["name"].as_str()?));
    Some(copy)
}

fn cors_policy(c: &CorsPolicy) -> Value {
    let origins: Vec<Value> = c
        .allow_origins
        .iter()
        .map(|o| {
            if o == "*" {
                json!({"regex": ".*"})
            } else {
                json!({"exact": o})
            }
        })
        .collect();
    let mut p = json!({"allowOrigins": origins});
    for (k, v) in [
        ("allowMethods", &c.allow_methods),
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        if !v.is_empty() {
            p[k] = json!(v);
        }
    }
    if c.allow_credentials {
        p["allowCredentials"] = json!(true);
    }
    if let Some(age) = c.max_age {
        p["maxAge"] = json!(duration(age));
    }
    p
}
