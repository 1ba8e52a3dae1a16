//! State-of-the-world ADS (`StreamAggregatedResources`), one stream's state.
//!
//! Per type: the names of the latest request (wildcard for CDS/LDS when it
//! names none, or `*`), the last response sent (nonce, version, and its
//! view: name -> resource version) and the view the proxy ACKed. A
//! response carries every resource of the subscription and is sent when
//! the view differs from the last one sent. Requests whose nonce is not
//! the latest are stale and ignored (the protocol's rule). A NACK leaves
//! the last response in place, so the rejected view is not sent again;
//! the next change is.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::Mode;
use crate::snapshot::{ResourceType, Versioned};
use crate::stream::{Ctx, Protocol};

type View = BTreeMap<String, String>;

#[derive(Default)]
pub(crate) struct Sotw {
    types: [TypeState; 5],
    nonces: u64,
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

    fn sync(&mut self, ctx: &Ctx, generation: u64, res: &Versioned) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for ty in ResourceType::ALL {
            let t = &mut self.types[ty.index()];
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
            self.nonces += 1;
            let nonce = self.nonces.to_string();
            let version = ctx.response_version(generation);
            let have = res.of(ty);
            let resources: Vec<_> = view
                .keys()
                .filter_map(|name| have.get(name).map(|e| e.body.clone()))
                .collect();
            ctx.pushed(ty, &version, resources.len(), 0);
            out.push(DiscoveryResponse {
                version_info: version.clone(),
                resources,
                type_url: ty.type_url().to_string(),
                nonce: nonce.clone(),
                ..Default::default()
            });
            t.last = Some(Sent {
                nonce,
                version,
                view,
            });
        }
        out
    }

    fn in_sync(&self, res: &Versioned) -> bool {
        ResourceType::ALL
            .into_iter()
            .all(|ty| self.types[ty.index()].desired(ty, res) == self.types[ty.index()].acked)
    }
}
