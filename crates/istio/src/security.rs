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

use packlight_model::ir::{AccessRule, Mesh, Service};
use serde_json::{Value, json};

use crate::RenderOptions;
use crate::meta::{Labels, SECURITY, object};

/// Namespace defaults and access policies.
pub fn render(mesh: &Mesh, opts: &RenderOptions) -> Vec<Value> {
    let mut out = Vec::new();
    for (ns, policy) in &mesh.namespaces {
        let mut labels = Labels::managed();
        if let Some(src) = &policy.source {
            labels = labels.source(src);
        }
        if policy.mtls_strict {
            out.push(object(
                SECURITY,
                "PeerAuthentication",
                ns,
                "default",
                &labels,
                json!({"mtls": {"mode": "STRICT"}}),
            ));
        }
        if policy.access_deny {
            out.push(object(
                SECURITY,
                "AuthorizationPolicy",
                ns,
                "deny-all",
                &labels,
                json!({}),
            ));
            let workloads = mesh
                .services
                .values()
                .filter(|s| s.key.namespace == *ns && s.workload.is_some());
            for svc in workloads {
                let labels = labels.clone().service(&svc.key.name);
                out.push(network_policy(svc, &labels, opts));
            }
        }
    }
    for svc in mesh.services.values() {
        let Some(rules) = &svc.policy.access else {
            continue;
        };
        let labels = Labels::managed()
            .service(&svc.key.name)
            .single_source(&svc.policy.access_sources);
        let rules: Vec<Value> = rules.iter().map(|r| allow_rule(r, opts)).collect();
        out.push(object(
            SECURITY,
            "AuthorizationPolicy",
            &svc.key.namespace,
            &svc.key.name,
            &labels,
            json!({
                "selector": {"matchLabels": {"app": svc.key.name}},
                "action": "ALLOW",
                "rules": rules,
            }),
        ));
    }
    out
}

fn allow_rule(rule: &AccessRule, opts: &RenderOptions) -> Value {
    let mut principals: Vec<String> = rule.from.iter().map(|k| k.principal()).collect();
    if rule.ingress {
        principals.push(opts.ingress_principal.clone());
    }
    let mut r = json!({"from": [{"source": {"principals": principals}}]});
    let mut op = serde_json::Map::new();
    if !rule.methods.is_empty() {
        op.insert("methods".into(), json!(rule.methods));
    }
    if !rule.paths.is_empty() {
        op.insert("paths".into(), json!(rule.paths));
    }
    if !op.is_empty() {
        r["to"] = json!([{"operation": op}]);
    }
    r
}

fn network_policy(svc: &Service, labels: &Labels, opts: &RenderOptions) -> Value {
    object(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        &svc.key.namespace,
        &svc.key.name,
        labels,
        json!({
            "podSelector": {"matchLabels": {"app": svc.key.name}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [
                {"namespaceSelector": {}, "podSelector": {"matchLabels": {"sidecar.istio.io/inject": "true"}}},
                {"namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": opts.gateway_namespace}}},
            ]}],
        }),
    )
}
