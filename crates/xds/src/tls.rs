//! mTLS transport sockets. Every mesh hop is mutual TLS with SPIFFE
//! identities from SDS (Istio's ISTIO_MUTUAL): the caller presents its
//! certificate and checks the callee's SPIFFE ID; the callee requires a
//! client certificate under STRICT, and accepts plain text too under
//! PERMISSIVE (a second filter chain).

use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
};

use crate::XdsOptions;
use crate::proto::{ads, any, exact};

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

fn common(opts: &XdsOptions, peer_ids: &[String], alpn: &[&str]) -> CommonTlsContext {
    let sans = peer_ids
        .iter()
        .map(|id| SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(exact(id)),
            oid: String::new(),
        })
        .collect();
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(&opts.sds_certificate)],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(&opts.sds_trust_bundle)),
                    ..Default::default()
                },
            ),
        ),
        alpn_protocols: alpn.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

/// Client side: present our certificate, accept only `peer_id`. ALPN
/// offers only the protocol the cluster's codec speaks (`h2` for gRPC).
pub fn upstream(opts: &XdsOptions, peer_id: &str, sni: &str, h2: bool) -> TransportSocket {
    let alpn = if h2 { "h2" } else { "http/1.1" };
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common(opts, &[peer_id.to_string()], &[alpn])),
        sni: sni.to_string(),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(ctx))),
    }
}

/// Server side: require a client certificate signed by the trust bundle
/// (any SPIFFE ID; RBAC decides who may do what).
pub fn downstream(opts: &XdsOptions) -> TransportSocket {
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common(opts, &[], &["h2", "http/1.1"])),
        require_client_certificate: Some(crate::proto::bool_value(true)),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(ctx))),
    }
}
