//! The ingress gateway: one listener on the ingress address, a virtual
//! host per IngressPolicy (its hosts with and without a port, plus the
//! hosts of host majors), routes per ingress route applying the target
//! service's RouteTable at `Vantage::Ingress`, and Envoy's local rate
//! limit, CORS, CSRF and ext_authz (login) filters configured per virtual
//! host. Excluded prefixes (CSRF, login) get their own routes, first, with
//! those filters disabled per route. Upstream: mTLS with the ingress
//! identity, like any sidecar.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::{HttpUri, http_uri};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::csrf::v3::CsrfPolicy;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    AuthorizationResponse, ExtAuthz, ExtAuthzPerRoute, HttpService, ext_authz, ext_authz_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::r#type::matcher::v3::ListStringMatcher;
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, TokenBucket};
use envoy_types::pb::google::protobuf::Any;
use packlight_model::ir::{Ingress, MajorAddress, Mesh};
use packlight_model::routing::Vantage;

use crate::hcm::{chain, http_filter, listener, manager};
use crate::names::{INGRESS, LOGIN_CLUSTER};
use crate::proto::{any, bool_value, duration, exact, percent, prefix_regex, regex, u32v};
use crate::routes::service_routes;
use crate::{ProxyConfig, XdsError, XdsOptions, clusters};

const CORS: &str = "envoy.filters.http.cors";
const CSRF: &str = "envoy.filters.http.csrf";
const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
const RATE_LIMIT: &str = "envoy.filters.http.local_ratelimit";
/// The user the login service vouches for, set on allow (overriding
/// whatever the client sent) and removed wherever ext_authz does not run,
/// so an upstream never sees one the client made up.
const USER_HEADER: &str = "x-packlight-user";

/// Adds the gateway's listener, route configuration and clusters.
pub fn render(mesh: &Mesh, opts: &XdsOptions, out: &mut ProxyConfig) -> Result<(), XdsError> {
    let login = mesh.ingresses.values().any(|i| i.login.is_some());
    if login {
        let addr = opts.login.ok_or_else(|| {
            let id = mesh.ingresses.iter().find(|(_, i)| i.login.is_some());
            XdsError::NoLoginService(id.map(|(k, _)| k.to_string()).unwrap_or_default())
        })?;
        clusters::static_cluster(LOGIN_CLUSTER, addr, out);
    }
    let mut used = BTreeSet::new();
    let mut hosts = Vec::new();
    for (id, ing) in &mesh.ingresses {
        for r in &ing.routes {
            if let Some(svc) = mesh.services.get(&r.service) {
                clusters::mesh_clusters(svc, opts, out);
            }
        }
        let mut names: Vec<String> = ing.hosts.clone();
        for r in &ing.routes {
            let Some(table) = mesh.services.get(&r.service).and_then(|s| s.route.as_ref()) else {
                continue;
            };
            names.extend(table.majors.iter().filter_map(|m| match &m.address {
                MajorAddress::Host(h) => Some(h.clone()),
                MajorAddress::PathPrefix(_) => None,
            }));
        }
        let domains: Vec<String> = names
            .iter()
            .flat_map(|n| [n.clone(), format!("{n}:*")])
            .filter(|d| used.insert(d.clone()))
            .collect();
        if domains.is_empty() {
            continue;
        }
        hosts.push(VirtualHost {
            name: id.to_string(),
            domains,
            routes: routes(mesh, ing),
            typed_per_filter_config: vhost_filters(ing, login),
            request_headers_to_remove: unvouched_user(login && ing.login.is_none()),
            ..Default::default()
        });
    }
    out.routes.push(RouteConfiguration {
        name: INGRESS.to_string(),
        virtual_hosts: hosts,
        ..Default::default()
    });
    let mut filters = vec![
        http_filter(
            RATE_LIMIT,
            any(LocalRateLimit {
                stat_prefix: "ingress_ratelimit".to_string(),
                ..Default::default()
            }),
        ),
        http_filter(CORS, any(Cors::default())),
        http_filter(
            CSRF,
            any(CsrfPolicy {
                filter_enabled: Some(percent(0)),
                ..Default::default()
            }),
        ),
    ];
    if login {
        let cfg = ExtAuthz {
            services: Some(ext_authz::Services::HttpService(HttpService {
                server_uri: Some(HttpUri {
                    uri: "http://login".to_string(),
                    timeout: Some(duration(std::time::Duration::from_secs(1))),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                        LOGIN_CLUSTER.to_string(),
                    )),
                }),
                // The contract of packlight-auth (docs/auth.md), the same
                // as the Istio provider's (packlight-istio mesh_config).
                authorization_response: Some(AuthorizationResponse {
                    allowed_upstream_headers: Some(ListStringMatcher {
                        patterns: vec![exact(USER_HEADER)],
                    }),
                    allowed_client_headers: Some(ListStringMatcher {
                        patterns: ["location", "set-cookie", "content-type", "www-authenticate"]
                            .iter()
                            .map(|h| exact(h))
                            .collect(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            // What the login service needs to tell a session, a bearer
            // token and a browser apart (Envoy forwards only a few headers
            // by default).
            allowed_headers: Some(ListStringMatcher {
                patterns: ["cookie", "authorization", "accept", "x-forwarded-proto"]
                    .iter()
                    .map(|h| exact(h))
                    .collect(),
            }),
            transport_api_version: 2, // V3
            ..Default::default()
        };
        filters.push(http_filter(EXT_AUTHZ, any(cfg)));
    }
    let hcm = manager(INGRESS, INGRESS, filters);
    out.listeners.push(listener(
        INGRESS,
        opts.ingress,
        vec![chain(INGRESS, hcm, None, None)],
    ));
    Ok(())
}

/// CORS, CSRF, rate limit and login as this IngressPolicy says.
fn vhost_filters(ing: &Ingress, login_filter: bool) -> HashMap<String, Any> {
    let mut m = HashMap::new();
    if let Some(c) = &ing.cors {
        let policy = CorsPolicy {
            allow_origin_string_match: c.allow_origins.iter().map(|o| exact(o)).collect(),
            allow_methods: c.allow_methods.join(","),
            allow_headers: c.allow_headers.join(","),
            expose_headers: c.expose_headers.join(","),
            max_age: c
                .max_age
                .map(|d| d.as_secs().to_string())
                .unwrap_or_default(),
            allow_credentials: Some(bool_value(c.allow_credentials)),
            ..Default::default()
        };
        m.insert(CORS.to_string(), any(policy));
    }
    if ing.csrf.is_some() {
        let origins = ing.cors.iter().flat_map(|c| &c.allow_origins);
        let policy = CsrfPolicy {
            filter_enabled: Some(percent(100)),
            // Envoy's CSRF filter compares the host[:port] of the Origin
            // (scheme dropped), so the CORS origins are given that way.
            additional_origins: origins
                .filter(|o| *o != "*")
                .map(|o| exact(o.split_once("://").map_or(o.as_str(), |(_, h)| h)))
                .collect(),
            ..Default::default()
        };
        m.insert(CSRF.to_string(), any(policy));
    }
    if let Some(rl) = &ing.rate_limit {
        let policy = LocalRateLimit {
            stat_prefix: "ingress_ratelimit".to_string(),
            status: Some(HttpStatus { code: 429 }),
            token_bucket: Some(TokenBucket {
                max_tokens: rl.requests,
                tokens_per_fill: Some(u32v(rl.requests)),
                fill_interval: Some(duration(rl.period)),
            }),
            filter_enabled: Some(percent(100)),
            filter_enforced: Some(percent(100)),
            ..Default::default()
        };
        m.insert(RATE_LIMIT.to_string(), any(policy));
    }
    if login_filter && ing.login.is_none() {
        m.insert(EXT_AUTHZ.to_string(), authz_disabled());
    }
    m
}

/// Headers a gateway with login removes from requests where ext_authz is
/// off (login page, exclusions, policies without login).
fn unvouched_user(login_filter: bool) -> Vec<String> {
    if login_filter {
        vec![USER_HEADER.to_string()]
    } else {
        Vec::new()
    }
}

fn authz_disabled() -> Any {
    any(ExtAuthzPerRoute {
        r#override: Some(ext_authz_per_route::Override::Disabled(true)),
    })
}

fn csrf_disabled() -> Any {
    any(CsrfPolicy {
        filter_enabled: Some(percent(0)),
        ..Default::default()
    })
}

/// Login page first, then excluded prefixes (longest first), then the
/// ingress routes.
fn routes(mesh: &Mesh, ing: &Ingress) -> Vec<Route> {
    let mut out = Vec::new();
    let csrf_ex: &[String] = ing
        .csrf
        .as_ref()
        .map(|c| c.exclude.as_slice())
        .unwrap_or(&[]);
    let login_ex: &[String] = ing
        .login
        .as_ref()
        .map(|l| l.exclude.as_slice())
        .unwrap_or(&[]);
    if let Some(login) = &ing.login {
        let mut r = Route {
            name: "login".to_string(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex(&prefix_regex(
                    &login.login_url,
                )))),
                ..Default::default()
            }),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    LOGIN_CLUSTER.to_string(),
                )),
                ..Default::default()
            })),
            ..Default::default()
        };
        r.typed_per_filter_config
            .insert(EXT_AUTHZ.to_string(), authz_disabled());
        r.request_headers_to_remove.extend(unvouched_user(true));
        out.push(r);
    }
    let mut excluded: Vec<&String> = csrf_ex.iter().chain(login_ex).collect();
    excluded.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    excluded.dedup();
    let covers = |list: &[String], e: &str| {
        list.iter()
            .any(|p| packlight_model::parse::under_prefix(e, p))
    };
    for e in excluded {
        for r in &ing.routes {
            let Some(svc) = mesh.services.get(&r.service) else {
                continue;
            };
            let vantage = Vantage::Ingress {
                prefix: &r.path_prefix,
            };
            for mut route in service_routes(svc, vantage, e, &format!("{e}|exclude|")) {
                if covers(csrf_ex, e) && ing.csrf.is_some() {
                    route
                        .typed_per_filter_config
                        .insert(CSRF.to_string(), csrf_disabled());
                }
                if covers(login_ex, e) && ing.login.is_some() {
                    route
                        .typed_per_filter_config
                        .insert(EXT_AUTHZ.to_string(), authz_disabled());
                    route.request_headers_to_remove.extend(unvouched_user(true));
                }
                out.push(route);
            }
        }
    }
    for r in &ing.routes {
        let Some(svc) = mesh.services.get(&r.service) else {
            continue;
        };
        let vantage = Vantage::Ingress {
            prefix: &r.path_prefix,
        };
        out.extend(service_routes(
            svc,
            vantage,
            "/",
            &format!("{}|", r.path_prefix),
        ));
    }
    out
}
