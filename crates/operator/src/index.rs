//! The index: what the API server holds, kept in memory by reflectors, and
//! the model built from it.
//!
//! In: watch events of the six packlight kinds and of the objects packlight
//! manages. Out: stores to read, a revision that moves when a resource's
//! spec (generation) changes or a resource goes away, and [`Rendered`]: the
//! model and the Istio objects of the whole mesh at one revision, grouped
//! by the namespace whose reconcile owns them. The mesh is built whole
//! (a workload's Sidecar depends on AccessPolicies in other namespaces) but
//! only when the revision moved; namespaces whose share changed are sent
//! back to the controller to reconcile.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::api::DynamicObject;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use packlight_api as api;
use packlight_istio::{Kind, RenderOptions};
use packlight_model::ir::ServiceKey;
use packlight_model::{Input, Model, ResourceId, Verdict};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

use crate::outputs::{self, OUTPUT_KINDS, ObjectKey};

/// Which services a rejected resource speaks for: their merged outputs
/// (Sidecars, NetworkPolicies) keep their last good state while it is
/// rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Concern {
    /// One service of the resource's namespace.
    Service(String),
    /// Every service of the resource's namespace.
    Namespace,
    /// Only the objects made from the resource itself.
    Own,
}

/// One of packlight's six kinds, as the operator handles it.
pub trait SourceKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind name.
    const KIND: &'static str;
    /// As a model input.
    fn input(&self) -> Input;
    /// Which services it speaks for.
    fn concern(&self) -> Concern;
}

macro_rules! source_kind {
    ($ty:ident, |$r:ident| $concern:expr) => {
        impl SourceKind for api::$ty {
            const KIND: &'static str = stringify!($ty);
            fn input(&self) -> Input {
                // What the model reads: names and the spec. Not the
                // managed fields, annotations or status, which made
                // copying the stores the largest step of a rebuild.
                let m = &self.metadata;
                let metadata = kube::api::ObjectMeta {
                    name: m.name.clone(),
                    namespace: m.namespace.clone(),
                    uid: m.uid.clone(),
                    generation: m.generation,
                    ..Default::default()
                };
                Input::new(packlight_model::Resource::$ty(api::$ty {
                    metadata,
                    spec: self.spec.clone(),
                    status: None,
                }))
            }
            fn concern(&self) -> Concern {
                let $r = self;
                $concern
            }
        }
    };
}

source_kind!(Microservice, |r| Concern::Service(r.name_any()));
source_kind!(Route, |r| Concern::Service(r.spec.service.clone()));
source_kind!(EgressPolicy, |r| match &r.spec.service {
    Some(s) => Concern::Service(s.clone()),
    None => Concern::Namespace,
});
source_kind!(AccessPolicy, |r| Concern::Service(r.spec.service.clone()));
source_kind!(MeshPolicy, |_r| Concern::Own);
source_kind!(IngressPolicy, |_r| Concern::Own);

/// The stores of the six kinds.
#[derive(Clone)]
pub struct Sources {
    /// Microservices.
    pub microservices: Store<api::Microservice>,
    /// Routes.
    pub routes: Store<api::Route>,
    /// EgressPolicies.
    pub egress: Store<api::EgressPolicy>,
    /// AccessPolicies.
    pub access: Store<api::AccessPolicy>,
    /// MeshPolicies.
    pub mesh: Store<api::MeshPolicy>,
    /// IngressPolicies.
    pub ingress: Store<api::IngressPolicy>,
}

/// What a source resource contributes besides its input.
#[derive(Clone, Debug)]
pub struct SourceMeta {
    /// Its API version.
    pub api_version: String,
    /// Its UID (for owner references).
    pub uid: String,
    /// The generation the model saw.
    pub generation: Option<i64>,
    /// Which services it speaks for.
    pub concern: Concern,
}

/// One rendered object and what a reconcile needs to know of it,
/// computed once per build.
#[derive(Debug)]
pub struct Desired {
    /// Its kind, as rendered.
    pub kind: Kind,
    /// The object as applied.
    pub value: Value,
    /// Its digest ([`outputs::stamp_digest`]: the JSON text with the
    /// owner reference; the object carries it as an annotation).
    pub hash: u64,
    /// Its kind, namespace and name (`None`: a kind packlight does not
    /// write, which a reconcile reports).
    pub key: Option<ObjectKey>,
    /// The resource it was made from.
    pub source: Option<ResourceId>,
}

/// The whole mesh rendered at one revision.
#[derive(Debug, Default)]
pub struct Rendered {
    /// The revision of the sources it was built from.
    pub revision: u64,
    /// Verdicts and diagnostics.
    pub model: Model,
    /// The rendered objects, by home namespace.
    pub desired: BTreeMap<String, Vec<Arc<Desired>>>,
    /// Every source resource that was given to the model.
    pub sources: BTreeMap<ResourceId, SourceMeta>,
    /// A digest per namespace of its desired objects and its resources'
    /// verdicts and diagnostics.
    pub digests: BTreeMap<String, u64>,
    /// Each object by kind, namespace and name: the hash of its rendered
    /// form (owner reference not included) and what was made of it, so the
    /// next build converts to JSON only the objects that changed.
    previous: HashMap<(Kind, String, String), (u64, Arc<Desired>)>,
    /// Per service, its [`packlight_istio::PER_SERVICE_KINDS`] objects: the
    /// next build reuses them for a service that did not change instead of
    /// rendering it again.
    per_service: HashMap<ServiceKey, Made>,
}

/// A service's per-service objects.
type Made = Arc<Vec<Arc<Desired>>>;

impl Rendered {
    /// True when the resource was given and rejected.
    pub fn is_rejected(&self, id: &ResourceId) -> bool {
        matches!(self.model.verdicts.get(id), Some(Verdict::Rejected(_)))
    }

    /// True when a rejected resource of `namespace` speaks for `service`.
    pub fn rejected_concerns(&self, namespace: &str, service: &str) -> bool {
        self.sources.iter().any(|(id, meta)| {
            id.namespace == namespace
                && self.is_rejected(id)
                && match &meta.concern {
                    Concern::Service(s) => s == service,
                    Concern::Namespace => true,
                    Concern::Own => false,
                }
        })
    }
}

/// Stores, revision and the rendered model.
pub struct Index {
    /// The six kinds.
    pub sources: Sources,
    /// Managed objects, one store per [`OUTPUT_KINDS`] entry.
    pub outputs: Vec<Store<DynamicObject>>,
    revision: Arc<AtomicU64>,
    cache: Mutex<Arc<Rendered>>,
    render: RenderOptions,
    retrigger: mpsc::UnboundedSender<String>,
}

impl Index {
    /// The namespace the ingress gateway's objects are written to.
    pub fn gateway_namespace(&self) -> &str {
        &self.render.gateway_namespace
    }

    /// An index over the given stores.
    pub fn new(
        sources: Sources,
        outputs: Vec<Store<DynamicObject>>,
        revision: Arc<AtomicU64>,
        render: RenderOptions,
        retrigger: mpsc::UnboundedSender<String>,
    ) -> Self {
        Index {
            sources,
            outputs,
            revision,
            // Revision 0 is never current: the first call builds.
            cache: Mutex::new(Arc::new(Rendered {
                revision: u64::MAX,
                ..Rendered::default()
            })),
            render,
            retrigger,
        }
    }

    /// Waits until every store has its first full list.
    pub async fn ready(&self) -> bool {
        let s = &self.sources;
        let sources = [
            s.microservices.wait_until_ready().await.is_ok(),
            s.routes.wait_until_ready().await.is_ok(),
            s.egress.wait_until_ready().await.is_ok(),
            s.access.wait_until_ready().await.is_ok(),
            s.mesh.wait_until_ready().await.is_ok(),
            s.ingress.wait_until_ready().await.is_ok(),
        ];
        let mut ok = sources.iter().all(|b| *b);
        for o in &self.outputs {
            ok &= o.wait_until_ready().await.is_ok();
        }
        ok
    }

    /// The model and objects of the current revision, built if the
    /// revision moved. Namespaces whose share changed since the last build
    /// are sent to the controller.
    pub async fn rendered(&self) -> Arc<Rendered> {
        let mut cache = self.cache.lock().await;
        // Read the revision before the stores: a change that lands while
        // building moves it again and the next call rebuilds.
        let revision = self.revision.load(Ordering::SeqCst);
        if cache.revision == revision {
            return cache.clone();
        }
        let started = std::time::Instant::now();
        let next = Arc::new(self.build(revision, &cache));
        for ns in changed_namespaces(&cache.digests, &next.digests) {
            // The receiver lives as long as the controller; after shutdown
            // nobody needs the trigger.
            let _ = self.retrigger.send(ns);
        }
        tracing::debug!(
            revision,
            resources = next.sources.len(),
            namespaces = next.desired.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model rebuilt"
        );
        let before = std::mem::replace(&mut *cache, next.clone());
        // Freeing the last build (6,000 objects at 1,000 services) is not
        // the change's business: off the reconcile's path.
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::spawn_blocking(move || drop(before));
        }
        next
    }

    fn build(&self, revision: u64, before: &Rendered) -> Rendered {
        let started = std::time::Instant::now();
        let mut inputs = Vec::new();
        let mut sources = BTreeMap::new();
        let s = &self.sources;
        collect(&s.microservices, &mut inputs, &mut sources);
        collect(&s.routes, &mut inputs, &mut sources);
        collect(&s.egress, &mut inputs, &mut sources);
        collect(&s.access, &mut inputs, &mut sources);
        collect(&s.mesh, &mut inputs, &mut sources);
        collect(&s.ingress, &mut inputs, &mut sources);
        let t_collect = started.elapsed();
        let t0 = std::time::Instant::now();
        let model = packlight_model::build(&inputs);
        let t_model = t0.elapsed();
        // Services equal to the last build's whose objects still name
        // their sources' current UIDs: their per-service objects are the
        // last build's, not rendered again.
        // Usually empty: the sources made again under the same name.
        let new_uids: BTreeSet<&ResourceId> = sources
            .iter()
            .filter(|(id, m)| before.sources.get(*id).is_none_or(|b| b.uid != m.uid))
            .map(|(id, _)| id)
            .collect();
        let reused: HashMap<&ServiceKey, &Made> = model
            .mesh
            .services
            .iter()
            .filter(|(key, svc)| before.model.mesh.services.get(*key) == Some(*svc))
            .filter_map(|(key, _)| Some((key, before.per_service.get(key)?)))
            .filter(|(_, made)| {
                new_uids.is_empty()
                    || made.iter().all(|d| {
                        d.source.as_ref().is_none_or(|s| !new_uids.contains(s))
                            && d.owner_is_current(&sources)
                    })
            })
            .collect();
        let mut desired: BTreeMap<String, Vec<Arc<Desired>>> = BTreeMap::new();
        let mut previous = HashMap::with_capacity(before.previous.len());
        let mut fresh: HashMap<ServiceKey, Vec<Arc<Desired>>> = HashMap::new();
        let mut text = Vec::new();
        let skip = |svc: &packlight_model::ir::Service| reused.contains_key(&svc.key);
        packlight_istio::render_each_except(&model.mesh, &self.render, &skip, |o| {
            // The rendered form's hash, from its JSON text (no JSON tree):
            // equal to the last build's, the JSON is too.
            text.clear();
            // Writing into a Vec cannot fail; plain data always serialises.
            let _ = serde_json::to_writer(&mut text, o);
            let mut h = DefaultHasher::new();
            h.write(&text);
            let form = h.finish();
            let key = (o.kind(), o.namespace().to_string(), o.name().to_string());
            let made = match before.previous.get(&key) {
                Some((f, d)) if *f == form && d.owner_is_current(&sources) => d.clone(),
                _ => {
                    let mut value = o.to_value();
                    add_owner(&mut value, &sources);
                    let hash = outputs::stamp_digest(&mut value);
                    Arc::new(Desired {
                        kind: o.kind(),
                        hash,
                        key: ObjectKey::of(&value),
                        source: outputs::source_of(&value),
                        value,
                    })
                }
            };
            if let Some(home) = outputs::home_namespace(&made.value) {
                desired
                    .entry(home.to_string())
                    .or_default()
                    .push(made.clone());
            }
            if packlight_istio::PER_SERVICE_KINDS.contains(&o.kind())
                && let Some(service) = outputs::service_of(&made.value)
            {
                fresh
                    .entry(ServiceKey::new(o.namespace(), service))
                    .or_default()
                    .push(made.clone());
            }
            previous.insert(key, (form, made));
        });
        // The reused objects join the rendered ones in render order: by
        // kind, namespace and name (what a whole render gives). They are
        // not in `previous`: should their service change, its few objects
        // are converted again.
        let mut per_service: HashMap<ServiceKey, Made> =
            HashMap::with_capacity(model.mesh.services.len());
        per_service.extend(fresh.into_iter().map(|(k, v)| (k, Arc::new(v))));
        let mut unsorted = BTreeSet::new();
        let reused_services = reused.len();
        for (key, made) in reused {
            for d in made.iter() {
                if let Some(home) = outputs::home_namespace(&d.value) {
                    if !unsorted.contains(home) {
                        unsorted.insert(home.to_string());
                    }
                    match desired.get_mut(home) {
                        Some(each) => each.push(d.clone()),
                        None => {
                            desired.insert(home.to_string(), vec![d.clone()]);
                        }
                    }
                }
            }
            per_service.insert(key.clone(), made.clone());
        }
        for home in unsorted {
            if let Some(each) = desired.get_mut(&home) {
                each.sort_by(|a, b| render_order(a).cmp(&render_order(b)));
            }
        }
        let t_render = t0.elapsed();
        let digests = digests(&desired, &model);
        let at = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            collect_ms = at(t_collect),
            model_ms = at(t_model),
            render_ms = at(t_render),
            digests_ms = at(t0.elapsed()),
            reused_services,
            "model build steps (ms since the inputs were collected)"
        );
        Rendered {
            revision,
            model,
            desired,
            sources,
            digests,
            previous,
            per_service,
        }
    }
}

/// Where [`packlight_istio::render_each`] puts an object: by kind, then
/// namespace and name.
fn render_order(d: &Desired) -> (Kind, Option<(&str, &str)>) {
    (
        d.kind,
        d.key
            .as_ref()
            .map(|k| (k.namespace.as_str(), k.name.as_str())),
    )
}

/// The uid of an object's owner reference, if it has one.
fn owner_uid(obj: &Value) -> Option<&str> {
    obj.get("metadata")?
        .get("ownerReferences")?
        .get(0)?
        .get("uid")?
        .as_str()
}

impl Desired {
    /// [`owner_is_current`] from what the build already read of the
    /// object (its source and key), without looking them up again.
    fn owner_is_current(&self, sources: &BTreeMap<ResourceId, SourceMeta>) -> bool {
        let (Some(source), Some(key)) = (&self.source, &self.key) else {
            return owner_is_current(&self.value, sources);
        };
        let owner = (key.namespace == source.namespace)
            .then(|| sources.get(source))
            .flatten()
            .map(|m| m.uid.as_str());
        owner == owner_uid(&self.value)
    }
}

/// True when the owner reference [`add_owner`] would give the object now
/// is the one it has (its source was not replaced by one of the same
/// name).
fn owner_is_current(obj: &Value, sources: &BTreeMap<ResourceId, SourceMeta>) -> bool {
    owner_of(obj, sources).map(|(_, m)| m.uid.as_str()) == owner_uid(obj)
}

/// The source resource that owns the object, when it is in the object's
/// namespace (owner references cannot cross namespaces), with its meta.
fn owner_of<'a>(
    obj: &Value,
    sources: &'a BTreeMap<ResourceId, SourceMeta>,
) -> Option<(ResourceId, &'a SourceMeta)> {
    let source = outputs::source_of(obj)?;
    if outputs::str_at(obj, "/metadata/namespace") != Some(source.namespace.as_str()) {
        return None;
    }
    let meta = sources.get(&source)?;
    Some((source, meta))
}

/// Owner reference to the source resource when it is in the same
/// namespace: deleting the resource deletes its objects (garbage
/// collector). Objects elsewhere are cleaned up by label.
fn add_owner(obj: &mut Value, sources: &BTreeMap<ResourceId, SourceMeta>) {
    let Some((source, meta)) = owner_of(obj, sources) else {
        return;
    };
    obj["metadata"]["ownerReferences"] = serde_json::json!([{
        "apiVersion": meta.api_version,
        "kind": source.kind,
        "name": source.name,
        "uid": meta.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
}

fn collect<K: SourceKind>(
    store: &Store<K>,
    inputs: &mut Vec<Input>,
    sources: &mut BTreeMap<ResourceId, SourceMeta>,
) {
    let mut objs = store.state();
    // Deterministic input order: the model reports duplicates by position.
    objs.sort_by(|a, b| {
        let (a, b) = (a.meta(), b.meta());
        (a.namespace.as_deref(), a.name.as_deref())
            .cmp(&(b.namespace.as_deref(), b.name.as_deref()))
    });
    for obj in objs {
        let input = obj.input();
        let id = input.resource.id();
        sources.insert(
            id,
            SourceMeta {
                api_version: K::api_version(&()).into_owned(),
                uid: obj.uid().unwrap_or_default(),
                generation: obj.meta().generation,
                concern: obj.concern(),
            },
        );
        inputs.push(input);
    }
}

/// Per namespace: the digest of its objects' hashes, its resources'
/// verdicts and its diagnostics.
fn digests(desired: &BTreeMap<String, Vec<Arc<Desired>>>, model: &Model) -> BTreeMap<String, u64> {
    let mut hashers: BTreeMap<String, DefaultHasher> = BTreeMap::new();
    for (ns, each) in desired {
        let h = hashers.entry(ns.clone()).or_default();
        for d in each {
            h.write_u64(d.hash);
        }
    }
    for (id, verdict) in &model.verdicts {
        let h = hashers.entry(id.namespace.clone()).or_default();
        id.hash(h);
        format!("{verdict:?}").hash(h);
    }
    for d in &model.diagnostics {
        if let Some(ns) = &d.namespace {
            d.hash(hashers.entry(ns.clone()).or_default());
        }
    }
    hashers.into_iter().map(|(k, h)| (k, h.finish())).collect()
}

fn changed_namespaces(old: &BTreeMap<String, u64>, new: &BTreeMap<String, u64>) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// Filters watch events down to the ones that matter: a new generation
/// (spec change) or a new resourceVersion for objects without one, a
/// deletion, the end of a (re)list. Each one that passes moves
/// `revision`; the end of a re-list also asks for a full resync (objects
/// deleted while the watch was down leave no event of their own).
pub struct ChangeFilter {
    seen: HashMap<String, String>,
    revision: Arc<AtomicU64>,
    touched: Option<Arc<AtomicU64>>,
    resync: mpsc::UnboundedSender<()>,
    listed: bool,
}

impl ChangeFilter {
    /// A filter that moves `revision` and sends to `resync`.
    pub fn new(revision: Arc<AtomicU64>, resync: mpsc::UnboundedSender<()>) -> Self {
        ChangeFilter {
            seen: HashMap::new(),
            revision,
            touched: None,
            resync,
            listed: false,
        }
    }

    /// Also moves `touched` on every event, including those that change
    /// nothing that matters (a new resourceVersion at the same
    /// generation): it tells a cache of the store's contents that they
    /// may have changed. The event is already in the store when it moves.
    pub fn touching(mut self, touched: Arc<AtomicU64>) -> Self {
        self.touched = Some(touched);
        self
    }

    /// The object to trigger on, if the event changed anything.
    pub fn pass<K: Resource>(&mut self, event: watcher::Event<K>) -> Option<K> {
        if let Some(t) = &self.touched
            && !matches!(event, watcher::Event::Init)
        {
            t.fetch_add(1, Ordering::SeqCst);
        }
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                let uid = obj.meta().uid.clone().unwrap_or_default();
                let mark = match obj.meta().generation {
                    Some(g) => format!("g{g}"),
                    None => obj.meta().resource_version.clone().unwrap_or_default(),
                };
                if self.seen.get(&uid) == Some(&mark) {
                    return None;
                }
                self.seen.insert(uid, mark);
                self.revision.fetch_add(1, Ordering::SeqCst);
                Some(obj)
            }
            watcher::Event::Delete(obj) => {
                self.seen
                    .remove(&obj.meta().uid.clone().unwrap_or_default());
                self.revision.fetch_add(1, Ordering::SeqCst);
                Some(obj)
            }
            watcher::Event::Init => None,
            watcher::Event::InitDone => {
                self.revision.fetch_add(1, Ordering::SeqCst);
                if self.listed {
                    let _ = self.resync.send(());
                }
                self.listed = true;
                None
            }
        }
    }
}

/// What the stores keep of an object: everything but its managed fields.
/// Nothing here reads them (an apply is judged against the fields and the
/// digest annotation, status by its conditions; the webhook's model is
/// built from specs), and for server-side applied objects they are about
/// as large as the object itself.
pub(crate) fn strip<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// A reflected, filtered watch of one packlight kind.
pub fn source_stream<K: SourceKind>(
    api: Api<K>,
    writer: Writer<K>,
    mut filter: ChangeFilter,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .filter_map(move |ev| {
            let out = match ev {
                Ok(ev) => filter.pass(ev).map(Ok),
                Err(e) => {
                    // The watcher retries with backoff; an error passed on
                    // would pause every trigger of the controller.
                    tracing::warn!(kind = K::KIND, error = %e, "watch failed; retrying");
                    None
                }
            };
            futures::future::ready(out)
        })
}

/// A reflected, filtered watch of one managed output kind.
pub fn output_stream(
    api: Api<DynamicObject>,
    writer: Writer<DynamicObject>,
    mut filter: ChangeFilter,
    kind: &'static str,
) -> impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static {
    watcher(
        api,
        watcher::Config::default().labels(outputs::MANAGED_SELECTOR),
    )
    .default_backoff()
    .modify(strip)
    .reflect(writer)
    .filter_map(move |ev| {
        let out = match ev {
            Ok(ev) => filter.pass(ev).map(Ok),
            Err(e) => {
                tracing::warn!(kind, error = %e, "watch failed; retrying");
                None
            }
        };
        futures::future::ready(out)
    })
}

/// The namespace whose reconcile owns a managed object.
pub fn home_of(obj: &DynamicObject) -> Option<String> {
    obj.labels()
        .get(packlight_istio::meta::SOURCE_NAMESPACE)
        .cloned()
        .or_else(|| obj.namespace())
}

/// Number of output kinds (for building the stores).
pub const OUTPUT_COUNT: usize = OUTPUT_KINDS.len();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_object_must_name_its_sources_current_uid() {
        let obj = serde_json::json!({"metadata": {
            "namespace": "demo",
            "labels": {"packlight.dev/source-kind": "Route", "packlight.dev/source-name": "r"},
            "ownerReferences": [{"uid": "old"}],
        }});
        let id = ResourceId {
            kind: "Route".into(),
            namespace: "demo".into(),
            name: "r".into(),
        };
        let with = |uid: &str| {
            BTreeMap::from([(
                id.clone(),
                SourceMeta {
                    api_version: "packlight.dev/v1alpha1".into(),
                    uid: uid.into(),
                    generation: Some(1),
                    concern: Concern::Own,
                },
            )])
        };
        assert!(owner_is_current(&obj, &with("old")));
        // The Route was deleted and made again under the same name.
        assert!(!owner_is_current(&obj, &with("new")));
        // Its source is gone: an object without owner would be rendered.
        assert!(!owner_is_current(&obj, &BTreeMap::new()));
    }

    /// Stores filled with every example and golden input, as the
    /// reflectors would hold them.
    struct Stores {
        index: Index,
        microservices: Writer<api::Microservice>,
        routes: Writer<api::Route>,
    }

    fn stores() -> Stores {
        use kube::runtime::reflector::store;
        let (microservices, mut ms) = store::<api::Microservice>();
        let (routes, mut rs) = store::<api::Route>();
        let (egress, mut es) = store::<api::EgressPolicy>();
        let (access, mut acs) = store::<api::AccessPolicy>();
        let (mesh, mut mps) = store::<api::MeshPolicy>();
        let (ingress, mut is) = store::<api::IngressPolicy>();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut uid = 0;
        for dir in ["examples", "tests/golden/inputs"] {
            let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                .expect("inputs")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path).expect("input");
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let mut v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
                    if v["metadata"]["namespace"].is_null() {
                        v["metadata"]["namespace"] = "default".into();
                    }
                    uid += 1;
                    v["metadata"]["uid"] = format!("uid-{uid}").into();
                    v["metadata"]["generation"] = 1.into();
                    fn put<K>(w: &mut Writer<K>, v: Value)
                    where
                        K: Resource<DynamicType = ()> + DeserializeOwned + Clone,
                    {
                        let obj: K = serde_json::from_value(v).expect("a packlight resource");
                        w.apply_watcher_event(&watcher::Event::Apply(obj));
                    }
                    match v["kind"].as_str().unwrap_or_default() {
                        "Microservice" => put(&mut ms, v),
                        "Route" => put(&mut rs, v),
                        "EgressPolicy" => put(&mut es, v),
                        "AccessPolicy" => put(&mut acs, v),
                        "MeshPolicy" => put(&mut mps, v),
                        "IngressPolicy" => put(&mut is, v),
                        other => panic!("{path:?}: kind {other}"),
                    }
                }
            }
        }
        let sources = Sources {
            microservices,
            routes,
            egress,
            access,
            mesh,
            ingress,
        };
        let (retrigger, _) = mpsc::unbounded_channel();
        let index = Index::new(
            sources,
            Vec::new(),
            Arc::new(AtomicU64::new(0)),
            RenderOptions::default(),
            retrigger,
        );
        Stores {
            index,
            microservices: ms,
            routes: rs,
        }
    }

    /// Each namespace's objects in order, as JSON.
    fn objects(r: &Rendered) -> BTreeMap<&str, Vec<&Value>> {
        r.desired
            .iter()
            .map(|(ns, each)| (ns.as_str(), each.iter().map(|d| &d.value).collect()))
            .collect()
    }

    #[test]
    fn a_build_that_reuses_unchanged_services_equals_a_whole_render() {
        let mut s = stores();
        let first = s.index.build(1, &Rendered::default());
        assert!(first.desired.values().map(Vec::len).sum::<usize>() > 50);
        // Change one Route's weights (the gateway's VirtualService reads
        // it too), and make one Microservice again under the same name
        // (same spec, new UID: its objects need the new owner).
        let mut routes = s.index.sources.routes.state();
        routes.sort_by_key(|r| (r.namespace(), r.name_any()));
        let route = routes
            .into_iter()
            .find(|r| {
                let w = |i: usize| r.spec.rules.get(i).and_then(|x| x.weight);
                w(0).is_some() && w(1).is_some() && w(0) != w(1)
            })
            .expect("a Route with two different weights");
        let mut changed = (*route).clone();
        let (a, b) = (changed.spec.rules[0].weight, changed.spec.rules[1].weight);
        changed.spec.rules[0].weight = b;
        changed.spec.rules[1].weight = a;
        assert_ne!(a, b, "{changed:?}");
        changed.metadata.generation = Some(2);
        s.routes
            .apply_watcher_event(&watcher::Event::Apply(changed));
        let mut remade = (*s.index.sources.microservices.state()[0]).clone();
        remade.metadata.uid = Some("uid-remade".into());
        s.microservices
            .apply_watcher_event(&watcher::Event::Apply(remade.clone()));

        let reusing = s.index.build(2, &first);
        let whole = s.index.build(2, &Rendered::default());
        assert_eq!(objects(&reusing), objects(&whole));
        assert_eq!(reusing.digests, whole.digests);
        assert_ne!(objects(&reusing), objects(&first));
        let owners: Vec<&Value> = reusing
            .desired
            .values()
            .flatten()
            .filter(|d| {
                d.source.as_ref().is_some_and(|s| {
                    s.kind == "Microservice"
                        && Some(&s.name) == remade.metadata.name.as_ref()
                        && Some(&s.namespace) == remade.metadata.namespace.as_ref()
                })
            })
            .map(|d| &d.value["metadata"]["ownerReferences"][0]["uid"])
            .collect();
        assert!(!owners.is_empty());
        assert!(owners.iter().all(|u| *u == "uid-remade"), "{owners:?}");
        // Nothing changed since: the next build reuses every service and
        // still gives the same objects.
        let again = s.index.build(3, &reusing);
        assert_eq!(objects(&again), objects(&whole));
        assert_eq!(again.digests, whole.digests);
    }

    #[test]
    fn touched_moves_on_every_event_revision_only_on_changes() {
        let (revision, touched) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (resync, _rx) = mpsc::unbounded_channel();
        let mut f = ChangeFilter::new(revision.clone(), resync).touching(touched.clone());
        let obj = |rv: &str| {
            let mut o = k8s_openapi::api::core::v1::ConfigMap::default();
            o.metadata.uid = Some("u".into());
            o.metadata.generation = Some(1);
            o.metadata.resource_version = Some(rv.into());
            o
        };
        assert!(f.pass(watcher::Event::Apply(obj("1"))).is_some());
        // Same generation, new resourceVersion (status, labels): nothing to
        // reconcile, but the store's contents moved.
        assert!(f.pass(watcher::Event::Apply(obj("2"))).is_none());
        assert_eq!(revision.load(Ordering::SeqCst), 1);
        assert_eq!(touched.load(Ordering::SeqCst), 2);
        assert!(f.pass(watcher::Event::Delete(obj("3"))).is_some());
        assert_eq!(
            (
                revision.load(Ordering::SeqCst),
                touched.load(Ordering::SeqCst)
            ),
            (2, 3)
        );
    }

    #[test]
    fn only_changed_namespaces_are_retriggered() {
        let old = BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2)]);
        let new = BTreeMap::from([("a".to_string(), 1), ("c".to_string(), 3)]);
        assert_eq!(changed_namespaces(&old, &new), vec!["b", "c"]);
    }
}
