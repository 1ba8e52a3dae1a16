//! Clusters and their endpoints. Mesh clusters are EDS
//! (`outbound|PORT|SUBSET|FQDN`, one per version a Route names, or one
//! subset-less cluster for a service without a Route) with mTLS to the
//! callee's sidecars; `inbound|PORT||` is the local app; the egress
//! cluster is a dynamic forward proxy.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{Address, Http2ProtocolOptions};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3 as dfp;
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use packlight_model::Version;
use packlight_model::ir::{Protocol, RouteTable, Service};

use crate::names::{self, EGRESS_CLUSTER, EGRESS_DNS_CACHE};
use crate::proto::{address, ads, any, duration, socket_address, u32v};
use crate::{ProxyConfig, XdsOptions, tls};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn base(name: &str, discovery: cluster::DiscoveryType) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        ..Default::default()
    }
}

fn http2(c: &mut Cluster) {
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        any(opts),
    );
}

/// A load assignment from addresses.
pub fn load_assignment(name: &str, addrs: Vec<Address>) -> ClusterLoadAssignment {
    let lb_endpoints = addrs
        .into_iter()
        .map(|a| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(a),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn circuit_breaker(c: &mut Cluster, table: &RouteTable) {
    let Some(cb) = &table.circuit_breaker else {
        return;
    };
    if cb.consecutive_5xx.is_some() || cb.interval.is_some() || cb.base_ejection.is_some() {
        c.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: cb.consecutive_5xx.map(u32v),
            interval: cb.interval.map(duration),
            base_ejection_time: cb.base_ejection.map(duration),
            ..Default::default()
        });
    }
    if let Some(max) = cb.max_connections {
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_connections: Some(u32v(max)),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
}

/// The EDS clusters of one callee, as seen by a caller with `opts`
/// (sidecars and the ingress gateway alike), added to `out`.
pub fn mesh_clusters(svc: &Service, opts: &XdsOptions, out: &mut ProxyConfig) {
    let Some(w) = &svc.workload else { return };
    let subsets: Vec<Option<&Version>> = match &svc.route {
        Some(table) => w
            .versions
            .keys()
            .filter(|v| table.each_version().any(|t| t == *v))
            .map(Some)
            .collect(),
        None => vec![None],
    };
    for subset in subsets {
        let name = names::outbound_cluster(&svc.key, w.port, subset);
        let versions: Vec<&Version> = match subset {
            Some(v) => vec![v],
            None => w.versions.keys().collect(),
        };
        let mut addrs = Vec::new();
        let mut sidecars = false;
        for v in &versions {
            let instances = opts.instances_of(&svc.key, v);
            if instances.is_empty() {
                // No sidecar: the IR's fixed endpoints, plain text.
                if let Some(d) = w.versions.get(*v) {
                    addrs.extend(d.endpoints.iter().map(|e| socket_address(&e.host, e.port)));
                }
            } else {
                sidecars = true;
                addrs.extend(instances.iter().map(|i| address(i.inbound)));
            }
        }
        // EDS carries IP addresses only; fixed endpoints given by name make
        // the cluster STRICT_DNS with its endpoints inline.
        let by_name = !sidecars
            && versions
                .iter()
                .filter_map(|v| w.versions.get(*v))
                .flat_map(|d| &d.endpoints)
                .any(|e| e.host.parse::<std::net::IpAddr>().is_err());
        let mut c = if by_name {
            let mut c = base(&name, cluster::DiscoveryType::StrictDns);
            c.load_assignment = Some(load_assignment(&name, std::mem::take(&mut addrs)));
            c
        } else {
            let mut c = base(&name, cluster::DiscoveryType::Eds);
            c.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            });
            c
        };
        if sidecars {
            let peer = names::spiffe_id(&opts.trust_domain, &svc.key);
            let h2 = w.protocol == Protocol::Grpc;
            c.transport_socket = Some(tls::upstream(opts, &peer, &svc.key.fqdn(), h2));
        }
        if w.protocol == Protocol::Grpc {
            http2(&mut c);
        }
        if let Some(table) = &svc.route {
            circuit_breaker(&mut c, table);
        }
        out.clusters.push(c);
        if !by_name {
            out.endpoints.push(load_assignment(&name, addrs));
        }
    }
}

/// `inbound|PORT||`: the app behind this sidecar (static, plain text).
pub fn inbound_cluster(svc: &Service, app: std::net::SocketAddr, out: &mut ProxyConfig) {
    let port = svc.port().unwrap_or(app.port());
    let name = names::inbound_cluster(port);
    let mut c = base(&name, cluster::DiscoveryType::Static);
    c.load_assignment = Some(load_assignment(&name, vec![address(app)]));
    if svc
        .workload
        .as_ref()
        .is_some_and(|w| w.protocol == Protocol::Grpc)
    {
        http2(&mut c);
    }
    out.clusters.push(c);
}

/// A static plain-text cluster (the login service).
pub fn static_cluster(name: &str, addr: std::net::SocketAddr, out: &mut ProxyConfig) {
    let mut c = base(name, cluster::DiscoveryType::Static);
    c.load_assignment = Some(load_assignment(name, vec![address(addr)]));
    out.clusters.push(c);
}

/// The DNS cache shared by the egress cluster and the HTTP filter.
pub fn dns_cache() -> DnsCacheConfig {
    DnsCacheConfig {
        name: EGRESS_DNS_CACHE.to_string(),
        ..Default::default()
    }
}

/// The dynamic forward proxy cluster for egress.
pub fn egress_cluster(out: &mut ProxyConfig) {
    let cfg = dfp::ClusterConfig {
        cluster_implementation_specifier: Some(
            dfp::cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(dns_cache()),
        ),
        ..Default::default()
    };
    out.clusters.push(Cluster {
        name: EGRESS_CLUSTER.to_string(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(
            cluster::CustomClusterType {
                name: "envoy.clusters.dynamic_forward_proxy".to_string(),
                typed_config: Some(any(cfg)),
            },
        )),
        ..Default::default()
    });
}
