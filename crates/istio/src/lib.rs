//! # packlight-istio — the IR rendered as Kubernetes and Istio objects
//!
//! The room where packlight's model becomes Istio configuration. In: the
//! mesh IR ([`packlight_model::ir::Mesh`]) and [`RenderOptions`]. Out:
//! complete Kubernetes objects as JSON values (`apiVersion`, `kind`,
//! `metadata`, `spec`), sorted by apiVersion, kind, namespace and name.
//!
//! Pure and deterministic: no clock, no I/O, and it never talks to
//! Kubernetes. The operator applies what [`render`] returns (adding owner
//! references, which need UIDs this crate never sees); the CLI prints it.
//! The input is already validated by `packlight-model`; nothing is
//! re-checked here.
//!
//! One module per output family: [`workload`] (Deployment, Service,
//! ServiceAccount), [`route`] (VirtualService, DestinationRule),
//! [`egress`] (ServiceEntry, Sidecar), [`security`] (PeerAuthentication,
//! AuthorizationPolicy, NetworkPolicy), [`ingress`] (Gateway,
//! VirtualService, CUSTOM AuthorizationPolicy), [`filters`] (its
//! EnvoyFilters: CSRF, local rate limit) and
//! [`mod@mesh_config`] (the MeshConfig fragment packlight needs).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use packlight_model::ir::Mesh;
use serde_json::Value;

pub mod egress;
pub mod filters;
pub mod ingress;
pub mod mesh_config;
pub mod meta;
pub mod route;
pub mod security;
pub mod workload;

pub use mesh_config::mesh_config;

/// What the cluster around the mesh looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// Where the ingress gateway runs (Gateway, EnvoyFilter and the login
    /// AuthorizationPolicy go there). Default `istio-system`.
    pub gateway_namespace: String,
    /// The ingress gateway pods' labels. Default `istio: ingressgateway`.
    pub gateway_selector: BTreeMap<String, String>,
    /// The gateway's identity, allowed by `ingress: true`. Default
    /// `cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account`.
    pub ingress_principal: String,
    /// The name of the ext_authz extension provider of the login service
    /// in MeshConfig. Default `packlight-login`.
    pub login_provider: String,
    /// The login service's host. Default
    /// `packlight-login.packlight-system.svc.cluster.local`.
    pub login_service: String,
    /// The login service's port. Default 8080.
    pub login_port: u16,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            gateway_namespace: "istio-system".into(),
            gateway_selector: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            ingress_principal:
                "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account".into(),
            login_provider: "packlight-login".into(),
            login_service: "packlight-login.packlight-system.svc.cluster.local".into(),
            login_port: 8080,
        }
    }
}

/// Renders the whole mesh: every object, sorted by apiVersion, kind,
/// namespace and name (so the output is stable and diffable).
pub fn render(mesh: &Mesh, opts: &RenderOptions) -> Vec<Value> {
    let mut out = Vec::new();
    out.extend(workload::render(mesh));
    out.extend(route::render(mesh));
    out.extend(egress::render(mesh));
    out.extend(security::render(mesh, opts));
    out.extend(ingress::render(mesh, opts));
    out.sort_by_cached_key(meta::sort_key);
    out
}
