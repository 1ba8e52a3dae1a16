//! What one proxy should hold: the typed [`Snapshot`] the runtime hands in,
//! and the versioned, encoded form the streams serve ([`Versioned`]).
//!
//! Change detection compares typed messages with `==`, never encoded
//! bytes: prost encodes `map` fields in `HashMap` order, so equal messages
//! may encode differently.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use packlight_xds::ProxyConfig;
use prost::Message;

/// All resources of one proxy (node id), typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// CDS.
    pub clusters: Vec<Cluster>,
    /// EDS.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// LDS.
    pub listeners: Vec<Listener>,
    /// RDS.
    pub routes: Vec<RouteConfiguration>,
    /// SDS: the secrets the resources name (certificate, trust bundle).
    pub secrets: Vec<Secret>,
}

impl Snapshot {
    /// The translator's output plus the secrets the CA supplies for the
    /// names in `cfg.secrets`.
    pub fn new(cfg: ProxyConfig, secrets: Vec<Secret>) -> Self {
        Snapshot {
            clusters: cfg.clusters,
            endpoints: cfg.endpoints,
            listeners: cfg.listeners,
            routes: cfg.routes,
            secrets,
        }
    }
}

/// The xDS resource types served, in push order (CDS, EDS, LDS, RDS, SDS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    Secret,
}

impl ResourceType {
    /// Every type, in push order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// The type URL Envoy uses in requests and responses.
    pub const fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// The type of a type URL, `None` for types this server does not serve.
    pub fn from_type_url(url: &str) -> Option<Self> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// CDS and LDS are wildcard subscriptions (the proxy takes all); EDS,
    /// RDS and SDS are subscribed by name.
    pub(crate) const fn is_wildcard(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            ResourceType::Cluster => 0,
            ResourceType::Endpoint => 1,
            ResourceType::Listener => 2,
            ResourceType::Route => 3,
            ResourceType::Secret => 4,
        }
    }
}

/// One typed resource, kept to compare with the next snapshot's.
#[derive(Clone, Debug, PartialEq)]
enum Typed {
    Cluster(Box<Cluster>),
    Endpoint(Box<ClusterLoadAssignment>),
    Listener(Box<Listener>),
    Route(Box<RouteConfiguration>),
    Secret(Box<Secret>),
}

impl Typed {
    fn encode(&self) -> Vec<u8> {
        match self {
            Typed::Cluster(m) => m.encode_to_vec(),
            Typed::Endpoint(m) => m.encode_to_vec(),
            Typed::Listener(m) => m.encode_to_vec(),
            Typed::Route(m) => m.encode_to_vec(),
            Typed::Secret(m) => m.encode_to_vec(),
        }
    }
}

/// A resource as served: its version (the server-wide change counter when
/// its content last changed) and its encoded body.
#[derive(Debug)]
pub(crate) struct Entry {
    pub version: String,
    pub body: Any,
    typed: Typed,
}

/// A node's resources by type and name, versioned and encoded.
#[derive(Debug, Default)]
pub(crate) struct Versioned {
    types: [BTreeMap<String, Arc<Entry>>; 5],
}

impl Versioned {
    /// The resources of one type, by name.
    pub fn of(&self, ty: ResourceType) -> &BTreeMap<String, Arc<Entry>> {
        &self.types[ty.index()]
    }

    /// `snapshot` versioned against `previous`: unchanged resources keep
    /// their entry (version and bytes), changed and new ones get `version`.
    /// Returns the types whose content changed (empty: nothing changed).
    /// A second resource with the same name is ignored.
    pub fn build(
        snapshot: Snapshot,
        previous: Option<&Versioned>,
        version: &str,
    ) -> (Versioned, Vec<ResourceType>) {
        let Snapshot {
            clusters,
            endpoints,
            listeners,
            routes,
            secrets,
        } = snapshot;
        let typed: [Vec<(String, Typed)>; 5] = [
            clusters
                .into_iter()
                .map(|m| (m.name.clone(), Typed::Cluster(Box::new(m))))
                .collect(),
            endpoints
                .into_iter()
                .map(|m| (m.cluster_name.clone(), Typed::Endpoint(Box::new(m))))
                .collect(),
            listeners
                .into_iter()
                .map(|m| (m.name.clone(), Typed::Listener(Box::new(m))))
                .collect(),
            routes
                .into_iter()
                .map(|m| (m.name.clone(), Typed::Route(Box::new(m))))
                .collect(),
            secrets
                .into_iter()
                .map(|m| (m.name.clone(), Typed::Secret(Box::new(m))))
                .collect(),
        ];
        let mut out = Versioned::default();
        let mut changed = Vec::new();
        for (ty, resources) in ResourceType::ALL.into_iter().zip(typed) {
            let old = previous.map(|p| p.of(ty));
            let map = &mut out.types[ty.index()];
            for (name, typed) in resources {
                if map.contains_key(&name) {
                    tracing::warn!(type_url = ty.type_url(), %name, "duplicate resource name ignored");
                    continue;
                }
                let entry = match old.and_then(|o| o.get(&name)) {
                    Some(e) if e.typed == typed => Arc::clone(e),
                    _ => Arc::new(Entry {
                        version: version.to_string(),
                        body: Any {
                            type_url: ty.type_url().to_string(),
                            value: typed.encode(),
                        },
                        typed,
                    }),
                };
                map.insert(name, entry);
            }
            let same = match old {
                Some(o) => {
                    o.len() == map.len()
                        && o.iter()
                            .zip(map.iter())
                            .all(|((n1, e1), (n2, e2))| n1 == n2 && Arc::ptr_eq(e1, e2))
                }
                None => map.is_empty(),
            };
            if !same {
                changed.push(ty);
            }
        }
        (out, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Name;

    #[test]
    fn type_urls_are_prosts() {
        assert_eq!(ResourceType::Cluster.type_url(), Cluster::type_url());
        assert_eq!(
            ResourceType::Endpoint.type_url(),
            ClusterLoadAssignment::type_url()
        );
        assert_eq!(ResourceType::Listener.type_url(), Listener::type_url());
        assert_eq!(
            ResourceType::Route.type_url(),
            RouteConfiguration::type_url()
        );
        assert_eq!(ResourceType::Secret.type_url(), Secret::type_url());
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/x"), None);
    }

    fn cluster(name: &str, timeout_s: i64) -> Cluster {
        Cluster {
            name: name.to_string(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: timeout_s,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn versions_change_only_with_content() {
        let s1 = Snapshot {
            clusters: vec![cluster("a", 1), cluster("b", 1)],
            ..Default::default()
        };
        let (v1, changed) = Versioned::build(s1.clone(), None, "1");
        assert_eq!(changed, vec![ResourceType::Cluster]);
        let (v2, changed) = Versioned::build(s1, Some(&v1), "2");
        assert!(changed.is_empty());
        assert_eq!(v2.of(ResourceType::Cluster)["a"].version, "1");
        let s3 = Snapshot {
            clusters: vec![cluster("a", 1), cluster("b", 2)],
            ..Default::default()
        };
        let (v3, changed) = Versioned::build(s3, Some(&v2), "3");
        assert_eq!(changed, vec![ResourceType::Cluster]);
        assert_eq!(v3.of(ResourceType::Cluster)["a"].version, "1");
        assert_eq!(v3.of(ResourceType::Cluster)["b"].version, "3");
        let (v4, changed) = Versioned::build(Snapshot::default(), Some(&v3), "4");
        assert_eq!(changed, vec![ResourceType::Cluster]);
        assert!(v4.of(ResourceType::Cluster).is_empty());
        // An empty first snapshot changes no type (but is a new generation).
        let (_, changed) = Versioned::build(Snapshot::default(), None, "5");
        assert!(changed.is_empty());
    }

    #[test]
    fn duplicate_names_keep_the_first() {
        let s = Snapshot {
            clusters: vec![cluster("a", 1), cluster("a", 2)],
            ..Default::default()
        };
        let (v, _) = Versioned::build(s, None, "1");
        assert_eq!(v.of(ResourceType::Cluster).len(), 1);
        assert_eq!(
            v.of(ResourceType::Cluster)["a"].typed,
            Typed::Cluster(Box::new(cluster("a", 1)))
        );
    }
}
