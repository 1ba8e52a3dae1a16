//! Listener building blocks: the HTTP connection manager (routes over RDS,
//! path normalisation on), HTTP filters, filter chains.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::{Http1ProtocolOptions, TransportSocket};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::Any;

use crate::proto::{address, ads, any, bool_value};

/// An HTTP filter with its typed config.
pub fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// The router, always last.
pub fn router() -> HttpFilter {
    http_filter("envoy.filters.http.router", any(Router::default()))
}

/// An HTTP connection manager taking route configuration `route` over
/// RDS, with `filters` then the router. Paths are normalised (RFC 3986,
/// merged slashes) before routing and RBAC, as Istio does.
pub fn manager(stat_prefix: &str, route: &str, filters: Vec<HttpFilter>) -> HttpConnectionManager {
    let mut http_filters = filters;
    http_filters.push(router());
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        http_filters,
        normalize_path: Some(bool_value(true)),
        merge_slashes: true,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route.to_string(),
        })),
        ..Default::default()
    }
}

/// Accept absolute-URI requests (`GET http://host/path`), as an HTTP proxy.
pub fn forward_proxy(hcm: &mut HttpConnectionManager) {
    hcm.http_protocol_options = Some(Http1ProtocolOptions {
        allow_absolute_url: Some(bool_value(true)),
        ..Default::default()
    });
    hcm.upgrade_configs
        .push(http_connection_manager::UpgradeConfig {
            upgrade_type: "CONNECT".to_string(),
            ..Default::default()
        });
}

/// A filter chain running `hcm`, optionally behind TLS, optionally only
/// for one transport protocol (`tls` / `raw_buffer`).
pub fn chain(
    name: &str,
    hcm: HttpConnectionManager,
    tls: Option<TransportSocket>,
    transport: Option<&str>,
) -> FilterChain {
    FilterChain {
        name: name.to_string(),
        filter_chain_match: transport.map(|t| FilterChainMatch {
            transport_protocol: t.to_string(),
            ..Default::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.http_connection_manager".to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(any(hcm))),
        }],
        transport_socket: tls,
        ..Default::default()
    }
}

/// A listener on `addr` with `chains`; a TLS inspector when a chain
/// selects by transport protocol.
pub fn listener(name: &str, addr: SocketAddr, chains: Vec<FilterChain>) -> Listener {
    let inspect = chains.iter().any(|c| c.filter_chain_match.is_some());
    Listener {
        name: name.to_string(),
        address: Some(address(addr)),
        filter_chains: chains,
        listener_filters: if inspect {
            vec![ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".to_string(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    TlsInspector::default(),
                ))),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}
