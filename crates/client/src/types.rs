//! The standalone API's request and response bodies (`docs/api.md`).

use packlight_model::Diagnostic;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One object's outcome in an apply or delete.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApplyResult {
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `created`, `configured`, `unchanged` or `deleted`.
    pub action: String,
}

/// `POST /apply` accepted (200).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    /// One per object.
    pub results: Vec<ApplyResult>,
    /// Warnings.
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
}

/// Any refusal (4xx): the diagnostics saying why.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Refusal {
    /// Errors (and warnings).
    pub diagnostics: Vec<Diagnostic>,
}

/// `GET /instances`: one workload instance, or the gateway.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Namespace (`packlight-system` for the gateway).
    pub namespace: String,
    /// Service (`ingress` for the gateway).
    pub service: String,
    /// Version (empty for the gateway).
    pub version: String,
    /// Replica index.
    pub index: usize,
    /// Proxy node id.
    pub node: String,
    /// The app's address (`host:port`; empty for the gateway).
    pub app: String,
    /// The sidecar's outbound (HTTP proxy) listener; the gateway's listener.
    pub outbound: String,
    /// The sidecar's inbound (mTLS) listener.
    pub inbound: String,
    /// Envoy admin.
    pub admin: String,
    /// Its Envoy ACKed the latest config and its app (if started) accepts
    /// connections.
    pub ready: bool,
    /// Sidecar and app restarts.
    pub restarts: u32,
}

/// `GET /traffic`: one service version's traffic.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionTraffic {
    /// Namespace.
    pub namespace: String,
    /// Service.
    pub service: String,
    /// Version.
    pub version: String,
    /// Requests per second over the last sampling interval.
    pub requests_per_second: f64,
    /// Share of those answered 5xx (0..1).
    pub error_rate: f64,
    /// Median latency, milliseconds (Envoy's interval histogram).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: Option<f64>,
    /// Requests served since the instances started.
    pub requests_total: u64,
}

/// `GET /events`: one server-sent event's data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// A resource was created, configured or deleted.
    Changed {
        /// Kind.
        kind: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// `created`, `configured`, `deleted`.
        action: String,
    },
    /// A resource's status changed.
    Status {
        /// Kind.
        kind: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The new status.
        status: Value,
    },
    /// A proxy refused its config.
    Nack {
        /// Node id.
        node: String,
        /// Envoy's message.
        message: String,
    },
}

/// Kinds by their plural path segment (the API's resource paths).
pub const KINDS: [(&str, &str); 6] = [
    ("microservices", "Microservice"),
    ("routes", "Route"),
    ("egresspolicies", "EgressPolicy"),
    ("accesspolicies", "AccessPolicy"),
    ("meshpolicies", "MeshPolicy"),
    ("ingresspolicies", "IngressPolicy"),
];

/// The plural of a kind, or of a kind's lower-case name or plural or
/// short name (`route`, `routes`, `Route`, `proute`, `msvc`...).
pub fn plural_of(kind: &str) -> Option<&'static str> {
    let k = kind.to_ascii_lowercase();
    let short = match k.as_str() {
        "msvc" | "pms" => "microservices",
        "proute" => "routes",
        "egp" | "egress" => "egresspolicies",
        "acp" | "access" => "accesspolicies",
        "mp" | "mesh" => "meshpolicies",
        "igp" | "ingress" => "ingresspolicies",
        _ => "",
    };
    KINDS
        .iter()
        .find(|(p, s)| *p == k || s.to_ascii_lowercase() == k || *p == short)
        .map(|(p, _)| *p)
}

/// The kind of a plural path segment.
pub fn kind_of(plural: &str) -> Option<&'static str> {
    KINDS.iter().find(|(p, _)| *p == plural).map(|(_, k)| *k)
}
