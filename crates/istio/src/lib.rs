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

use packlight_model::ir::{Mesh, Service};
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
/// handing each to `f` and dropping it afterwards: at most two kinds'
/// objects exist at once, and nothing is built as a JSON value tree except
/// the few ingress and namespace objects.
///
/// A large mesh is rendered a kind ahead on a second thread while `f`
/// takes the previous kind (at 10,000 services building the objects and
/// writing them as YAML cost about the same, docs/benchmarks.md); the
/// objects and their order are the same either way.
pub fn render_each(mesh: &Mesh, opts: &RenderOptions, f: impl FnMut(&Object<'_>)) {
    render_each_except(mesh, opts, &|_| false, f);
}

/// The kinds whose objects are made from one service alone (its
/// Microservice and Route: [`workload`] and [`route`]), whatever the rest
/// of the mesh and the [`RenderOptions`] are.
pub const PER_SERVICE_KINDS: [Kind; 5] = [
    Kind::Deployment,
    Kind::DestinationRule,
    Kind::VirtualService,
    Kind::Service,
    Kind::ServiceAccount,
];

/// [`render_each`] without the [`PER_SERVICE_KINDS`] objects of the
/// services `skip` picks: a caller that kept what an equal service was
/// rendered to (the operator, between two builds) renders only what may
/// have changed. Every other object, including the ingress gateway's
/// VirtualServices, which read the Routes of several services, is
/// rendered as always, in the same order.
pub fn render_each_except(
    mesh: &Mesh,
    opts: &RenderOptions,
    skip: &(dyn Fn(&Service) -> bool + Sync),
    f: impl FnMut(&Object<'_>),
) {
    // What decides is the work left: a mesh whose services are mostly
    // skipped renders faster on one thread than handing kinds over.
    let pipelined = mesh.services.values().filter(|s| !skip(s)).count() >= PIPELINE_MIN_SERVICES;
    render_kinds(mesh, opts, skip, pipelined, f);
}

/// Meshes smaller than this are rendered on the calling thread alone.
const PIPELINE_MIN_SERVICES: usize = 1000;

/// [`render_each`], with the second thread or without.
fn render_kinds(
    mesh: &Mesh,
    opts: &RenderOptions,
    skip: &(dyn Fn(&Service) -> bool + Sync),
    pipelined: bool,
    mut f: impl FnMut(&Object<'_>),
) {
    let mut kinds = Kinds::new(mesh, opts, skip);
    if !pipelined {
        while let Some(objects) = kinds.next_kind() {
            objects.iter().for_each(&mut f);
        }
        return;
    }
    std::thread::scope(|s| {
        // The renderer hands over each kind as it is done and goes on
        // with the next while this thread writes: kinds differ in cost
        // (three Deployments per service, one PeerAuthentication per
        // namespace), so it is never made to wait. When this thread
        // cannot write (stdout not read), the renderer may finish every
        // kind before it: at 10,000 services that is 255 MB peak instead
        // of about 205 (docs/benchmarks.md).
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Object<'_>>>();
        let renderer = std::thread::Builder::new().spawn_scoped(s, move || {
            while let Some(objects) = kinds.next_kind() {
                if tx.send(objects).is_err() {
                    return;
                }
            }
        });
        match renderer {
            Ok(_) => {
                for objects in rx {
                    objects.iter().for_each(&mut f);
                }
            }
            // No thread to be had: the renderer (moved into the closure
            // that failed to start) is rebuilt here and run in turn.
            Err(_) => {
                let mut kinds = Kinds::new(mesh, opts, skip);
                while let Some(objects) = kinds.next_kind() {
                    objects.iter().for_each(&mut f);
                }
            }
        }
    });
}

/// The objects of each kind in turn, sorted.
struct Kinds<'a> {
    mesh: &'a Mesh,
    opts: &'a RenderOptions,
    skip: &'a (dyn Fn(&Service) -> bool + Sync),
    ingress: Vec<Object<'a>>,
    next: usize,
}

impl<'a> Kinds<'a> {
    fn new(
        mesh: &'a Mesh,
        opts: &'a RenderOptions,
        skip: &'a (dyn Fn(&Service) -> bool + Sync),
    ) -> Self {
        Kinds {
            mesh,
            opts,
            skip,
            ingress: ingress::objects(mesh, opts),
            next: 0,
        }
    }

    fn next_kind(&mut self) -> Option<Vec<Object<'a>>> {
        let kind = *Kind::ALL.get(self.next)?;
        self.next += 1;
        let (mesh, opts) = (self.mesh, self.opts);
        let mut objects: Vec<Object<'a>> = Vec::new();
        workload::emit(mesh, kind, self.skip, &mut objects);
        route::emit(mesh, kind, self.skip, &mut objects);
        egress::emit(mesh, kind, &mut objects);
        security::emit(mesh, opts, kind, &mut objects);
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ingress)
            .into_iter()
            .partition(|o| o.kind() == kind);
        self.ingress = rest;
        objects.extend(mine);
        // Stable: objects with equal names keep the families' order.
        objects.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
        Some(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object, in order, as JSON text.
    fn rendered(mesh: &Mesh, pipelined: bool) -> Vec<String> {
        let mut out = Vec::new();
        render_kinds(
            mesh,
            &RenderOptions::default(),
            &|_| false,
            pipelined,
            |o| {
                out.push(serde_json::to_string(o).expect("plain data"));
            },
        );
        out
    }

    #[test]
    fn the_second_thread_renders_the_same_objects_in_the_same_order() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut inputs = 0;
        for dir in ["examples", "tests/golden/inputs"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("inputs") {
                let path = entry.expect("entry").path();
                if path.extension().is_none_or(|x| x != "yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("input");
                let (model, _) = packlight_model::load(&[(None, &text)], "default");
                let alone = rendered(&model.mesh, false);
                assert!(!alone.is_empty() || model.has_errors(), "{path:?}");
                assert_eq!(rendered(&model.mesh, true), alone, "{path:?}");
                inputs += 1;
            }
        }
        assert!(inputs > 10, "{inputs}");
    }
}
