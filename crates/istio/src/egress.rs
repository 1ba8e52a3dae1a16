//! EgressPolicy -> ServiceEntries (`exportTo: ["."]`, one per whitelisted
//! host), and under `egress: deny` the namespace's Sidecars: one
//! selector-less `default` (mesh hosts only, for workloads packlight does
//! not know) and one merged Sidecar per known workload, named after its
//! service, whose egress hosts are the services it may call,
//! `istio-system/*` and exactly its own whitelist. REGISTRY_ONLY is per
//! namespace through these Sidecars, never mesh-wide.
//!
//! Protocols: a DNS entry's port 80 is `HTTP` (matched by Host); every
//! other port is `TLS` (matched by SNI: HTTPS on 443, 8443, ...). Plain
//! TCP to a DNS name on another port is not expressible (SNI-less TCP
//! cannot be told apart by name): whitelist its addresses as a CIDR
//! entry instead, which is `TCP` on every port, matched by address.

use std::collections::{BTreeMap, BTreeSet};

use packlight_model::ir::{EgressHost, Mesh, Service, ServiceKey};
use serde_json::{Value, json};

use crate::meta::{Labels, NETWORKING, object, slug};

/// The suffix of the synthetic host of a CIDR entry.
pub const CIDR_HOST_SUFFIX: &str = "cidr.packlight.internal";

/// ServiceEntries and Sidecars.
pub fn render(mesh: &Mesh) -> Vec<Value> {
    let mut out = service_entries(mesh);
    out.extend(sidecars(mesh));
    out
}

/// The host a ServiceEntry declares for an entry: the name, or a
/// synthetic name for a network.
pub fn entry_host(h: &EgressHost) -> String {
    match h {
        EgressHost::Dns { name, .. } => name.clone(),
        EgressHost::Cidr { net, .. } => format!("{}.{CIDR_HOST_SUFFIX}", slug(&net.to_string())),
    }
}

fn service_entries(mesh: &Mesh) -> Vec<Value> {
    let mut out: BTreeMap<(String, String), Value> = BTreeMap::new();
    for (id, grant) in &mesh.egress {
        let mut labels = Labels::managed().source(id);
        if let Some(s) = &grant.service {
            labels = labels.service(&s.name);
        }
        for h in &grant.hosts {
            let ports: Vec<String> = h.ports().iter().map(u16::to_string).collect();
            let name = format!("{}-{}-{}", id.name, slug(&h.to_string()), ports.join("-"));
            let spec = match h {
                EgressHost::Dns { .. } => json!({
                    "hosts": [entry_host(h)],
                    "exportTo": ["."],
                    "location": "MESH_EXTERNAL",
                    "resolution": if h.is_wildcard() { "NONE" } else { "DNS" },
                    "ports": h.ports().iter().map(|&p| dns_port(p)).collect::<Vec<_>>(),
                }),
                EgressHost::Cidr { net, .. } => json!({
                    "hosts": [entry_host(h)],
                    "addresses": [net.to_string()],
                    "exportTo": ["."],
                    "location": "MESH_EXTERNAL",
                    "resolution": "NONE",
                    "ports": h.ports().iter().map(|&p| json!({"number": p, "name": format!("tcp-{p}"), "protocol": "TCP"})).collect::<Vec<_>>(),
                }),
            };
            out.entry((grant.namespace.clone(), name.clone()))
                .or_insert_with(|| {
                    object(
                        NETWORKING,
                        "ServiceEntry",
                        &grant.namespace,
                        &name,
                        &labels,
                        spec,
                    )
                });
        }
    }
    out.into_values().collect()
}

fn dns_port(p: u16) -> Value {
    if p == 80 {
        json!({"number": p, "name": format!("http-{p}"), "protocol": "HTTP"})
    } else {
        json!({"number": p, "name": format!("tls-{p}"), "protocol": "TLS"})
    }
}

fn sidecars(mesh: &Mesh) -> Vec<Value> {
    let mut out = Vec::new();
    for (ns, policy) in &mesh.namespaces {
        if !policy.egress_deny {
            continue;
        }
        let mut labels = Labels::managed();
        if let Some(src) = &policy.source {
            labels = labels.source(src);
        }
        out.push(object(
            NETWORKING,
            "Sidecar",
            ns,
            "default",
            &labels,
            json!({
                "egress": [{"hosts": ["*/*.svc.cluster.local", "istio-system/*"]}],
                "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            }),
        ));
        let workloads = mesh
            .services
            .range(ServiceKey::new(ns.clone(), String::new())..);
        for (key, svc) in workloads.take_while(|(k, _)| k.namespace == *ns) {
            let Some(w) = &svc.workload else { continue };
            let labels = Labels::managed().service(&key.name).source(&w.source);
            out.push(object(
                NETWORKING,
                "Sidecar",
                ns,
                &key.name,
                &labels,
                json!({
                    "workloadSelector": {"labels": {"app": key.name}},
                    "egress": [{"hosts": egress_hosts(mesh, svc)}],
                    "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
                }),
            ));
        }
    }
    out
}

/// A workload's Sidecar egress hosts: whole namespaces it may call
/// (`NS/*.svc.cluster.local`, so other workloads' ServiceEntries there
/// stay hidden), single services (`NS/fqdn`), `istio-system/*`, and its
/// own whitelist (`./host`, visible through `exportTo: ["."]`).
pub fn egress_hosts(mesh: &Mesh, svc: &Service) -> Vec<String> {
    let mut hosts = BTreeSet::new();
    for (ns, reach) in mesh.reach(&svc.key) {
        match reach {
            None => {
                hosts.insert(format!("{ns}/*.svc.cluster.local"));
            }
            Some(set) => hosts.extend(set.iter().map(|k| format!("{ns}/{}", k.fqdn()))),
        }
    }
    hosts.insert("istio-system/*".to_string());
    hosts.extend(
        svc.policy
            .egress
            .iter()
            .map(|h| format!("./{}", entry_host(h))),
    );
    hosts.into_iter().collect()
}
