//! `EgressPolicy`, `AccessPolicy` and `MeshPolicy`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ResourceStatus;

/// Whitelist of destinations outside the mesh for one service (or, with
/// `service` omitted, every workload of the namespace). Enforced when the
/// namespace's MeshPolicy says `egress: deny`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "packlight.dev",
    version = "v1alpha1",
    kind = "EgressPolicy",
    plural = "egresspolicies",
    shortname = "egp",
    category = "packlight",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPolicySpec {
    /// The calling service; omitted: every workload of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub service: Option<String>,
    /// DNS names, `*.` wildcards, optionally `:port`; CIDRs or IPs with a
    /// port (`10.0.0.0/24:5432`).
    #[schemars(length(min = 1, max = 128))]
    pub hosts: Vec<String>,
}

/// East-west authorization for one callee: once it exists, callers it does
/// not allow get `403 RBAC: access denied`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "packlight.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    shortname = "acp",
    category = "packlight",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessPolicySpec {
    /// The callee.
    #[schemars(length(min = 1, max = 63))]
    pub service: String,
    /// Allow rules (OR between rules).
    #[schemars(length(min = 1, max = 64))]
    pub allow: Vec<AllowRule>,
}

/// One allow rule: who (callers or the ingress) may do what (methods, paths).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowRule {
    /// Callers by service name, `other-ns/service` for another namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub from: Vec<String>,
    /// Calls arriving through the ingress gateway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ingress: bool,
    /// HTTP methods (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub methods: Vec<String>,
    /// Paths (any when empty): exact, `/prefix/*` or `*suffix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub paths: Vec<String>,
}

/// mTLS mode of a namespace.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Plain text and mTLS both accepted (Istio's default).
    #[default]
    Permissive,
    /// Only mTLS from mesh identities.
    Strict,
}

/// Allow or deny by default.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Allowed unless a policy says otherwise (the default).
    #[default]
    Allow,
    /// Denied unless a policy allows it.
    Deny,
}

/// The namespace defaults; one per namespace, named `default`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "packlight.dev",
    version = "v1alpha1",
    kind = "MeshPolicy",
    plural = "meshpolicies",
    shortname = "mp",
    category = "packlight",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"mTLS","type":"string","jsonPath":".spec.mtls"}"#,
    printcolumn = r#"{"name":"Access","type":"string","jsonPath":".spec.access"}"#,
    printcolumn = r#"{"name":"Egress","type":"string","jsonPath":".spec.egress"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshPolicySpec {
    /// `permissive` (default) or `strict`.
    #[serde(default)]
    pub mtls: MtlsMode,
    /// `allow` (default) or `deny`: callers need an AccessPolicy.
    #[serde(default)]
    pub access: DefaultAction,
    /// `allow` (default) or `deny`: only mesh services and whitelists.
    #[serde(default)]
    pub egress: DefaultAction,
}
