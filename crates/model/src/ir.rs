//! The intermediate representation: the model of the mesh, not a bag of
//! Istio or Envoy structs. Built by [`crate::build`] from validated
//! resources; read by the translators (`packlight-istio`, `packlight-xds`).
//!
//! Everything is ordered (`BTreeMap`, sorted `Vec`s), so translating it is
//! deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::diagnostic::ResourceId;
use crate::version::Version;

/// The trust domain of every identity packlight issues or names.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// The response header the mesh adds to every response routed by a Route.
pub const VERSION_HEADER: &str = "x-packlight-version";

/// A service: `name` in `namespace`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
}

impl ServiceKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `name.namespace.svc.cluster.local`.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// `cluster.local/ns/NS/sa/NAME`: the principal of its service account.
    pub fn principal(&self) -> String {
        format!("{TRUST_DOMAIN}/ns/{}/sa/{}", self.namespace, self.name)
    }

    /// `spiffe://cluster.local/ns/NS/sa/NAME`.
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://{}", self.principal())
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The whole mesh as packlight understands it.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Mesh {
    /// Every service, from Microservices and Routes.
    pub services: BTreeMap<ServiceKey, Service>,
    /// Namespace defaults (MeshPolicy), for every namespace that has one.
    pub namespaces: BTreeMap<String, NamespacePolicy>,
    /// Egress whitelists, one entry per accepted EgressPolicy.
    pub egress: BTreeMap<ResourceId, EgressGrant>,
    /// Ingress exposures, one per accepted IngressPolicy.
    pub ingresses: BTreeMap<ResourceId, Ingress>,
    /// Per namespace: how many services it has and which any caller may
    /// reach. Derived from `services` and `namespaces` by
    /// [`Mesh::reindex`] (the model calls it), so that reach questions cost
    /// what their answer costs, not a walk over the whole mesh.
    #[serde(skip)]
    pub reach_index: BTreeMap<String, NamespaceReach>,
}

/// What a caller routes to in one namespace ([`Mesh::reach_of`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach<'m> {
    /// Every service of the namespace.
    All,
    /// These services, in order.
    Some(Vec<&'m ServiceKey>),
}

impl Reach<'_> {
    /// The owned form [`Mesh::reach`] answers with: `None` for every
    /// service of the namespace, else the services.
    pub fn to_owned_keys(&self) -> Option<BTreeSet<ServiceKey>> {
        match self {
            Reach::All => None,
            Reach::Some(keys) => Some(keys.iter().map(|&k| k.clone()).collect()),
        }
    }
}

/// Reach facts of one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceReach {
    /// Services in the namespace.
    pub services: usize,
    /// Services every mesh caller's proxy routes to ([`Mesh::is_routable`]):
    /// open ones, and those guarded by an AccessPolicy (whose RBAC answers
    /// a caller it does not allow with `403`).
    pub open: BTreeSet<ServiceKey>,
}

impl Mesh {
    /// The namespace policy in force (the defaults where none is given).
    pub fn namespace_policy(&self, namespace: &str) -> NamespacePolicy {
        self.namespaces.get(namespace).cloned().unwrap_or_default()
    }

    /// True when every mesh caller may call `svc`: it has no AccessPolicy
    /// and its namespace does not deny by default.
    pub fn is_open(&self, svc: &Service) -> bool {
        svc.policy.access.is_none()
            && !self
                .namespaces
                .get(&svc.key.namespace)
                .is_some_and(|p| p.access_deny)
    }

    /// True when `caller` may call `callee` (by identity; methods and
    /// paths are checked at the callee).
    pub fn may_call(&self, caller: &ServiceKey, callee: &Service) -> bool {
        match &callee.policy.access {
            Some(rules) => rules.iter().any(|r| r.from.contains(caller)),
            None => self.is_open(callee),
        }
    }

    /// True when every caller's proxy routes to `svc`: it is open, or it
    /// has an AccessPolicy. DESIGN.md: "once a service has an
    /// AccessPolicy, callers it does not allow get `403` with body `RBAC:
    /// access denied`" — so they must reach it; only services denied by
    /// the namespace default alone (no AccessPolicy) are left out of
    /// callers' configs (no route: `502`, Istio's BlackHoleCluster).
    pub fn is_routable(&self, svc: &Service) -> bool {
        svc.policy.access.is_some() || self.is_open(svc)
    }

    /// Recomputes [`Mesh::reach_index`]; call after changing `services`,
    /// their access policy or `namespaces`.
    pub fn reindex(&mut self) {
        // Services are ordered by namespace, then name: each namespace is
        // one run, and its open services come in order (each set is built
        // whole, not searched key by key).
        let mut index: BTreeMap<String, NamespaceReach> = BTreeMap::new();
        let mut services = self.services.values().peekable();
        while let Some(ns) = services.peek().copied().map(|s| &s.key.namespace) {
            let mut count = 0;
            let mut open: Vec<ServiceKey> = Vec::new();
            while let Some(svc) = services.next_if(|s| s.key.namespace == *ns) {
                count += 1;
                if self.is_routable(svc) {
                    open.push(svc.key.clone());
                }
            }
            index.insert(
                ns.clone(),
                NamespaceReach {
                    services: count,
                    open: open.into_iter().collect(),
                },
            );
        }
        self.reach_index = index;
    }

    /// What `caller` routes to, per namespace: `None` for every service
    /// of that namespace, else the services it may call there. Namespaces
    /// it may reach nothing in are absent. Costs O(namespaces + answer):
    /// [`Mesh::reach_of`], copied out.
    pub fn reach(&self, caller: &ServiceKey) -> BTreeMap<String, Option<BTreeSet<ServiceKey>>> {
        self.reach_known(caller, self.services.get(caller))
            .into_iter()
            .map(|(ns, reach)| (ns.to_string(), reach.to_owned_keys()))
            .collect()
    }

    /// [`Mesh::reach`] of `svc`, one of this mesh's services, borrowed
    /// from the mesh: its namespaces in order, nothing copied and nothing
    /// looked up. Renderers ask it once per workload, so with many
    /// namespaces it is the one walk over [`Mesh::reach_index`] a
    /// workload costs.
    pub fn reach_of<'m>(&'m self, svc: &'m Service) -> Vec<(&'m str, Reach<'m>)> {
        self.reach_known(&svc.key, Some(svc))
    }

    /// Walks the index beside the caller's grants (both ordered by
    /// namespace); `known` is the caller's service when it is in the mesh.
    fn reach_known<'m>(
        &'m self,
        caller: &ServiceKey,
        known: Option<&'m Service>,
    ) -> Vec<(&'m str, Reach<'m>)> {
        let mut out = Vec::new();
        let mut granted = known.into_iter().flat_map(|s| &s.policy.granted).peekable();
        for (ns, facts) in &self.reach_index {
            while granted.next_if(|k| k.namespace < *ns).is_some() {}
            let mut extra: Vec<&ServiceKey> = Vec::new();
            while let Some(k) = granted.next_if(|k| k.namespace == *ns) {
                if !facts.open.contains(k) && k != caller && self.services.contains_key(k) {
                    extra.push(k);
                }
            }
            let own = usize::from(known.is_some() && caller.namespace == *ns);
            let total = facts.services - own;
            let open = facts.open.len() - usize::from(own == 1 && facts.open.contains(caller));
            let reached = open + extra.len();
            if reached == 0 {
                continue;
            }
            if reached == total {
                out.push((ns.as_str(), Reach::All));
                continue;
            }
            // `extra` holds no open service: the keys are distinct.
            let mut keys: Vec<&ServiceKey> = facts
                .open
                .iter()
                .filter(|k| *k != caller)
                .chain(extra)
                .collect();
            keys.sort_unstable();
            out.push((ns.as_str(), Reach::Some(keys)));
        }
        out
    }

    /// Every service `caller` routes to, in order. Costs O(namespaces +
    /// answer).
    pub fn reachable(&self, caller: &ServiceKey) -> Vec<&Service> {
        let mut keys: BTreeSet<&ServiceKey> = BTreeSet::new();
        for facts in self.reach_index.values() {
            keys.extend(facts.open.iter());
        }
        // A grant whose service exists is in a namespace of the index.
        if let Some(s) = self.services.get(caller) {
            keys.extend(s.policy.granted.iter());
        }
        keys.into_iter()
            .filter(|k| *k != caller)
            .filter_map(|k| self.services.get(k))
            .collect()
    }
}

/// The protocol a service speaks.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP.
    #[default]
    Http,
    /// gRPC.
    Grpc,
    /// TCP.
    Tcp,
}

impl Protocol {
    /// `http`, `grpc`, `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }

    /// True for protocols with L7 routing and policies.
    pub fn is_l7(self) -> bool {
        self != Protocol::Tcp
    }
}

/// One service with its versions, route table and policies.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Service {
    /// Its key.
    pub key: ServiceKey,
    /// The Microservice defining it; `None` when only a Route names it.
    pub workload: Option<Workload>,
    /// The Route for it, when one is accepted.
    pub route: Option<RouteTable>,
    /// The Route resource behind `route`.
    pub route_source: Option<ResourceId>,
    /// What it may do and who may call it.
    pub policy: WorkloadPolicy,
}

impl Service {
    /// The service port, when a Microservice gives it.
    pub fn port(&self) -> Option<u16> {
        self.workload.as_ref().map(|w| w.port)
    }

    /// Every version known: the Microservice's, else the Route's.
    pub fn versions(&self) -> BTreeSet<Version> {
        match (&self.workload, &self.route) {
            (Some(w), _) => w.versions.keys().cloned().collect(),
            (None, Some(r)) => r.versions(),
            (None, None) => BTreeSet::new(),
        }
    }
}

/// What a Microservice defines.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Workload {
    /// The Microservice resource.
    pub source: ResourceId,
    /// The service port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its versions.
    pub versions: BTreeMap<Version, VersionDeployment>,
}

/// How one version runs.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct VersionDeployment {
    /// Kubernetes: the image.
    pub image: Option<String>,
    /// Kubernetes: replicas (default 1).
    pub replicas: i32,
    /// Standalone: the command packlight starts.
    pub command: Option<Vec<String>>,
    /// Standalone: fixed endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// A fixed `host:port` endpoint.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// The route table of one service: DESIGN.md's normative routing algorithm.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RouteTable {
    /// Match rules, in the order written; tried first, whole service.
    pub match_routes: Vec<MatchRoute>,
    /// Majors with weight rules, by major number.
    pub majors: Vec<MajorScope>,
    /// The major taking requests that address none.
    pub default_major: u32,
    /// Request timeout.
    pub timeout: Option<Duration>,
    /// Retries (Istio's default when the Route gives none).
    pub retries: RetryPolicy,
    /// Mirroring.
    pub mirror: Option<MirrorPolicy>,
    /// Outlier detection and connection limits.
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
}

impl RouteTable {
    /// Every version the table sends traffic to, as written (in table
    /// order, with repeats): [`RouteTable::versions`] without building a
    /// set.
    pub fn each_version(&self) -> impl Iterator<Item = &Version> {
        self.majors
            .iter()
            .flat_map(|m| m.weights.iter().map(|w| &w.version))
            .chain(self.match_routes.iter().map(|m| &m.version))
            .chain(self.mirror.iter().map(|m| &m.version))
    }

    /// Every version the table sends traffic to (weights, matches, mirror).
    pub fn versions(&self) -> BTreeSet<Version> {
        self.each_version().cloned().collect()
    }

    /// The scope of a major.
    pub fn major(&self, major: u32) -> Option<&MajorScope> {
        self.majors.iter().find(|m| m.major == major)
    }

    /// The split as text, e.g. `1.0=80,1.1=20,2.0=100`.
    pub fn split(&self) -> String {
        self.majors
            .iter()
            .flat_map(|m| {
                m.weights
                    .iter()
                    .map(|w| format!("{}={}", w.version, w.weight))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A match rule: requests matching any item go to `version`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MatchRoute {
    /// The destination.
    pub version: Version,
    /// OR between items.
    pub items: Vec<MatchItem>,
}

/// AND between all conditions of one item.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct MatchItem {
    /// Lower-case header name -> condition, sorted by name.
    pub headers: Vec<(String, StringMatcher)>,
    /// Query parameter name -> condition, sorted by name.
    pub query: Vec<(String, StringMatcher)>,
}

/// A string condition. Regexes are RE2 and match the whole value.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StringMatcher {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Full match of an RE2 regex.
    Regex(String),
}

/// One major with its weighted minors.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MajorScope {
    /// The major number.
    pub major: u32,
    /// How requests address it.
    pub address: MajorAddress,
    /// Weighted versions; weights sum to exactly 100.
    pub weights: Vec<WeightedVersion>,
}

/// How a major is addressed.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum MajorAddress {
    /// A segment-aware path prefix (default `/vN`), never ending in `/`.
    PathPrefix(String),
    /// A host, at the ingress only, matched with or without a port.
    Host(String),
}

/// A version and its share of its major.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct WeightedVersion {
    /// The version.
    pub version: Version,
    /// 0..=100.
    pub weight: u32,
}

/// Retries.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub attempts: u32,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
    /// Retry conditions, in Istio/Envoy `retryOn` names.
    pub on: Vec<String>,
}

impl RetryPolicy {
    /// Istio's default: 2 attempts on connect-failure, refused-stream,
    /// unavailable, cancelled, retriable-status-codes.
    pub fn istio_default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on: [
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Mirroring.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MirrorPolicy {
    /// Receives the copies.
    pub version: Version,
    /// 0..=100.
    pub percent: u32,
}

/// Outlier detection and connection limits.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct CircuitBreakerPolicy {
    /// Consecutive 5xx that eject.
    pub consecutive_5xx: Option<u32>,
    /// Analysis interval.
    pub interval: Option<Duration>,
    /// Base ejection time.
    pub base_ejection: Option<Duration>,
    /// Max connections.
    pub max_connections: Option<u32>,
}

/// Namespace defaults (MeshPolicy).
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct NamespacePolicy {
    /// The MeshPolicy, when one exists.
    pub source: Option<ResourceId>,
    /// mTLS STRICT.
    pub mtls_strict: bool,
    /// Callers need an AccessPolicy.
    pub access_deny: bool,
    /// Egress limited to the mesh and whitelists.
    pub egress_deny: bool,
}

/// Per-workload policy: inbound access and outbound reach.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct WorkloadPolicy {
    /// Inbound: allow rules from AccessPolicies (`None`: no AccessPolicy,
    /// the namespace default applies).
    pub access: Option<Vec<AccessRule>>,
    /// AccessPolicies behind `access`.
    pub access_sources: Vec<ResourceId>,
    /// Outbound: services with an AccessPolicy naming this one as a
    /// caller. With [`Mesh::is_open`] services, this is what it may reach.
    pub granted: BTreeSet<ServiceKey>,
    /// Outbound: whitelisted external destinations (namespace-wide and
    /// its own), merged and sorted.
    pub egress: Vec<EgressHost>,
    /// EgressPolicies behind `egress`.
    pub egress_sources: Vec<ResourceId>,
}

/// Who may call, and how.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    /// Callers by service.
    pub from: Vec<ServiceKey>,
    /// Calls through the ingress gateway.
    pub ingress: bool,
    /// Upper-case methods (any when empty).
    pub methods: Vec<String>,
    /// Paths (any when empty): exact, `/prefix/*`, `*suffix`.
    pub paths: Vec<String>,
}

/// An accepted EgressPolicy.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct EgressGrant {
    /// Namespace.
    pub namespace: String,
    /// The caller; `None`: every workload of the namespace.
    pub service: Option<ServiceKey>,
    /// Its hosts.
    pub hosts: Vec<EgressHost>,
}

/// A whitelisted destination outside the mesh.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum EgressHost {
    /// A DNS name or `*.` wildcard, on the given ports (80 and 443 when
    /// none was written).
    Dns {
        /// Lower-case name, possibly `*.example.com`.
        name: String,
        /// Ports.
        ports: Vec<u16>,
    },
    /// An IPv4 network (an IP is a /32), on the given ports.
    Cidr {
        /// The network.
        net: Ipv4Net,
        /// Ports.
        ports: Vec<u16>,
    },
}

impl EgressHost {
    /// The ports.
    pub fn ports(&self) -> &[u16] {
        match self {
            EgressHost::Dns { ports, .. } | EgressHost::Cidr { ports, .. } => ports,
        }
    }

    /// True for `*.` names.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, EgressHost::Dns { name, .. } if name.starts_with("*."))
    }
}

impl fmt::Display for EgressHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressHost::Dns { name, .. } => f.write_str(name),
            EgressHost::Cidr { net, .. } => write!(f, "{net}"),
        }
    }
}

/// An accepted IngressPolicy.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Ingress {
    /// Its namespace.
    pub namespace: String,
    /// Hosts served (lower case).
    pub hosts: Vec<String>,
    /// Routes, longest prefix first (then by prefix), as Envoy needs.
    pub routes: Vec<IngressRoute>,
    /// CORS.
    pub cors: Option<CorsPolicy>,
    /// CSRF.
    pub csrf: Option<CsrfPolicy>,
    /// Login.
    pub login: Option<LoginPolicy>,
    /// Rate limit.
    pub rate_limit: Option<RateLimitPolicy>,
}

/// A path prefix served by a service.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct IngressRoute {
    /// Segment-aware, no trailing `/` (except `/` itself).
    pub path_prefix: String,
    /// The service.
    pub service: ServiceKey,
}

/// CORS.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Exact origins (or `*`).
    pub allow_origins: Vec<String>,
    /// Methods.
    pub allow_methods: Vec<String>,
    /// Request headers.
    pub allow_headers: Vec<String>,
    /// Exposed headers.
    pub expose_headers: Vec<String>,
    /// Credentials.
    pub allow_credentials: bool,
    /// Preflight cache.
    pub max_age: Option<Duration>,
}

/// CSRF.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CsrfPolicy {
    /// Segment-aware path prefixes not checked.
    pub exclude: Vec<String>,
}

/// Login.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct LoginPolicy {
    /// Where browsers go (default `/login`).
    pub login_url: String,
    /// Segment-aware path prefixes without login (the login URL is always one).
    pub exclude: Vec<String>,
}

/// Local rate limit.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// Requests per `period`.
    pub requests: u32,
    /// The period.
    pub period: Duration,
}
