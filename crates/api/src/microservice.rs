//! `Microservice`: the workload and its versions.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ResourceStatus;

/// The protocol a service speaks on its port.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2 (the default).
    #[default]
    Http,
    /// gRPC (HTTP/2).
    Grpc,
    /// Opaque TCP: no L7 routing, no HTTP policies.
    Tcp,
}

impl Protocol {
    /// The lower-case name, as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

/// A workload with its versions. Kubernetes: a Deployment per version, a
/// Service and a ServiceAccount (its identity). Standalone: the processes
/// packlight starts, or fixed endpoints.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "packlight.dev",
    version = "v1alpha1",
    kind = "Microservice",
    plural = "microservices",
    shortname = "msvc",
    shortname = "pms",
    category = "packlight",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.port"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"Versions","type":"string","jsonPath":".spec.versions[*].version"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MicroserviceSpec {
    /// The service port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// `http` (default), `grpc` or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The versions of this service; at least one.
    #[schemars(length(min = 1, max = 32))]
    pub versions: Vec<VersionSpec>,
}

/// One version of a microservice.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionSpec {
    /// `MAJOR.MINOR` or `MAJOR.MINOR.PATCH`, e.g. `"1.0"` (quote it in YAML).
    #[schemars(regex(
        pattern = r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5}))?$"
    ))]
    #[schemars(length(max = 20))]
    pub version: String,
    /// Kubernetes engine: the container image of this version's Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Kubernetes engine: replicas of this version (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: Option<i32>,
    /// Standalone engine: a command packlight starts and supervises, given
    /// `$PORT` to listen on and `$HTTP_PROXY`/`$HTTPS_PROXY` pointing at its
    /// sidecar's outbound listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub command: Option<Vec<String>>,
    /// Standalone engine: fixed endpoints (`host:port`) packlight does not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub endpoints: Option<Vec<String>>,
}
