//! The policies page: per cluster, who may call whom (AccessPolicy and the
//! namespace default of MeshPolicy), each workload's egress whitelist, and
//! the ingress settings, all as the model resolved them (the same IR both
//! engines translate).

use std::sync::Arc;

use axum::extract::State;
use maud::{Markup, html};
use packlight_model::ir::{Mesh, ServiceKey};

use crate::Console;
use crate::cluster::Snapshot;
use crate::pages::{layout, yaml_link};

fn key(k: &ServiceKey) -> String {
    format!("{}/{}", k.namespace, k.name)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The resolved mesh of a snapshot (every accepted resource).
pub fn mesh_of(snap: &Snapshot) -> Mesh {
    let store = crate::edit::store_text(snap, ("", "", ""));
    let (model, _) = packlight_model::load(&[(Some("store"), store.as_str())], "default");
    model.mesh
}

/// One cluster's policies; `cluster` is its index (for the links to each
/// policy's YAML editor).
pub fn cluster_policies(cluster: usize, snap: &Snapshot) -> Markup {
    if !snap.is_up() {
        return html! { p.error { (snap.cluster) " is down" } };
    }
    let mesh = mesh_of(snap);
    html! {
        h2 { (snap.cluster) }
        h3 { "Access: who may call each service" }
        table.access {
            thead { tr { th { "service" } th { "callers allowed" } th { "from" } } }
            tbody { @for (k, s) in &mesh.services {
                tr.access data-service=(key(k)) {
                    td { (key(k)) }
                    td { @match &s.policy.access {
                        None => {
                            "namespace default: "
                            @match mesh.namespaces.get(&k.namespace) {
                                Some(n) => { code { (json(n)) } }
                                None => { "allow (no MeshPolicy)" }
                            }
                        }
                        Some(rules) => { ul { @for r in rules { li {
                            (r.from.iter().map(key).collect::<Vec<_>>().join(", "))
                            @if r.ingress { @if !r.from.is_empty() { ", " } "the ingress gateway" }
                            @if !r.methods.is_empty() { " methods " (r.methods.join(",")) }
                            @if !r.paths.is_empty() { " paths " (r.paths.join(",")) }
                        } } } }
                    } }
                    td { (s.policy.access_sources.iter().map(|r| format!("AccessPolicy {}/{}", r.namespace, r.name)).collect::<Vec<_>>().join(", ")) }
                }
            } }
        }
        h3 { "Egress whitelist per workload" }
        table.egress {
            tbody { @for (k, s) in &mesh.services { @if s.workload.is_some() {
                tr { td { (key(k)) } td { @if s.policy.egress.is_empty() { "none" } @else { code { (json(&s.policy.egress)) } } } }
            } } }
        }
        h3 { "Policy resources" }
        ul.policy-resources {
            @for (plural, kind) in packlight_client::KINDS { @if plural.ends_with("policies") {
                @for o in snap.list(plural) {
                    @let (ns, name) = crate::cluster::ns_name(o);
                    li { (kind) " " (ns) "/" (name) " " (yaml_link(cluster, plural, ns, name)) }
                }
            } }
        }
        h3 { "Ingress" }
        @for (id, ing) in &mesh.ingresses {
            div.ingress {
                b { "IngressPolicy " (id.namespace) "/" (id.name) } ": hosts " (ing.hosts.join(", "))
                ul {
                    li { "routes: " code { (json(&ing.routes)) } }
                    li { "CORS: " code { (json(&ing.cors)) } }
                    li { "CSRF: " code { (json(&ing.csrf)) } }
                    li { "login: " code { (json(&ing.login)) } }
                    li { "rate limit: " code { (json(&ing.rate_limit)) } }
                }
            }
        }
    }
}

/// `GET /policies`.
pub async fn page(State(console): State<Arc<Console>>) -> Markup {
    let snaps = crate::server::snapshots(&console).await;
    let names: Vec<String> = snaps.iter().map(|s| s.cluster.clone()).collect();
    layout(
        &console.csrf,
        "Policies",
        &names,
        html! { @for (i, s) in snaps.iter().enumerate() { (cluster_policies(i, s)) } },
    )
}
