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

use std::borrow::Cow;
use std::collections::BTreeMap;

use packlight_model::ResourceId;
use packlight_model::ir::{EgressGrant, EgressHost, Mesh, Reach, Service};

use crate::Scope;
use crate::meta::{Labels, slug};
use crate::object::{
    EgressHosts, EntryPort, Kind, Object, Pairs, ServiceEntrySpec, SidecarSpec, Spec,
    WorkloadSelector,
};

/// The suffix of the synthetic host of a CIDR entry.
pub const CIDR_HOST_SUFFIX: &str = "cidr.packlight.internal";

/// The egress objects of `kind` (ServiceEntry, Sidecar) in one namespace.
pub(crate) fn emit<'a>(scope: &Scope<'_, 'a>, kind: Kind, out: &mut Vec<Object<'a>>) {
    match kind {
        Kind::ServiceEntry => service_entries(scope.egress, out),
        Kind::Sidecar => sidecars(scope, out),
        _ => {}
    }
}

/// The host a ServiceEntry declares for an entry: the name, or a
/// synthetic name for a network.
pub fn entry_host(h: &EgressHost) -> String {
    match h {
        EgressHost::Dns { name, .. } => name.clone(),
        EgressHost::Cidr { net, .. } => format!("{}.{CIDR_HOST_SUFFIX}", slug(&net.to_string())),
    }
}

fn service_entries<'a>(egress: &[(&'a ResourceId, &'a EgressGrant)], out: &mut Vec<Object<'a>>) {
    // One entry per name (all are in one namespace): the first one wins.
    let mut entries: BTreeMap<String, Object<'a>> = BTreeMap::new();
    for &(id, grant) in egress {
        let mut labels = Labels::managed().source(id);
        if let Some(s) = &grant.service {
            labels = labels.service(&s.name);
        }
        for h in &grant.hosts {
            let ports: Vec<String> = h.ports().iter().map(u16::to_string).collect();
            let name = format!("{}-{}-{}", id.name, slug(&h.to_string()), ports.join("-"));
            if entries.contains_key(&name) {
                continue;
            }
            let spec = match h {
                EgressHost::Dns { .. } => ServiceEntrySpec {
                    addresses: None,
                    export_to: ["."],
                    hosts: [entry_host(h)],
                    location: "MESH_EXTERNAL",
                    ports: h.ports().iter().map(|&p| dns_port(p)).collect(),
                    resolution: if h.is_wildcard() { "NONE" } else { "DNS" },
                },
                EgressHost::Cidr { net, .. } => ServiceEntrySpec {
                    addresses: Some([net.to_string()]),
                    export_to: ["."],
                    hosts: [entry_host(h)],
                    location: "MESH_EXTERNAL",
                    ports: h
                        .ports()
                        .iter()
                        .map(|&p| EntryPort {
                            name: format!("tcp-{p}"),
                            number: p,
                            protocol: "TCP",
                        })
                        .collect(),
                    resolution: "NONE",
                },
            };
            let object = Object::typed(
                Kind::ServiceEntry,
                grant.namespace.as_str(),
                name.clone(),
                labels.clone(),
                Spec::ServiceEntry(spec),
            );
            entries.insert(name, object);
        }
    }
    out.extend(entries.into_values());
}

fn dns_port(p: u16) -> EntryPort {
    if p == 80 {
        EntryPort {
            name: format!("http-{p}"),
            number: p,
            protocol: "HTTP",
        }
    } else {
        EntryPort {
            name: format!("tls-{p}"),
            number: p,
            protocol: "TLS",
        }
    }
}

fn sidecars<'a>(scope: &Scope<'_, 'a>, out: &mut Vec<Object<'a>>) {
    let registry_only = || Pairs([("mode", Cow::Borrowed("REGISTRY_ONLY"))]);
    let Some((ns, policy)) = scope.policy else {
        return;
    };
    if !policy.egress_deny {
        return;
    }
    let mut labels = Labels::managed();
    if let Some(src) = &policy.source {
        labels = labels.source(src);
    }
    out.push(Object::typed(
        Kind::Sidecar,
        ns.as_str(),
        "default",
        labels,
        Spec::Sidecar(SidecarSpec {
            egress: [EgressHosts {
                hosts: vec![
                    "*/*.svc.cluster.local".to_string(),
                    "istio-system/*".to_string(),
                ],
            }],
            outbound_traffic_policy: registry_only(),
            workload_selector: None,
        }),
    ));
    for &svc in scope.services {
        let Some(w) = &svc.workload else { continue };
        let key = &svc.key;
        let labels = Labels::managed().service(&key.name).source(&w.source);
        out.push(Object::typed(
            Kind::Sidecar,
            ns.as_str(),
            key.name.as_str(),
            labels,
            Spec::Sidecar(SidecarSpec {
                egress: [EgressHosts {
                    hosts: egress_hosts(scope.mesh, svc),
                }],
                outbound_traffic_policy: registry_only(),
                workload_selector: Some(WorkloadSelector {
                    labels: Pairs([("app", Cow::Borrowed(key.name.as_str()))]),
                }),
            }),
        ));
    }
}

/// A workload's Sidecar egress hosts, sorted: whole namespaces it may
/// call (`NS/*.svc.cluster.local`, so other workloads' ServiceEntries there
/// stay hidden), single services (`NS/fqdn`), `istio-system/*`, and its
/// own whitelist (`./host`, visible through `exportTo: ["."]`). `svc` is
/// one of `mesh`'s services. Under `access: deny` with AccessPolicies a
/// workload reaches every namespace that has one, so the list grows with
/// the mesh's namespaces: it is gathered in namespace order, nearly the
/// hosts' order, and sorted once (a merge of a few runs), not inserted
/// into a tree host by host.
pub fn egress_hosts(mesh: &Mesh, svc: &Service) -> Vec<String> {
    let mut hosts = Vec::new();
    for (ns, reach) in mesh.reach_of(svc) {
        match reach {
            Reach::All => hosts.push(format!("{ns}/*.svc.cluster.local")),
            Reach::Some(keys) => hosts.extend(
                keys.iter()
                    .map(|k| format!("{ns}/{}.{}.svc.cluster.local", k.name, k.namespace)),
            ),
        }
    }
    hosts.push("istio-system/*".to_string());
    hosts.extend(
        svc.policy
            .egress
            .iter()
            .map(|h| format!("./{}", entry_host(h))),
    );
    hosts.sort();
    hosts.dedup();
    hosts
}
