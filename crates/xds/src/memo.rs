//! Parts of proxy configs that many proxies of one push share.
//!
//! A service's outbound clusters, their endpoints and its mesh routes
//! depend only on the service and the [`XdsOptions`], not on the caller;
//! in a mesh where every sidecar may call the same services (an
//! AccessPolicy makes its service routable by every caller), each push
//! rendered them once per sidecar. A [`Memo`] renders them once per push
//! and hands out copies: the output is identical with or without it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::route::v3::Route;
use packlight_model::ir::{Service, ServiceKey};
use packlight_model::routing::Vantage;

use crate::routes::service_routes;
use crate::{ProxyConfig, XdsOptions, clusters};

/// What every caller of a service gets from it.
#[derive(Debug, Default)]
pub(crate) struct ServiceParts {
    /// Outbound clusters and their endpoints (no listeners or routes).
    pub config: ProxyConfig,
    /// The service's routes as seen from the mesh.
    pub routes: Vec<Route>,
}

/// Shared translation parts for one mesh and one [`XdsOptions`]: valid for
/// the proxies of one push only (a new mesh or new options need a new
/// memo). Safe to share between threads.
#[derive(Debug, Default)]
pub struct Memo {
    parts: Mutex<BTreeMap<ServiceKey, Arc<ServiceParts>>>,
}

impl Memo {
    /// The parts of `svc`, rendered on first use.
    pub(crate) fn service(&self, svc: &Service, opts: &XdsOptions) -> Arc<ServiceParts> {
        if let Some(p) = self.lock().get(&svc.key) {
            return p.clone();
        }
        // Rendered outside the lock: two threads may both render a service
        // once; the first one stored wins (both are equal).
        let mut config = ProxyConfig::default();
        clusters::mesh_clusters(svc, opts, &mut config);
        let parts = Arc::new(ServiceParts {
            config,
            routes: service_routes(svc, Vantage::Mesh, "/", ""),
        });
        self.lock().entry(svc.key.clone()).or_insert(parts).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServiceKey, Arc<ServiceParts>>> {
        // A panic while holding the lock leaves a complete map (inserts are
        // single calls): keep using it.
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
