//! What many sidecars hold alike, rendered once and kept between
//! translations: per callee, the clusters, endpoints and mesh routes every
//! caller's outbound side gets for it.
//!
//! A [`RenderCache`] is a memo, not state: each entry keeps the inputs it
//! was rendered from (the callee's IR [`Service`], its instances, the SDS
//! names and trust domain) and is used only when they are equal to the
//! current ones, so a translation with a cache returns exactly what one
//! without returns. What it saves: a change to one service re-renders that
//! service's parts only, not those of the 40 others every affected
//! sidecar can reach.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::Route;
use packlight_model::Version;
use packlight_model::ir::{Mesh, Service, ServiceKey};
use packlight_model::routing::Vantage;

use crate::routes::service_routes;
use crate::{Instance, ProxyConfig, XdsOptions, clusters};

/// Rendered callee parts, kept between translations (see the module doc).
/// Shared by threads translating sidecars at the same time.
#[derive(Debug, Default)]
pub struct RenderCache {
    callees: Mutex<HashMap<ServiceKey, Arc<Callee>>>,
}

/// One callee as every caller's outbound side sees it, and the inputs it
/// was rendered from.
#[derive(Debug)]
pub(crate) struct Callee {
    service: Service,
    instances: Option<BTreeMap<Version, Vec<Instance>>>,
    sds: (String, String, String),
    /// Its EDS clusters (`clusters::mesh_clusters`).
    pub clusters: Vec<Cluster>,
    /// Their load assignments.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// Its routes from the mesh vantage (`service_routes`).
    pub routes: Vec<Route>,
}

fn sds(opts: &XdsOptions) -> (String, String, String) {
    (
        opts.sds_certificate.clone(),
        opts.sds_trust_bundle.clone(),
        opts.trust_domain.clone(),
    )
}

impl Callee {
    fn render(svc: &Service, opts: &XdsOptions) -> Self {
        let mut out = ProxyConfig::default();
        clusters::mesh_clusters(svc, opts, &mut out);
        Callee {
            service: svc.clone(),
            instances: opts.instances.get(&svc.key).cloned(),
            sds: sds(opts),
            clusters: out.clusters,
            endpoints: out.endpoints,
            routes: service_routes(svc, Vantage::Mesh, "/", ""),
        }
    }

    /// Whether it was rendered from these inputs.
    fn current(&self, svc: &Service, opts: &XdsOptions) -> bool {
        self.service == *svc
            && self.instances.as_ref() == opts.instances.get(&svc.key)
            && self.sds.0 == opts.sds_certificate
            && self.sds.1 == opts.sds_trust_bundle
            && self.sds.2 == opts.trust_domain
    }
}

impl RenderCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<ServiceKey, Arc<Callee>>> {
        // A panic while holding the lock leaves whole entries only (an
        // insert or a removal): the map is still usable.
        self.callees.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parts of `svc` for `opts`: the kept ones when rendered from the
    /// same inputs, else rendered now (and kept).
    pub(crate) fn callee(&self, svc: &Service, opts: &XdsOptions) -> Arc<Callee> {
        if let Some(c) = self.map().get(&svc.key)
            && c.current(svc, opts)
        {
            return Arc::clone(c);
        }
        // Rendered outside the lock; two threads may both render a new
        // entry, and either result is the same.
        let c = Arc::new(Callee::render(svc, opts));
        self.map().insert(svc.key.clone(), Arc::clone(&c));
        c
    }

    /// Forgets the services `mesh` no longer has.
    pub fn prune(&self, mesh: &Mesh) {
        self.map().retain(|k, _| mesh.services.contains_key(k));
    }

    /// How many callees are kept.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
