//! State-of-the-world ADS (`StreamAggregatedResources`), one stream's state.
//!
//! Per type: the names of the latest request (wildcard for CDS/LDS when it
//! names none, or `*`), the last response sent (nonce, version, and its
//! view: name -> resource version) and the view the proxy ACKed. A
//! response carries every resource of the subscription and is sent when
//! the view differs from the last one sent. Requests whose nonce is not
//! the latest are stale and ignored (the protocol's rule). A NACK leaves
//! the last response in place, so the rejected view is not sent again;
//! the next change is. Clusters leaving CDS stay in the CDS response
//! until the listeners and routes were sent (a second CDS response then
//! drops them), so no route points at a missing cluster meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::Mode;
use crate::snapshot::{Entry, ResourceType, Versioned};
use crate::stream::{Ctx, Protocol};

type View = BTreeMap<String, String>;

#[derive(Default)]
pub(crate) struct Sotw {
    types: [TypeState; 5],
    nonces: u64,
    /// The snapshot of the last sync (bodies of clusters being removed).
    previous: Option<Arc<Versioned>>,
}

impl Sotw {
    /// A response of `ty` holding `entries`; remembered as the last sent.
    fn respond(
        &mut self,
        ctx: &Ctx,
        ty: ResourceType,
        generation: u64,
        entries: BTreeMap<String, Arc<Entry>>,
    ) -> DiscoveryResponse {
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let version = ctx.response_version(generation);
        ctx.pushed(ty, &version, entries.len(), 0);
        let resources = entries.values().map(|e| e.body.clone()).collect();
        self.types[ty.index()].last = Some(Sent {
            nonce: nonce.clone(),
            version: version.clone(),
            view: entries
                .into_iter()
                .map(|(name, e)| (name, e.version.clone()))
                .collect(),
        });
        DiscoveryResponse {
            version_info: version,
            resources,
            type_url: ty.type_url().to_string(),
            nonce,
            ..Default::default()
        }
    }
}

#[derive(Default)]
struct TypeState {
    requested: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    last: Option<Sent>,
    acked: View,
}

struct Sent {
    nonce: String,
    version: String,
    view: View,
}

impl TypeState {
    /// What the proxy should hold of `ty`: the subscribed resources, or
    /// all of CDS/LDS before the proxy asked.
    fn desired(&self, ty: ResourceType, res: &Versioned) -> View {
        let all = self.wildcard || (ty.is_wildcard() && !self.requested);
        res.of(ty)
            .iter()
            .filter(|(name, _)| all || self.names.contains(*name))
            .map(|(name, e)| (name.clone(), e.version.clone()))
            .collect()
    }
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const MODE: Mode = Mode::Sotw;

    fn node_id(req: &DiscoveryRequest) -> Option<&str> {
        req.node.as_ref().map(|n| n.id.as_str())
    }

    fn on_request(&mut self, ctx: &Ctx, req: DiscoveryRequest) {
        let Some(ty) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "type not served; request ignored");
            return;
        };
        let t = &mut self.types[ty.index()];
        // The first request of a type on this stream is always taken,
        // whatever nonce it carries from an earlier stream.
        if t.requested && !req.response_nonce.is_empty() {
            match &t.last {
                Some(sent) if sent.nonce == req.response_nonce => match &req.error_detail {
                    Some(err) => ctx.nacked(ty, &sent.version, &err.message),
                    None => {
                        t.acked = sent.view.clone();
                        ctx.acked(ty, &sent.version);
                    }
                },
                _ => {
                    tracing::debug!(
                        type_url = ty.type_url(),
                        nonce = %req.response_nonce,
                        "stale or unknown nonce; request ignored"
                    );
                    return;
                }
            }
        }
        t.requested = true;
        let mut names: BTreeSet<String> = req.resource_names.into_iter().collect();
        t.wildcard = names.remove("*") || (ty.is_wildcard() && names.is_empty());
        t.names = names;
    }

    fn sync(&mut self, ctx: &Ctx, generation: u64, res: &Arc<Versioned>) -> Vec<DiscoveryResponse> {
        let previous = self.previous.replace(Arc::clone(res));
        let mut out = Vec::new();
        let mut final_clusters = None;
        for ty in ResourceType::ALL {
            let t = &self.types[ty.index()];
            if !t.requested {
                continue;
            }
            let view = t.desired(ty, res);
            let send = match &t.last {
                None => t.wildcard || !view.is_empty(),
                Some(sent) => sent.view != view,
            };
            if !send {
                continue;
            }
            // Make before break: clusters leaving go out only after the
            // listeners and routes that used them changed; until then
            // the CDS response keeps them, as they were.
            let leaving: Vec<(String, Arc<Entry>)> = match (&t.last, &previous) {
                (Some(sent), Some(prev)) if ty == ResourceType::Cluster => sent
                    .view
                    .iter()
                    .filter(|(name, _)| !view.contains_key(*name))
                    .filter_map(|(name, version)| {
                        prev.of(ty)
                            .get(name)
                            .filter(|e| &e.version == version)
                            .map(|e| (name.clone(), Arc::clone(e)))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let mut entries: BTreeMap<String, Arc<Entry>> = view
                .keys()
                .filter_map(|name| res.of(ty).get(name).map(|e| (name.clone(), Arc::clone(e))))
                .collect();
            if !leaving.is_empty() {
                final_clusters = Some(entries.clone());
                entries.extend(leaving);
                let unchanged = t.last.as_ref().is_some_and(|sent| {
                    sent.view.len() == entries.len()
                        && entries
                            .iter()
                            .all(|(name, e)| sent.view.get(name) == Some(&e.version))
                });
                if unchanged {
                    // Only removals: nothing to send before the final one.
                    continue;
                }
            }
            out.push(self.respond(ctx, ty, generation, entries));
        }
        if let Some(entries) = final_clusters {
            out.push(self.respond(ctx, ResourceType::Cluster, generation, entries));
        }
        out
    }

    fn in_sync(&self, res: &Versioned) -> bool {
        ResourceType::ALL
            .into_iter()
            .all(|ty| self.types[ty.index()].desired(ty, res) == self.types[ty.index()].acked)
    }
}
