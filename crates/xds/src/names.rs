//! Envoy resource names, the same in both engines so stats read alike
//! (DESIGN.md, "Envoy names").

use packlight_model::Version;
use packlight_model::ir::ServiceKey;

/// `outbound|PORT|SUBSET|SERVICE.NS.svc.cluster.local`; `version: None`
/// gives the subset-less cluster of a service without a Route.
pub fn outbound_cluster(svc: &ServiceKey, port: u16, version: Option<&Version>) -> String {
    let subset = version.map(Version::subset).unwrap_or_default();
    format!("outbound|{port}|{subset}|{}", svc.fqdn())
}

/// `inbound|PORT||`: the local app behind a sidecar.
pub fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

/// The outbound listener and its route configuration.
pub const OUTBOUND: &str = "outbound";
/// The inbound listener and its route configuration.
pub const INBOUND: &str = "inbound";
/// The ingress gateway's listener and route configuration.
pub const INGRESS: &str = "ingress";
/// The dynamic forward proxy cluster for whitelisted egress.
pub const EGRESS_CLUSTER: &str = "egress|dfp";
/// The dynamic forward proxy's DNS cache.
pub const EGRESS_DNS_CACHE: &str = "egress";
/// The login (ext_authz) service cluster.
pub const LOGIN_CLUSTER: &str = "outbound|login||packlight-system";

/// The ingress gateway's identity.
pub fn ingress_spiffe_id(trust_domain: &str) -> String {
    format!("spiffe://{trust_domain}/ns/packlight-system/sa/ingress")
}

/// A service's identity in a trust domain.
pub fn spiffe_id(trust_domain: &str, svc: &ServiceKey) -> String {
    format!(
        "spiffe://{trust_domain}/ns/{}/sa/{}",
        svc.namespace, svc.name
    )
}
