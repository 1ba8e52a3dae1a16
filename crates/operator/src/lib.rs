//! # packlight-operator — the Kubernetes runtime
//!
//! The room where packlight meets a cluster. In: watch events of the six
//! packlight kinds and of the objects packlight manages
//! (`app.kubernetes.io/managed-by: packlight`). Out: server-side applies
//! (field manager `packlight`) of what `packlight-istio` renders, deletions
//! of orphans, `status` with `Accepted`/`Programmed` conditions, and
//! Kubernetes Events on condition transitions.
//!
//! Shape (kube-rs `Controller`, linkerd2's "index, then write"): reflectors
//! keep every input in memory ([`index`]); a controller keyed by namespace
//! reconciles one namespace at a time ([`reconcile`]), level-based: it
//! takes the mesh rendered at the current revision, compares, and writes
//! only the difference. A no-op reconcile writes nothing. Errors requeue
//! with exponential backoff and jitter.
//!
//! It never builds an Istio object by hand (that is `packlight-istio`) and
//! never re-checks input (that is `packlight-model`).
#![forbid(unsafe_code)]
// Diagnostics are large and live only on the cold path (see packlight-model).
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod http;
pub mod index;
pub mod leader;
pub mod outputs;
pub mod reconcile;
pub mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::DynamicObject;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, store::Writer};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use packlight_istio::RenderOptions;
use tokio::sync::mpsc;
use tokio_stream_shim::UnboundedReceiverStream;

use crate::index::{ChangeFilter, Index, Sources};
use crate::outputs::{OUTPUT_KINDS, ObjectKey};

/// Errors of a reconcile or of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{0}: {1}")]
    Kube(String, #[source] kube::Error),
    /// JSON (de)serialisation failed.
    #[error("JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The watches have not listed everything yet.
    #[error("the watches are not synced yet")]
    NotReady,
    /// Some objects could not be applied or deleted.
    #[error("{0} object(s) could not be applied or deleted")]
    ApplyFailed(usize),
    /// The webhook's certificate could not be made.
    #[error(transparent)]
    Cert(#[from] admission::certs::CertError),
    /// The webhook's TLS setup failed.
    #[error("webhook TLS: {0}")]
    Tls(String),
}

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Watch and write only this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// What the cluster around the mesh looks like.
    pub render: RenderOptions,
    /// This replica's name, for Events (e.g. the pod name).
    pub instance: Option<String>,
    /// Namespaces reconciled at once.
    pub concurrency: u16,
    /// Leader election: only the Lease's holder runs the controller
    /// (`None`: this replica always does).
    pub lease: Option<leader::LeaseConfig>,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            namespace: None,
            render: RenderOptions::default(),
            instance: None,
            concurrency: 4,
            lease: None,
        }
    }
}

/// Counters of what the operator did, for tests and metrics.
#[derive(Debug)]
pub struct Stats {
    /// Reconciles run.
    pub reconciles: AtomicU64,
    /// Reconciles that failed.
    pub errors: AtomicU64,
    /// Server-side applies sent.
    pub applies: AtomicU64,
    /// Deletes sent.
    pub deletes: AtomicU64,
    /// Status writes sent.
    pub status_writes: AtomicU64,
    /// GETs of objects not in the managed cache.
    pub reads: AtomicU64,
    /// 1 while this replica leads (or runs without leader election).
    pub leader: AtomicU64,
    /// 1 once every watch has listed everything (while leading).
    pub synced: AtomicU64,
    /// Objects labelled managed-by packlight in the watched scope.
    pub managed: AtomicU64,
    /// Seconds per namespace reconcile.
    pub duration: prometheus_client::metrics::histogram::Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            reconciles: AtomicU64::default(),
            errors: AtomicU64::default(),
            applies: AtomicU64::default(),
            deletes: AtomicU64::default(),
            status_writes: AtomicU64::default(),
            reads: AtomicU64::default(),
            leader: AtomicU64::default(),
            synced: AtomicU64::default(),
            managed: AtomicU64::default(),
            // 5 ms .. ~40 s
            duration: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 14),
            ),
        }
    }
}

impl Stats {
    /// Every write request sent: applies, deletes and status writes.
    pub fn writes(&self) -> u64 {
        self.applies.load(Ordering::Relaxed)
            + self.deletes.load(Ordering::Relaxed)
            + self.status_writes.load(Ordering::Relaxed)
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    index: Index,
    recorder: Recorder,
    stats: Arc<Stats>,
    failures: reconcile::Failures,
    /// Per object: digest of what was last applied and the resourceVersion
    /// the apply returned (so server-side normalisation never causes
    /// re-applies).
    applied: Mutex<HashMap<ObjectKey, (u64, String)>>,
    /// Per orphan: the resourceVersion it had when it was deleted (or
    /// found gone), so a watch cache that has not yet seen the deletion
    /// never causes a second delete.
    deleted: Mutex<HashMap<ObjectKey, String>>,
    /// Per managed object: its resourceVersion and its JSON form, so a
    /// reconcile converts from the watch cache only the objects that
    /// changed since the last one.
    live_values: Mutex<HashMap<ObjectKey, (String, Arc<serde_json::Value>)>>,
    /// Moves on every event of a managed kind's watch (after the store has
    /// it).
    outputs_touched: Arc<AtomicU64>,
    /// Per namespace: its live objects as the last reconcile found them,
    /// kept while no managed object's event arrived and the set of
    /// namespaces (which decides adoption) is the same.
    live_snapshots: Mutex<HashMap<String, reconcile::LiveSnapshot>>,
    /// Per namespace: the desired objects the last reconcile found in
    /// place, with the live snapshot it found them in; while a reconcile
    /// sees the same snapshot, the same objects need no look at all.
    confirmed: Mutex<HashMap<String, reconcile::Confirmed>>,
    /// Per source resource: the resourceVersion at which its status was
    /// last written or found up to date, and the hash of the conditions it
    /// says; while both hold, a reconcile passes the resource without
    /// converting it to JSON (at 2,000 resources that cost ~60 ms).
    statuses: Mutex<HashMap<packlight_model::ResourceId, (String, u64)>>,
    /// Every namespace, when the operator watches them all (to adopt
    /// objects whose home namespace is gone; see [`reconcile`]).
    namespaces: Option<kube::runtime::reflector::Store<Namespace>>,
}

/// The operator, ready to run.
pub struct Operator {
    client: Client,
    config: OperatorConfig,
    stats: Arc<Stats>,
}

impl Operator {
    /// An operator that uses `client` (its identity decides what it may do).
    pub fn new(client: Client, config: OperatorConfig) -> Self {
        Operator {
            client,
            config,
            stats: Arc::default(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` resolves (then finishes the reconciles in
    /// flight and returns). With leader election, it first waits to hold
    /// the Lease, runs the controller while it holds it, and waits again
    /// when it loses it; at shutdown it releases the Lease.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Operator {
            client,
            config,
            stats,
        } = self;
        let shutdown = shutdown.boxed().shared();
        let Some(lease) = config.lease.clone() else {
            serve(client, config, stats, shutdown).await;
            return;
        };
        let identity = config.instance.clone().unwrap_or_else(random_identity);
        let mut elector = leader::Elector::new(client.clone(), lease, identity);
        loop {
            tokio::select! {
                _ = elector.acquire() => {}
                _ = shutdown.clone() => return,
            }
            let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let holder = tokio::spawn(async move {
                tokio::select! {
                    _ = elector.hold() => { let _ = lost_tx.send(()); }
                    _ = stop_rx => {}
                }
                elector
            });
            let stop = {
                let shutdown = shutdown.clone();
                async move {
                    tokio::select! {
                        _ = shutdown => {}
                        _ = lost_rx => {}
                    }
                }
            };
            serve(client.clone(), config.clone(), stats.clone(), stop).await;
            let _ = stop_tx.send(());
            elector = match holder.await {
                Ok(e) => e,
                Err(_) => return,
            };
            if shutdown.peek().is_some() {
                elector.release().await;
                return;
            }
        }
    }
}

fn random_identity() -> String {
    use std::hash::BuildHasher;
    let n = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    format!("packlight-{n:016x}")
}

/// Builds the watches and the controller and runs it until `stop`.
async fn serve(
    client: Client,
    config: OperatorConfig,
    stats: Arc<Stats>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    stats.leader.store(1, Ordering::Relaxed);
    let revision = Arc::new(AtomicU64::new(0));
    let (resync_tx, resync_rx) = mpsc::unbounded_channel::<()>();
    let (retrigger_tx, retrigger_rx) = mpsc::unbounded_channel::<String>();
    let filter = || ChangeFilter::new(revision.clone(), resync_tx.clone());
    // Managed objects move their own counter: the model is built from the
    // sources alone, so the echo of the operator's own writes triggers a
    // reconcile (drift is repaired) but never a rebuild of the model.
    let output_revision = Arc::new(AtomicU64::new(0));
    let outputs_touched = Arc::new(AtomicU64::new(0));
    let output_filter = || {
        ChangeFilter::new(output_revision.clone(), resync_tx.clone())
            .touching(outputs_touched.clone())
    };

    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns_watch = match &config.namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let mut controller = Controller::new(ns_api, ns_watch)
        .with_config(ControllerConfig::default().concurrency(config.concurrency));

    macro_rules! source {
        ($ty:ty) => {{
            let writer: Writer<$ty> = Writer::default();
            let store = writer.as_reader();
            let api = match &config.namespace {
                Some(ns) => Api::<$ty>::namespaced(client.clone(), ns),
                None => Api::<$ty>::all(client.clone()),
            };
            let stream = index::source_stream(api, writer, filter());
            controller = controller.watches_stream(stream, |obj: $ty| {
                obj.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns))
            });
            store
        }};
    }
    let sources = Sources {
        microservices: source!(packlight_api::Microservice),
        routes: source!(packlight_api::Route),
        egress: source!(packlight_api::EgressPolicy),
        access: source!(packlight_api::AccessPolicy),
        mesh: source!(packlight_api::MeshPolicy),
        ingress: source!(packlight_api::IngressPolicy),
    };

    let mut outputs = Vec::new();
    for (i, (_, _, kind, _)) in OUTPUT_KINDS.iter().enumerate() {
        let Some(ar) = outputs::output_resource(i) else {
            continue;
        };
        let writer = Writer::<DynamicObject>::new(ar.clone());
        outputs.push(writer.as_reader());
        let api = match &config.namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &ar),
        };
        let stream = index::output_stream(api, writer, output_filter(), kind);
        controller = controller.watches_stream_with(
            stream,
            |obj: DynamicObject| index::home_of(&obj).map(|ns| ObjectRef::<Namespace>::new(&ns)),
            ar,
        );
    }

    let reporter = Reporter {
        controller: "packlight".to_string(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        index: Index::new(
            sources,
            outputs,
            revision.clone(),
            config.render.clone(),
            retrigger_tx,
        ),
        client,
        stats: stats.clone(),
        failures: Default::default(),
        applied: Mutex::default(),
        deleted: Mutex::default(),
        live_values: Mutex::default(),
        outputs_touched,
        live_snapshots: Mutex::default(),
        confirmed: Mutex::default(),
        statuses: Mutex::default(),
        namespaces: config.namespace.is_none().then(|| controller.store()),
    });

    let retrigger =
        UnboundedReceiverStream(retrigger_rx).map(|ns: String| ObjectRef::<Namespace>::new(&ns));
    let resync = UnboundedReceiverStream(resync_rx);
    controller
        .reconcile_on(retrigger)
        .reconcile_all_on(resync)
        .graceful_shutdown_on(stop)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(namespace = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
    stats.leader.store(0, Ordering::Relaxed);
    stats.synced.store(0, Ordering::Relaxed);
}

/// `packlight operator`: run the operator against the cluster of the
/// current kubeconfig or in-cluster service account.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Watch and write only this namespace (default: every namespace).
    #[arg(long = "namespace")]
    pub namespace: Option<String>,
    /// Namespace of the Istio ingress gateway.
    #[arg(long = "gateway-namespace", default_value = "istio-system")]
    pub gateway_namespace: String,
    /// Principal of the ingress gateway (for `ingress: true`).
    #[arg(
        long = "ingress-principal",
        default_value = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    )]
    pub ingress_principal: String,
    /// Namespaces reconciled at once.
    #[arg(long = "concurrency", default_value_t = 4)]
    pub concurrency: u16,
    /// Run without leader election (one replica only!).
    #[arg(long = "no-leader-election")]
    pub no_leader_election: bool,
    /// Namespace of the leader Lease (default: `$POD_NAMESPACE`, else
    /// `packlight-system`).
    #[arg(long = "lease-namespace")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long = "lease-name", default_value = "packlight-operator")]
    pub lease_name: String,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long = "http-address", default_value = "0.0.0.0:8080")]
    pub http_address: std::net::SocketAddr,
    /// Log format.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Serve the validating webhook (HTTPS, `POST /validate`) on this
    /// address; every replica serves it (default: no webhook).
    #[arg(long = "webhook-address")]
    pub webhook_address: Option<std::net::SocketAddr>,
    /// The webhook's Service (its certificate names
    /// `<service>.<operator namespace>.svc`; its Secret `<service>-tls`).
    #[arg(long = "webhook-service", default_value = "packlight-webhook")]
    pub webhook_service: String,
    /// The ValidatingWebhookConfiguration whose caBundle the operator keeps.
    #[arg(long = "webhook-configuration", default_value = "packlight")]
    pub webhook_configuration: String,
}

/// How logs are written (to stderr; level from `RUST_LOG`, default info).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with span fields (namespace, ...).
    #[default]
    Json,
    /// Human-readable text.
    Text,
}

impl OperatorArgs {
    /// The webhook's configuration, when `--webhook-address` is given.
    /// Its Secret lives in `$POD_NAMESPACE` (else `packlight-system`).
    pub fn webhook(&self) -> Option<admission::WebhookConfig> {
        self.webhook_address?;
        let ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "packlight-system".into());
        let mut config = admission::WebhookConfig::for_service(&self.webhook_service, &ns);
        config.namespace = self.namespace.clone();
        config.configuration = self.webhook_configuration.clone();
        Some(config)
    }

    /// The configuration these flags describe. The replica's name comes
    /// from `$POD_NAME` when set.
    pub fn config(&self) -> OperatorConfig {
        OperatorConfig {
            namespace: self.namespace.clone(),
            render: RenderOptions {
                gateway_namespace: self.gateway_namespace.clone(),
                ingress_principal: self.ingress_principal.clone(),
                ..RenderOptions::default()
            },
            instance: std::env::var("POD_NAME").ok(),
            concurrency: self.concurrency.max(1),
            lease: (!self.no_leader_election).then(|| leader::LeaseConfig {
                namespace: self
                    .lease_namespace
                    .clone()
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "packlight-system".into()),
                name: self.lease_name.clone(),
                ..leader::LeaseConfig::default()
            }),
        }
    }
}

/// Runs the operator until SIGINT or SIGTERM: logs, the HTTP endpoints,
/// and the controller (behind leader election unless disabled).
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    let client = Client::try_default().await?;
    let operator = Operator::new(client.clone(), args.config());
    let listener = tokio::net::TcpListener::bind(args.http_address).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz, /metrics");
    let shutdown = shutdown_signal().shared();
    let http = tokio::spawn(http::serve(listener, operator.stats(), shutdown.clone()));
    let webhook = match (args.webhook_address, args.webhook()) {
        (Some(address), Some(config)) => {
            let listener = tokio::net::TcpListener::bind(address).await?;
            tracing::info!(address = %listener.local_addr()?, "serving the admission webhook");
            Some(tokio::spawn(admission::serve(
                listener,
                client.clone(),
                config,
                shutdown.clone(),
            )))
        }
        _ => None,
    };
    operator.run(shutdown).await;
    http.await??;
    if let Some(webhook) = webhook {
        webhook.await??;
    }
    Ok(())
}

/// Installs the log subscriber (a no-op when one is installed already).
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}

/// A stream over an unbounded receiver (what tokio-stream's wrapper does,
/// without the extra dependency).
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::sync::mpsc::UnboundedReceiver;

    pub struct UnboundedReceiverStream<T>(pub UnboundedReceiver<T>);

    impl<T> futures::Stream for UnboundedReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
