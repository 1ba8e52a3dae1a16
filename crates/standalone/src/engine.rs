//! The engine: one writer that owns the store, the current model, the
//! running fleet and the certificates, and turns every accepted change
//! into xDS for the affected proxies.
//!
//! Changes arrive through [`Engine::apply`] and [`Engine::delete`]: the
//! whole candidate (store plus change) is validated by `packlight-model`
//! first; a change that makes any resource invalid is refused with its
//! diagnostics and changes nothing, so the proxies keep serving the last
//! good config. Accepted changes are stored in memory, then reconciled:
//! the fleet converges (processes), the proxies that see a changed service
//! get `packlight-xds`' config again through the ADS server, the changed
//! resources' status is updated, and only then, after the state lock is
//! released, does the store write its files (the spec with fsync, before
//! the API answers). Once every proxy ACKed, the resources changed since
//! the last programmed round are `Programmed`.
//!
//! Timings of each step are logged at `debug` (target
//! `packlight_standalone::engine`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use packlight_api::{CONDITION_ACCEPTED, CONDITION_PROGRAMMED, reason};
use packlight_model::ir::{Mesh, ServiceKey};
use packlight_model::{Diagnostic, Input, Model, Reason, Resource, ResourceId, Verdict};
use packlight_xds::{XdsOptions, names};
use packlight_xds_server::{Snapshot, XdsServer};
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast};

use crate::ca::{Ca, Issued};
use crate::proxies::{Envoy, Fleet, FleetConfig, admin_address, start_envoy};
use crate::store::{Action, Store, StoreError, Writes};
pub use packlight_client::types::{Applied, ApplyResult, Event, InstanceInfo};

/// The gateway's proxy node id.
pub const INGRESS_NODE: &str = "ingress~packlight-system";

/// Settings of one engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where the store, CA, tokens, bootstraps and logs live.
    pub data_dir: PathBuf,
    /// The ingress gateway's listener.
    pub ingress: SocketAddr,
    /// Lifetime of sidecar certificates.
    pub cert_ttl: Duration,
    /// Envoy binary.
    pub envoy: PathBuf,
    /// The packlight binary (for commands starting with `packlight`).
    pub packlight: PathBuf,
    /// Envoy's log level.
    pub envoy_log_level: String,
}

/// What the engine can fail at (not input errors: those are diagnostics).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA.
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    /// Starting processes or binding ports.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Translation refused a proxy's config.
    #[error("{0}")]
    Xds(#[from] packlight_xds::XdsError),
}

/// A refused change: the diagnostics that refuse it.
#[derive(Clone, Debug)]
pub struct Refused(pub Vec<Diagnostic>);

struct CertCache {
    issued: BTreeMap<String, Issued>,
}

struct State {
    store: Store,
    model: Model,
    fleet: Fleet,
    ingress: Option<Envoy>,
    certs: CertCache,
    /// Generation each node must ACK for the last reconcile to be
    /// programmed.
    expected: BTreeMap<String, u64>,
    /// Bumped by every reconcile.
    round: u64,
    /// Resources changed since the last round every proxy ACKed: they
    /// become `Programmed` when one does.
    unprogrammed: BTreeSet<ResourceId>,
    /// A push failed half-way: the next one renders every proxy.
    stale: bool,
}

/// What changed between two meshes, for the push and the status.
struct MeshDiff {
    /// Namespaces, egress grants or ingresses changed: every proxy may be
    /// affected.
    global: bool,
    /// Services added, removed or changed.
    services: BTreeSet<ServiceKey>,
}

impl MeshDiff {
    fn new(old: &Mesh, new: &Mesh) -> Self {
        let global = old.namespaces != new.namespaces
            || old.egress != new.egress
            || old.ingresses != new.ingresses;
        let mut services: BTreeSet<ServiceKey> = old
            .services
            .iter()
            .filter(|(k, s)| new.services.get(*k) != Some(*s))
            .map(|(k, _)| k.clone())
            .collect();
        services.extend(
            new.services
                .keys()
                .filter(|k| !old.services.contains_key(*k))
                .cloned(),
        );
        MeshDiff { global, services }
    }

    /// Whether the sidecar of `svc` may see a change: its own service, or
    /// one it routes to before or after the change, changed. (A sidecar's
    /// config is built from its service, the services `Mesh::reachable`
    /// gives it, its namespace's policy and the instances: the last two
    /// are `global` or a fleet change, which render everything.)
    fn affects(&self, old: &Mesh, new: &Mesh, svc: &ServiceKey) -> bool {
        if self.global {
            return true;
        }
        if self.services.is_empty() {
            return false;
        }
        self.services.contains(svc)
            || old
                .reachable(svc)
                .iter()
                .chain(new.reachable(svc).iter())
                .any(|s| self.services.contains(&s.key))
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

struct Inner {
    cfg: EngineConfig,
    fleet_cfg: FleetConfig,
    xds: XdsServer,
    ca: Ca,
    login: Option<SocketAddr>,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Each callee's rendered clusters and routes, shared by the sidecars
    /// that reach it and kept between pushes (re-rendered when its inputs
    /// change).
    renders: packlight_xds::RenderCache,
}

/// The engine handle (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str, generation: i64) -> Value {
    json!({
        "type": type_,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    })
}

/// Keeps `lastTransitionTime` of conditions whose status did not change.
fn with_transitions(old: &Value, mut conditions: Vec<Value>) -> Vec<Value> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for c in &mut conditions {
        let prev = old["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["type"] == c["type"]));
        let t = match prev {
            Some(p) if p["status"] == c["status"] => p["lastTransitionTime"].clone(),
            _ => Value::String(now.clone()),
        };
        c["lastTransitionTime"] = t;
    }
    conditions
}

impl Engine {
    /// Opens the data directory (store, CA) and prepares the engine; no
    /// process starts until [`Engine::start`].
    pub fn open(
        cfg: EngineConfig,
        xds: XdsServer,
        xds_addr: SocketAddr,
        login: Option<SocketAddr>,
    ) -> Result<Self, EngineError> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let store = Store::open(&cfg.data_dir)?;
        let ca = Ca::load_or_create(&cfg.data_dir.join("ca"), cfg.cert_ttl)?;
        let model = packlight_model::build(&store.inputs());
        let fleet_cfg = FleetConfig {
            envoy: cfg.envoy.clone(),
            packlight: cfg.packlight.clone(),
            xds: xds_addr,
            data_dir: cfg.data_dir.clone(),
            envoy_log_level: cfg.envoy_log_level.clone(),
        };
        let (events, _) = broadcast::channel(1024);
        Ok(Engine {
            inner: Arc::new(Inner {
                cfg,
                fleet_cfg,
                xds,
                ca,
                login,
                state: Mutex::new(State {
                    store,
                    model,
                    fleet: Fleet::default(),
                    ingress: None,
                    certs: CertCache {
                        issued: BTreeMap::new(),
                    },
                    expected: BTreeMap::new(),
                    round: 0,
                    unprogrammed: BTreeSet::new(),
                    stale: false,
                }),
                events,
                renders: packlight_xds::RenderCache::new(),
            }),
        })
    }

    /// The ADS server the proxies talk to.
    pub fn xds(&self) -> &XdsServer {
        &self.inner.xds
    }

    /// The login page's path: the first IngressPolicy's `login.loginUrl`
    /// in the accepted model, else `/login` (one login service serves
    /// every IngressPolicy).
    pub async fn login_url(&self) -> String {
        let st = self.inner.state.lock().await;
        st.model
            .mesh
            .ingresses
            .values()
            .find_map(|i| i.login.as_ref().map(|l| l.login_url.clone()))
            .unwrap_or_else(|| "/login".to_string())
    }

    /// Reports a proxy's NACK on the event stream (`/events`).
    pub fn report_nack(&self, node: &str, message: &str) {
        let _ = self.inner.events.send(Event::Nack {
            node: node.to_string(),
            message: message.to_string(),
        });
    }

    /// Change and status events from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Starts the gateway and every workload of the stored resources.
    pub async fn start(&self) -> Result<(), EngineError> {
        self.locked(|st| {
            let gw = start_envoy(&self.inner.fleet_cfg, INGRESS_NODE, "ingress")?;
            st.ingress = Some(gw);
            let all: BTreeSet<ResourceId> = st.store.iter().map(|(id, _)| id.clone()).collect();
            self.reconcile(st, None, all)
        })
        .await
    }

    /// Runs `change` under the state lock, then writes the store's files
    /// it left after the lock is released. `change`'s own error wins over
    /// a write error.
    async fn locked<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut st = self.inner.state.lock().await;
        let outcome = change(&mut st);
        let writes = st.store.take_writes();
        drop(st);
        let persisted = self.persist(writes?).await;
        let out = outcome?;
        persisted?;
        Ok(out)
    }

    /// Writes the store's files after the state lock is released (the
    /// push does not wait for the disk).
    async fn persist(&self, writes: Writes) -> Result<(), EngineError> {
        if writes.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        tokio::task::spawn_blocking(move || writes.write())
            .await
            .map_err(|e| EngineError::Io(std::io::Error::other(e)))??;
        tracing::debug!(write_ms = ms(t.elapsed()), "store written");
        Ok(())
    }

    /// Stops every process.
    pub async fn stop(&self) {
        let mut st = self.inner.state.lock().await;
        st.fleet.stop().await;
        if let Some(gw) = st.ingress.take() {
            gw.process.stop().await;
        }
    }

    /// Validates and (unless `dry_run`) stores the resources in `texts`
    /// (YAML or JSON, many documents each; the file name, when given,
    /// names it in diagnostics). Refused when the texts, or the store with
    /// them, have an error about any resource.
    pub async fn apply(
        &self,
        texts: &[(Option<&str>, &str)],
        namespace: &str,
        dry_run: bool,
    ) -> Result<Result<Applied, Refused>, EngineError> {
        let (alone, inputs) = packlight_model::load(texts, namespace);
        self.apply_loaded(texts, alone, inputs, dry_run).await
    }

    /// [`Engine::apply`] of texts the caller already loaded with
    /// `packlight_model::load(texts, namespace)` (`alone`, `inputs`), so
    /// they are parsed once.
    pub async fn apply_loaded(
        &self,
        texts: &[(Option<&str>, &str)],
        alone: Model,
        inputs: Vec<Input>,
        dry_run: bool,
    ) -> Result<Result<Applied, Refused>, EngineError> {
        if alone.has_errors() {
            return Ok(Err(Refused(errors(alone.diagnostics))));
        }
        self.locked(|st| self.apply_locked(st, texts, alone, inputs, dry_run))
            .await
    }

    fn apply_locked(
        &self,
        st: &mut State,
        texts: &[(Option<&str>, &str)],
        alone: Model,
        inputs: Vec<Input>,
        dry_run: bool,
    ) -> Result<Result<Applied, Refused>, EngineError> {
        let t = Instant::now();
        let ids: BTreeSet<ResourceId> = inputs.iter().map(|i| i.resource.id()).collect();
        let mut candidate: Vec<Input> = st
            .store
            .iter()
            .filter(|(id, _)| !ids.contains(*id))
            .map(|(_, s)| Input::new(s.resource.clone()))
            .collect();
        candidate.extend(inputs.iter().map(|i| Input::new(i.resource.clone())));
        let model = packlight_model::build(&candidate);
        tracing::debug!(
            resources = candidate.len(),
            validate_ms = ms(t.elapsed()),
            "change validated"
        );
        if let Some(refused) = refusal(&st.model, &model, &ids, |d| place(texts, &inputs, d)) {
            return Ok(Err(refused));
        }
        let warnings: Vec<Diagnostic> = alone
            .diagnostics
            .into_iter()
            .filter(|d| !d.is_error())
            .collect();
        let mut results = Vec::new();
        for input in inputs {
            let id = input.resource.id();
            let action = if dry_run {
                match st.store.get(&id) {
                    None => Action::Created,
                    Some(_) => Action::Configured,
                }
            } else {
                st.store.put(input.resource)?
            };
            results.push(ApplyResult {
                kind: id.kind.clone(),
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                action: action.as_str().to_string(),
            });
        }
        if !dry_run {
            for r in &results {
                if r.action != "unchanged" {
                    let _ = self.inner.events.send(Event::Changed {
                        kind: r.kind.clone(),
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                        action: r.action.clone(),
                    });
                }
            }
            if results.iter().any(|r| r.action != "unchanged") {
                let changed: BTreeSet<ResourceId> = results
                    .iter()
                    .filter(|r| r.action != "unchanged")
                    .map(|r| ResourceId {
                        kind: r.kind.clone(),
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                    })
                    .collect();
                self.change_model(st, model, changed)?;
            }
        }
        Ok(Ok(Applied {
            results,
            diagnostics: warnings,
        }))
    }

    /// Deletes one resource. `Ok(None)` when there was none; refused when
    /// the rest would be invalid without it.
    pub async fn delete(
        &self,
        id: &ResourceId,
    ) -> Result<Option<Result<(), Refused>>, EngineError> {
        self.locked(|st| self.delete_locked(st, id)).await
    }

    fn delete_locked(
        &self,
        st: &mut State,
        id: &ResourceId,
    ) -> Result<Option<Result<(), Refused>>, EngineError> {
        if st.store.get(id).is_none() {
            return Ok(None);
        }
        let candidate: Vec<Input> = st
            .store
            .iter()
            .filter(|(k, _)| *k != id)
            .map(|(_, s)| Input::new(s.resource.clone()))
            .collect();
        let model = packlight_model::build(&candidate);
        if let Some(refused) = refusal(&st.model, &model, &BTreeSet::new(), |d| d) {
            return Ok(Some(Err(refused)));
        }
        st.store.delete(id)?;
        let _ = self.inner.events.send(Event::Changed {
            kind: id.kind.clone(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            action: "deleted".into(),
        });
        self.change_model(st, model, BTreeSet::from([id.clone()]))?;
        Ok(Some(Ok(())))
    }

    /// One stored object with its status, as JSON.
    pub async fn get(&self, id: &ResourceId) -> Option<Value> {
        let st = self.inner.state.lock().await;
        st.store.get(id).map(|s| s.to_value())
    }

    /// Stored objects of one kind (and namespace, when given).
    pub async fn list(&self, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let st = self.inner.state.lock().await;
        st.store
            .iter()
            .filter(|(id, _)| id.kind == kind && namespace.is_none_or(|n| id.namespace == n))
            .map(|(_, s)| s.to_value())
            .collect()
    }

    /// Every instance (and the gateway) with its addresses and readiness.
    pub async fn instances(&self) -> Vec<InstanceInfo> {
        let (mut out, probes) = self.instances_locked().await;
        // Apps are probed after the state lock is released: a slow connect
        // must not hold up applies.
        for (i, app) in probes {
            let up = tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(app),
            )
            .await
            .is_ok_and(|c| c.is_ok());
            out[i].ready &= up;
        }
        out
    }

    /// The instances as far as the state says, and the apps (by index in
    /// the list) still to be probed for readiness.
    async fn instances_locked(&self) -> (Vec<InstanceInfo>, Vec<(usize, SocketAddr)>) {
        let st = self.inner.state.lock().await;
        let mut probes = Vec::new();
        let ready = |node: &str| {
            let want = st.expected.get(node).copied().unwrap_or(u64::MAX);
            *self.inner.xds.acked(node).borrow() >= want
        };
        let mut out = Vec::new();
        let admin = |file: &std::path::Path| {
            admin_address(file)
                .map(|a| a.to_string())
                .unwrap_or_default()
        };
        if let Some(gw) = &st.ingress {
            out.push(InstanceInfo {
                namespace: "packlight-system".into(),
                service: "ingress".into(),
                version: String::new(),
                index: 0,
                node: INGRESS_NODE.into(),
                app: String::new(),
                outbound: self.inner.cfg.ingress.to_string(),
                inbound: String::new(),
                admin: admin(&gw.admin),
                ready: ready(INGRESS_NODE),
                restarts: gw.process.restarts(),
            });
        }
        for (k, r) in st.fleet.iter() {
            let node = k.node();
            if r.started_app() {
                probes.push((out.len(), r.ports.app));
            }
            let (a, b) = r.restarts();
            out.push(InstanceInfo {
                namespace: k.service.namespace.clone(),
                service: k.service.name.clone(),
                version: k.version.to_string(),
                index: k.index,
                app: r.ports.app.to_string(),
                outbound: r.ports.outbound.to_string(),
                inbound: r.ports.inbound.to_string(),
                admin: admin(&r.admin),
                ready: ready(&node),
                node,
                restarts: a + b,
            });
        }
        (out, probes)
    }

    /// Renews certificates at half their lifetime; re-pushes the secrets
    /// of the proxies that use them. Returns how many were renewed.
    pub async fn rotate_certificates(&self) -> Result<usize, EngineError> {
        let mut st = self.inner.state.lock().await;
        let now = SystemTime::now();
        let due = st
            .certs
            .issued
            .values()
            .filter(|c| c.renew_at <= now)
            .count();
        if due > 0 {
            st.certs.issued.retain(|_, c| c.renew_at > now);
            tracing::info!(certificates = due, "rotating certificates");
            self.push(&mut st, None)?;
        }
        Ok(due)
    }

    /// The addresses of the engine's processes for the xDS translator.
    fn options(&self, st: &State) -> XdsOptions {
        XdsOptions {
            instances: st.fleet.instances(),
            ingress: self.inner.cfg.ingress,
            login: self.inner.login,
            ..XdsOptions::default()
        }
    }

    fn cert(&self, st: &mut State, spiffe_id: &str) -> Result<Issued, EngineError> {
        if let Some(c) = st.certs.issued.get(spiffe_id) {
            return Ok(c.clone());
        }
        let c = self.inner.ca.issue(spiffe_id)?;
        st.certs.issued.insert(spiffe_id.to_string(), c.clone());
        Ok(c)
    }

    /// Replaces the model by `model` (accepted) and reconciles; `changed`
    /// are the resources the change stored or deleted.
    fn change_model(
        &self,
        st: &mut State,
        model: Model,
        mut changed: BTreeSet<ResourceId>,
    ) -> Result<(), EngineError> {
        let old = std::mem::replace(&mut st.model, model);
        let diff = MeshDiff::new(&old.mesh, &st.model.mesh);
        // Status to look at again: what changed, what the change made
        // accepted or rejected, every rejected one (its message may
        // change), and the Routes of changed services (their split).
        let new = &st.model;
        changed.extend(
            new.verdicts
                .iter()
                .filter(|(id, v)| {
                    matches!(v, Verdict::Rejected(_)) || old.verdicts.get(*id) != Some(*v)
                })
                .map(|(id, _)| id.clone()),
        );
        changed.extend(
            old.verdicts
                .keys()
                .filter(|id| !new.verdicts.contains_key(*id))
                .cloned(),
        );
        changed.extend(
            diff.services
                .iter()
                .filter_map(|k| new.mesh.services.get(k))
                .filter_map(|s| s.route_source.clone()),
        );
        self.reconcile(st, Some((&old.mesh, &diff)), changed)
    }

    /// Converges the fleet on the model, pushes the config of the proxies
    /// `diff` may affect (all without one), writes the status of
    /// `touched` and watches for `Programmed`.
    fn reconcile(
        &self,
        st: &mut State,
        diff: Option<(&Mesh, &MeshDiff)>,
        touched: BTreeSet<ResourceId>,
    ) -> Result<(), EngineError> {
        let t = Instant::now();
        let State { model, fleet, .. } = &mut *st;
        let fleet_changed = fleet.converge(&model.mesh, &self.inner.fleet_cfg)?;
        let converged = t.elapsed();
        // New or gone instances change addresses every proxy may use.
        let scope = if fleet_changed { None } else { diff };
        self.push(st, scope)?;
        let pushed = t.elapsed();
        self.write_status(st, &touched, false)?;
        st.unprogrammed
            .extend(touched.into_iter().filter(|id| st.store.get(id).is_some()));
        self.watch_programmed(st);
        tracing::debug!(
            converge_ms = ms(converged),
            push_ms = ms(pushed - converged),
            status_ms = ms(t.elapsed() - pushed),
            round = st.round,
            "reconciled"
        );
        Ok(())
    }

    /// Translates and sets the snapshot of every proxy `scope` may affect
    /// (every proxy when `None`); remembers which generation each must
    /// ACK.
    fn push(&self, st: &mut State, scope: Option<(&Mesh, &MeshDiff)>) -> Result<(), EngineError> {
        let scope = if st.stale { None } else { scope };
        st.stale = true;
        let opts = self.options(st);
        let ca = self.inner.ca.trust_bundle().to_string();
        let mut expected = BTreeMap::new();
        let mut nodes = Vec::new();
        for (k, r) in st.fleet.iter() {
            nodes.push((k.node(), k.service.clone(), r.ports.clone()));
        }
        let mut skipped = 0usize;
        let mut todo = Vec::new();
        for (node, svc, ports) in nodes {
            if let Some((old, diff)) = scope
                && let Some(generation) = st.expected.get(&node).copied()
                && !diff.affects(old, &st.model.mesh, &svc)
            {
                expected.insert(node, generation);
                skipped += 1;
                continue;
            }
            let cert = self.cert(st, &names::spiffe_id(&opts.trust_domain, &svc))?;
            todo.push((node, svc, ports, cert));
        }
        let t0 = Instant::now();
        self.inner.renders.prune(&st.model.mesh);
        // Translation is CPU work per proxy: spread over the cores.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(todo.len().max(1));
        let chunk = todo.len().div_ceil(threads).max(1);
        let (mesh, xds, opts_ref, ca_ref) = (&st.model.mesh, &self.inner.xds, &opts, &ca);
        let renders = &self.inner.renders;
        let parts: Vec<Result<Vec<(String, u64)>, EngineError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = todo
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(node, svc, ports, cert)| -> Result<_, EngineError> {
                                let t = Instant::now();
                                let cfg = packlight_xds::sidecar_cached(
                                    mesh, svc, ports, opts_ref, renders,
                                )?;
                                let secrets = packlight_xds::secrets(
                                    opts_ref,
                                    &cert.cert_pem,
                                    &cert.key_pem,
                                    ca_ref,
                                );
                                let translated = t.elapsed();
                                let generation = xds.set(node, Snapshot::new(cfg, secrets));
                                tracing::trace!(
                                    node,
                                    translate_ms = ms(translated),
                                    set_ms = ms(t.elapsed() - translated),
                                    "proxy translated and set"
                                );
                                Ok((node.clone(), generation))
                            })
                            .collect::<Result<Vec<_>, EngineError>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(EngineError::Io(std::io::Error::other(
                            "a proxy's translation panicked",
                        )))
                    })
                })
                .collect()
        });
        for part in parts {
            expected.extend(part?);
        }
        let t_sidecars = t0.elapsed();
        if st.ingress.is_some() {
            let cfg = packlight_xds::ingress_gateway(&st.model.mesh, &opts)?;
            let cert = self.cert(st, &names::ingress_spiffe_id(&opts.trust_domain))?;
            let secrets = packlight_xds::secrets(&opts, &cert.cert_pem, &cert.key_pem, &ca);
            let generation = self
                .inner
                .xds
                .set(INGRESS_NODE, Snapshot::new(cfg, secrets));
            expected.insert(INGRESS_NODE.to_string(), generation);
        }
        for node in st.expected.keys() {
            if !expected.contains_key(node) {
                self.inner.xds.remove(node);
            }
        }
        tracing::debug!(
            proxies = expected.len(),
            skipped,
            sidecars_ms = ms(t_sidecars),
            gateway_ms = ms(t0.elapsed() - t_sidecars),
            "proxies translated and set"
        );
        st.expected = expected;
        st.round += 1;
        st.stale = false;
        Ok(())
    }

    /// Sets `Accepted` from the model's verdicts and `Programmed`
    /// (`programmed`: every proxy ACKed; else Pending) on those of `ids`
    /// still stored whose status changes (in memory: the store writes it
    /// later).
    fn write_status(
        &self,
        st: &mut State,
        ids: &BTreeSet<ResourceId>,
        programmed: bool,
    ) -> Result<(), EngineError> {
        for id in ids {
            let id = id.clone();
            let Some(stored) = st.store.get(&id) else {
                continue;
            };
            let generation = stored.resource.meta().generation.unwrap_or(1);
            let (accepted, why, message) = match st.model.verdicts.get(&id) {
                Some(Verdict::Rejected(Reason::Conflict)) => {
                    (false, reason::CONFLICT, first_error(&st.model, &id))
                }
                Some(Verdict::Rejected(Reason::Invalid)) => {
                    (false, reason::INVALID, first_error(&st.model, &id))
                }
                _ => (true, reason::VALID, "accepted".to_string()),
            };
            let prog = if programmed && accepted {
                condition(
                    CONDITION_PROGRAMMED,
                    true,
                    reason::PROGRAMMED,
                    "every affected Envoy acknowledged the configuration",
                    generation,
                )
            } else {
                condition(
                    CONDITION_PROGRAMMED,
                    false,
                    reason::PENDING,
                    if accepted {
                        "waiting for the Envoys to acknowledge"
                    } else {
                        "not accepted"
                    },
                    generation,
                )
            };
            let conditions = vec![
                condition(CONDITION_ACCEPTED, accepted, why, &message, generation),
                prog,
            ];
            let old = stored.status.clone();
            // Only a newer observation replaces a Programmed=True of the
            // same generation (no churn).
            if old["observedGeneration"] == generation
                && !programmed
                && old["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == CONDITION_PROGRAMMED && c["status"] == "True")
                })
                && accepted
            {
                continue;
            }
            let mut status = json!({
                "observedGeneration": generation,
                "conditions": with_transitions(&old, conditions),
            });
            if let Some(split) = route_split(&st.model, &id, &stored.resource) {
                status["split"] = Value::String(split);
            }
            if strip_times(&old) != strip_times(&status)
                && st.store.set_status(&id, status.clone())?
            {
                let _ = self.inner.events.send(Event::Status {
                    kind: id.kind.clone(),
                    namespace: id.namespace.clone(),
                    name: id.name.clone(),
                    status,
                });
            }
        }
        Ok(())
    }

    /// Marks the resources changed since the last programmed round
    /// Programmed once every proxy has ACKed this round's generation
    /// (unless a newer round started meanwhile: that one will).
    fn watch_programmed(&self, st: &State) {
        let round = st.round;
        let expected = st.expected.clone();
        let engine = self.clone();
        let t = Instant::now();
        tokio::spawn(async move {
            for (node, generation) in &expected {
                let mut rx = engine.inner.xds.acked(node);
                if rx.wait_for(|g| *g >= *generation).await.is_err() {
                    return;
                }
            }
            let acked = t.elapsed();
            let mut st = engine.inner.state.lock().await;
            if st.round != round {
                return;
            }
            let ids = std::mem::take(&mut st.unprogrammed);
            if let Err(e) = engine.write_status(&mut st, &ids, true) {
                tracing::error!(error = %e, "writing status");
            }
            let writes = st.store.take_writes();
            drop(st);
            tracing::debug!(
                round,
                resources = ids.len(),
                acked_ms = ms(acked),
                programmed_ms = ms(t.elapsed()),
                "every proxy ACKed: programmed"
            );
            let persisted = match writes {
                Ok(w) => engine.persist(w).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = persisted {
                tracing::error!(error = %e, "writing status");
            }
        });
    }

    /// Waits (bounded) until every proxy ACKed its latest config and every
    /// started app accepts connections.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.instances().await.iter().all(|i| i.ready) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.cfg.data_dir
    }
}

fn strip_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(cs) = v["conditions"].as_array_mut() {
        for c in cs {
            if let Some(m) = c.as_object_mut() {
                m.remove("lastTransitionTime");
            }
        }
    }
    v
}

/// The split a Route programs: its service's (same namespace) route
/// table, when this Route is the one the service took.
fn route_split(model: &Model, id: &ResourceId, resource: &Resource) -> Option<String> {
    let Resource::Route(route) = resource else {
        return None;
    };
    let key = ServiceKey::new(id.namespace.clone(), route.spec.service.clone());
    model
        .mesh
        .services
        .get(&key)
        .filter(|s| s.route_source.as_ref() == Some(id))
        .and_then(|s| s.route.as_ref())
        .map(|r| r.split())
}

fn first_error(model: &Model, id: &ResourceId) -> String {
    model
        .diagnostics_of(id)
        .find(|d| d.is_error())
        .map(|d| d.message.clone())
        .unwrap_or_else(|| "rejected".to_string())
}

fn errors(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.into_iter().filter(Diagnostic::is_error).collect()
}

/// A change is refused when the candidate model has an `Invalid` error
/// about a changed resource, or about one the current model accepts.
/// Conflicts are not refused: they are reported in status (DESIGN.md).
fn refusal(
    current: &Model,
    candidate: &Model,
    changed: &BTreeSet<ResourceId>,
    place: impl Fn(Diagnostic) -> Diagnostic,
) -> Option<Refused> {
    let mut out = Vec::new();
    for (id, verdict) in &candidate.verdicts {
        if *verdict != Verdict::Rejected(Reason::Invalid) {
            continue;
        }
        let was_ok = !matches!(current.verdicts.get(id), Some(Verdict::Rejected(_)));
        if changed.contains(id) || was_ok {
            out.extend(
                candidate
                    .diagnostics_of(id)
                    .filter(|d| d.is_error())
                    .cloned()
                    .map(&place),
            );
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(Refused(out))
    }
}

/// Gives a diagnostic about one of the request's resources its position
/// in the request text.
fn place(texts: &[(Option<&str>, &str)], inputs: &[Input], d: Diagnostic) -> Diagnostic {
    let origin = inputs.iter().find_map(|i| {
        let id = i.resource.id();
        (d.kind.as_deref() == Some(id.kind.as_str())
            && d.namespace.as_deref() == Some(id.namespace.as_str())
            && d.name.as_deref() == Some(id.name.as_str()))
        .then_some(i.origin.clone())
        .flatten()
    });
    let Some(origin) = origin else { return d };
    let Some((file, text)) = texts.get(origin.text) else {
        return d;
    };
    match packlight_model::source::parse_yaml(text, *file) {
        Ok(docs) => match docs.get(origin.doc) {
            Some(doc) => doc.locate(d),
            None => d,
        },
        Err(_) => d,
    }
}
