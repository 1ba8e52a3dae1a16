//! One rendered object, typed: what [`crate::render_each`] hands out.
//!
//! The objects rendered per service (Deployments, Service, ServiceAccount,
//! VirtualService, DestinationRule, ServiceEntries, Sidecar,
//! NetworkPolicy, AuthorizationPolicy) are small structs that borrow from
//! the mesh and serialise straight to JSON or YAML, with no
//! `serde_json::Value` tree in between. Rarer objects (ingress, filters,
//! namespace defaults) are kept as JSON values. Either way an object
//! serialises exactly as its JSON value does: fields in sorted order,
//! absent rather than null.

use std::borrow::Cow;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde_json::Value;

use crate::meta::{Labels, NETWORKING, NETWORKING_ALPHA3, SECURITY};

/// The kinds packlight renders, in output order (by apiVersion, then
/// kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `apps/v1` Deployment.
    Deployment,
    /// Istio DestinationRule.
    DestinationRule,
    /// Istio Gateway.
    Gateway,
    /// Istio ServiceEntry.
    ServiceEntry,
    /// Istio Sidecar.
    Sidecar,
    /// Istio VirtualService.
    VirtualService,
    /// Istio EnvoyFilter (`v1alpha3`).
    EnvoyFilter,
    /// Kubernetes NetworkPolicy.
    NetworkPolicy,
    /// Istio AuthorizationPolicy.
    AuthorizationPolicy,
    /// Istio PeerAuthentication.
    PeerAuthentication,
    /// `v1` Service.
    Service,
    /// `v1` ServiceAccount.
    ServiceAccount,
}

impl Kind {
    /// Every kind, in output order.
    pub const ALL: [Kind; 12] = [
        Kind::Deployment,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::VirtualService,
        Kind::EnvoyFilter,
        Kind::NetworkPolicy,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::Service,
        Kind::ServiceAccount,
    ];

    /// Its apiVersion.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment => "apps/v1",
            Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::Sidecar
            | Kind::VirtualService => NETWORKING,
            Kind::EnvoyFilter => NETWORKING_ALPHA3,
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::AuthorizationPolicy | Kind::PeerAuthentication => SECURITY,
            Kind::Service | Kind::ServiceAccount => "v1",
        }
    }

    /// Its kind name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::VirtualService => "VirtualService",
            Kind::EnvoyFilter => "EnvoyFilter",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Service => "Service",
            Kind::ServiceAccount => "ServiceAccount",
        }
    }

    /// The kind of an `apiVersion` and `kind` pair packlight renders.
    pub fn of(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }
}

/// One rendered object: a Kubernetes object with `apiVersion`, `kind`,
/// `metadata` (labels, name, namespace) and usually `spec`. Serialises
/// exactly as [`Object::to_value`] does.
#[derive(Debug)]
pub struct Object<'a> {
    kind: Kind,
    namespace: Cow<'a, str>,
    name: Cow<'a, str>,
    body: Body<'a>,
}

// The typed variant is the common one (every per-service object); boxing
// it would add an allocation per object to save memory on the rare JSON
// ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Body<'a> {
    /// The whole object as JSON.
    Value(Value),
    /// Labels and a typed spec.
    Typed { labels: Labels<'a>, spec: Spec<'a> },
}

impl<'a> Object<'a> {
    /// A typed object.
    pub(crate) fn typed(
        kind: Kind,
        namespace: impl Into<Cow<'a, str>>,
        name: impl Into<Cow<'a, str>>,
        labels: Labels<'a>,
        spec: Spec<'a>,
    ) -> Self {
        Object {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            body: Body::Typed { labels, spec },
        }
    }

    /// An object given whole as JSON (from [`crate::meta::object`]);
    /// `None` for a kind packlight does not render.
    pub(crate) fn from_value(value: Value) -> Option<Self> {
        let kind = Kind::of(
            value["apiVersion"].as_str().unwrap_or_default(),
            value["kind"].as_str().unwrap_or_default(),
        )?;
        Some(Object::value(kind, value))
    }

    fn value(kind: Kind, value: Value) -> Self {
        let s = |p: &str| {
            value
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Object {
            kind,
            namespace: Cow::Owned(s("/metadata/namespace")),
            name: Cow::Owned(s("/metadata/name")),
            body: Body::Value(value),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// `apiVersion`.
    pub fn api_version(&self) -> &'static str {
        self.kind.api_version()
    }

    /// `metadata.namespace`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object as JSON.
    pub fn to_value(&self) -> Value {
        match &self.body {
            Body::Value(v) => v.clone(),
            // Serialising plain data with string keys into a JSON value
            // cannot fail.
            Body::Typed { .. } => serde_json::to_value(self).unwrap_or(Value::Null),
        }
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.body {
            Body::Value(v) => v.serialize(s),
            Body::Typed { labels, spec } => {
                let has_spec = !matches!(spec, Spec::None);
                let mut o = s.serialize_struct("Object", 3 + usize::from(has_spec))?;
                o.serialize_field("apiVersion", self.kind.api_version())?;
                o.serialize_field("kind", self.kind.name())?;
                o.serialize_field(
                    "metadata",
                    &Metadata {
                        labels,
                        name: &self.name,
                        namespace: &self.namespace,
                    },
                )?;
                if has_spec {
                    o.serialize_field("spec", spec)?;
                }
                o.end()
            }
        }
    }
}

#[derive(Serialize)]
struct Metadata<'m> {
    labels: &'m Labels<'m>,
    name: &'m str,
    namespace: &'m str,
}

/// The spec of a typed object.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Spec<'a> {
    /// No spec (ServiceAccount).
    None,
    /// `{}`.
    Empty(Empty),
    /// Any spec as JSON.
    Value(Value),
    Deployment(DeploymentSpec<'a>),
    Service(ServiceSpec<'a>),
    VirtualService(VirtualServiceSpec<'a>),
    DestinationRule(DestinationRuleSpec),
    ServiceEntry(ServiceEntrySpec),
    Sidecar(SidecarSpec<'a>),
    NetworkPolicy(NetworkPolicySpec<'a>),
    AuthorizationPolicy(AllowPolicySpec<'a>),
}

/// An empty mapping.
#[derive(Debug)]
pub(crate) struct Empty;

impl Serialize for Empty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
}

/// A mapping of string pairs, written in the order given (callers give
/// them sorted, as a JSON object would be).
#[derive(Debug)]
pub(crate) struct Pairs<'a, const N: usize>(pub [(&'static str, Cow<'a, str>); N]);

impl<const N: usize> Serialize for Pairs<'_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(N))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// `{matchLabels: {...}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MatchLabels<'a, const N: usize> {
    pub match_labels: Pairs<'a, N>,
}

// --- Deployment -----------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeploymentSpec<'a> {
    pub replicas: i32,
    pub selector: MatchLabels<'a, 2>,
    pub template: PodTemplate<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PodTemplate<'a> {
    pub metadata: PodMetadata<'a>,
    pub spec: PodSpec<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PodMetadata<'a> {
    pub labels: Pairs<'a, 3>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpec<'a> {
    pub containers: [Container<'a>; 1],
    pub service_account_name: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct Container<'a> {
    pub env: [Pairs<'a, 2>; 1],
    pub image: &'a str,
    pub name: &'a str,
    pub ports: [ContainerPort; 1],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerPort {
    pub container_port: u16,
    pub name: String,
    pub protocol: &'static str,
}

// --- Service --------------------------------------------------------------

#[derive(Debug, Serialize)]
pub(crate) struct ServiceSpec<'a> {
    pub ports: [ServicePort; 1],
    pub selector: Pairs<'a, 1>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServicePort {
    pub app_protocol: &'static str,
    pub name: String,
    pub port: u16,
    pub protocol: &'static str,
    pub target_port: u16,
}

// --- VirtualService and DestinationRule ----------------------------------

#[derive(Debug, Serialize)]
pub(crate) struct VirtualServiceSpec<'a> {
    pub hosts: [String; 1],
    pub http: Vec<HttpRoute<'a>>,
}

/// One HTTP route of a VirtualService.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute<'a> {
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub(crate) matches: Option<Vec<MatchRequest<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mirror: Option<Target<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mirror_percentage: Option<Percentage>,
    pub(crate) name: String,
    pub(crate) retries: Retries<'a>,
    pub(crate) route: Vec<RouteDestination<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<String>,
}

/// One condition set of a route (`match` item).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MatchRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<Regex>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<&'a str, StringMatch<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_params: Option<std::collections::BTreeMap<&'a str, StringMatch<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<Regex>,
}

/// `{regex: ...}`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Regex {
    pub regex: String,
}

/// `{exact|prefix|regex: ...}`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StringMatch<'a>(pub &'static str, pub &'a str);

impl Serialize for StringMatch<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(self.0, self.1)?;
        m.end()
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Percentage {
    pub value: f64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Target<'a> {
    pub host: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
    pub subset: String,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct PortNumber {
    pub number: u16,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct RouteDestination<'a> {
    pub destination: Target<'a>,
    pub headers: ResponseHeaders,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `{response: {set: {x-packlight-version: V}}}`.
#[derive(Clone, Debug)]
pub(crate) struct ResponseHeaders {
    pub version: String,
}

impl Serialize for ResponseHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let set = Pairs([(
            packlight_model::ir::VERSION_HEADER,
            Cow::Borrowed(self.version.as_str()),
        )]);
        let mut response = s.serialize_map(Some(1))?;
        response.serialize_entry("response", &SetHeaders { set })?;
        response.end()
    }
}

#[derive(Serialize)]
struct SetHeaders<'a> {
    set: Pairs<'a, 1>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Retries<'a> {
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Cow<'a, str>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DestinationRuleSpec {
    pub host: String,
    pub subsets: Vec<Subset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug)]
pub(crate) struct Subset {
    pub version: String,
    pub name: String,
}

impl Serialize for Subset {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry(
            "labels",
            &Pairs([("version", Cow::Borrowed(self.version.as_str()))]),
        )?;
        m.serialize_entry("name", &self.name)?;
        m.end()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TrafficPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ConnectionPool {
    pub tcp: MaxConnections,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MaxConnections {
    pub max_connections: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutlierDetection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

// --- ServiceEntry and Sidecar ---------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceEntrySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<[String; 1]>,
    pub export_to: [&'static str; 1],
    pub hosts: [String; 1],
    pub location: &'static str,
    pub ports: Vec<EntryPort>,
    pub resolution: &'static str,
}

#[derive(Debug, Serialize)]
pub(crate) struct EntryPort {
    pub name: String,
    pub number: u16,
    pub protocol: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SidecarSpec<'a> {
    pub egress: [EgressHosts; 1],
    pub outbound_traffic_policy: Pairs<'static, 1>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EgressHosts {
    pub hosts: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct WorkloadSelector<'a> {
    pub labels: Pairs<'a, 1>,
}

// --- NetworkPolicy and AuthorizationPolicy --------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NetworkPolicySpec<'a> {
    pub ingress: [PeersFrom<'a>; 1],
    pub pod_selector: MatchLabels<'a, 1>,
    pub policy_types: [&'static str; 1],
}

#[derive(Debug, Serialize)]
pub(crate) struct PeersFrom<'a> {
    pub from: [Peer<'a>; 3],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Peer<'a> {
    pub namespace_selector: NamespaceSelector<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<MatchLabels<'a, 1>>,
}

/// `{}` or `{matchLabels: {...}}`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum NamespaceSelector<'a> {
    Any(Empty),
    Labels(MatchLabels<'a, 1>),
}

#[derive(Debug, Serialize)]
pub(crate) struct AllowPolicySpec<'a> {
    pub action: &'static str,
    pub rules: Vec<AllowRule<'a>>,
    pub selector: MatchLabels<'a, 1>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AllowRule<'a> {
    pub from: [Source; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<[Operation<'a>; 1]>,
}

#[derive(Debug)]
pub(crate) struct Source {
    pub principals: Vec<String>,
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Principals<'p> {
            principals: &'p [String],
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(
            "source",
            &Principals {
                principals: &self.principals,
            },
        )?;
        m.end()
    }
}

#[derive(Debug)]
pub(crate) struct Operation<'a> {
    pub methods: &'a [String],
    pub paths: &'a [String],
}

impl Serialize for Operation<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Op<'p> {
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            methods: &'p [String],
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            paths: &'p [String],
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(
            "operation",
            &Op {
                methods: self.methods,
                paths: self.paths,
            },
        )?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn kinds_are_ordered_as_the_output_is() {
        // The renderer sorts by `Kind` and walks `Kind::ALL`: both must be
        // the output order, by apiVersion and then kind.
        assert!(Kind::ALL.is_sorted());
        assert!(Kind::ALL.is_sorted_by_key(|k| (k.api_version(), k.name())));
    }
}
