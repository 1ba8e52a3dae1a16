//! # packlight-istio — the IR rendered as Kubernetes and Istio objects
//!
//! The room where packlight's model becomes Istio configuration. In: the
//! mesh IR ([`packlight_model::ir::Mesh`]) and [`RenderOptions`]. Out:
//! complete Kubernetes objects (`apiVersion`, `kind`, `metadata`, `spec`),
//! sorted by apiVersion, kind, namespace and name: as JSON values
//! ([`render`]), or streamed one typed [`Object`] at a time
//! ([`render_each`]), which serialises straight to JSON or, through
//! [`yaml::YamlWriter`], to YAML without building a value tree.
//!
//! Pure and deterministic: no clock, no I/O, and it never talks to
//! Kubernetes. The operator applies what [`render`] returns (adding owner
//! references, which need UIDs this crate never sees); the CLI prints it.
//! The input is already validated by `packlight-model`; nothing is
//! re-checked here.
//!
//! One module per output family (each emits the objects of the kinds
//! asked for, so the output is produced kind by kind, in order): [`workload`] (Deployment, Service,
//! ServiceAccount), [`route`] (VirtualService, DestinationRule),
//! [`egress`] (ServiceEntry, Sidecar), [`security`] (PeerAuthentication,
//! AuthorizationPolicy, NetworkPolicy), [`ingress`] (Gateway,
//! VirtualService, CUSTOM AuthorizationPolicy), [`filters`] (its
//! EnvoyFilters: CSRF, local rate limit) and
//! [`mod@mesh_config`] (the MeshConfig fragment packlight needs);
//! [`object`] holds the typed objects, [`yaml`] the YAML writer.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use packlight_model::ir::Mesh;
use serde_json::Value;

pub use object::{Kind, Object};

pub mod egress;
pub mod filters;
pub mod ingress;
pub mod mesh_config;
pub mod meta;
pub mod object;
pub mod route;
pub mod security;
pub mod workload;
pub mod yaml;

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
/// namespace and name (so the output is stable and diffable). A thin
/// wrapper over [`render_each`].
pub fn render(mesh: &Mesh, opts: &RenderOptions) -> Vec<Value> {
    let mut out = Vec::new();
    render_each(mesh, opts, |o| out.push(o.to_value()));
    out
}

/// Renders the whole mesh one object at a time, in [`render`]'s order,
/// handing each to `f` and dropping it afterwards: at most one kind's
/// objects exist at once, and nothing is built as a JSON value tree except
/// the few ingress and namespace objects.
pub fn render_each(mesh: &Mesh, opts: &RenderOptions, mut f: impl FnMut(&Object<'_>)) {
    let mut ingress = ingress::objects(mesh, opts);
    for kind in Kind::ALL {
        let mut objects: Vec<Object<'_>> = Vec::new();
        workload::emit(mesh, kind, &mut objects);
        route::emit(mesh, kind, &mut objects);
        egress::emit(mesh, kind, &mut objects);
        security::emit(mesh, opts, kind, &mut objects);
        let (mine, rest): (Vec<_>, Vec<_>) = ingress.into_iter().partition(|o| o.kind() == kind);
        ingress = rest;
        objects.extend(mine);
        // Stable: objects with equal names keep the families' order.
        objects.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
        for o in &objects {
            f(o);
        }
    }
}
