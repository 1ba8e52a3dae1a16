//! Incremental ADS (`DeltaAggregatedResources`), one stream's state.
//!
//! Per type: the subscription (wildcard for CDS/LDS when the first request
//! names nothing, or `*`; names otherwise), the version of each resource
//! the proxy is believed to hold (`sent`, seeded from
//! `initial_resource_versions` on reconnect), the versions it confirmed
//! (`acked`), and the responses awaiting an answer by nonce. A response
//! carries only resources whose version differs from `sent` (or that were
//! just subscribed) and the names that disappeared. A NACK leaves `sent`
//! as it is, so the rejected version is not sent again; the next change
//! of the resource is.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use crate::Mode;
use crate::snapshot::{ResourceType, Versioned};
use crate::stream::{Ctx, Protocol};

/// Unanswered responses kept per type; older ones are forgotten (a proxy
/// answers every response, so only a broken client gets here).
const MAX_PENDING: usize = 64;

#[derive(Default)]
pub(crate) struct Delta {
    types: [TypeState; 5],
    nonces: u64,
}

#[derive(Default)]
struct TypeState {
    /// The proxy has asked for this type on this stream.
    requested: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// Name -> version the proxy is believed to hold (sent, or reported).
    sent: HashMap<String, String>,
    /// Name -> version the proxy confirmed.
    acked: HashMap<String, String>,
    /// Just subscribed: sent even if `sent` says the proxy has it.
    force: BTreeSet<String>,
    /// The first response of a wildcard type is sent even when empty
    /// (Envoy's initialisation waits for it).
    reply_owed: bool,
    pending: VecDeque<Pending>,
}

struct Pending {
    nonce: String,
    version: String,
    updated: Vec<(String, String)>,
    removed: Vec<String>,
}

impl TypeState {
    fn relevant(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

impl Delta {
    fn respond(
        &mut self,
        ctx: &Ctx,
        ty: ResourceType,
        generation: u64,
        res: &Versioned,
        updated: Vec<String>,
        removed: Vec<String>,
    ) -> DeltaDiscoveryResponse {
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let version = ctx.response_version(generation);
        let have = res.of(ty);
        let t = &mut self.types[ty.index()];
        let mut resources = Vec::with_capacity(updated.len());
        let mut versions = Vec::with_capacity(updated.len());
        for name in updated {
            let Some(e) = have.get(&name) else { continue };
            resources.push(Resource {
                name: name.clone(),
                version: e.version.clone(),
                resource: Some(e.body.clone()),
                ..Default::default()
            });
            t.sent.insert(name.clone(), e.version.clone());
            versions.push((name, e.version.clone()));
        }
        for name in &removed {
            t.sent.remove(name);
        }
        t.reply_owed = false;
        if t.pending.len() >= MAX_PENDING {
            t.pending.pop_front();
        }
        t.pending.push_back(Pending {
            nonce: nonce.clone(),
            version: version.clone(),
            updated: versions,
            removed: removed.clone(),
        });
        ctx.pushed(ty, &version, resources.len(), removed.len());
        DeltaDiscoveryResponse {
            system_version_info: version,
            resources,
            type_url: ty.type_url().to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        }
    }
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const MODE: Mode = Mode::Delta;

    fn node_id(req: &DeltaDiscoveryRequest) -> Option<&str> {
        req.node.as_ref().map(|n| n.id.as_str())
    }

    fn on_request(&mut self, ctx: &Ctx, req: DeltaDiscoveryRequest) {
        let Some(ty) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "type not served; request ignored");
            return;
        };
        let t = &mut self.types[ty.index()];
        if !req.response_nonce.is_empty() {
            match t.pending.iter().position(|p| p.nonce == req.response_nonce) {
                Some(i) => {
                    if let Some(p) = t.pending.remove(i) {
                        match &req.error_detail {
                            Some(err) => ctx.nacked(ty, &p.version, &err.message),
                            None => {
                                for (name, version) in p.updated {
                                    if t.relevant(&name) {
                                        t.acked.insert(name, version);
                                    }
                                }
                                for name in p.removed {
                                    t.acked.remove(&name);
                                }
                                ctx.acked(ty, &p.version);
                            }
                        }
                    }
                }
                None => tracing::debug!(
                    type_url = ty.type_url(),
                    nonce = %req.response_nonce,
                    "unknown nonce; ACK/NACK ignored"
                ),
            }
        }
        if !t.requested {
            t.requested = true;
            t.reply_owed = true;
            t.wildcard = ty.is_wildcard() && req.resource_names_subscribe.is_empty();
            for (name, version) in &req.initial_resource_versions {
                t.sent.insert(name.clone(), version.clone());
                t.acked.insert(name.clone(), version.clone());
            }
        }
        for name in req.resource_names_subscribe {
            if name == "*" {
                t.wildcard = true;
                continue;
            }
            if !req.initial_resource_versions.contains_key(&name) {
                t.force.insert(name.clone());
            }
            t.names.insert(name);
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                t.wildcard = false;
                continue;
            }
            t.names.remove(&name);
            t.force.remove(&name);
            if !t.wildcard {
                t.sent.remove(&name);
                t.acked.remove(&name);
            }
        }
    }

    fn sync(
        &mut self,
        ctx: &Ctx,
        generation: u64,
        res: &Arc<Versioned>,
    ) -> Vec<DeltaDiscoveryResponse> {
        let mut out = Vec::new();
        let mut deferred = Vec::new();
        for ty in ResourceType::ALL {
            let t = &mut self.types[ty.index()];
            if !t.requested {
                continue;
            }
            let have = res.of(ty);
            let updated: Vec<String> = have
                .iter()
                .filter(|(name, e)| {
                    t.relevant(name)
                        && (t.force.contains(*name) || t.sent.get(*name) != Some(&e.version))
                })
                .map(|(name, _)| name.clone())
                .collect();
            let mut removed: Vec<String> = t
                .sent
                .keys()
                .filter(|name| t.relevant(name) && !have.contains_key(*name))
                .cloned()
                .collect();
            removed.sort();
            t.force.clear();
            // Make before break: clusters and their endpoints are removed
            // only after the listeners and routes that used them changed.
            let later = if matches!(ty, ResourceType::Cluster | ResourceType::Endpoint) {
                std::mem::take(&mut removed)
            } else {
                Vec::new()
            };
            let owed = t.reply_owed && t.wildcard;
            if !updated.is_empty() || !removed.is_empty() || owed {
                out.push(self.respond(ctx, ty, generation, res, updated, removed));
            }
            if !later.is_empty() {
                deferred.push((ty, later));
            }
        }
        for (ty, removed) in deferred {
            out.push(self.respond(ctx, ty, generation, res, Vec::new(), removed));
        }
        out
    }

    fn in_sync(&self, res: &Versioned) -> bool {
        ResourceType::ALL.into_iter().all(|ty| {
            let t = &self.types[ty.index()];
            let have = res.of(ty);
            // CDS and LDS are wanted whole even before the proxy asks.
            let all = ty.is_wildcard() && !t.requested;
            let relevant = |name: &str| all || t.relevant(name);
            have.iter()
                .filter(|(name, _)| relevant(name))
                .all(|(name, e)| t.acked.get(name) == Some(&e.version))
                && t.acked
                    .keys()
                    .all(|name| have.contains_key(name) || !relevant(name))
        })
    }
}
