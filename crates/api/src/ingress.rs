//! `IngressPolicy`: north-south exposure and global controls.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ResourceStatus;

/// What the ingress gateway exposes and the controls it applies: CORS, CSRF,
/// login and a rate limit.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "packlight.dev",
    version = "v1alpha1",
    kind = "IngressPolicy",
    plural = "ingresspolicies",
    shortname = "igp",
    category = "packlight",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressPolicySpec {
    /// Host names served (exact or `*.` wildcard).
    #[schemars(length(min = 1, max = 32))]
    pub hosts: Vec<String>,
    /// Path prefixes to services of this namespace (segment-aware, not stripped).
    #[schemars(length(min = 1, max = 128))]
    pub routes: Vec<IngressRoute>,
    /// CORS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// CSRF protection (Envoy's CSRF filter semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf: Option<Csrf>,
    /// Login through packlight's login service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<Login>,
    /// Local rate limit per gateway instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A path prefix served by a service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRoute {
    /// Segment-aware prefix, e.g. `/httpbin` (`/` serves everything left).
    #[schemars(length(min = 1, max = 256))]
    pub path_prefix: String,
    /// A Microservice of this namespace.
    #[schemars(length(min = 1, max = 63))]
    pub service: String,
}

/// CORS policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// Exact origins, e.g. `https://console.example.com`, or `*`.
    #[schemars(length(min = 1, max = 64))]
    pub allow_origins: Vec<String>,
    /// Methods allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub allow_methods: Vec<String>,
    /// Request headers allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allow_headers: Vec<String>,
    /// Response headers exposed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// Preflight cache duration, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub max_age: Option<String>,
}

/// CSRF protection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Csrf {
    /// Enforce (default true when the block is present).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Path prefixes not checked (segment-aware), e.g. webhooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exclude: Vec<String>,
}

fn yes() -> bool {
    true
}

/// The login provider.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoginProvider {
    /// packlight's own login service.
    #[default]
    Builtin,
}

/// Login requirement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Login {
    /// Only `builtin`.
    #[serde(default)]
    pub provider: LoginProvider,
    /// Where browsers without a session are sent (default `/login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub login_url: Option<String>,
    /// Path prefixes that need no login (segment-aware).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exclude: Vec<String>,
}

/// Rate limit unit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RatePeriod {
    /// Per second.
    #[default]
    Second,
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
}

/// A local rate limit (token bucket per gateway instance).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per period.
    #[schemars(range(min = 1, max = 1000000000))]
    pub requests: u32,
    /// `second` (default), `minute` or `hour`.
    #[serde(default)]
    pub per: RatePeriod,
}
