//! The sidecar's outbound side: a listener on the instance's outbound
//! address that the app uses as its HTTP(S) proxy (absolute URIs and
//! CONNECT). Virtual hosts: one per service the caller may call
//! (`Mesh::reachable` and `Mesh::may_call`, never the whole mesh); one,
//! `access-denied`, for every service whose AccessPolicy does not name
//! the caller, answering `403 RBAC: access denied` as the callee's RBAC
//! would (which still enforces it; no clusters or routes for those
//! services); one per whitelisted egress host; and a catch-all that
//! answers `502` under `egress: deny` (Istio's BlackHoleCluster) or
//! forwards anywhere otherwise. Egress goes through a dynamic forward
//! proxy cluster, by Host / CONNECT authority.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3::{
    FilterConfig, filter_config,
};
use packlight_model::ir::{EgressHost, Mesh, Service};
use packlight_model::routing::Vantage;

use crate::hcm::{chain, forward_proxy, http_filter, listener, manager};
use crate::names::{EGRESS_CLUSTER, OUTBOUND};
use crate::proto::any;
use crate::routes::service_routes;
use crate::{Instance, ProxyConfig, RenderCache, XdsOptions, clusters};

/// Adds the outbound listener, its route configuration and clusters; each
/// callee's clusters and routes come from `cache` when it has them.
pub fn render(
    mesh: &Mesh,
    caller: &Service,
    inst: &Instance,
    opts: &XdsOptions,
    cache: Option<&RenderCache>,
    out: &mut ProxyConfig,
) {
    let mut used = BTreeSet::new();
    let mut hosts = Vec::new();
    let mut denied = Vec::new();
    for svc in mesh.reachable(&caller.key) {
        let Some(w) = &svc.workload else { continue };
        if !w.protocol.is_l7() {
            continue;
        }
        let names = service_names(svc, caller);
        if !mesh.may_call(&caller.key, svc) {
            denied.extend(names);
            continue;
        }
        let routes = match cache {
            Some(cache) => {
                let callee = cache.callee(svc, opts);
                out.clusters.extend_from_slice(&callee.clusters);
                out.endpoints.extend_from_slice(&callee.endpoints);
                callee.routes.clone()
            }
            None => {
                clusters::mesh_clusters(svc, opts, out);
                service_routes(svc, Vantage::Mesh, "/", "")
            }
        };
        let domains = domains(&names, &mut used);
        hosts.push(VirtualHost {
            name: svc.key.fqdn(),
            domains,
            routes,
            ..Default::default()
        });
    }
    let domains = domains(&denied, &mut used);
    if !domains.is_empty() {
        hosts.push(VirtualHost {
            name: "access-denied".to_string(),
            domains,
            routes: access_denied(),
            ..Default::default()
        });
    }
    let deny = mesh.namespace_policy(&caller.key.namespace).egress_deny;
    for (i, host) in caller.policy.egress.iter().enumerate() {
        let domains: Vec<String> = egress_domains(host)
            .into_iter()
            .filter(|d| used.insert(d.clone()))
            .collect();
        if domains.is_empty() {
            continue;
        }
        hosts.push(VirtualHost {
            name: format!("egress-{i}|{host}"),
            domains,
            routes: forward(),
            ..Default::default()
        });
    }
    hosts.push(VirtualHost {
        name: "catch-all".to_string(),
        domains: vec!["*".to_string()],
        routes: if deny { blackhole() } else { forward() },
        ..Default::default()
    });
    let egress = !deny || !caller.policy.egress.is_empty();
    let mut filters = Vec::new();
    if egress {
        clusters::egress_cluster(out);
        let cfg = FilterConfig {
            implementation_specifier: Some(filter_config::ImplementationSpecifier::DnsCacheConfig(
                clusters::dns_cache(),
            )),
            ..Default::default()
        };
        filters.push(http_filter(
            "envoy.filters.http.dynamic_forward_proxy",
            any(cfg),
        ));
    }
    out.routes.push(RouteConfiguration {
        name: OUTBOUND.to_string(),
        virtual_hosts: hosts,
        ..Default::default()
    });
    let mut hcm = manager(OUTBOUND, OUTBOUND, filters);
    forward_proxy(&mut hcm);
    out.listeners.push(listener(
        OUTBOUND,
        inst.outbound,
        vec![chain(OUTBOUND, hcm, None, None)],
    ));
}

/// The names a caller may use for `svc`: its FQDN, `NAME.NS.svc`,
/// `NAME.NS`, and the bare name from its own namespace.
fn service_names(svc: &Service, caller: &Service) -> Vec<String> {
    let k = &svc.key;
    let mut names = vec![
        k.fqdn(),
        format!("{}.{}.svc", k.name, k.namespace),
        format!("{}.{}", k.name, k.namespace),
    ];
    if k.namespace == caller.key.namespace {
        names.push(k.name.clone());
    }
    names
}

/// Each name with and without a port, minus those already taken.
fn domains(names: &[String], used: &mut BTreeSet<String>) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| [n.clone(), format!("{n}:*")])
        .filter(|d| used.insert(d.clone()))
        .collect()
}

/// Largest CIDR enumerated into virtual host domains (a /24).
const MAX_CIDR_HOSTS: u32 = 256;

/// `name:PORT` per port, and the bare name when port 80 is allowed (the
/// Host of plain HTTP on 80 has no port). CIDRs up to a /24 are
/// enumerated (HTTP to a bare IP is matched by Host).
fn egress_domains(host: &EgressHost) -> Vec<String> {
    let names: Vec<String> = match host {
        EgressHost::Dns { name, .. } => vec![name.clone()],
        EgressHost::Cidr { net, .. } => {
            let size = 1u64 << (32 - u32::from(net.prefix_len()));
            if size > u64::from(MAX_CIDR_HOSTS) {
                Vec::new()
            } else {
                net.hosts().map(|ip| ip.to_string()).collect()
            }
        }
    };
    let mut out = Vec::new();
    for n in &names {
        for p in host.ports() {
            out.push(format!("{n}:{p}"));
            if *p == 80 {
                out.push(n.clone());
            }
        }
    }
    out
}

fn any_path() -> Option<route_match::PathSpecifier> {
    Some(route_match::PathSpecifier::Prefix("/".to_string()))
}

fn connect() -> Option<route_match::PathSpecifier> {
    Some(route_match::PathSpecifier::ConnectMatcher(
        route_match::ConnectMatcher {},
    ))
}

/// Plain HTTP and CONNECT to the dynamic forward proxy.
fn forward() -> Vec<Route> {
    let to = |upgrade: bool| RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
            EGRESS_CLUSTER.to_string(),
        )),
        timeout: Some(crate::proto::duration(std::time::Duration::ZERO)),
        upgrade_configs: if upgrade {
            vec![route_action::UpgradeConfig {
                upgrade_type: "CONNECT".to_string(),
                connect_config: Some(route_action::upgrade_config::ConnectConfig::default()),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    vec![
        Route {
            name: "connect".to_string(),
            r#match: Some(RouteMatch {
                path_specifier: connect(),
                ..Default::default()
            }),
            action: Some(route::Action::Route(to(true))),
            ..Default::default()
        },
        Route {
            name: "http".to_string(),
            r#match: Some(RouteMatch {
                path_specifier: any_path(),
                ..Default::default()
            }),
            action: Some(route::Action::Route(to(false))),
            ..Default::default()
        },
    ]
}

/// What the callee's RBAC filter answers a caller no rule names: `403`
/// with body `RBAC: access denied` (Envoy's local reply adds
/// `content-type: text/plain`, as it does for RBAC's), for plain HTTP and
/// CONNECT alike.
fn access_denied() -> Vec<Route> {
    local_reply("access-denied", 403, Some(ACCESS_DENIED))
}

/// The body of Envoy's RBAC denial.
const ACCESS_DENIED: &str = "RBAC: access denied";

/// `502` for plain HTTP and CONNECT alike (a refused tunnel).
fn blackhole() -> Vec<Route> {
    local_reply("blackhole", 502, None)
}

/// Routes `NAME-connect` (CONNECT) and `NAME` (any path) answering
/// `status` (with `body`) from Envoy itself.
fn local_reply(name: &str, status: u32, body: Option<&str>) -> Vec<Route> {
    let action = || {
        Some(route::Action::DirectResponse(DirectResponseAction {
            status,
            body: body.map(|b| DataSource {
                specifier: Some(data_source::Specifier::InlineString(b.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    };
    vec![
        Route {
            name: format!("{name}-connect"),
            r#match: Some(RouteMatch {
                path_specifier: connect(),
                ..Default::default()
            }),
            action: action(),
            ..Default::default()
        },
        Route {
            name: name.to_string(),
            r#match: Some(RouteMatch {
                path_specifier: any_path(),
                ..Default::default()
            }),
            action: action(),
            ..Default::default()
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_domains_cover_ports_and_bare_http() {
        let host = EgressHost::Dns {
            name: "*.oss.example.com".to_string(),
            ports: vec![80, 443],
        };
        assert_eq!(
            egress_domains(&host),
            [
                "*.oss.example.com:80",
                "*.oss.example.com",
                "*.oss.example.com:443"
            ]
        );
        let net = EgressHost::Cidr {
            net: "10.0.0.0/30".parse().expect("net"),
            ports: vec![5432],
        };
        assert_eq!(egress_domains(&net), ["10.0.0.1:5432", "10.0.0.2:5432"]);
        let wide = EgressHost::Cidr {
            net: "10.0.0.0/16".parse().expect("net"),
            ports: vec![80],
        };
        assert!(egress_domains(&wide).is_empty());
    }
}
