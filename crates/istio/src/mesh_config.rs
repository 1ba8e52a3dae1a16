//! The MeshConfig fragment packlight needs: the login service as an
//! `envoyExtAuthzHttp` extension provider (named by
//! [`RenderOptions::login_provider`], referenced by the ingress
//! AuthorizationPolicies of action CUSTOM), and the sidecars' statistics
//! the console's Kubernetes traffic page reads from Prometheus: Envoy's
//! own per-cluster stats of the outbound clusters
//! (`envoy_cluster_upstream_rq_total{cluster_name="outbound|PORT|SUBSET|FQDN"}`
//! and the latency histogram), which Istio's bootstrap drops unless
//! `defaultConfig.proxyStatsMatcher.inclusionPrefixes` names them.
//!
//! Egress denial is deliberately *not* here: `outboundTrafficPolicy`
//! stays Istio's mesh-wide `ALLOW_ANY`, and `egress: deny` is per
//! namespace through Sidecars (see [`crate::egress`]).

use serde_json::{Value, json};

use crate::RenderOptions;

/// The stats prefixes every proxy must keep (Istio adds its own
/// required ones): the outbound clusters, one per service, port and
/// subset (`outbound|PORT|v1-0|FQDN`, `packlight_model::Version::subset`).
pub const STATS_INCLUSION_PREFIXES: [&str; 1] = ["cluster.outbound"];

/// `{defaultConfig: {proxyStatsMatcher: ...}, extensionProviders: [...]}`,
/// to merge into the mesh's MeshConfig (`istioctl install --set
/// meshConfig...`, or the `istio` ConfigMap). `packlight render
/// --mesh-config` prints it.
pub fn mesh_config(opts: &RenderOptions) -> Value {
    json!({
        "defaultConfig": {
            "proxyStatsMatcher": {"inclusionPrefixes": STATS_INCLUSION_PREFIXES},
        },
        "extensionProviders": [{
            "name": opts.login_provider,
            "envoyExtAuthzHttp": {
                "service": opts.login_service,
                "port": opts.login_port,
                "includeRequestHeadersInCheck": ["cookie", "authorization", "accept", "x-forwarded-proto"],
                "headersToUpstreamOnAllow": [crate::meta::USER_HEADER],
                "headersToDownstreamOnAllow": ["set-cookie"],
                "headersToDownstreamOnDeny": ["location", "set-cookie", "content-type", "www-authenticate"],
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_login_provider() {
        let opts = RenderOptions::default();
        let mc = mesh_config(&opts);
        let p = &mc["extensionProviders"][0];
        assert_eq!(p["name"], "packlight-login");
        assert_eq!(p["envoyExtAuthzHttp"]["service"], opts.login_service);
        assert_eq!(p["envoyExtAuthzHttp"]["port"], 8080);
        assert!(mc.get("outboundTrafficPolicy").is_none());
        assert_eq!(
            mc["defaultConfig"]["proxyStatsMatcher"]["inclusionPrefixes"],
            json!(["cluster.outbound"])
        );
        // The same contract as the standalone gateway (docs/auth.md).
        let authz = &p["envoyExtAuthzHttp"];
        assert_eq!(
            authz["includeRequestHeadersInCheck"],
            json!(["cookie", "authorization", "accept", "x-forwarded-proto"])
        );
        assert_eq!(
            authz["headersToUpstreamOnAllow"],
            json!(["x-packlight-user"])
        );
    }
}
