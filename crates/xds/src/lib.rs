//! # packlight-xds — the IR as Envoy resources
//!
//! The standalone engine's translator. In: the mesh IR
//! ([`packlight_model::ir::Mesh`]) and [`XdsOptions`] (the addresses the
//! runtime chose). Out: a [`ProxyConfig`] per proxy — clusters, endpoints
//! (`ClusterLoadAssignment`), listeners, route configurations, and the SDS
//! secret names they use — as typed `envoy-types` messages, sorted by name.
//!
//! * [`sidecar`]: one workload instance's sidecar: an outbound listener the
//!   app uses as its HTTP(S) proxy, scoped to the services it may call and
//!   its egress whitelist, and an inbound listener (mTLS, RBAC) in front of
//!   the app.
//! * [`ingress_gateway`]: the ingress gateway for every IngressPolicy.
//! * [`secrets`]: the SDS secrets those configs name, from PEM the
//!   runtime's CA supplies.
//! * [`sidecar_cached`]: [`sidecar`] with a [`RenderCache`] the runtime
//!   keeps between translations: each callee's clusters and routes are
//!   rendered once for all callers and again only when its inputs change
//!   (the output is the same as without the cache).
//!
//! Pure and deterministic: no I/O, no clock, no logging. It never serves
//! xDS (the server lives elsewhere) and never re-validates input: the model
//! did. Decisions are written down in `docs/xds.md`.
#![forbid(unsafe_code)]

mod cache;
mod clusters;
mod hcm;
mod inbound;
mod ingress;
pub mod names;
mod options;
mod outbound;
mod proto;
mod routes;
mod secrets;
mod tls;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use packlight_model::ir::{Mesh, ServiceKey};

pub use cache::RenderCache;
pub use options::{Instance, XdsOptions};
pub use secrets::secrets;

/// What translation can refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XdsError {
    /// The service is not in the mesh, or has no Microservice (no port).
    #[error("service {0} has no workload in the mesh")]
    UnknownWorkload(String),
    /// An IngressPolicy asks for login and no login service address is set.
    #[error("IngressPolicy {0} uses login, but no login service address is configured")]
    NoLoginService(String),
}

/// Everything one Envoy needs, each list sorted by resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyConfig {
    /// CDS.
    pub clusters: Vec<Cluster>,
    /// EDS, one per EDS cluster.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// LDS.
    pub listeners: Vec<Listener>,
    /// RDS.
    pub routes: Vec<RouteConfiguration>,
    /// SDS secret names the resources refer to (the identity's
    /// certificate and the trust bundle); the CA supplies their contents.
    pub secrets: Vec<String>,
}

impl ProxyConfig {
    fn sorted(mut self) -> Self {
        self.clusters.sort_by(|a, b| a.name.cmp(&b.name));
        self.clusters.dedup_by(|a, b| a.name == b.name);
        self.endpoints
            .sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
        self.endpoints
            .dedup_by(|a, b| a.cluster_name == b.cluster_name);
        self.listeners.sort_by(|a, b| a.name.cmp(&b.name));
        self.routes.sort_by(|a, b| a.name.cmp(&b.name));
        self.secrets.sort();
        self.secrets.dedup();
        self
    }
}

/// The sidecar of one instance of `svc`.
pub fn sidecar(
    mesh: &Mesh,
    svc: &ServiceKey,
    instance: &Instance,
    opts: &XdsOptions,
) -> Result<ProxyConfig, XdsError> {
    render_sidecar(mesh, svc, instance, opts, None)
}

/// [`sidecar`], taking each callee's parts from `cache` when it holds
/// them for the same inputs (and keeping those it renders). Same output.
pub fn sidecar_cached(
    mesh: &Mesh,
    svc: &ServiceKey,
    instance: &Instance,
    opts: &XdsOptions,
    cache: &RenderCache,
) -> Result<ProxyConfig, XdsError> {
    render_sidecar(mesh, svc, instance, opts, Some(cache))
}

fn render_sidecar(
    mesh: &Mesh,
    svc: &ServiceKey,
    instance: &Instance,
    opts: &XdsOptions,
    cache: Option<&RenderCache>,
) -> Result<ProxyConfig, XdsError> {
    let service = mesh
        .services
        .get(svc)
        .filter(|s| s.workload.is_some())
        .ok_or_else(|| XdsError::UnknownWorkload(svc.to_string()))?;
    let mut out = ProxyConfig::default();
    outbound::render(mesh, service, instance, opts, cache, &mut out);
    inbound::render(mesh, service, instance, opts, &mut out);
    out.secrets = vec![opts.sds_certificate.clone(), opts.sds_trust_bundle.clone()];
    Ok(out.sorted())
}

/// The ingress gateway serving every IngressPolicy of the mesh.
pub fn ingress_gateway(mesh: &Mesh, opts: &XdsOptions) -> Result<ProxyConfig, XdsError> {
    let mut out = ProxyConfig::default();
    ingress::render(mesh, opts, &mut out)?;
    out.secrets = vec![opts.sds_certificate.clone(), opts.sds_trust_bundle.clone()];
    Ok(out.sorted())
}
