//! The sidecar's inbound side: a listener on the instance's inbound
//! address, mTLS (required under `mtls: strict`; plain text accepted too
//! under permissive, on a second filter chain), the RBAC filter from the
//! callee's access policy, then the local app `inbound|PORT||`.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::rbac::v3::{Permission, principal::Authenticated};
use envoy_types::pb::envoy::config::rbac::v3::{
    Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, header_matcher,
    route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, path_matcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::Any;
use packlight_model::ir::{AccessRule, Mesh, Service};
use prost::Message;

use crate::hcm::{chain, http_filter, listener, manager};
use crate::names::{self, INBOUND};
use crate::proto::{any, exact, regex, string_matcher};
use crate::{Instance, ProxyConfig, XdsOptions, clusters, tls};

/// Adds the inbound listener, route configuration and app cluster.
pub fn render(
    mesh: &Mesh,
    svc: &Service,
    inst: &Instance,
    opts: &XdsOptions,
    out: &mut ProxyConfig,
) {
    clusters::inbound_cluster(svc, inst.app, out);
    let port = svc.port().unwrap_or(inst.app.port());
    out.routes.push(RouteConfiguration {
        name: INBOUND.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: INBOUND.to_string(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "app".to_string(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        names::inbound_cluster(port),
                    )),
                    // The caller's route carries the timeout.
                    timeout: Some(crate::proto::duration(std::time::Duration::ZERO)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    let policy = mesh.namespace_policy(&svc.key.namespace);
    let rules = match &svc.policy.access {
        Some(rules) => Some(allow(rules, opts)),
        // Deny by default: ALLOW with no policy denies every request.
        None if policy.access_deny => Some(HashMap::new()),
        None => None,
    };
    let filters = || {
        rules
            .iter()
            .map(|policies| http_filter("envoy.filters.http.rbac", allow_filter(policies)))
            .collect::<Vec<_>>()
    };
    let mut chains = vec![chain(
        "mtls",
        manager(INBOUND, INBOUND, filters()),
        Some(tls::downstream(opts)),
        (!policy.mtls_strict).then_some("tls"),
    )];
    if !policy.mtls_strict {
        chains.push(chain(
            "plaintext",
            manager(INBOUND, INBOUND, filters()),
            None,
            Some("raw_buffer"),
        ));
    }
    out.listeners.push(listener(INBOUND, inst.inbound, chains));
}

/// The RBAC filter's config (action ALLOW) packed with its policies in
/// name order. prost writes a map in `HashMap` order, which differs from
/// one translation to the next: the inbound listener's bytes changed at
/// every push, so the xDS server re-sent it (and Envoy drained its
/// connections) although nothing in it changed. Protobuf merges repeated
/// occurrences of a message field and accumulates map entries, so the
/// base message followed by one message per policy, in order, decodes to
/// the same config.
fn allow_filter(policies: &HashMap<String, Policy>) -> Any {
    let base = Rbac {
        rules: Some(RbacRules {
            action: rbac::Action::Allow as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut packed = any(base);
    let mut names: Vec<&String> = policies.keys().collect();
    names.sort();
    for name in names {
        let one = Rbac {
            rules: Some(RbacRules {
                policies: HashMap::from([(name.clone(), policies[name].clone())]),
                ..Default::default()
            }),
            ..Default::default()
        };
        one.encode_raw(&mut packed.value);
    }
    packed
}

fn or_ids(ids: Vec<Principal>) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    }
}

fn or_rules(rules: Vec<Permission>) -> Permission {
    Permission {
        rule: Some(permission::Rule::OrRules(permission::Set { rules })),
    }
}

/// One RBAC policy per AccessPolicy rule (`rule-N`).
fn allow(rules: &[AccessRule], opts: &XdsOptions) -> HashMap<String, Policy> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut ids: Vec<String> = r
                .from
                .iter()
                .map(|k| names::spiffe_id(&opts.trust_domain, k))
                .collect();
            if r.ingress {
                ids.push(names::ingress_spiffe_id(&opts.trust_domain));
            }
            let principals = ids
                .iter()
                .map(|id| Principal {
                    identifier: Some(principal::Identifier::Authenticated(Authenticated {
                        principal_name: Some(exact(id)),
                    })),
                })
                .collect();
            let mut and = Vec::new();
            if !r.methods.is_empty() {
                and.push(or_rules(
                    r.methods
                        .iter()
                        .map(|m| Permission {
                            rule: Some(permission::Rule::Header(HeaderMatcher {
                                name: ":method".to_string(),
                                header_match_specifier: Some(
                                    header_matcher::HeaderMatchSpecifier::StringMatch(exact(m)),
                                ),
                                ..Default::default()
                            })),
                        })
                        .collect(),
                ));
            }
            if !r.paths.is_empty() {
                and.push(or_rules(
                    r.paths.iter().map(|p| path_permission(p)).collect(),
                ));
            }
            let permission = if and.is_empty() {
                Permission {
                    rule: Some(permission::Rule::Any(true)),
                }
            } else {
                Permission {
                    rule: Some(permission::Rule::AndRules(permission::Set { rules: and })),
                }
            };
            let policy = Policy {
                permissions: vec![permission],
                principals: vec![or_ids(principals)],
                ..Default::default()
            };
            (format!("rule-{i}"), policy)
        })
        .collect()
}

/// Istio path syntax: exact, `/prefix/*`, `*suffix`, `*`.
fn path_permission(p: &str) -> Permission {
    let pattern = if p == "*" {
        MatchPattern::SafeRegex(regex(".*"))
    } else if let Some(prefix) = p.strip_suffix('*') {
        MatchPattern::Prefix(prefix.to_string())
    } else if let Some(suffix) = p.strip_prefix('*') {
        MatchPattern::Suffix(suffix.to_string())
    } else {
        MatchPattern::Exact(p.to_string())
    };
    Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(string_matcher(pattern))),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> MatchPattern {
        let Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(m)),
        })) = path_permission(p).rule
        else {
            panic!("not a path rule")
        };
        m.match_pattern.expect("pattern")
    }

    #[test]
    fn istio_path_syntax() {
        assert_eq!(pattern("/get"), MatchPattern::Exact("/get".into()));
        assert_eq!(
            pattern("/status/*"),
            MatchPattern::Prefix("/status/".into())
        );
        assert_eq!(pattern("*.json"), MatchPattern::Suffix(".json".into()));
        assert!(matches!(pattern("*"), MatchPattern::SafeRegex(_)));
    }
}
