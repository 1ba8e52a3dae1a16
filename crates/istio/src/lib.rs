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
//! One module per output family (each emits the objects of the kind
//! asked for in the namespace asked for, so the output is produced kind
//! by kind and namespace by namespace, in order): [`workload`] (Deployment, Service,
//! ServiceAccount), [`route`] (VirtualService, DestinationRule),
//! [`egress`] (ServiceEntry, Sidecar), [`security`] (PeerAuthentication,
//! AuthorizationPolicy, NetworkPolicy), [`ingress`] (Gateway,
//! VirtualService, CUSTOM AuthorizationPolicy), [`filters`] (its
//! EnvoyFilters: CSRF, local rate limit) and
//! [`mod@mesh_config`] (the MeshConfig fragment packlight needs);
//! [`object`] holds the typed objects, [`yaml`] the YAML writer.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use packlight_model::ResourceId;
use packlight_model::ir::{EgressGrant, Mesh, NamespacePolicy, Service};
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
/// handing each to `f` and dropping it afterwards. Objects are made one
/// kind and one namespace at a time, so what exists at once is bounded by
/// the largest namespace, and nothing is built as a JSON value tree
/// except the few ingress and namespace objects.
///
/// A large mesh is rendered ahead on a second thread while `f` takes what
/// is done (at 10,000 services building the objects and writing them as
/// YAML cost about the same, docs/benchmarks.md); the objects and their
/// order are the same either way.
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

/// How many batches (a kind's objects in one namespace) the renderer may
/// be ahead of the writer.
const HANDOVER_BATCHES: usize = 8;

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
        while let Some(objects) = kinds.next_batch() {
            objects.iter().for_each(&mut f);
        }
        return;
    }
    std::thread::scope(|s| {
        // The renderer hands over each namespace's objects of a kind as
        // they are done and goes on with the next while this thread
        // writes. Batches differ in cost (three Deployments per service,
        // one PeerAuthentication per namespace), so a few may wait to be
        // written; beyond that the renderer waits, and a writer that
        // cannot write (stdout not read) never has the whole mesh's
        // objects piling up behind it.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Object<'_>>>(HANDOVER_BATCHES);
        let renderer = std::thread::Builder::new().spawn_scoped(s, move || {
            while let Some(objects) = kinds.next_batch() {
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
                while let Some(objects) = kinds.next_batch() {
                    objects.iter().for_each(&mut f);
                }
            }
        }
    });
}

/// One namespace of the mesh: what the families render into it.
pub(crate) struct Scope<'s, 'a> {
    /// The whole mesh (what a workload may reach).
    pub mesh: &'a Mesh,
    /// Its MeshPolicy, keyed by the mesh's own name of the namespace.
    pub policy: Option<(&'a String, &'a NamespacePolicy)>,
    /// Its services, in order.
    pub services: &'s [&'a Service],
    /// The EgressPolicies whose objects go into it, in the mesh's order.
    pub egress: &'s [(&'a ResourceId, &'a EgressGrant)],
}

/// A namespace objects may go into, and where its runs are.
struct Namespace<'a> {
    name: Cow<'a, str>,
    policy: Option<(&'a String, &'a NamespacePolicy)>,
    services: Range<usize>,
    egress: Range<usize>,
}

/// Where the items of namespace `ns` are in `items`, which are ordered by
/// namespace.
fn run_of<T>(items: &[T], ns: &str, ns_of: impl Fn(&T) -> &str) -> Range<usize> {
    items.partition_point(|x| ns_of(x) < ns)..items.partition_point(|x| ns_of(x) <= ns)
}

/// The objects of each kind in turn, a namespace at a time, sorted.
///
/// Every object goes into one namespace, and the output is ordered by
/// kind, namespace and name, so a kind is made and handed over one
/// namespace at a time: what exists at once is bounded by the largest
/// namespace, not the mesh (a mesh of many namespaces, where every
/// workload's Sidecar names every namespace, no longer holds all its
/// Sidecars at once), and each hand-over to the writer is small.
struct Kinds<'a> {
    mesh: &'a Mesh,
    skip: &'a (dyn Fn(&Service) -> bool + Sync),
    opts: &'a RenderOptions,
    /// The mesh's services, in order: each namespace's are one run.
    services: Vec<&'a Service>,
    /// The EgressPolicies, ordered by the namespace they render into.
    egress: Vec<(&'a ResourceId, &'a EgressGrant)>,
    /// Every namespace an object may go into, in order.
    namespaces: Vec<Namespace<'a>>,
    /// The ingress objects, ordered by kind and namespace.
    ingress: std::iter::Peekable<std::vec::IntoIter<Object<'a>>>,
    kind: usize,
    namespace: usize,
}

impl<'a> Kinds<'a> {
    fn new(
        mesh: &'a Mesh,
        opts: &'a RenderOptions,
        skip: &'a (dyn Fn(&Service) -> bool + Sync),
    ) -> Self {
        let services: Vec<&Service> = mesh.services.values().collect();
        let mut egress: Vec<(&ResourceId, &EgressGrant)> = mesh.egress.iter().collect();
        egress.sort_by(|a, b| a.1.namespace.cmp(&b.1.namespace));
        let mut ingress = ingress::objects(mesh, opts);
        // `Kind`'s order is the output order (`Kind::ALL`).
        ingress.sort_by(|a, b| (a.kind(), a.namespace()).cmp(&(b.kind(), b.namespace())));
        let mut names: Vec<Cow<'a, str>> = Vec::new();
        for svc in &services {
            if names.last().is_none_or(|n| *n != *svc.key.namespace) {
                names.push(Cow::Borrowed(&svc.key.namespace));
            }
        }
        names.extend(mesh.namespaces.keys().map(|n| Cow::Borrowed(n.as_str())));
        names.extend(
            egress
                .iter()
                .map(|(_, g)| Cow::Borrowed(g.namespace.as_str())),
        );
        names.extend(
            ingress
                .iter()
                .map(|o| Cow::Owned(o.namespace().to_string())),
        );
        names.sort();
        names.dedup();
        let namespaces = names
            .into_iter()
            .map(|name| Namespace {
                policy: mesh.namespaces.get_key_value(name.as_ref()),
                services: run_of(&services, &name, |s| &s.key.namespace),
                egress: run_of(&egress, &name, |(_, g)| &g.namespace),
                name,
            })
            .collect();
        Kinds {
            mesh,
            skip,
            opts,
            services,
            egress,
            namespaces,
            ingress: ingress.into_iter().peekable(),
            kind: 0,
            namespace: 0,
        }
    }

    /// The next namespace's objects of the current kind (never empty).
    fn next_batch(&mut self) -> Option<Vec<Object<'a>>> {
        loop {
            let kind = *Kind::ALL.get(self.kind)?;
            let Some(ns) = self.namespaces.get(self.namespace) else {
                self.kind += 1;
                self.namespace = 0;
                continue;
            };
            self.namespace += 1;
            let scope = Scope {
                mesh: self.mesh,
                policy: ns.policy,
                services: &self.services[ns.services.clone()],
                egress: &self.egress[ns.egress.clone()],
            };
            let mut objects: Vec<Object<'a>> = Vec::new();
            workload::emit(&scope, kind, self.skip, &mut objects);
            route::emit(&scope, kind, self.skip, &mut objects);
            egress::emit(&scope, kind, &mut objects);
            security::emit(&scope, self.opts, kind, &mut objects);
            while let Some(o) = self
                .ingress
                .next_if(|o| o.kind() == kind && o.namespace() == ns.name)
            {
                objects.push(o);
            }
            debug_assert!(objects.iter().all(|o| o.namespace() == ns.name));
            if objects.is_empty() {
                continue;
            }
            // Stable: objects with equal names keep the families' order.
            objects.sort_by(|a, b| a.name().cmp(b.name()));
            return Some(objects);
        }
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

    /// A mesh over `namespaces` namespaces: every third under deny-all,
    /// services with Routes, AccessPolicies across namespaces,
    /// per-service and namespace-wide EgressPolicies, and an
    /// IngressPolicy in every fifth namespace (objects in the gateway's
    /// namespace too).
    fn many_namespaces(namespaces: usize, per_namespace: usize) -> String {
        let mut text = String::new();
        let mut doc = |s: String| {
            text.push_str(&s);
            text.push_str("\n---\n");
        };
        for n in 0..namespaces {
            // Names that sort differently as text and as numbers.
            let ns = format!("ns-{}", n * 7 % namespaces);
            if n % 3 == 0 {
                doc(format!(
                    "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{name: default, namespace: {ns}}}\nspec: {{mtls: strict, access: deny, egress: deny}}"
                ));
                doc(format!(
                    "apiVersion: packlight.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {{name: all, namespace: {ns}}}\nspec: {{hosts: [\"shared.example.com\"]}}"
                ));
            }
            for i in 0..per_namespace {
                let svc = format!("s{i}");
                let caller = format!("ns-{}/s{}", (n + 1) % namespaces, (i + 1) % per_namespace);
                doc(format!(
                    "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: {svc}, namespace: {ns}}}\nspec: {{port: 8000, versions: [{{version: \"1.0\", image: \"a:1\"}}, {{version: \"2.0\", image: \"a:2\"}}]}}"
                ));
                doc(format!(
                    "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {{name: {svc}, namespace: {ns}}}\nspec: {{service: {svc}, rules: [{{version: \"1.0\", weight: 100}}, {{version: \"2.0\", weight: 100}}]}}"
                ));
                if i % 2 == 0 {
                    doc(format!(
                        "apiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {svc}, namespace: {ns}}}\nspec: {{service: {svc}, allow: [{{from: [\"{caller}\"]}}]}}"
                    ));
                    doc(format!(
                        "apiVersion: packlight.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {{name: {svc}, namespace: {ns}}}\nspec: {{service: {svc}, hosts: [\"api{i}.example.com\", \"shared.example.com\"]}}"
                    ));
                }
            }
            if n % 5 == 0 {
                doc(format!(
                    "apiVersion: packlight.dev/v1alpha1\nkind: IngressPolicy\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{hosts: [\"{ns}.example.com\"], routes: [{{pathPrefix: /a, service: s0}}], rateLimit: {{requests: 10, per: second}}}}"
                ));
            }
        }
        text
    }

    #[test]
    fn objects_come_by_kind_namespace_and_name_from_every_family() {
        let text = many_namespaces(40, 30);
        let (model, _) = packlight_model::load(&[(None, &text)], "default");
        assert!(!model.has_errors(), "{:?}", model.diagnostics.first());
        assert!(model.mesh.services.len() >= PIPELINE_MIN_SERVICES);
        for pipelined in [false, true] {
            let mut seen: Vec<(usize, String, String)> = Vec::new();
            let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
            render_kinds(
                &model.mesh,
                &RenderOptions::default(),
                &|_| false,
                pipelined,
                |o| {
                    let rank = Kind::ALL
                        .iter()
                        .position(|k| *k == o.kind())
                        .expect("a kind");
                    seen.push((rank, o.namespace().to_string(), o.name().to_string()));
                    *per_kind.entry(o.kind().name()).or_default() += 1;
                },
            );
            assert!(seen.is_sorted(), "out of order (pipelined: {pipelined})");
            // Every family, counted from the input: 1,200 services in 40
            // namespaces, 14 of them under deny-all, 8 with an ingress.
            let deny_services = 14 * 30;
            let want = [
                ("Deployment", 2 * 1200),
                ("Service", 1200),
                ("ServiceAccount", 1200),
                ("VirtualService", 1200 + 8),
                ("DestinationRule", 1200),
                ("Sidecar", 14 + deny_services),
                ("NetworkPolicy", deny_services),
                ("AuthorizationPolicy", 14 + 600),
                ("PeerAuthentication", 14),
                // Two per service policy, one per namespace-wide one; the
                // shared host twice in a namespace is one entry per policy.
                ("ServiceEntry", 2 * 600 + 14),
                // In the gateway's namespace: a Gateway and an EnvoyFilter
                // per IngressPolicy, and the shared filters.
                ("Gateway", 8),
                ("EnvoyFilter", 8 + 1),
            ];
            for (kind, n) in want {
                assert_eq!(
                    per_kind.get(kind),
                    Some(&n),
                    "{kind} (pipelined: {pipelined})"
                );
            }
        }
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
