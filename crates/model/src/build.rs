//! Resources -> the mesh. Checks each resource alone ([`crate::validate`]),
//! then what depends on several (conflicts, references), then assembles the
//! IR from what was accepted. A rejected resource contributes nothing, so
//! runtimes keep its last good output.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{Diagnostic, Reason, ResourceId};
use crate::ir::*;
use crate::resource::{Input, Origin, Resource};
use crate::validate::{self, Check};

/// What a resource's `Accepted` condition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (possibly with warnings).
    Accepted,
    /// Rejected: invalid or in conflict; the errors say why.
    Rejected(Reason),
}

/// The result of building: the mesh, every diagnostic (with positions where
/// the input had them), and a verdict per resource.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// The IR of everything accepted.
    pub mesh: Mesh,
    /// Errors and warnings, sorted by file, position, resource.
    pub diagnostics: Vec<Diagnostic>,
    /// Verdict per resource.
    pub verdicts: BTreeMap<ResourceId, Verdict>,
    /// Diagnostics not yet placed in their documents, with their origin
    /// (see [`Model::settled`]); empty once the model is returned.
    pub(crate) pending: Vec<(Option<Origin>, Diagnostic)>,
}

impl Model {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics about one resource.
    pub fn diagnostics_of<'a>(
        &'a self,
        id: &'a ResourceId,
    ) -> impl Iterator<Item = &'a Diagnostic> {
        self.diagnostics.iter().filter(move |d| {
            d.kind.as_deref() == Some(id.kind.as_str())
                && d.namespace.as_deref() == Some(id.namespace.as_str())
                && d.name.as_deref() == Some(id.name.as_str())
        })
    }
}

/// Builds the model of `inputs`. Diagnostics carry no file positions
/// (resources from text are placed by [`crate::load`]).
pub fn build(inputs: &[Input]) -> Model {
    build_unplaced(inputs).settled(|_, d| d)
}

/// Builds, leaving every diagnostic pending with its origin.
pub(crate) fn build_unplaced(inputs: &[Input]) -> Model {
    let all = check_all(inputs, PARALLEL_CHECK_MIN);
    let (order, repeats) = id_order(&all);
    let mut b = Builder {
        ids: Vec::with_capacity(inputs.len()),
        order,
        ..Builder::default()
    };
    for (i, (checked, repeat)) in all.into_iter().zip(repeats).enumerate() {
        let Checked {
            id,
            piece,
            ok,
            diags,
        } = checked;
        if repeat {
            b.reject(
                &id,
                Reason::Invalid,
                Diagnostic::error(format!("{id} is defined twice"))
                    .on(&id)
                    .at("metadata.name")
                    .hint("remove one of them or rename it"),
                i,
            );
        } else {
            b.place(&id, piece, ok, diags, i);
        }
        b.ids.push(id);
    }
    b.gather();
    b.cross(inputs);
    let mesh = b.assemble();
    let pending = b
        .diags
        .into_iter()
        .map(|(idx, d)| {
            let origin = idx
                .and_then(|i| inputs.get(i))
                .and_then(|x| x.origin.clone());
            (origin, d)
        })
        .collect();
    // Every resource seen is accepted unless rejected; `order` has each
    // id once, in id order, so the map is built without a search.
    let mut ids = std::mem::take(&mut b.ids);
    let verdicts: BTreeMap<ResourceId, Verdict> = b
        .order
        .iter()
        .map(|&k| {
            let id = std::mem::take(&mut ids[k]);
            let verdict = match b.rejected.get(&id) {
                Some(&reason) => Verdict::Rejected(reason),
                None => Verdict::Accepted,
            };
            (id, verdict)
        })
        .collect();
    Model {
        mesh,
        diagnostics: Vec::new(),
        verdicts,
        pending,
    }
}

impl Model {
    /// Places every pending diagnostic with `place` (which fills in file,
    /// line and column from its origin), then sorts and deduplicates them.
    pub(crate) fn settled(
        mut self,
        mut place: impl FnMut(Option<&Origin>, Diagnostic) -> Diagnostic,
    ) -> Self {
        let pending = std::mem::take(&mut self.pending);
        self.diagnostics
            .extend(pending.into_iter().map(|(o, d)| place(o.as_ref(), d)));
        sort_diagnostics(&mut self.diagnostics);
        self
    }
}

/// Sorts by file, position, resource, field and message; drops repeats.
fn sort_diagnostics(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| {
        (
            &a.file,
            a.line,
            a.column,
            &a.kind,
            &a.namespace,
            &a.name,
            &a.field_path,
            &a.message,
        )
            .cmp(&(
                &b.file,
                b.line,
                b.column,
                &b.kind,
                &b.namespace,
                &b.name,
                &b.field_path,
                &b.message,
            ))
    });
    diagnostics.dedup();
}

/// The field path naming each version a Route uses, with the version;
/// asked only when one of them is missing (a diagnostic names the field).
fn version_fields(
    rt: &packlight_api::Route,
) -> impl Iterator<Item = (String, crate::version::Version)> + '_ {
    rt.spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("spec.rules[{i}].version"), r.version.as_str()))
        .chain(
            rt.spec
                .mirror
                .iter()
                .map(|m| ("spec.mirror.version".to_string(), m.version.as_str())),
        )
        .filter_map(|(f, v)| Some((f, v.parse().ok()?)))
}

/// What a cross-resource check found about a resource.
enum Finding {
    /// It is invalid.
    Error(ResourceId, Diagnostic),
    /// It is accepted with a warning.
    Warning(ResourceId, Diagnostic),
}

/// The part of the IR one resource defines, checked alone.
#[derive(Debug, PartialEq)]
enum Piece {
    Workload(Workload),
    /// The Route's service and its table.
    Route(Option<(String, RouteTable)>),
    Egress(EgressGrant),
    Access((ServiceKey, Vec<AccessRule>)),
    Mesh(NamespacePolicy),
    Ingress(Ingress),
}

/// One resource checked alone ([`crate::validate`]): what it defines,
/// whether it is valid on its own, and what was found.
#[derive(Debug, PartialEq)]
struct Checked {
    id: ResourceId,
    piece: Piece,
    ok: bool,
    diags: Vec<Diagnostic>,
}

/// Checks one resource alone. Pure: reads nothing but the resource.
fn check(input: &Input) -> Checked {
    let r = &input.resource;
    let id = r.id();
    let mut c = Check::new(&id);
    let piece = match r {
        Resource::Microservice(m) => Piece::Workload(validate::microservice(&mut c, m)),
        Resource::Route(rt) => {
            Piece::Route(validate::route(&mut c, rt).map(|t| (rt.spec.service.clone(), t)))
        }
        Resource::EgressPolicy(e) => Piece::Egress(validate::egress(&mut c, e)),
        Resource::AccessPolicy(a) => Piece::Access(validate::access(&mut c, a)),
        Resource::MeshPolicy(m) => Piece::Mesh(validate::mesh(&mut c, m)),
        Resource::IngressPolicy(i) => Piece::Ingress(validate::ingress(&mut c, i)),
    };
    let ok = c.ok();
    let diags = c.diags;
    Checked {
        id,
        piece,
        ok,
        diags,
    }
}

/// Inputs from this many on are checked on two threads.
const PARALLEL_CHECK_MIN: usize = 1024;

/// Every input checked alone, in input order: on two threads (one per
/// half) for a large model, where these checks were most of the build's
/// time and the second core had nothing to do. The result does not
/// depend on the split.
fn check_all(inputs: &[Input], parallel_min: usize) -> Vec<Checked> {
    if inputs.len() < parallel_min.max(2) {
        return inputs.iter().map(check).collect();
    }
    let (first, second) = inputs.split_at(inputs.len() / 2);
    let (mut out, rest) = crate::both(
        || {
            let mut out: Vec<Checked> = Vec::with_capacity(inputs.len());
            out.extend(first.iter().map(check));
            out
        },
        || second.iter().map(check).collect::<Vec<_>>(),
    );
    // A panic (which `check` does not) is met again here.
    out.extend(rest.unwrap_or_else(|| second.iter().map(check).collect()));
    out
}

/// The inputs' indices in id order, each id once (its first input), and
/// which inputs repeat an earlier one's id. Inputs from [`crate::load`]
/// come ordered by namespace and name: grouped by kind, in kind order,
/// they are in id order already, which one pass checks; any other order
/// is sorted.
fn id_order(checked: &[Checked]) -> (Vec<usize>, Vec<bool>) {
    let id = |k: usize| &checked[k].id;
    let mut kinds: Vec<(&str, Vec<usize>)> = Vec::new();
    for (k, c) in checked.iter().enumerate() {
        match kinds.iter_mut().find(|(kind, _)| *kind == c.id.kind) {
            Some((_, list)) => list.push(k),
            None => kinds.push((&c.id.kind, vec![k])),
        }
    }
    kinds.sort_by(|a, b| a.0.cmp(b.0));
    let mut order: Vec<usize> = kinds.into_iter().flat_map(|(_, list)| list).collect();
    if !order.is_sorted_by(|&a, &b| (id(a), a) <= (id(b), b)) {
        order.sort_by(|&a, &b| id(a).cmp(id(b)).then(a.cmp(&b)));
    }
    let mut repeats = vec![false; checked.len()];
    let mut first: Option<usize> = None;
    order.retain(|&k| {
        let repeat = first.is_some_and(|f| id(f) == id(k));
        if repeat {
            repeats[k] = true;
        } else {
            first = Some(k);
        }
        !repeat
    });
    (order, repeats)
}

#[derive(Default)]
struct Builder {
    diags: Vec<(Option<usize>, Diagnostic)>,
    /// Every rejected resource with why; the others are accepted (the
    /// verdicts are made from this and `index` once, at the end). Empty
    /// for valid input, so asking whether a resource was accepted costs
    /// nothing there (a search of all verdicts per resource was a third
    /// of the build at 10,000 services).
    rejected: BTreeMap<ResourceId, Reason>,
    /// Each input's id, in input order.
    ids: Vec<ResourceId>,
    /// Indices into `ids` in id order, each id once (where it is first):
    /// where a resource is in the inputs is a binary search.
    order: Vec<usize>,
    /// What [`Builder::place`] found, in input order; [`Builder::gather`]
    /// makes the maps below of it, each in one pass when the inputs come
    /// ordered by namespace and name.
    placed_workloads: Vec<(ServiceKey, Workload)>,
    placed_routes: Vec<(ServiceKey, (ResourceId, RouteTable))>,
    placed_egress: Vec<(ResourceId, EgressGrant)>,
    placed_access: Vec<(ResourceId, (ServiceKey, Vec<AccessRule>))>,
    workloads: BTreeMap<ServiceKey, Workload>,
    routes: BTreeMap<ServiceKey, Vec<(ResourceId, RouteTable)>>,
    egress: BTreeMap<ResourceId, EgressGrant>,
    access: BTreeMap<ResourceId, (ServiceKey, Vec<AccessRule>)>,
    namespaces: BTreeMap<String, NamespacePolicy>,
    ingresses: BTreeMap<ResourceId, Ingress>,
}

impl Builder {
    fn reject(&mut self, id: &ResourceId, reason: Reason, d: Diagnostic, idx: usize) {
        let d = if reason == Reason::Conflict {
            d.conflict()
        } else {
            d
        };
        self.diags.push((Some(idx), d));
        // Invalid outranks Conflict: fixing a conflict would not help.
        let r = self.rejected.entry(id.clone()).or_insert(reason);
        if reason == Reason::Invalid {
            *r = reason;
        }
    }

    /// Where the resource `id` is (first) in the inputs.
    fn find(&self, id: &ResourceId) -> Option<usize> {
        let at = self.order.partition_point(|&k| self.ids[k] < *id);
        self.order.get(at).copied().filter(|&k| self.ids[k] == *id)
    }

    /// Makes the maps of what [`Builder::place`] found.
    fn gather(&mut self) {
        // Keys are unique (a repeated id is never placed). Collecting
        // sorts (stable; one pass for pairs in key order) and builds the
        // map without a search.
        self.workloads = std::mem::take(&mut self.placed_workloads)
            .into_iter()
            .collect();
        self.egress = std::mem::take(&mut self.placed_egress)
            .into_iter()
            .collect();
        self.access = std::mem::take(&mut self.placed_access)
            .into_iter()
            .collect();
        // A service's Routes in input order (the sort is stable).
        let mut routes = std::mem::take(&mut self.placed_routes);
        if !routes.is_sorted_by(|a, b| a.0 <= b.0) {
            routes.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let mut grouped: Vec<(ServiceKey, Vec<(ResourceId, RouteTable)>)> = Vec::new();
        for (key, route) in routes {
            match grouped.last_mut() {
                Some((last, list)) if *last == key => list.push(route),
                _ => grouped.push((key, vec![route])),
            }
        }
        self.routes = grouped.into_iter().collect();
    }

    fn warn(&mut self, id: &ResourceId, d: Diagnostic) {
        let idx = self.find(id);
        self.diags.push((idx, d));
    }

    fn error(&mut self, id: &ResourceId, reason: Reason, d: Diagnostic) {
        let idx = self.find(id).unwrap_or(usize::MAX);
        self.reject(id, reason, d, idx);
    }

    /// Whether a resource that [`Builder::place`] has seen is accepted
    /// (so far).
    fn accepted(&self, id: &ResourceId) -> bool {
        !self.rejected.contains_key(id)
    }

    /// Places one resource checked alone (not a repeat of an earlier id).
    fn place(
        &mut self,
        id: &ResourceId,
        piece: Piece,
        ok: bool,
        diags: Vec<Diagnostic>,
        idx: usize,
    ) {
        let key = |name: &str| ServiceKey::new(id.namespace.clone(), name.to_string());
        match piece {
            Piece::Workload(w) => {
                if ok {
                    self.placed_workloads.push((key(&id.name), w));
                }
            }
            // A Route's table is kept even when rejected: the cross
            // checks report a second Route for its service.
            Piece::Route(Some((service, t))) => {
                self.placed_routes.push((key(&service), (id.clone(), t)));
            }
            Piece::Route(None) => {}
            Piece::Egress(g) => {
                if ok {
                    self.placed_egress.push((id.clone(), g));
                }
            }
            Piece::Access(x) => {
                if ok {
                    self.placed_access.push((id.clone(), x));
                }
            }
            Piece::Mesh(p) => {
                if ok {
                    self.namespaces.insert(id.namespace.clone(), p);
                }
            }
            Piece::Ingress(g) => {
                if ok {
                    self.ingresses.insert(id.clone(), g);
                }
            }
        }
        if !ok {
            self.rejected.insert(id.clone(), Reason::Invalid);
        }
        self.diags.extend(diags.into_iter().map(|d| (Some(idx), d)));
    }

    /// `inputs` are those given to [`build_unplaced`] (`ids` and `order`
    /// point into them).
    fn cross(&mut self, inputs: &[Input]) {
        // One Route per service: a second one is a conflict on both.
        let conflicts: Vec<(ServiceKey, Vec<ResourceId>)> = self
            .routes
            .iter()
            .filter(|(_, l)| l.len() > 1)
            .map(|(k, l)| (k.clone(), l.iter().map(|(id, _)| id.clone()).collect()))
            .collect();
        for (svc, list) in &conflicts {
            {
                // By name: the message does not depend on the input's order.
                let mut names: Vec<String> = list.iter().map(|id| id.name.clone()).collect();
                names.sort();
                for id in list {
                    let idx = self.find(id).unwrap_or(usize::MAX);
                    let d = Diagnostic::error(format!(
                        "service {} has {} Routes ({}); only one Route per service",
                        svc.name,
                        list.len(),
                        names.join(", ")
                    ))
                    .on(id)
                    .at("spec.service")
                    .hint("merge them into one Route and delete the others");
                    self.reject(id, Reason::Conflict, d, idx);
                }
            }
        }
        // Checks read the builder; their findings are applied afterwards,
        // in the order found (no table or rule is copied to do so).
        let mut found: Vec<Finding> = Vec::new();
        for (svc, list) in &self.routes {
            for (id, table) in list {
                if !self.accepted(id) {
                    continue;
                }
                match self.workloads.get(svc) {
                    Some(w) => {
                        if !w.protocol.is_l7() {
                            found.push(Finding::Error(
                                id.clone(),
                                Diagnostic::error(format!("service {} speaks tcp: no HTTP routing", svc.name))
                                    .on(id)
                                    .at("spec.service")
                                    .hint("set the Microservice's protocol to http or grpc, or remove the Route"),
                            ));
                            continue;
                        }
                        // Each missing version once, in order; asked of
                        // every Route, so nothing is allocated (and no
                        // version cloned) when none is missing.
                        let missing: Vec<String> = table
                            .each_version()
                            .filter(|v| !w.versions.contains_key(*v))
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .map(|v| v.to_string())
                            .collect();
                        if !missing.is_empty() {
                            let have: Vec<String> =
                                w.versions.keys().map(|v| v.to_string()).collect();
                            let field = self
                                .find(id)
                                .and_then(|i| match &inputs.get(i)?.resource {
                                    Resource::Route(rt) => version_fields(rt)
                                        .find(|(_, v)| missing.contains(&v.to_string())),
                                    _ => None,
                                })
                                .map(|(f, _)| f)
                                .unwrap_or_else(|| "spec.rules".to_string());
                            found.push(Finding::Error(
                                id.clone(),
                                Diagnostic::error(format!(
                                    "version {} is not a version of Microservice {}/{} (it has {})",
                                    missing.join(", "),
                                    svc.namespace,
                                    svc.name,
                                    have.join(", ")
                                ))
                                .on(id)
                                .at(field)
                                .hint("add the version to the Microservice or fix the Route"),
                            ));
                        }
                    }
                    None => found.push(Finding::Warning(
                        id.clone(),
                        Diagnostic::warning(format!(
                            "no Microservice {} is given; the Route is rendered alone",
                            svc.name
                        ))
                        .on(id)
                        .at("spec.service"),
                    )),
                }
            }
        }
        for (id, (callee, rules)) in &self.access {
            if !self.workloads.contains_key(callee) {
                found.push(Finding::Warning(
                    id.clone(),
                    Diagnostic::warning(format!("no Microservice {} is given", callee.name))
                        .on(id)
                        .at("spec.service")
                        .hint("the policy applies once the service exists"),
                ));
            }
            for (i, rule) in rules.iter().enumerate() {
                for (j, caller) in rule.from.iter().enumerate() {
                    if !self.workloads.contains_key(caller) {
                        found.push(Finding::Warning(
                            id.clone(),
                            Diagnostic::warning(format!("caller {caller} does not exist"))
                                .on(id)
                                .at(format!("spec.allow[{i}].from[{j}]"))
                                .hint("check the name; the rule applies once the caller exists"),
                        ));
                    }
                }
            }
        }
        for f in found {
            match f {
                Finding::Error(id, d) => self.error(&id, Reason::Invalid, d),
                Finding::Warning(id, d) => self.warn(&id, d),
            }
        }
        // Only the whitelists whose service is missing are copied out.
        let unknown: Vec<(ResourceId, String)> = self
            .egress
            .iter()
            .filter_map(|(id, g)| {
                let svc = g.service.as_ref()?;
                (!self.workloads.contains_key(svc)).then(|| (id.clone(), svc.name.clone()))
            })
            .collect();
        for (id, name) in unknown {
            self.warn(
                &id,
                Diagnostic::warning(format!("no Microservice {name} is given"))
                    .on(&id)
                    .at("spec.service")
                    .hint("the whitelist applies once the service exists"),
            );
        }
        // Ingress: targets must be HTTP services packlight knows; two
        // IngressPolicies must not serve the same host and prefix.
        let ingresses: Vec<(ResourceId, Ingress)> = self
            .ingresses
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, ing) in &ingresses {
            for (i, r) in ing.routes.iter().enumerate() {
                let field = format!("spec.routes[{i}].service");
                match self.workloads.get(&r.service) {
                    None => self.error(
                        id,
                        Reason::Invalid,
                        Diagnostic::error(format!(
                            "no Microservice {} in namespace {}",
                            r.service.name, r.service.namespace
                        ))
                        .on(id)
                        .at(field)
                        .hint("define the Microservice, or route to one that exists"),
                    ),
                    Some(w) if !w.protocol.is_l7() => self.error(
                        id,
                        Reason::Invalid,
                        Diagnostic::error(format!(
                            "service {} speaks tcp; the ingress routes HTTP",
                            r.service.name
                        ))
                        .on(id)
                        .at(field),
                    ),
                    Some(_) => {}
                }
            }
        }
        // The ingress VirtualService is named `ingress-POLICY` in the
        // policy's namespace: a service of that name would own the same
        // VirtualService name.
        for (id, _) in &ingresses {
            let clash = ServiceKey::new(id.namespace.clone(), format!("ingress-{}", id.name));
            if self.workloads.contains_key(&clash) || self.routes.contains_key(&clash) {
                self.error(
                    id,
                    Reason::Conflict,
                    Diagnostic::error(format!(
                        "service {} would share the VirtualService name ingress-{} with this IngressPolicy",
                        clash.name, id.name
                    ))
                    .on(id)
                    .at("metadata.name")
                    .hint("rename the IngressPolicy or the service"),
                );
            }
        }
        let mut claims: BTreeMap<(String, String), Vec<ResourceId>> = BTreeMap::new();
        for (id, ing) in &ingresses {
            for h in &ing.hosts {
                for r in &ing.routes {
                    claims
                        .entry((h.clone(), r.path_prefix.clone()))
                        .or_default()
                        .push(id.clone());
                }
            }
        }
        for ((host, prefix), ids) in claims {
            let mut ids = ids;
            ids.dedup();
            if ids.len() > 1 {
                let names: Vec<String> = ids
                    .iter()
                    .map(|i| format!("{}/{}", i.namespace, i.name))
                    .collect();
                for id in &ids {
                    self.error(
                        id,
                        Reason::Conflict,
                        Diagnostic::error(format!(
                            "host {host} path {prefix} is served by {} IngressPolicies ({})",
                            ids.len(),
                            names.join(", ")
                        ))
                        .on(id)
                        .at("spec.routes")
                        .hint("give each IngressPolicy its own hosts or prefixes"),
                    );
                }
            }
        }
    }

    /// The mesh of everything accepted. Moves the accepted parts out of
    /// the builder (nothing is copied); only diagnostics and verdicts are
    /// used afterwards.
    fn assemble(&mut self) -> Mesh {
        // Every source below was seen by `place`.
        let mut mesh = Mesh {
            namespaces: std::mem::take(&mut self.namespaces)
                .into_iter()
                .filter(|(_, p)| p.source.as_ref().is_some_and(|s| self.accepted(s)))
                .collect(),
            ..Mesh::default()
        };
        for (key, w) in std::mem::take(&mut self.workloads) {
            if self.accepted(&w.source) {
                mesh.services.insert(
                    key.clone(),
                    Service {
                        key,
                        workload: Some(w),
                        route: None,
                        route_source: None,
                        policy: WorkloadPolicy::default(),
                    },
                );
            }
        }
        for (key, list) in std::mem::take(&mut self.routes) {
            for (id, table) in list {
                if !self.accepted(&id) {
                    continue;
                }
                let svc = mesh.services.entry(key.clone()).or_insert_with(|| Service {
                    key: key.clone(),
                    workload: None,
                    route: None,
                    route_source: None,
                    policy: WorkloadPolicy::default(),
                });
                svc.route = Some(table);
                svc.route_source = Some(id);
            }
        }
        // Inbound access: the merged allow rules of every AccessPolicy of
        // a callee (Istio: the union of ALLOW policies).
        for (id, (callee, rules)) in std::mem::take(&mut self.access) {
            if !self.accepted(&id) {
                continue;
            }
            let svc = mesh
                .services
                .entry(callee.clone())
                .or_insert_with(|| Service {
                    key: callee,
                    workload: None,
                    route: None,
                    route_source: None,
                    policy: WorkloadPolicy::default(),
                });
            svc.policy.access.get_or_insert_with(Vec::new).extend(rules);
            svc.policy.access_sources.push(id);
        }
        // Outbound reach granted by name.
        let mut grants: Vec<(ServiceKey, ServiceKey)> = Vec::new();
        for svc in mesh.services.values() {
            for rule in svc.policy.access.iter().flatten() {
                for caller in &rule.from {
                    grants.push((caller.clone(), svc.key.clone()));
                }
            }
        }
        for (caller, callee) in grants {
            if let Some(s) = mesh.services.get_mut(&caller) {
                s.policy.granted.insert(callee);
            }
        }
        // Egress whitelists: namespace-wide ones and the service's own.
        for (id, grant) in std::mem::take(&mut self.egress) {
            if !self.accepted(&id) {
                continue;
            }
            // The service itself, or every service of the namespace: a
            // range over the ordered map, never a walk over the mesh.
            let targets: Vec<ServiceKey> = match &grant.service {
                Some(s) => vec![s.clone()],
                None => mesh
                    .services
                    .range(ServiceKey::new(grant.namespace.clone(), "")..)
                    .take_while(|(k, _)| k.namespace == grant.namespace)
                    .map(|(k, _)| k.clone())
                    .collect(),
            };
            for key in targets {
                if let Some(svc) = mesh.services.get_mut(&key)
                    && svc.workload.is_some()
                {
                    svc.policy.egress.extend(grant.hosts.iter().cloned());
                    svc.policy.egress_sources.push(id.clone());
                }
            }
            mesh.egress.insert(id, grant);
        }
        for svc in mesh.services.values_mut() {
            svc.policy.egress.sort();
            svc.policy.egress.dedup();
        }
        mesh.ingresses = std::mem::take(&mut self.ingresses)
            .into_iter()
            .filter(|(id, _)| self.accepted(id))
            .collect();
        mesh.reindex();
        mesh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,201 resources (over the two-thread threshold) with an invalid
    /// one in each half, a duplicate across the halves and two Routes for
    /// one service.
    fn inputs() -> Vec<Input> {
        let mut text = String::new();
        for i in 0..300 {
            let port = if i == 10 || i == 250 { 0 } else { 8000 };
            text.push_str(&format!(
                "kind: Microservice\napiVersion: packlight.dev/v1alpha1\nmetadata: {{name: s{i}, namespace: n{}}}\nspec: {{port: {port}, versions: [{{version: \"1.0\", image: a}}]}}\n---\n\
                 kind: Route\napiVersion: packlight.dev/v1alpha1\nmetadata: {{name: s{i}, namespace: n{}}}\nspec: {{service: s{}, rules: [{{version: \"1.0\", weight: 100}}]}}\n---\n\
                 kind: AccessPolicy\napiVersion: packlight.dev/v1alpha1\nmetadata: {{name: s{i}, namespace: n{}}}\nspec: {{service: s{i}, allow: [{{from: [n0/s0]}}]}}\n---\n\
                 kind: EgressPolicy\napiVersion: packlight.dev/v1alpha1\nmetadata: {{name: s{i}, namespace: n{}}}\nspec: {{service: s{i}, hosts: [api.example.com]}}\n---\n",
                i % 3,
                i % 3,
                if i == 7 { 4 } else { i },
                i % 3,
                i % 3,
            ));
        }
        // Defined again in the second half.
        text.push_str("kind: EgressPolicy\napiVersion: packlight.dev/v1alpha1\nmetadata: {name: s1, namespace: n1}\nspec: {service: s1, hosts: [b.example.com]}\n");
        let (_, inputs) = crate::load(&[(Some("m.yaml"), text.as_str())], "default");
        assert_eq!(inputs.len(), 1201);
        inputs
    }

    #[test]
    fn checking_on_two_threads_finds_what_one_thread_finds() {
        let inputs = inputs();
        let one = check_all(&inputs, usize::MAX);
        let two = check_all(&inputs, 0);
        assert_eq!(one.len(), inputs.len());
        assert_eq!(one, two);
        // The split changes nothing the model says either.
        let model = build(&inputs);
        let errors: Vec<String> = model
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                format!(
                    "{}/{} {}: {}",
                    d.namespace.as_deref().unwrap_or(""),
                    d.name.as_deref().unwrap_or(""),
                    d.field_path.as_deref().unwrap_or(""),
                    d.message
                )
            })
            .collect();
        assert_eq!(
            errors,
            [
                "n1/s1 metadata.name: EgressPolicy n1/s1 is defined twice",
                "n1/s10 spec.port: port 0 is not a port",
                "n1/s250 spec.port: port 0 is not a port",
                "n1/s4 spec.service: service s4 has 2 Routes (s4, s7); only one Route per service",
                "n1/s7 spec.service: service s4 has 2 Routes (s4, s7); only one Route per service",
            ],
            "{errors:#?}"
        );
        let rejected: Vec<String> = model
            .verdicts
            .iter()
            .filter(|(_, v)| **v != Verdict::Accepted)
            .map(|(id, v)| format!("{id} {v:?}"))
            .collect();
        assert_eq!(rejected.len(), 5, "{rejected:#?}");
        // The invalid Microservice defines no workload; its neighbour does.
        let workload = |ns: &str, name: &str| {
            model
                .mesh
                .services
                .get(&ServiceKey::new(ns, name))
                .and_then(|s| s.workload.as_ref())
                .is_some()
        };
        assert!(!workload("n1", "s10"));
        assert!(workload("n2", "s11"));
    }

    #[test]
    fn any_input_order_builds_the_same_model() {
        // `load` gives its inputs ordered by namespace and name, which the
        // build walks without a search; any other order (the operator's,
        // say) is sorted and builds the same model.
        let ordered = inputs();
        let model = build(&ordered);
        let mut reversed = ordered.clone();
        reversed.reverse();
        let mut rotated = ordered.clone();
        rotated.rotate_left(ordered.len() / 3);
        for other in [reversed, rotated] {
            let unplaced = build_unplaced(&other);
            // Each diagnostic points at an input of its own resource.
            for (origin, d) in &unplaced.pending {
                let input = other
                    .iter()
                    .find(|x| x.origin.as_ref() == origin.as_ref())
                    .expect("an input");
                let id = input.resource.id();
                assert_eq!(
                    (d.kind.as_deref(), d.namespace.as_deref(), d.name.as_deref()),
                    (Some(&*id.kind), Some(&*id.namespace), Some(&*id.name)),
                    "{d}"
                );
            }
            let again = unplaced.settled(|_, d| d);
            assert_eq!(again.mesh, model.mesh);
            assert_eq!(again.verdicts, model.verdicts);
            assert_eq!(again.diagnostics, model.diagnostics);
        }
    }

    #[test]
    fn a_route_names_each_missing_version_once_in_order() {
        let text = "kind: Microservice\napiVersion: packlight.dev/v1alpha1\nmetadata: {name: a, namespace: n}\nspec: {port: 80, versions: [{version: \"1.0\", image: a}]}\n---\n\
                    kind: Route\napiVersion: packlight.dev/v1alpha1\nmetadata: {name: a, namespace: n}\nspec: {service: a, rules: [{version: \"3.1\", weight: 100}, {version: \"2.5\", weight: 100}, {version: \"1.0\", weight: 100}, {version: \"3.1\", matches: [{headers: {gray: {exact: \"1\"}}}]}]}\n";
        let model = build(&crate::load(&[(None, text)], "default").1);
        let errors: Vec<String> = model
            .diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.field_path.as_deref().unwrap_or(""), d.message))
            .collect();
        assert_eq!(
            errors,
            [
                "spec.rules[0].version: version 2.5, 3.1 is not a version of Microservice n/a (it has 1.0)"
            ],
            "{errors:#?}"
        );
    }

    #[test]
    fn a_whitelist_of_a_missing_service_is_accepted_with_a_warning() {
        let text = "kind: Microservice\napiVersion: packlight.dev/v1alpha1\nmetadata: {name: a, namespace: n}\nspec: {port: 80, versions: [{version: \"1.0\", image: a}]}\n---\n\
                    kind: EgressPolicy\napiVersion: packlight.dev/v1alpha1\nmetadata: {name: a, namespace: n}\nspec: {service: a, hosts: [a.example.com]}\n---\n\
                    kind: EgressPolicy\napiVersion: packlight.dev/v1alpha1\nmetadata: {name: b, namespace: n}\nspec: {service: ghost, hosts: [b.example.com]}\n";
        let (model, _) = crate::load(&[(Some("e.yaml"), text)], "default");
        let found: Vec<String> = model
            .diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{:?} {}:{} {}/{} {}: {} ({})",
                    d.severity,
                    d.line.unwrap_or(0),
                    d.column.unwrap_or(0),
                    d.kind.as_deref().unwrap_or(""),
                    d.name.as_deref().unwrap_or(""),
                    d.field_path.as_deref().unwrap_or(""),
                    d.message,
                    d.hint.as_deref().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                "Warning 14:17 EgressPolicy/b spec.service: no Microservice ghost is given (the whitelist applies once the service exists)"
            ],
            "{found:#?}"
        );
        assert!(model.verdicts.values().all(|v| *v == Verdict::Accepted));
        assert_eq!(model.mesh.egress.len(), 2);
    }
}
