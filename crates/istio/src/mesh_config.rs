//! The MeshConfig fragment packlight needs: the login service as an
//! `envoyExtAuthzHttp` extension provider (named by
//! [`RenderOptions::login_provider`], referenced by the ingress
//! AuthorizationPolicies of action CUSTOM).
//!
//! Egress denial is deliberately *not* here: `outboundTrafficPolicy`
//! stays Istio's mesh-wide `ALLOW_ANY`, and `egress: deny` is per
//! namespace through Sidecars (see [`crate::egress`]).

use serde_json::{Value, json};

use crate::RenderOptions;

/// `{extensionProviders: [...]}`, to merge into the mesh's MeshConfig
/// (`istioctl install --set meshConfig...`, or the `istio` ConfigMap).
pub fn mesh_config(opts: &RenderOptions) -> Value {
    json!({
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
