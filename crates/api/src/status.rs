//! The status every resource carries: conditions with `observedGeneration`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the resource was validated and resolved.
pub const CONDITION_ACCEPTED: &str = "Accepted";
/// Condition type: every output of the resource was applied (Kubernetes) or
/// acknowledged by every affected Envoy (standalone).
pub const CONDITION_PROGRAMMED: &str = "Programmed";

/// Reasons of the `Accepted` condition.
pub mod reason {
    /// `Accepted=True`.
    pub const VALID: &str = "Valid";
    /// `Accepted=False`: the resource itself is wrong.
    pub const INVALID: &str = "Invalid";
    /// `Accepted=False`: the resource clashes with another one.
    pub const CONFLICT: &str = "Conflict";
    /// `Programmed=True`.
    pub const PROGRAMMED: &str = "Programmed";
    /// `Programmed=False`: not yet applied.
    pub const PENDING: &str = "Pending";
    /// `Programmed=False`: an apply failed.
    pub const APPLY_FAILED: &str = "ApplyFailed";
}

/// Status of every packlight resource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Status of a Route: the common status plus its split, for printer columns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The weight split as accepted, e.g. `1.0=80,1.1=20,2.0=100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
}
