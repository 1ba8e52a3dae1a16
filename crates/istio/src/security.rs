//! MeshPolicy and AccessPolicy -> PeerAuthentication `default` (STRICT),
//! AuthorizationPolicy `deny-all` (`spec: {}`), a NetworkPolicy per known
//! workload, and an ALLOW AuthorizationPolicy per callee.
//!
//! NetworkPolicies are rendered under `access: deny` (the zero-trust
//! namespace), one per workload packlight knows, named after its service.
//! They admit ingress from (a) pods labelled `sidecar.istio.io/inject:
//! "true"` in any namespace (packlight's own workloads), (b) any pod of a
//! namespace labelled `istio-injection: enabled`, and (c) any pod of the
//! ingress gateway's namespace. They are a second layer for pods Istio
//! does not control, enforced only where the CNI implements NetworkPolicy.

use std::borrow::Cow;

use packlight_model::ir::{AccessRule, Service};
use serde_json::json;

use crate::meta::Labels;
use crate::object::{
    AllowPolicySpec, AllowRule, Empty, Kind, MatchLabels, NamespaceSelector, NetworkPolicySpec,
    Object, Operation, Pairs, Peer, PeersFrom, Source, Spec,
};
use crate::{RenderOptions, Scope};

/// The namespace defaults and access objects of `kind`
/// (PeerAuthentication, AuthorizationPolicy, NetworkPolicy) in one
/// namespace.
pub(crate) fn emit<'a>(
    scope: &Scope<'_, 'a>,
    opts: &'a RenderOptions,
    kind: Kind,
    out: &mut Vec<Object<'a>>,
) {
    if !matches!(
        kind,
        Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::NetworkPolicy
    ) {
        return;
    }
    if let Some((ns, policy)) = scope.policy {
        let mut labels = Labels::managed();
        if let Some(src) = &policy.source {
            labels = labels.source(src);
        }
        if policy.mtls_strict && kind == Kind::PeerAuthentication {
            out.push(Object::typed(
                kind,
                ns.as_str(),
                "default",
                labels.clone(),
                Spec::Value(json!({"mtls": {"mode": "STRICT"}})),
            ));
        }
        if policy.access_deny {
            if kind == Kind::AuthorizationPolicy {
                out.push(Object::typed(
                    kind,
                    ns.as_str(),
                    "deny-all",
                    labels.clone(),
                    Spec::Empty(Empty),
                ));
            }
            if kind == Kind::NetworkPolicy {
                for &svc in scope.services.iter().filter(|s| s.workload.is_some()) {
                    let labels = labels.clone().service(&svc.key.name);
                    out.push(network_policy(svc, labels, opts));
                }
            }
        }
    }
    if kind != Kind::AuthorizationPolicy {
        return;
    }
    for &svc in scope.services {
        let Some(rules) = &svc.policy.access else {
            continue;
        };
        let labels = Labels::managed()
            .service(&svc.key.name)
            .single_source(&svc.policy.access_sources);
        let rules = rules.iter().map(|r| allow_rule(r, opts)).collect();
        out.push(Object::typed(
            kind,
            svc.key.namespace.as_str(),
            svc.key.name.as_str(),
            labels,
            Spec::AuthorizationPolicy(AllowPolicySpec {
                action: "ALLOW",
                rules,
                selector: MatchLabels {
                    match_labels: Pairs([("app", Cow::Borrowed(svc.key.name.as_str()))]),
                },
            }),
        ));
    }
}

fn allow_rule<'a>(rule: &'a AccessRule, opts: &RenderOptions) -> AllowRule<'a> {
    let mut principals: Vec<String> = rule.from.iter().map(|k| k.principal()).collect();
    if rule.ingress {
        principals.push(opts.ingress_principal.clone());
    }
    let to = (!rule.methods.is_empty() || !rule.paths.is_empty()).then_some([Operation {
        methods: &rule.methods,
        paths: &rule.paths,
    }]);
    AllowRule {
        from: [Source { principals }],
        to,
    }
}

fn network_policy<'a>(svc: &'a Service, labels: Labels<'a>, opts: &'a RenderOptions) -> Object<'a> {
    let one = |k: &'static str, v: &'a str| MatchLabels {
        match_labels: Pairs([(k, Cow::Borrowed(v))]),
    };
    Object::typed(
        Kind::NetworkPolicy,
        svc.key.namespace.as_str(),
        svc.key.name.as_str(),
        labels,
        Spec::NetworkPolicy(NetworkPolicySpec {
            ingress: [PeersFrom {
                from: [
                    Peer {
                        namespace_selector: NamespaceSelector::Any(Empty),
                        pod_selector: Some(one("sidecar.istio.io/inject", "true")),
                    },
                    Peer {
                        namespace_selector: NamespaceSelector::Labels(one(
                            "istio-injection",
                            "enabled",
                        )),
                        pod_selector: None,
                    },
                    Peer {
                        namespace_selector: NamespaceSelector::Labels(one(
                            "kubernetes.io/metadata.name",
                            &opts.gateway_namespace,
                        )),
                        pod_selector: None,
                    },
                ],
            }],
            pod_selector: one("app", &svc.key.name),
            policy_types: ["Ingress"],
        }),
    )
}
