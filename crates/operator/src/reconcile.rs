//! One namespace's reconcile, level-based: take the rendered mesh, compare
//! what this namespace should hold with what it holds, write only the
//! difference (server-side apply, field manager `packlight`), delete
//! orphans, then write the status of the namespace's resources.
//!
//! Rules it keeps (DESIGN.md "Status, errors"): an object of the same name
//! that packlight does not manage is never overwritten (the source reports
//! `Conflict`); the objects of a rejected resource are neither re-applied
//! nor deleted (its last good output stays).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use packlight_model::ResourceId;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::index::{Desired, Rendered, SourceKind, home_of};
use crate::outputs::{self, ObjectKey};
use crate::status::{self, Outcome};
use crate::{Context, Error};

/// How often a namespace is reconciled when nothing happens (a safety net;
/// watches drive every real change).
const RESYNC: Duration = Duration::from_secs(600);
/// Writes (applies, status) in flight per namespace.
const WRITE_CONCURRENCY: usize = 16;
/// When a namespace whose new Routes wait for their Microservice is
/// looked at again if no watch event comes first.
const HOLD_RETRY: Duration = Duration::from_secs(2);
/// How long after its creation a new Route may wait for its Microservice
/// (a bound, should the Microservice's event never come).
const HOLD_LIMIT: SignedDuration = SignedDuration::from_secs(30);
/// How long a reconcile waits for the first lists of every watch.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "packlight";

/// What placing one rendered object did.
#[derive(Clone)]
enum Placed {
    Unchanged,
    Applied,
    Kept,
    Conflict(String),
    Failed(String),
}

/// Reconciles one namespace.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ns.name_any();
    let span = tracing::info_span!("reconcile", namespace = %name);
    let started = std::time::Instant::now();
    let terminating = ns.metadata.deletion_timestamp.is_some();
    let result = if terminating {
        run_terminating(&name, &ctx).instrument(span).await
    } else {
        run(&name, &ctx).instrument(span).await
    };
    ctx.stats.duration.observe(started.elapsed().as_secs_f64());
    ctx.stats.reconciles.fetch_add(1, Ordering::Relaxed);
    match &result {
        Ok(_) => {
            ctx.failures.lock().map(|mut f| f.remove(&name)).ok();
        }
        Err(e) => {
            ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(namespace = %name, error = %e, "reconcile failed");
        }
    }
    result
}

/// Whether namespace `home` no longer exists (known only when the
/// operator watches every namespace).
fn home_gone(ctx: &Context, home: &str) -> bool {
    ctx.namespaces.as_ref().is_some_and(|n| {
        n.get(&kube::runtime::reflector::ObjectRef::new(home))
            .is_none()
    })
}

/// Waits (bounded) until every watch has listed once.
async fn synced(ctx: &Context) -> Result<(), Error> {
    let ready = async {
        let namespaces = match &ctx.namespaces {
            Some(n) => n.wait_until_ready().await.is_ok(),
            None => true,
        };
        namespaces && ctx.index.ready().await
    };
    match tokio::time::timeout(READY_TIMEOUT, ready).await {
        Ok(true) => {
            ctx.stats.synced.store(1, Ordering::Relaxed);
            Ok(())
        }
        _ => Err(Error::NotReady),
    }
}

/// A namespace being deleted: the namespace controller removes what lives
/// in it, and the API server refuses anything new there (objects and
/// Events alike), so nothing is applied and no status written. What its
/// resources placed in other namespaces (an IngressPolicy's Gateway,
/// EnvoyFilter and AuthorizationPolicy in the gateway's namespace) is
/// deleted now rather than left to the gateway namespace's adoption.
async fn run_terminating(ns: &str, ctx: &Context) -> Result<Action, Error> {
    synced(ctx).await?;
    let live = live_objects(ctx, ns, &|home| home_gone(ctx, home));
    let elsewhere: Vec<_> = live.iter().filter(|(k, _)| k.namespace != ns).collect();
    let mut failed = 0usize;
    for (key, obj) in &elsewhere {
        if let Err(e) = delete_once(ctx, key, obj).await {
            failed += 1;
            tracing::warn!(object = %key, error = %e, "delete failed");
        }
    }
    tracing::debug!(
        elsewhere = elsewhere.len(),
        "namespace terminating: only its objects elsewhere deleted"
    );
    if failed > 0 {
        return Err(Error::ApplyFailed(failed));
    }
    Ok(Action::await_change())
}

async fn run(ns: &str, ctx: &Context) -> Result<Action, Error> {
    synced(ctx).await?;
    let managed: usize = ctx.index.outputs.iter().map(|s| s.len()).sum();
    ctx.stats.managed.store(managed as u64, Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    let rendered = ctx.index.rendered().await;
    let t_render = t0.elapsed();
    let no_objects = Vec::new();
    let all = rendered.desired.get(ns).unwrap_or(&no_objects);
    let held = held_routes(ctx, ns, &rendered).await;
    let kept: Vec<Arc<Desired>>;
    let desired: &[Arc<Desired>] = if held.is_empty() {
        all
    } else {
        kept = all
            .iter()
            .filter(|d| d.source.as_ref().is_none_or(|s| !held.contains(s)))
            .cloned()
            .collect();
        &kept
    };

    // Objects whose home namespace was deleted (gateway objects of a gone
    // namespace's IngressPolicy) are adopted by the namespace they are in.
    let gone = |home: &str| home_gone(ctx, home);
    let live = live_objects(ctx, ns, &gone);
    let t_live = t0.elapsed();
    let wanted: BTreeSet<&ObjectKey> = desired.iter().filter_map(|d| d.key.as_ref()).collect();
    let absent = Absent::list(
        ctx,
        wanted.iter().copied().filter(|k| !live.contains_key(*k)),
    )
    .await;
    let rendered_ref = &rendered;
    let live_ref = &live;
    let absent_ref = &absent;
    // Objects whose live copy is the very one last applied or confirmed at
    // this hash (same resourceVersion) are unchanged without a look inside;
    // those the last reconcile confirmed in this very snapshot (the same
    // `Arc`s: the build reuses an unchanged object's) without a lookup.
    let mut placed: Vec<(Option<ResourceId>, Placed)> = Vec::with_capacity(desired.len());
    let mut todo: Vec<Arc<Desired>> = Vec::new();
    let before = ctx
        .confirmed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(ns)
        .filter(|c| Arc::ptr_eq(&c.live, &live));
    let mut confirmed = Confirmed {
        live: live.clone(),
        objects: HashMap::with_capacity(desired.len()),
    };
    {
        let memo = ctx.applied.lock().unwrap_or_else(|p| p.into_inner());
        for d in desired {
            let seen = before.as_ref().is_some_and(|c| c.holds(d));
            let same = seen
                || d.key
                    .as_ref()
                    .and_then(|k| Some((memo.get(k)?, live.get(k)?)))
                    .is_some_and(|((h, rv), cur)| {
                        *h == d.hash
                            && outputs::str_at(cur, "/metadata/resourceVersion")
                                == Some(rv.as_str())
                    });
            if same {
                placed.push((d.source.clone(), Placed::Unchanged));
                confirmed.insert(d);
            } else {
                todo.push(d.clone());
            }
        }
    }
    drop(before);
    ctx.confirmed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(ns.to_string(), confirmed);
    let slow: Vec<(Option<ResourceId>, Placed)> = futures::stream::iter(todo)
        .map(|d| async move {
            let source = d.source.clone();
            let placed = place(ctx, rendered_ref, live_ref, absent_ref, &d).await;
            (source, placed)
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    placed.extend(slow);
    placed.extend(place_shared(ctx, &rendered, ns).await);

    let t_place = t0.elapsed();
    let mut outcomes: BTreeMap<ResourceId, Outcome> = BTreeMap::new();
    let mut failed = 0usize;
    for (source, p) in placed {
        let mut o = source.map(|s| outcomes.entry(s).or_default());
        match p {
            Placed::Unchanged | Placed::Applied | Placed::Kept => {
                if let Some(o) = o.as_mut() {
                    o.objects += 1;
                }
            }
            Placed::Conflict(what) => {
                if let Some(o) = o.as_mut() {
                    o.conflicts.push(what);
                }
            }
            Placed::Failed(why) => {
                failed += 1;
                if let Some(o) = o.as_mut() {
                    o.failures.push(why);
                }
            }
        }
    }

    // Orphans: managed objects of this namespace that are no longer
    // rendered, unless a rejected resource keeps them.
    if let Ok(mut d) = ctx.deleted.lock() {
        d.retain(|k, _| still_relevant(k, ns, &live, &gone));
    }
    for (key, obj) in live.iter() {
        if wanted.contains(key)
            || is_protected(&rendered, obj)
            || outputs::source_of(obj).is_some_and(|s| held.contains(&s))
        {
            continue;
        }
        if let Err(e) = delete_once(ctx, key, obj).await {
            failed += 1;
            let why = format!("deleting {key}: {e}");
            tracing::warn!(object = %key, error = %e, "delete failed");
            if let Some(s) = outputs::source_of(obj) {
                outcomes.entry(s).or_default().failures.push(why);
            }
        }
    }

    let t_orphans = t0.elapsed();
    let s = &ctx.index.sources;
    statuses(ctx, &s.microservices, ns, &rendered, &outcomes, &held).await?;
    statuses(ctx, &s.routes, ns, &rendered, &outcomes, &held).await?;
    statuses(ctx, &s.egress, ns, &rendered, &outcomes, &held).await?;
    statuses(ctx, &s.access, ns, &rendered, &outcomes, &held).await?;
    statuses(ctx, &s.mesh, ns, &rendered, &outcomes, &held).await?;
    statuses(ctx, &s.ingress, ns, &rendered, &outcomes, &held).await?;
    // Where a reconcile's time goes (milliseconds since it started, at the
    // end of each step), for profiling at scale.
    let at = |d: Duration| d.as_secs_f64() * 1e3;
    tracing::debug!(
        live = live.len(),
        wanted = wanted.len(),
        rendered_ms = at(t_render),
        live_ms = at(t_live),
        placed_ms = at(t_place),
        orphans_ms = at(t_orphans),
        status_ms = at(t0.elapsed()),
        "reconcile steps"
    );

    if failed > 0 {
        return Err(Error::ApplyFailed(failed));
    }
    if !held.is_empty() {
        // The Microservices' watch events trigger the next reconcile; this
        // is the safety net if they do not come.
        tracing::debug!(
            routes = held.len(),
            "new Routes wait for their Microservice"
        );
        return Ok(Action::requeue(HOLD_RETRY));
    }
    Ok(Action::requeue(RESYNC))
}

/// The Routes of `ns` without status yet, made less than [`HOLD_LIMIT`]
/// before `now`, that the build has but whose Microservice it lacks, with
/// the name of that Microservice.
fn new_routes_without_microservice<T>(
    routes: &[Arc<packlight_api::Route>],
    ns: &str,
    built: &BTreeMap<ResourceId, T>,
    now: Timestamp,
) -> Vec<(ResourceId, String)> {
    let id = |kind: &str, name: &str| ResourceId {
        kind: kind.to_string(),
        namespace: ns.to_string(),
        name: name.to_string(),
    };
    routes
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns))
        .filter(|r| r.status.as_ref().is_none_or(|s| s.conditions.is_empty()))
        .filter(|r| {
            r.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| now.duration_since(t.0) < HOLD_LIMIT)
        })
        .map(|r| (id("Route", &r.name_any()), r.spec.service.clone()))
        .filter(|(route, service)| {
            built.contains_key(route) && !built.contains_key(&id("Microservice", service))
        })
        .collect()
}

/// The new Routes of `ns` that wait for their Microservice: a Route
/// without status yet whose Microservice this build lacks but the API
/// server has (one metadata GET each, or from [`LIST_FROM`] of them one
/// metadata list); a rejected Route does not wait. The two kinds come on
/// separate watches; under load a Route's event can arrive before its
/// Microservice's, and programming it then would apply its VirtualService
/// without the service's port and write a "no Microservice" warning, both
/// redone when the Microservice arrives (at 1,000 services, 100-300 Routes
/// in a bulk apply). Such a Route keeps no output of its own and no
/// status until the reconcile the Microservice's event triggers, for at
/// most [`HOLD_LIMIT`] after its creation. A Route whose Microservice the
/// API server does not have either is programmed alone, as the model
/// says.
async fn held_routes(ctx: &Context, ns: &str, rendered: &Rendered) -> BTreeSet<ResourceId> {
    let routes = ctx.index.sources.routes.state();
    let mut waiting =
        new_routes_without_microservice(&routes, ns, &rendered.sources, Timestamp::now());
    // A rejected Route reports its diagnostics now: its Microservice
    // changes nothing in them.
    waiting.retain(|(id, _)| !rendered.is_rejected(id));
    if waiting.is_empty() {
        return BTreeSet::new();
    }
    let api: Api<packlight_api::Microservice> = Api::namespaced(ctx.client.clone(), ns);
    if waiting.len() >= LIST_FROM {
        // Many at once (a bulk apply): one metadata list answers for all.
        ctx.stats.reads.fetch_add(1, Ordering::Relaxed);
        let Ok(list) = api.list_metadata(&Default::default()).await else {
            return BTreeSet::new();
        };
        let present: BTreeSet<String> = list.items.iter().map(|m| m.name_any()).collect();
        return waiting
            .into_iter()
            .filter(|(_, service)| present.contains(service))
            .map(|(id, _)| id)
            .collect();
    }
    let api = &api;
    futures::stream::iter(waiting)
        .map(|(id, service)| async move {
            ctx.stats.reads.fetch_add(1, Ordering::Relaxed);
            // Not found, or the API server cannot say: programmed alone.
            matches!(api.get_metadata_opt(&service).await, Ok(Some(_))).then_some(id)
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(futures::future::ready)
        .collect()
        .await
}

/// The desired objects one reconcile found in place, and the live
/// snapshot it found them in. Holding the `Arc`s keeps their addresses
/// from being reused by other objects while they are keys here.
pub struct Confirmed {
    live: Arc<BTreeMap<ObjectKey, Arc<Value>>>,
    objects: HashMap<usize, Arc<Desired>>,
}

impl Confirmed {
    fn insert(&mut self, d: &Arc<Desired>) {
        self.objects.insert(Arc::as_ptr(d) as usize, d.clone());
    }

    fn holds(&self, d: &Arc<Desired>) -> bool {
        self.objects
            .get(&(Arc::as_ptr(d) as usize))
            .is_some_and(|c| Arc::ptr_eq(c, d))
    }
}

/// A namespace's live objects at one moment.
pub struct LiveSnapshot {
    touched: u64,
    namespaces: Vec<String>,
    live: Arc<BTreeMap<ObjectKey, Arc<Value>>>,
}

/// The managed objects this namespace holds (by home, or adopted), as
/// JSON. The last reconcile's answer when no managed object's watch moved
/// since and the same namespaces exist; else read from the watch cache,
/// converting only objects whose resourceVersion moved.
fn live_objects(
    ctx: &Context,
    ns: &str,
    gone: &dyn Fn(&str) -> bool,
) -> Arc<BTreeMap<ObjectKey, Arc<Value>>> {
    // Read before the stores: an event that lands during the scan moves
    // it again, so the snapshot is never kept past it.
    let touched = ctx.outputs_touched.load(Ordering::SeqCst);
    let mut namespaces: Vec<String> = ctx
        .namespaces
        .as_ref()
        .map(|n| n.state().iter().map(|n| n.name_any()).collect())
        .unwrap_or_default();
    namespaces.sort_unstable();
    let mut snapshots = ctx.live_snapshots.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = snapshots.get(ns)
        && s.touched == touched
        && s.namespaces == namespaces
    {
        return s.live.clone();
    }
    let live = Arc::new(scan_live_objects(ctx, ns, gone));
    if ctx.namespaces.is_some() {
        snapshots.retain(|k, _| namespaces.binary_search(k).is_ok());
    }
    snapshots.insert(
        ns.to_string(),
        LiveSnapshot {
            touched,
            namespaces,
            live: live.clone(),
        },
    );
    live
}

fn scan_live_objects(
    ctx: &Context,
    ns: &str,
    gone: &dyn Fn(&str) -> bool,
) -> BTreeMap<ObjectKey, Arc<Value>> {
    let mut cache = ctx.live_values.lock().unwrap_or_else(|p| p.into_inner());
    let mut live: BTreeMap<ObjectKey, Arc<Value>> = BTreeMap::new();
    for (kind, store) in ctx.index.outputs.iter().enumerate() {
        for obj in store.state() {
            let home = home_of(&obj);
            let adopted = home.as_deref().is_some_and(|h| h != ns && gone(h))
                && obj.namespace().as_deref() == Some(ns);
            if home.as_deref() != Some(ns) && !adopted {
                continue;
            }
            let key = ObjectKey {
                kind,
                namespace: obj.namespace().unwrap_or_default(),
                name: obj.name_any(),
            };
            let rv = obj.resource_version().unwrap_or_default();
            let value = match cache.get(&key) {
                Some((seen, v)) if !rv.is_empty() && *seen == rv => v.clone(),
                _ => {
                    let value = Arc::new(live_value(kind, &obj));
                    cache.insert(key.clone(), (rv, value.clone()));
                    value
                }
            };
            live.insert(key, value);
        }
    }
    // Forget this namespace's objects that are gone, and every object of a
    // namespace that is gone (it is never reconciled again).
    cache.retain(|k, _| still_relevant(k, ns, &live, gone));
    live
}

/// A watched object as JSON, with the apiVersion and kind that items of a
/// list lack.
fn live_value(kind: usize, obj: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let (Some(ar), Some(map)) = (outputs::output_resource(kind), value.as_object_mut()) {
        map.insert("apiVersion".into(), json!(ar.api_version));
        map.insert("kind".into(), json!(ar.kind));
    }
    value
}

/// The gateway's shared filters (one EnvoyFilter in the gateway's
/// namespace, needed by every IngressPolicy with CSRF or a rate limit) are
/// that namespace's objects: its reconcile deletes them once no policy
/// needs them. A namespace whose IngressPolicies need them places them too
/// (the same content under the same field manager), so those policies are
/// `Programmed` only once the filters are in place, whichever namespace is
/// reconciled first.
async fn place_shared(
    ctx: &Context,
    rendered: &Rendered,
    ns: &str,
) -> Vec<(Option<ResourceId>, Placed)> {
    let gateway_ns = ctx.index.gateway_namespace();
    if ns == gateway_ns {
        return Vec::new();
    }
    let needing: Vec<ResourceId> = rendered
        .model
        .mesh
        .ingresses
        .iter()
        .filter(|(id, ing)| {
            id.namespace == ns && packlight_istio::ingress::needs_shared_filters(ing)
        })
        .map(|(id, _)| id.clone())
        .collect();
    if needing.is_empty() {
        return Vec::new();
    }
    let shared = rendered.desired.get(gateway_ns).and_then(|objs| {
        objs.iter().find(|d| {
            d.key.as_ref().is_some_and(|k| {
                k.kind_name() == "EnvoyFilter" && k.name == packlight_istio::filters::FILTERS_NAME
            })
        })
    });
    let placed = match shared {
        Some(d) => {
            let mut live = BTreeMap::new();
            if let Some(key) = &d.key
                && let (Some(store), Some(ar)) = (
                    ctx.index.outputs.get(key.kind),
                    outputs::output_resource(key.kind),
                )
            {
                let r = kube::runtime::reflector::ObjectRef::new_with(&key.name, ar)
                    .within(&key.namespace);
                if let Some(cur) = store.get(&r) {
                    live.insert(key.clone(), Arc::new(live_value(key.kind, &cur)));
                }
            }
            place(ctx, rendered, &live, &Absent::default(), d).await
        }
        None => Placed::Failed(format!(
            "the shared EnvoyFilter {gateway_ns}/{} was not rendered",
            packlight_istio::filters::FILTERS_NAME
        )),
    };
    needing
        .into_iter()
        .map(|id| (Some(id), placed.clone()))
        .collect()
}

/// Whether a per-object memory entry is worth keeping after reconciling
/// `ns`: this namespace's objects while they are live, other namespaces'
/// objects while their namespace exists (a gone one is never reconciled
/// again).
fn still_relevant<V>(
    key: &ObjectKey,
    ns: &str,
    live: &BTreeMap<ObjectKey, V>,
    gone: &dyn Fn(&str) -> bool,
) -> bool {
    if key.namespace == ns {
        live.contains_key(key)
    } else {
        !gone(&key.namespace)
    }
}

/// True when a live object belongs to a rejected resource: made from it,
/// or (for objects merged from several resources: Sidecars,
/// NetworkPolicies, unlabelled ones) serving a service it speaks for.
fn is_protected(rendered: &Rendered, obj: &Value) -> bool {
    let source = outputs::source_of(obj);
    if let Some(s) = &source
        && rendered.is_rejected(s)
    {
        return true;
    }
    let merged = source.is_none()
        || matches!(
            outputs::str_at(obj, "/kind"),
            Some("Sidecar" | "NetworkPolicy")
        );
    match (
        merged,
        outputs::service_of(obj),
        outputs::str_at(obj, "/metadata/namespace"),
    ) {
        (true, Some(svc), Some(ns)) => rendered.rejected_concerns(ns, svc),
        _ => false,
    }
}

fn dynamic_api(ctx: &Context, key: &ObjectKey) -> Option<Api<DynamicObject>> {
    let ar = outputs::output_resource(key.kind)?;
    Some(Api::namespaced_with(
        ctx.client.clone(),
        &key.namespace,
        &ar,
    ))
}

/// Rendered objects the watch cache does not hold yet: whether an object
/// of that name exists (and whether packlight manages it) must be read
/// before creating one. Where many are missing in one namespace and kind
/// (a first reconcile, a bulk apply), one metadata-only list answers for
/// all of them instead of a read each.
#[derive(Default)]
struct Absent {
    /// (kind, namespace) pairs that were listed.
    listed: BTreeSet<(usize, String)>,
    /// What the lists found: name → managed by packlight.
    found: HashMap<ObjectKey, bool>,
}

/// From this many missing objects of one kind and namespace on, a list
/// replaces the reads.
const LIST_FROM: usize = 8;

impl Absent {
    async fn list<'a>(ctx: &Context, missing: impl Iterator<Item = &'a ObjectKey>) -> Self {
        let mut counts: BTreeMap<(usize, &str), usize> = BTreeMap::new();
        for k in missing {
            *counts.entry((k.kind, k.namespace.as_str())).or_default() += 1;
        }
        let mut absent = Absent::default();
        for ((kind, namespace), count) in counts {
            if count < LIST_FROM {
                continue;
            }
            let key = ObjectKey {
                kind,
                namespace: namespace.to_string(),
                name: String::new(),
            };
            let Some(api) = dynamic_api(ctx, &key) else {
                continue;
            };
            ctx.stats.reads.fetch_add(1, Ordering::Relaxed);
            // A failed list only means reading one by one.
            let Ok(list) = api.list_metadata(&Default::default()).await else {
                continue;
            };
            for item in list.items {
                let managed = outputs::labels_managed(item.metadata.labels.as_ref());
                absent.found.insert(
                    ObjectKey {
                        kind,
                        namespace: namespace.to_string(),
                        name: item.name_any(),
                    },
                    managed,
                );
            }
            absent.listed.insert((kind, namespace.to_string()));
        }
        absent
    }

    /// `Some(None)`: surely absent; `Some(Some(false))`: someone else's
    /// object; `None`: read it.
    fn known(&self, key: &ObjectKey) -> Option<Option<bool>> {
        if !self.listed.contains(&(key.kind, key.namespace.clone())) {
            return None;
        }
        match self.found.get(key) {
            None => Some(None),
            Some(false) => Some(Some(false)),
            Some(true) => None,
        }
    }
}

async fn place(
    ctx: &Context,
    rendered: &Rendered,
    live: &BTreeMap<ObjectKey, Arc<Value>>,
    absent: &Absent,
    desired: &Desired,
) -> Placed {
    let (obj, hash) = (&desired.value, desired.hash);
    let Some(key) = desired.key.clone() else {
        return Placed::Failed(format!(
            "packlight rendered an object of an unknown kind: {}",
            outputs::str_at(obj, "/kind").unwrap_or_default()
        ));
    };
    let Some(api) = dynamic_api(ctx, &key) else {
        return Placed::Failed(format!("no API for {key}"));
    };
    let current: Option<Arc<Value>> = match live.get(&key) {
        Some(v) => Some(v.clone()),
        None => match absent.known(&key) {
            Some(None) => None,
            Some(Some(false)) => return Placed::Conflict(key.to_string()),
            _ => {
                // Not among the managed objects we watch: make sure nobody
                // else's object has this name before creating it.
                ctx.stats.reads.fetch_add(1, Ordering::Relaxed);
                match api.get_opt(&key.name).await {
                    Ok(Some(found)) => {
                        let v = serde_json::to_value(&found).unwrap_or(Value::Null);
                        if !outputs::is_managed(&v) {
                            return Placed::Conflict(key.to_string());
                        }
                        Some(Arc::new(v))
                    }
                    Ok(None) => None,
                    Err(e) => return Placed::Failed(format!("reading {key}: {e}")),
                }
            }
        },
    };
    if let Some(cur) = &current {
        if is_protected(rendered, cur) {
            return Placed::Kept;
        }
        let rv = outputs::str_at(cur, "/metadata/resourceVersion").unwrap_or_default();
        let last = {
            let mut memo = ctx.applied.lock().unwrap_or_else(|p| p.into_inner());
            // The same content applied at this very resourceVersion: what
            // differs is server-side normalisation, not a change.
            if memo.get(&key).is_some_and(|(h, r)| *h == hash && r == rv) {
                return Placed::Unchanged;
            }
            if outputs::is_subset(obj, cur) {
                // Confirmed: the next reconcile needs no look inside.
                memo.insert(key, (hash, rv.to_string()));
                return Placed::Unchanged;
            }
            memo.get(&key)
                .filter(|(h, _)| *h == hash)
                .map(|(_, r)| r.clone())
        };
        // This very content was applied, but the cache shows another
        // version: either someone changed it since (drift: apply again) or
        // the watch is behind (after an API server restart a watch can lag
        // for a while). A read tells which, so a lagging cache never
        // causes a write.
        if let Some(applied_rv) = last {
            ctx.stats.reads.fetch_add(1, Ordering::Relaxed);
            if let Ok(Some(found)) = api.get_opt(&key.name).await
                && found.resource_version().as_deref() == Some(applied_rv.as_str())
            {
                return Placed::Unchanged;
            }
        }
    }
    let why = match &current {
        Some(cur) => outputs::difference(obj, cur).unwrap_or_default(),
        None => "absent".to_string(),
    };
    let params = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_strict();
    ctx.stats.applies.fetch_add(1, Ordering::Relaxed);
    match api.patch(&key.name, &params, &Patch::Apply(obj)).await {
        Ok(after) => {
            tracing::info!(object = %key, differs_at = %why, "applied");
            if let (Ok(mut m), Some(rv)) = (ctx.applied.lock(), after.resource_version()) {
                m.insert(key, (hash, rv));
            }
            Placed::Applied
        }
        Err(e) => {
            tracing::warn!(object = %key, error = %e, "apply failed");
            Placed::Failed(format!("applying {key}: {e}"))
        }
    }
}

/// Deletes the live object `obj` at `key`, unless this very version of it
/// was deleted already (a watch that has not caught up yet).
async fn delete_once(ctx: &Context, key: &ObjectKey, obj: &Value) -> Result<(), kube::Error> {
    let rv = outputs::str_at(obj, "/metadata/resourceVersion").unwrap_or_default();
    let done = ctx
        .deleted
        .lock()
        .is_ok_and(|d| d.get(key).is_some_and(|v| v == rv));
    if done {
        return Ok(());
    }
    delete(ctx, key, rv).await
}

/// Deletes an orphan the watch cache shows at resourceVersion `rv`.
async fn delete(ctx: &Context, key: &ObjectKey, rv: &str) -> Result<(), kube::Error> {
    let Some(api) = dynamic_api(ctx, key) else {
        return Ok(());
    };
    ctx.stats.deletes.fetch_add(1, Ordering::Relaxed);
    let result = match api.delete(&key.name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(object = %key, "deleted orphan");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    };
    if result.is_ok() {
        if let Ok(mut m) = ctx.applied.lock() {
            m.remove(key);
        }
        if let Ok(mut d) = ctx.deleted.lock() {
            d.insert(key.clone(), rv.to_string());
        }
    }
    result
}

async fn statuses<K: SourceKind>(
    ctx: &Context,
    store: &Store<K>,
    ns: &str,
    rendered: &Rendered,
    outcomes: &BTreeMap<ResourceId, Outcome>,
    held: &BTreeSet<ResourceId>,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let api = &api;
    let results: Vec<Result<(), Error>> = futures::stream::iter(store.state())
        .filter(|obj| futures::future::ready(obj.namespace().as_deref() == Some(ns)))
        .map(|obj| async move {
            let id = ResourceId {
                kind: K::KIND.to_string(),
                namespace: ns.to_string(),
                name: obj.name_any(),
            };
            if held.contains(&id) {
                return Ok(());
            }
            // Changed since the model was built: the revision moved, and
            // the reconcile it triggers writes this status.
            match rendered.sources.get(&id) {
                Some(meta)
                    if meta.generation == obj.meta().generation
                        && Some(&meta.uid) == obj.meta().uid.as_ref() => {}
                _ => return Ok(()),
            }
            let outcome = outcomes.get(&id).cloned().unwrap_or_default();
            let conds = status::conditions(&rendered.model, &id, &outcome);
            // The status says these conditions for this generation, and
            // the object has not moved since it was written or checked.
            let said = {
                let mut h = std::hash::DefaultHasher::new();
                (&conds, obj.meta().generation).hash(&mut h);
                h.finish()
            };
            let rv = obj.resource_version().unwrap_or_default();
            let known = ctx
                .statuses
                .lock()
                .is_ok_and(|m| m.get(&id).is_some_and(|(r, h)| *r == rv && *h == said));
            if known {
                return Ok(());
            }
            let value = serde_json::to_value(&*obj).map_err(Error::Json)?;
            let current = value.get("status").cloned().unwrap_or(Value::Null);
            let next =
                status::status_value(&current, obj.meta().generation, &conds, K::KIND, &value);
            let written = status::write(api, &ctx.recorder, &obj, &current, &next, &conds).await?;
            if written.is_some() {
                ctx.stats.status_writes.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(mut m) = ctx.statuses.lock() {
                m.insert(id, (written.unwrap_or(rv), said));
            }
            Ok(())
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    // Every status is attempted; the first error is returned.
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    Ok(())
}

/// The requeue delay after the `n`th failure in a row: exponential from
/// 500 ms to 5 minutes, with ±50 % jitter.
pub fn backoff(n: u32, jitter_seed: u64) -> Duration {
    let base_ms = 500u64.saturating_mul(1u64 << n.min(20)).min(300_000);
    // jitter in [0.5, 1.5)
    let jitter = 0.5 + (jitter_seed % 1000) as f64 / 1000.0;
    Duration::from_millis((base_ms as f64 * jitter) as u64)
}

/// The error policy: back off per namespace, with jitter.
pub fn error_policy(ns: Arc<Namespace>, _err: &Error, ctx: Arc<Context>) -> Action {
    let name = ns.name_any();
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(name.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let seed = std::collections::hash_map::RandomState::new().hash_one((&name, n));
    Action::requeue(backoff(n, seed))
}

/// Failures in a row, per namespace.
pub type Failures = std::sync::Mutex<HashMap<String, u32>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_routes_missing_their_microservice_may_wait() {
        let route = |name: &str, ns: &str, service: &str, programmed: bool| {
            let created = if name == "older" {
                "2026-11-29T00:00:00Z"
            } else {
                "2026-11-29T00:00:29Z"
            };
            let mut r: packlight_api::Route = serde_json::from_value(json!({
                "apiVersion": "packlight.dev/v1alpha1",
                "kind": "Route",
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
                "spec": {"service": service, "rules": [{"version": "1.0", "weight": 100}]},
            }))
            .unwrap();
            if programmed {
                r.status = serde_json::from_value(json!({"conditions": [{
                    "type": "Programmed", "status": "True", "reason": "Programmed",
                    "message": "", "lastTransitionTime": "2026-11-29T00:00:00Z"}]}))
                .unwrap();
            }
            Arc::new(r)
        };
        let id = |kind: &str, name: &str| ResourceId {
            kind: kind.into(),
            namespace: "a".into(),
            name: name.into(),
        };
        let built: BTreeMap<ResourceId, ()> = [
            id("Route", "new"),
            id("Route", "old"),
            id("Route", "has-ms"),
            id("Route", "older"),
            id("Microservice", "present"),
        ]
        .into_iter()
        .map(|i| (i, ()))
        .collect();
        let routes = vec![
            route("new", "a", "missing", false),
            route("old", "a", "missing", true),
            route("has-ms", "a", "present", false),
            route("not-built", "a", "missing", false),
            route("new", "b", "missing", false),
            // Made 30 s ago: waited long enough.
            route("older", "a", "missing", false),
        ];
        let now: Timestamp = "2026-11-29T00:00:30Z".parse().unwrap();
        assert_eq!(
            new_routes_without_microservice(&routes, "a", &built, now),
            vec![(id("Route", "new"), "missing".to_string())]
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff(1, 500), Duration::from_millis(1000));
        assert!(backoff(1, 0) < backoff(1, 999));
        assert!(backoff(3, 500) > backoff(1, 999));
        assert!(backoff(40, 999) <= Duration::from_millis(450_000));
    }

    #[test]
    fn confirmed_holds_the_same_object_not_an_equal_one() {
        let object = || {
            Arc::new(Desired {
                kind: packlight_istio::Kind::VirtualService,
                value: json!({"kind": "VirtualService"}),
                hash: 7,
                key: None,
                source: None,
            })
        };
        let (a, b) = (object(), object());
        let mut c = Confirmed {
            live: Arc::new(BTreeMap::new()),
            objects: HashMap::new(),
        };
        c.insert(&a);
        assert!(c.holds(&a));
        assert!(!c.holds(&b), "equal content is not the object confirmed");
    }
}
