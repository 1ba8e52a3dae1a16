//! Admission: the validating webhook every replica serves (leader or not).
//!
//! `POST /validate` takes an AdmissionReview of a packlight resource and
//! judges it with the model together with every other packlight resource
//! the webhook's own watches hold ([`review::decide`]): an error the
//! object has on its own that CEL in the CRDs cannot express (a bad regex,
//! duration, host or version string) refuses the request with the model's
//! diagnostics, the text the CLI prints. What depends on other objects (a
//! Route naming a version its Microservice lacks, two Routes for one
//! service, an AccessPolicy or MeshPolicy naming what does not exist) is
//! never refused, as DESIGN.md says: it comes back as an admission warning
//! at apply time, and in status.
//!
//! What the webhook sees is the watches' view, a moment behind the API
//! server; before it refuses, it reads the object's namespace again from
//! the API server and judges once more, so an error another object just
//! applied would cure is never refused. Status stays the authority: the
//! webhook's configuration uses `failurePolicy: Ignore`, so a dead
//! operator never blocks the cluster, and what slips through is reported
//! in status as before.
//!
//! The certificate is managed here ([`certs`]): made with rcgen into a
//! Secret shared by the replicas, the CA bundle patched into the
//! ValidatingWebhookConfiguration, renewed before it expires and swapped
//! into the TLS server without a restart.

pub mod certs;
pub mod review;

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use kube::api::ListParams;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use packlight_model::Input;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::Value;

use crate::Error;
use crate::index::{SourceKind, Sources};
use certs::{Bundle, CertPolicy};

/// How the webhook runs.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Judge only resources of this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// Namespace of the certificate's Secret (the operator's namespace).
    pub secret_namespace: String,
    /// Name of the certificate's Secret.
    pub secret_name: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` is kept current.
    pub configuration: String,
    /// How the certificate is made and renewed.
    pub certs: CertPolicy,
    /// How often the Secret and the configuration are checked.
    pub check_every: Duration,
}

impl WebhookConfig {
    /// The defaults for a webhook behind the Service `service` in
    /// `namespace`: certificate for its DNS names, one year, renewed 30
    /// days ahead, checked every minute.
    pub fn for_service(service: &str, namespace: &str) -> Self {
        WebhookConfig {
            namespace: None,
            secret_namespace: namespace.to_string(),
            secret_name: format!("{service}-tls"),
            configuration: "packlight".to_string(),
            certs: CertPolicy {
                dns_names: vec![
                    format!("{service}.{namespace}.svc"),
                    format!("{service}.{namespace}.svc.cluster.local"),
                ],
                ip_addresses: Vec::<IpAddr>::new(),
                validity: Duration::from_secs(365 * 24 * 3600),
                renew_before: Duration::from_secs(30 * 24 * 3600),
            },
            check_every: Duration::from_secs(60),
        }
    }
}

/// The serving certificate, swapped in place on renewal.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }
}

fn certified_key(b: &Bundle) -> Result<CertifiedKey, Error> {
    let tls = |e: String| Error::Tls(e);
    let certs = CertificateDer::pem_slice_iter(b.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(format!("certificate PEM: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(b.key.as_bytes())
        .map_err(|e| tls(format!("key PEM: {e}")))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| tls(format!("key: {e}")))?;
    Ok(CertifiedKey::new(certs, key))
}

/// Runs `work` until it ends (`Some`) or `shutdown` comes (`None`), closing
/// every connection to `listener` at once meanwhile: without a certificate
/// the webhook cannot answer, and a closed connection lets the API server
/// apply the `failurePolicy` at once instead of waiting out its timeout.
async fn refusing<T>(
    listener: &tokio::net::TcpListener,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            _ = &mut *shutdown => return None,
            done = &mut work => return Some(done),
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => drop(tcp),
                // Out of descriptors and the like: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
        }
    }
}

/// Serves the webhook on `listener` until `shutdown` resolves. The first
/// certificate is retried with backoff (0.5 s doubling to 30 s, each failure
/// logged) until it is had or `shutdown` comes: an API server that is
/// briefly away at start never leaves a replica without its webhook.
/// Meanwhile connections are closed at once ([`refusing`]). Later renewal
/// failures are logged and retried at the next check.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    config: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut shutdown = Box::pin(shutdown);
    let mut delay = Duration::from_millis(500);
    let mut bundle = loop {
        let attempt = certs::ensure(
            &client,
            &config.secret_namespace,
            &config.secret_name,
            &config.certs,
        );
        let Some(result) = refusing(&listener, &mut shutdown, attempt).await else {
            return Ok(());
        };
        match result {
            Ok(b) => break b,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "no webhook certificate yet");
                let wait = tokio::time::sleep(delay);
                if refusing(&listener, &mut shutdown, wait).await.is_none() {
                    return Ok(());
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    if let Err(e) = certs::patch_ca_bundle(&client, &config.configuration, &bundle.ca_bundle).await
    {
        // The configuration may come later (it is checked again each round).
        tracing::warn!(error = %e, "could not patch the webhook's caBundle");
    }
    let resolver = Arc::new(Resolver(RwLock::new(Arc::new(certified_key(&bundle)?))));
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_cert_resolver(resolver.clone());
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let (sources, watches) = watch_sources(&client, config.namespace.as_deref());
    let state = Arc::new(State {
        client: client.clone(),
        sources,
    });
    let watches = tokio::spawn(watches);

    let renew = {
        let client = client.clone();
        let config = config.clone();
        let resolver = resolver.clone();
        async move {
            loop {
                tokio::time::sleep(config.check_every).await;
                match certs::ensure(
                    &client,
                    &config.secret_namespace,
                    &config.secret_name,
                    &config.certs,
                )
                .await
                {
                    Ok(next) => {
                        if next != bundle {
                            match certified_key(&next) {
                                Ok(k) => {
                                    if let Ok(mut slot) = resolver.0.write() {
                                        *slot = Arc::new(k);
                                    }
                                    tracing::info!(
                                        not_after = next.not_after,
                                        "serving the renewed webhook certificate"
                                    );
                                    bundle = next;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "renewed certificate unusable")
                                }
                            }
                        }
                        if let Err(e) = certs::patch_ca_bundle(
                            &client,
                            &config.configuration,
                            &bundle.ca_bundle,
                        )
                        .await
                        {
                            tracing::warn!(error = %e, "could not patch the webhook's caBundle");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "webhook certificate check failed"),
                }
            }
        }
    };
    let renew = tokio::spawn(renew);

    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
    renew.abort();
    watches.abort();
    Ok(())
}

struct State {
    client: Client,
    sources: Sources,
}

/// Reflectors over the six kinds, and the future that drives them.
fn watch_sources(
    client: &Client,
    namespace: Option<&str>,
) -> (Sources, impl Future<Output = ()> + Send + 'static) {
    fn one<K: SourceKind>(
        client: &Client,
        namespace: Option<&str>,
    ) -> (Store<K>, futures::stream::BoxStream<'static, ()>) {
        let writer: Writer<K> = Writer::default();
        let store = writer.as_reader();
        let api = match namespace {
            Some(ns) => Api::<K>::namespaced(client.clone(), ns),
            None => Api::<K>::all(client.clone()),
        };
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(crate::index::strip)
            .reflect(writer)
            .map(|_| ())
            .boxed();
        (store, stream)
    }
    let (microservices, a) = one(client, namespace);
    let (routes, b) = one(client, namespace);
    let (egress, c) = one(client, namespace);
    let (access, d) = one(client, namespace);
    let (mesh, e) = one(client, namespace);
    let (ingress, f) = one(client, namespace);
    let sources = Sources {
        microservices,
        routes,
        egress,
        access,
        mesh,
        ingress,
    };
    let run = futures::stream::select_all([a, b, c, d, e, f]).for_each(|()| async {});
    (sources, run)
}

fn inputs_of<K: SourceKind>(objs: impl IntoIterator<Item = K>, out: &mut Vec<Input>) {
    out.extend(objs.into_iter().map(|o| o.input()));
}

/// Every resource the watches hold.
fn known(sources: &Sources) -> Vec<Input> {
    let mut out = Vec::new();
    let s = sources;
    inputs_of(
        s.microservices.state().iter().map(|o| (**o).clone()),
        &mut out,
    );
    inputs_of(s.routes.state().iter().map(|o| (**o).clone()), &mut out);
    inputs_of(s.egress.state().iter().map(|o| (**o).clone()), &mut out);
    inputs_of(s.access.state().iter().map(|o| (**o).clone()), &mut out);
    inputs_of(s.mesh.state().iter().map(|o| (**o).clone()), &mut out);
    inputs_of(s.ingress.state().iter().map(|o| (**o).clone()), &mut out);
    out
}

/// Every resource, with `namespace` read afresh from the API server.
async fn fresh(
    client: &Client,
    sources: &Sources,
    namespace: &str,
) -> Result<Vec<Input>, kube::Error> {
    async fn list<K: SourceKind>(
        client: &Client,
        ns: &str,
        out: &mut Vec<Input>,
    ) -> Result<(), kube::Error> {
        let items = Api::<K>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items;
        inputs_of(items, out);
        Ok(())
    }
    let mut out: Vec<Input> = known(sources)
        .into_iter()
        .filter(|i| i.resource.id().namespace != namespace)
        .collect();
    list::<packlight_api::Microservice>(client, namespace, &mut out).await?;
    list::<packlight_api::Route>(client, namespace, &mut out).await?;
    list::<packlight_api::EgressPolicy>(client, namespace, &mut out).await?;
    list::<packlight_api::AccessPolicy>(client, namespace, &mut out).await?;
    list::<packlight_api::MeshPolicy>(client, namespace, &mut out).await?;
    list::<packlight_api::IngressPolicy>(client, namespace, &mut out).await?;
    Ok(out)
}

async fn ready(sources: &Sources) -> bool {
    let s = sources;
    let wait = async {
        s.microservices.wait_until_ready().await.is_ok()
            && s.routes.wait_until_ready().await.is_ok()
            && s.egress.wait_until_ready().await.is_ok()
            && s.access.wait_until_ready().await.is_ok()
            && s.mesh.wait_until_ready().await.is_ok()
            && s.ingress.wait_until_ready().await.is_ok()
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(false)
}

fn reply(status: StatusCode, body: String) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn handle(state: &State, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    if req.method() != Method::POST || req.uri().path() != "/validate" {
        return reply(StatusCode::NOT_FOUND, "{}".into());
    }
    // AdmissionReviews carry one object: 3 MiB is etcd's object limit.
    let body = match Limited::new(req.into_body(), 3 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "{}".into()),
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return reply(StatusCode::BAD_REQUEST, "{}".into());
    };
    let Some(request) = review::Request::of(&review) else {
        return reply(StatusCode::BAD_REQUEST, "{}".into());
    };
    let decision = judge(state, &request).await;
    tracing::debug!(
        uid = request.uid,
        allowed = decision.allowed,
        "admission review"
    );
    let body = review::response(request.uid, &decision).to_string();
    reply(StatusCode::OK, body)
}

async fn judge(state: &State, request: &review::Request<'_>) -> review::Decision {
    if request.needs_no_review() {
        return review::Decision::allow();
    }
    let watched = ready(&state.sources).await;
    let decision = review::decide(request, &known(&state.sources));
    if decision.allowed && watched {
        return decision;
    }
    // The watches may be a moment behind (a Microservice applied just
    // before its Route), or not listed yet: read the namespace afresh.
    match fresh(&state.client, &state.sources, request.namespace).await {
        Ok(inputs) => review::decide(request, &inputs),
        Err(e) => {
            tracing::warn!(error = %e, "admission: could not read the namespace; allowing");
            let mut d = decision;
            if !d.allowed {
                d = review::Decision::allow();
                d.warnings.push(format!(
                    "packlight could not check references ({e}); see the resource's status"
                ));
            }
            d
        }
    }
}
