//! # packlight-xds-server — the ADS server of the standalone engine
//!
//! In: per proxy (node id) a [`Snapshot`] — what the pure translator
//! (`packlight-xds`) rendered plus the SDS secrets the runtime's CA issued —
//! handed in with [`XdsServer::set`]. Out: Envoy's aggregated discovery
//! service over gRPC, incremental (delta, the main mode) and state of the
//! world, for CDS, EDS, LDS, RDS and SDS; and per node the ACKed
//! generation ([`XdsServer::acked`]), a status and an event stream, from
//! which the runtime derives `Programmed`.
//!
//! It pushes only changed resources, only to the node they belong to, in
//! the order CDS, EDS, LDS, RDS, SDS (clusters removed last). A NACK is
//! logged and reported; the proxy keeps its last good config and the
//! rejected version is not sent again. It never builds Envoy resources
//! itself (the translator does) and never panics on client input.
//! Decisions are written down in `docs/xds-server.md`.
#![forbid(unsafe_code)]

mod bootstrap;
mod delta;
mod node;
mod service;
mod snapshot;
mod sotw;
mod stream;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio::sync::{broadcast, watch};

pub use bootstrap::{XDS_CLUSTER, bootstrap};
pub use node::{Nack, NodeStatus, XdsEvent};
pub use snapshot::{ResourceType, Snapshot};

use node::Shared;
use snapshot::Versioned;

/// Largest request accepted from a proxy (subscriptions of a big mesh).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The xDS protocol variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Incremental xDS (`DeltaAggregatedResources`, `DELTA_GRPC`).
    Delta,
    /// State of the world (`StreamAggregatedResources`, `GRPC`).
    Sotw,
}

/// What serving can fail with.
#[derive(Debug, thiserror::Error)]
pub enum XdsServerError {
    /// The gRPC transport failed (accepting connections, HTTP/2).
    #[error("xDS server transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The server: a cheap handle (`Arc` inside); clones share the nodes.
#[derive(Clone, Debug)]
pub struct XdsServer {
    shared: Arc<Shared>,
}

impl Default for XdsServer {
    fn default() -> Self {
        Self::new()
    }
}

impl XdsServer {
    /// A server without nodes. Its versions carry a random prefix, so a
    /// restarted control plane never reuses a version of the last one.
    pub fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        let instance = format!("{:08x}", h.finish() as u32);
        XdsServer {
            shared: Arc::new(Shared::new(instance)),
        }
    }

    /// Replaces a node's snapshot. Returns the node's config generation:
    /// +1 only when something changed (resources compared with `==`) or
    /// on the first snapshot. Only the changed resources are pushed, only
    /// to that node's streams.
    pub fn set(&self, node_id: &str, snapshot: Snapshot) -> u64 {
        let node = self.shared.node(node_id);
        let version = self.shared.next_version();
        let mut generation = 0;
        let mut changed = Vec::new();
        node.current.send_if_modified(|cur| {
            let (built, types) = Versioned::build(snapshot, cur.resources.as_deref(), &version);
            if cur.resources.is_some() && types.is_empty() {
                generation = cur.generation;
                return false;
            }
            cur.generation += 1;
            cur.resources = Some(Arc::new(built));
            generation = cur.generation;
            changed = types;
            true
        });
        tracing::debug!(node = node_id, generation, ?changed, "snapshot set");
        generation
    }

    /// Forgets a node: its snapshot, status and streams (which end; a
    /// proxy that reconnects waits for a new snapshot).
    pub fn remove(&self, node_id: &str) {
        if let Some(node) = self.shared.remove(node_id) {
            node.current.send_modify(|c| c.removed = true);
            tracing::debug!(node = node_id, "node removed");
        }
    }

    /// The highest generation of this node whose every resource the proxy
    /// has ACKed (0: none yet). Known or not, the node is created, so the
    /// runtime may watch before the first `set`.
    pub fn acked(&self, node_id: &str) -> watch::Receiver<u64> {
        self.shared.node(node_id).acked.subscribe()
    }

    /// The node's status, `None` for a node never set, watched nor connected.
    pub fn status(&self, node_id: &str) -> Option<NodeStatus> {
        self.shared.existing(node_id).map(|n| n.status())
    }

    /// Connections, pushes, ACKs and NACKs of every node, from now on.
    pub fn events(&self) -> broadcast::Receiver<XdsEvent> {
        self.shared.events.subscribe()
    }

    /// Serves ADS on `listener` until `shutdown` completes; then every
    /// stream ends and the server returns once connections closed.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), XdsServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let local = listener.local_addr().ok();
        let service = AggregatedDiscoveryServiceServer::new(service::Ads {
            shared: Arc::clone(&self.shared),
            stop: stop_rx,
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let signal = async move {
            shutdown.await;
            tracing::info!("xDS server stopping");
            let _ = stop_tx.send(true);
        };
        tracing::info!(address = ?local, "xDS server serving");
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .serve_with_incoming_shutdown(service, incoming, signal)
            .await?;
        Ok(())
    }
}
