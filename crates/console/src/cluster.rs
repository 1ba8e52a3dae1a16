//! Clusters and what the console reads from them: a [`Snapshot`] of every
//! packlight resource with its status, and the traffic report; and what it
//! writes: applies. A cluster is a standalone engine (its API) or a
//! Kubernetes context ([`crate::kubernetes`]); the pages see only
//! snapshots and apply outcomes, the same shape for both.

use std::collections::BTreeMap;

use packlight_client::{Client, ClientError, KINDS, Outcome, VersionTraffic};
use packlight_model::Diagnostic;
use serde_json::Value;

use crate::kubernetes::{Access, Conflict, KubeCluster, NO_TRAFFIC};

/// Where a cluster's resources live.
#[derive(Clone, Debug)]
pub enum Source {
    /// A `packlight up` engine, through its standalone API.
    Standalone(Client),
    /// A kubeconfig context, with that context's credentials.
    Kubernetes(KubeCluster),
}

/// One cluster shown by the console.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Its display name.
    pub name: String,
    /// How to reach it.
    pub source: Source,
}

/// Whether a cluster answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Reach {
    /// It answered with this packlight version.
    Up {
        /// `GET /version`'s version.
        version: String,
    },
    /// It did not; why.
    Down {
        /// The error.
        error: String,
    },
}

/// Every packlight resource of one cluster, as read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The cluster's name.
    pub cluster: String,
    /// `standalone` or `kubernetes`.
    pub engine: &'static str,
    /// Reachability and version.
    pub reach: Reach,
    /// Objects by plural (`routes`...), each with metadata and status.
    pub objects: BTreeMap<String, Vec<Value>>,
}

/// One apply's outcome on one cluster.
#[derive(Clone, Debug)]
pub enum Applied {
    /// Accepted: `(kind ns/name, action)` per object, and warnings.
    Accepted(Vec<String>, Vec<Diagnostic>),
    /// Refused with these diagnostics; nothing changed.
    Refused(Vec<Diagnostic>),
    /// Server-side apply found fields other managers own; nothing changed.
    /// Applying again with `force` takes them over.
    Conflict(Conflict),
}

impl Cluster {
    /// A standalone engine from a `--standalone URL[#TOKEN_FILE]` flag.
    pub fn standalone_from_flag(flag: &str) -> Result<Cluster, String> {
        let (url, token_file) = match flag.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (flag, None),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--standalone {flag}: expected http://HOST:PORT[#TOKEN_FILE]"
            ));
        }
        let client = match token_file {
            Some(f) => {
                let token = std::fs::read_to_string(f)
                    .map_err(|e| format!("--standalone {flag}: cannot read {f}: {e}"))?;
                Client::new(url, Some(token.trim().to_string()))
            }
            None => Client::from_env(Some(url), std::path::Path::new(".packlight")),
        };
        Ok(Cluster {
            name: url.trim_end_matches('/').to_string(),
            source: Source::Standalone(client),
        })
    }

    /// A standalone engine at `url` with `token`.
    pub fn standalone(name: &str, url: &str, token: Option<String>) -> Cluster {
        Cluster {
            name: name.to_string(),
            source: Source::Standalone(Client::new(url, token)),
        }
    }

    /// A Kubernetes context, named after it.
    pub fn kubernetes(k: KubeCluster) -> Cluster {
        Cluster {
            name: k.context.clone(),
            source: Source::Kubernetes(k),
        }
    }

    /// `standalone` or `kubernetes`.
    pub fn engine(&self) -> &'static str {
        match self.source {
            Source::Standalone(_) => "standalone",
            Source::Kubernetes(_) => "kubernetes",
        }
    }

    /// Reads every resource; a cluster that does not answer is `Down`
    /// (with no objects: never a partial read), never an error.
    pub async fn snapshot(&self) -> Snapshot {
        let read = match &self.source {
            Source::Standalone(client) => read_standalone(client).await,
            Source::Kubernetes(k) => k
                .read()
                .await
                .map(|r| (r.version, r.objects.into_iter().collect())),
        };
        let (reach, objects) = match read {
            Ok((version, objects)) => (Reach::Up { version }, objects),
            Err(error) => (Reach::Down { error }, BTreeMap::new()),
        };
        Snapshot {
            cluster: self.name.clone(),
            engine: self.engine(),
            reach,
            objects,
        }
    }

    /// The traffic per service and version: a standalone engine's `GET
    /// /traffic`, a Kubernetes context's Prometheus (PromQL, see
    /// [`crate::prometheus`]). An error is the text after "traffic
    /// unavailable: ".
    pub async fn traffic(&self) -> Result<Vec<VersionTraffic>, String> {
        match &self.source {
            Source::Standalone(client) => client.traffic().await.map_err(|e| e.to_string()),
            Source::Kubernetes(k) => match &k.prometheus {
                Some(p) => p
                    .traffic()
                    .await
                    .map(|(_, rows)| rows)
                    .map_err(|e| e.to_string()),
                None => Err(NO_TRAFFIC.to_string()),
            },
        }
    }

    /// Where the traffic page's numbers come from, in words.
    pub fn traffic_source(&self) -> String {
        match &self.source {
            Source::Standalone(_) => {
                "from the engine's GET /traffic (rates over its 2 s samples)".to_string()
            }
            Source::Kubernetes(k) => match &k.prometheus {
                Some(p) => format!(
                    "from the Prometheus at {} (PromQL: each counter's increase over the last \
                     {} per second; Istio's istio_requests_total where it exists, else the \
                     sidecars' Envoy stats of their outbound subset clusters)",
                    p.url,
                    crate::prometheus::WINDOW
                ),
                None => "from no source: this context has no Prometheus".to_string(),
            },
        }
    }

    /// Whether the console's credentials for this cluster may change
    /// Routes in `namespace`: a SelfSubjectAccessReview on Kubernetes; a
    /// standalone engine's token may change everything.
    pub async fn may_change_routes(&self, namespace: &str) -> Access {
        match &self.source {
            Source::Standalone(_) => Access::Allowed,
            Source::Kubernetes(k) => k.may_change_routes(namespace).await,
        }
    }

    /// Applies `text` (YAML) as `file`; `dry_run` validates only. On
    /// Kubernetes, a server-side apply as the user; `force` takes over
    /// fields other managers own (a standalone engine has no field owners
    /// and ignores it).
    pub async fn apply(
        &self,
        text: &str,
        file: &str,
        dry_run: bool,
        force: bool,
    ) -> Result<Applied, String> {
        let client = match &self.source {
            Source::Standalone(c) => c,
            Source::Kubernetes(k) => return k.apply(text, dry_run, force).await,
        };
        match client.apply(text, Some(file), None, dry_run).await {
            Ok(Outcome::Accepted(a)) => Ok(Applied::Accepted(
                a.results
                    .iter()
                    .map(|r| format!("{} {}/{} {}", r.kind, r.namespace, r.name, r.action))
                    .collect(),
                a.diagnostics,
            )),
            Ok(Outcome::Refused(d)) => Ok(Applied::Refused(d)),
            Err(ClientError::Status { diagnostics, .. }) => Ok(Applied::Refused(diagnostics)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A standalone engine's version and every resource by plural.
async fn read_standalone(
    client: &Client,
) -> Result<(String, BTreeMap<String, Vec<Value>>), String> {
    let version = client.version().await.map_err(|e| e.to_string())?;
    let version = version["version"].as_str().unwrap_or("?").to_string();
    let lists =
        futures_util::future::join_all(KINDS.iter().map(|(plural, _)| client.list(plural, None)))
            .await;
    let mut objects = BTreeMap::new();
    for ((plural, _), list) in KINDS.iter().zip(lists) {
        objects.insert((*plural).to_string(), list.map_err(|e| e.to_string())?);
    }
    Ok((version, objects))
}

/// A Microservice and its Route, as the services page shows them.
#[derive(Clone, Debug)]
pub struct ServiceView<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// The Microservice.
    pub microservice: &'a Value,
    /// The Route for it, when there is one.
    pub route: Option<&'a Value>,
}

/// A resource whose status is not `Programmed=True` (or not accepted).
#[derive(Clone, Debug, PartialEq)]
pub struct Unsettled {
    /// `Kind ns/name`.
    pub id: String,
    /// `Accepted=False (Invalid): message` or `Programmed=False (Pending)`.
    pub why: String,
    /// `plural/ns/name`, the tail of its YAML page's path.
    pub path: String,
}

/// `metadata.namespace` and `metadata.name`.
pub fn ns_name(v: &Value) -> (&str, &str) {
    (
        v["metadata"]["namespace"].as_str().unwrap_or(""),
        v["metadata"]["name"].as_str().unwrap_or(""),
    )
}

/// The condition of `type` in `status.conditions`.
pub fn condition<'a>(v: &'a Value, kind: &str) -> Option<&'a Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

impl Snapshot {
    /// An answering standalone cluster `c` holding `objects` (unit tests).
    #[cfg(test)]
    pub(crate) fn up(objects: Vec<(&str, Value)>) -> Snapshot {
        let mut by_plural: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (plural, o) in objects {
            by_plural.entry(plural.to_string()).or_default().push(o);
        }
        Snapshot {
            cluster: "c".into(),
            engine: "standalone",
            reach: Reach::Up {
                version: "0.1.0".into(),
            },
            objects: by_plural,
        }
    }

    /// Objects of one plural.
    pub fn list(&self, plural: &str) -> &[Value] {
        self.objects.get(plural).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the cluster answered.
    pub fn is_up(&self) -> bool {
        matches!(self.reach, Reach::Up { .. })
    }

    /// Every Microservice with its Route, by namespace and name.
    pub fn services(&self) -> Vec<ServiceView<'_>> {
        let mut routes: BTreeMap<(&str, &str), &Value> = BTreeMap::new();
        for r in self.list("routes") {
            let (ns, _) = ns_name(r);
            if let Some(svc) = r["spec"]["service"].as_str() {
                routes.entry((ns, svc)).or_insert(r);
            }
        }
        let mut out: Vec<ServiceView<'_>> = self
            .list("microservices")
            .iter()
            .map(|m| {
                let (namespace, name) = ns_name(m);
                ServiceView {
                    namespace,
                    name,
                    microservice: m,
                    route: routes.get(&(namespace, name)).copied(),
                }
            })
            .collect();
        out.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));
        out
    }

    /// The Route named `ns/name`.
    pub fn route(&self, ns: &str, name: &str) -> Option<&Value> {
        self.get("routes", ns, name)
    }

    /// The versions of Microservice `ns/name`, as listed (none when there
    /// is no such Microservice).
    pub fn versions(&self, ns: &str, name: &str) -> Vec<String> {
        self.get("microservices", ns, name)
            .and_then(|m| m["spec"]["versions"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v["version"].as_str().map(str::to_string))
            .collect()
    }

    /// The object of `plural` named `ns/name`.
    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<&Value> {
        self.list(plural).iter().find(|r| ns_name(r) == (ns, name))
    }

    /// How many policies of every kind.
    pub fn policy_count(&self) -> usize {
        [
            "egresspolicies",
            "accesspolicies",
            "meshpolicies",
            "ingresspolicies",
        ]
        .iter()
        .map(|p| self.list(p).len())
        .sum()
    }

    /// Resources not accepted, or accepted and not yet Programmed.
    pub fn unsettled(&self) -> Vec<Unsettled> {
        let mut out = Vec::new();
        for (plural, kind) in KINDS {
            for o in self.list(plural) {
                let (ns, name) = ns_name(o);
                let why = match (condition(o, "Accepted"), condition(o, "Programmed")) {
                    (Some(a), _) if a["status"] != "True" => Some(format!(
                        "Accepted=False ({}): {}",
                        a["reason"].as_str().unwrap_or(""),
                        a["message"].as_str().unwrap_or("")
                    )),
                    (_, Some(p)) if p["status"] != "True" => Some(format!(
                        "Programmed=False ({}): {}",
                        p["reason"].as_str().unwrap_or(""),
                        p["message"].as_str().unwrap_or("")
                    )),
                    (_, None) => Some("no Programmed condition yet".to_string()),
                    _ => None,
                };
                if let Some(why) = why {
                    out.push(Unsettled {
                        id: format!("{kind} {ns}/{name}"),
                        why,
                        path: format!("{plural}/{ns}/{name}"),
                    });
                }
            }
        }
        out
    }
}

/// A Route's weight rules per major: `(major, [(version, weight)])`, in
/// the order written (DESIGN.md: a rule with neither weight nor matches
/// weighs 100).
pub fn split_per_major(route: &Value) -> Vec<(String, Vec<(String, u64)>)> {
    let mut majors: Vec<(String, Vec<(String, u64)>)> = Vec::new();
    for rule in route["spec"]["rules"].as_array().into_iter().flatten() {
        let Some(version) = rule["version"].as_str() else {
            continue;
        };
        let weight = match (rule.get("weight"), rule.get("matches")) {
            (Some(w), _) => w.as_u64().unwrap_or(0),
            (None, None) => 100,
            (None, Some(_)) => continue,
        };
        let major = version.split('.').next().unwrap_or("").to_string();
        match majors.iter_mut().find(|(m, _)| *m == major) {
            Some((_, ws)) => ws.push((version.to_string(), weight)),
            None => majors.push((major, vec![(version.to_string(), weight)])),
        }
    }
    majors
}

/// A Route's match rules, one line each (`2.0 ← header gray exact "1" | query debug exact "true"`).
pub fn match_rules(route: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for rule in route["spec"]["rules"].as_array().into_iter().flatten() {
        let Some(items) = rule["matches"].as_array() else {
            continue;
        };
        let version = rule["version"].as_str().unwrap_or("?");
        let alts: Vec<String> = items
            .iter()
            .map(|item| {
                let mut conds = Vec::new();
                for (what, key) in [("header", "headers"), ("query", "queryParams")] {
                    if let Some(m) = item[key].as_object() {
                        for (name, cond) in m {
                            if let Some(c) = cond.as_object() {
                                for (op, val) in c {
                                    conds.push(format!(
                                        "{what} {name} {op} {}",
                                        serde_json::to_string(val).unwrap_or_default()
                                    ));
                                }
                            }
                        }
                    }
                }
                conds.join(" and ")
            })
            .collect();
        out.push(format!("{version} ← {}", alts.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_and_matches_of_the_articles_route() {
        let r = json!({"spec": {"service": "httpbin", "rules": [
            {"version": "1.0", "weight": 80}, {"version": "1.1", "weight": 20},
            {"version": "2.0"},
            {"version": "2.0", "matches": [{"headers": {"gray": {"exact": "1"}}},
                                           {"queryParams": {"debug": {"exact": "true"}}}]}]}});
        assert_eq!(
            split_per_major(&r),
            vec![
                (
                    "1".to_string(),
                    vec![("1.0".to_string(), 80), ("1.1".to_string(), 20)]
                ),
                ("2".to_string(), vec![("2.0".to_string(), 100)]),
            ]
        );
        assert_eq!(
            match_rules(&r),
            vec![r#"2.0 ← header gray exact "1" | query debug exact "true""#]
        );
    }

    #[test]
    fn unsettled_lists_what_is_not_programmed() {
        let mut s = Snapshot {
            cluster: "c".into(),
            engine: "standalone",
            reach: Reach::Up {
                version: "0.1.0".into(),
            },
            objects: BTreeMap::new(),
        };
        s.objects.insert(
            "routes".into(),
            vec![
                json!({"metadata": {"namespace": "a", "name": "ok"}, "status": {"conditions": [
                {"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "True"}]}}),
                json!({"metadata": {"namespace": "a", "name": "bad"}, "status": {"conditions": [
                {"type": "Accepted", "status": "False", "reason": "Invalid", "message": "sum 90"},
                {"type": "Programmed", "status": "False", "reason": "Pending"}]}}),
            ],
        );
        let u = s.unsettled();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].id, "Route a/bad");
        assert!(u[0].why.contains("sum 90"));
        assert_eq!(u[0].path, "routes/a/bad");
    }
}
