//! The Envoy bootstrap of a proxy served by this server.

use std::net::SocketAddr;

use serde_json::json;

use crate::Mode;

/// The static cluster through which Envoy reaches this server.
pub const XDS_CLUSTER: &str = "packlight-xds";

/// Envoy bootstrap (JSON text, for `envoy -c FILE.json` or
/// `--config-yaml`) for a proxy of this server: node id and cluster, ADS
/// over gRPC (HTTP/2) at `xds` (`DELTA_GRPC` or `GRPC` per `mode`), CDS and
/// LDS from ADS, admin on `admin` (port 0 allowed: pass Envoy
/// `--admin-address-path` to learn the port).
pub fn bootstrap(
    node_id: &str,
    cluster: &str,
    xds: SocketAddr,
    admin: SocketAddr,
    mode: Mode,
) -> String {
    let api_type = match mode {
        Mode::Delta => "DELTA_GRPC",
        Mode::Sotw => "GRPC",
    };
    let address = |a: SocketAddr| json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}});
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    let value = json!({
        "node": {"id": node_id, "cluster": cluster},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]
            },
            "cds_config": ads,
            "lds_config": ads
        },
        "static_resources": {
            "clusters": [{
                "name": XDS_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {
                            "connection_keepalive": {"interval": "30s", "timeout": "10s"}
                        }}
                    }
                },
                "upstream_connection_options": {"tcp_keepalive": {}},
                "load_assignment": {
                    "cluster_name": XDS_CLUSTER,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(xds)}}]}]
                }
            }]
        },
        "admin": {"address": address(admin)}
    });
    // Display of a JSON value cannot fail; `#` makes it pretty.
    format!("{value:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_names_node_mode_and_addresses() {
        let text = bootstrap(
            "sidecar~\"x\"",
            "demo",
            "127.0.0.1:18000".parse().expect("addr"),
            "127.0.0.1:0".parse().expect("addr"),
            Mode::Sotw,
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["node"]["id"], "sidecar~\"x\"");
        assert_eq!(v["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        let ep = &v["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            [0]["endpoint"]["address"]["socket_address"];
        assert_eq!(ep["port_value"], 18000);
        assert_eq!(v["admin"]["address"]["socket_address"]["port_value"], 0);
    }
}
