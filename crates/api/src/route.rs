//! `Route`: weight grayscale and rule grayscale for one service.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::RouteStatus;

/// How a service's versions share its traffic (DESIGN.md, "Normative
/// routing algorithm"): match rules first, then the major, then the weights
/// of that major's minors.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "packlight.dev",
    version = "v1alpha1",
    kind = "Route",
    plural = "routes",
    shortname = "proute",
    category = "packlight",
    namespaced,
    status = "RouteStatus",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Split","type":"string","jsonPath":".status.split"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// The Microservice this Route routes (same namespace).
    #[schemars(length(min = 1, max = 63))]
    pub service: String,
    /// Weight rules (`version` + `weight`) and match rules (`version` +
    /// `matches`), in order; match rules are tried first, in this order.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<RouteRule>,
    /// Request timeout, e.g. `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub timeout: Option<String>,
    /// Retries; without them Istio's default applies (2 attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Mirror a share of the traffic to a version (responses ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Outlier detection and connection limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// The major that requests addressing no major go to (default: the
    /// lowest major with weight rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,5})$"))]
    pub default_major: Option<String>,
    /// How a major is addressed when not by its default path prefix `/vN`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub majors: BTreeMap<String, MajorSpec>,
}

/// One rule of a Route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRule {
    /// The version this rule sends traffic to, e.g. `"1.1"`.
    #[schemars(regex(
        pattern = r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5}))?$"
    ))]
    #[schemars(length(max = 20))]
    pub version: String,
    /// Share (0..=100) of its major's traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<u32>,
    /// Requests matching any item (OR; AND inside one item) go to `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    pub matches: Option<Vec<RequestMatch>>,
}

/// One match item: every header and query condition must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatch {
    /// Header name -> condition.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub headers: BTreeMap<String, StringMatch>,
    /// Query parameter name -> condition (`exact` or `regex`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub query_params: BTreeMap<String, StringMatch>,
}

/// A string condition: exactly one of `exact`, `prefix`, `regex` (RE2,
/// full match).
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Equal to this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub exact: Option<String>,
    /// Starts with this value (headers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub prefix: Option<String>,
    /// Matches this RE2 regular expression as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub regex: Option<String>,
}

/// Retry policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    /// Attempts after the first (0 disables retries).
    #[schemars(range(min = 0, max = 10))]
    pub attempts: u32,
    /// Timeout of each attempt, e.g. `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub per_try_timeout: Option<String>,
    /// Retry conditions: Envoy/Istio `retryOn` names (`connect-failure`,
    /// `refused-stream`, `unavailable`, `cancelled`, `5xx`, `gateway-error`,
    /// `reset`, `retriable-4xx`, `retriable-status-codes`) or status codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub on: Vec<String>,
}

/// Traffic mirroring.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    /// The version receiving the copies.
    #[schemars(regex(
        pattern = r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5}))?$"
    ))]
    #[schemars(length(max = 20))]
    pub version: String,
    /// Share of requests copied, 0..=100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<u32>,
}

/// Outlier detection and connection limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Consecutive 5xx responses that eject an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive5xx: Option<u32>,
    /// How often endpoints are analysed, e.g. `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub interval: Option<String>,
    /// Minimum ejection time, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub base_ejection: Option<String>,
    /// Maximum connections to the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_connections: Option<u32>,
}

/// How one major is addressed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MajorSpec {
    /// A path prefix instead of `/vN` (segment-aware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub path_prefix: Option<String>,
    /// A host (ingress only), matched with or without a port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
}
