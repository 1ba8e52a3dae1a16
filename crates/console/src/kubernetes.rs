//! Kubernetes clusters: one kubeconfig context each, talked to with that
//! context's own credentials (the console acts as the user and never holds
//! more rights than the user has).
//!
//! In: a kubeconfig and context names. Out: the same JSON objects the
//! standalone API returns (metadata, spec, status) for the six packlight
//! kinds, server-side applies with field manager [`FIELD_MANAGER`] (without
//! force unless the user chose to take fields over), and
//! SelfSubjectAccessReviews that say whether the user may change Routes.
//! This room never decides validity: that is `packlight-model`'s (in
//! [`crate::edit`]) and the API server's (CEL, RBAC).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, Status};
use packlight_api::{AccessPolicy, EgressPolicy, IngressPolicy, MeshPolicy, Microservice, Route};
use packlight_model::Diagnostic;
use serde_json::{Value, json};

use crate::cluster::Applied;
use crate::prometheus::Prometheus;

/// The field manager of every apply the console makes.
pub const FIELD_MANAGER: &str = "packlight-console";

/// What the traffic page says for a Kubernetes cluster without Prometheus.
pub const NO_TRAFFIC: &str =
    "no traffic source: no Prometheus for this context (give --prometheus CONTEXT=URL)";

/// How long to wait for a connection to an API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for an API server's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One kubeconfig context.
#[derive(Clone)]
pub struct KubeCluster {
    pub(crate) client: kube::Client,
    /// The context's name.
    pub context: String,
    /// The context's namespace (`default` when it names none): where the
    /// console lists when the user may not list across namespaces.
    pub namespace: String,
    /// Its Prometheus (`--prometheus CONTEXT=URL`), the traffic page's
    /// source.
    pub prometheus: Option<Prometheus>,
}

impl fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeCluster")
            .field("context", &self.context)
            .field("namespace", &self.namespace)
            .field("prometheus", &self.prometheus.as_ref().map(|p| &p.url))
            .finish_non_exhaustive()
    }
}

/// The API resource of a packlight plural (`routes`...).
pub fn resource(plural: &str) -> Option<ApiResource> {
    Some(match plural {
        "microservices" => ApiResource::erase::<Microservice>(&()),
        "routes" => ApiResource::erase::<Route>(&()),
        "egresspolicies" => ApiResource::erase::<EgressPolicy>(&()),
        "accesspolicies" => ApiResource::erase::<AccessPolicy>(&()),
        "meshpolicies" => ApiResource::erase::<MeshPolicy>(&()),
        "ingresspolicies" => ApiResource::erase::<IngressPolicy>(&()),
        _ => return None,
    })
}

/// The clusters of `contexts` in the kubeconfig at `path` (kube's default
/// lookup, `KUBECONFIG` else `~/.kube/config`, when `None`); no context
/// names means the current context. Must run inside the tokio runtime
/// that will use the clients.
pub async fn load(path: Option<&Path>, contexts: &[String]) -> Result<Vec<KubeCluster>, String> {
    let file = match path {
        Some(p) => {
            Kubeconfig::read_from(p).map_err(|e| format!("--kubeconfig {}: {e}", p.display()))?
        }
        None => Kubeconfig::read().map_err(|e| format!("no kubeconfig: {e}"))?,
    };
    let names: Vec<String> = if contexts.is_empty() {
        match &file.current_context {
            Some(c) if !c.is_empty() => vec![c.clone()],
            _ => return Err("the kubeconfig names no current context: give --context NAME".into()),
        }
    } else {
        contexts.to_vec()
    };
    let mut out = Vec::new();
    for name in names {
        if !file.contexts.iter().any(|c| c.name == name) {
            return Err(format!(
                "--context {name}: no such context in the kubeconfig"
            ));
        }
        let options = KubeConfigOptions {
            context: Some(name.clone()),
            ..KubeConfigOptions::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(file.clone(), &options)
            .await
            .map_err(|e| format!("--context {name}: {e}"))?;
        // A context whose API server does not answer is shown down within
        // a page load, not after kube's default minutes.
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        let namespace = config.default_namespace.clone();
        let client =
            kube::Client::try_from(config).map_err(|e| format!("--context {name}: {e}"))?;
        out.push(KubeCluster {
            client,
            context: name,
            namespace,
            prometheus: None,
        });
    }
    Ok(out)
}

/// What a read of one cluster found.
pub struct Read {
    /// `v1.35.0, packlight CRDs installed` (or which are missing).
    pub version: String,
    /// Objects by plural.
    pub objects: Vec<(String, Vec<Value>)>,
}

/// Whether the user may change Routes in a namespace.
#[derive(Clone, Debug, PartialEq)]
pub enum Access {
    /// The API server said yes (or the engine's token holds the right).
    Allowed,
    /// The API server said no; the note to show.
    Denied(String),
    /// The review itself failed; the API server decides at apply time.
    Unknown(String),
}

fn api_error(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

impl KubeCluster {
    /// Reads the version and every packlight object (all namespaces; the
    /// context's namespace when listing across namespaces is forbidden).
    pub async fn read(&self) -> Result<Read, String> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| e.to_string())?;
        let group = format!("{}/{}", packlight_api::GROUP, packlight_api::VERSION);
        let served: Vec<String> = match self.client.list_api_group_resources(&group).await {
            Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
            Err(e) if api_error(&e).is_some_and(|s| s.code == 404) => Vec::new(),
            Err(e) => return Err(format!("discovery of {group}: {e}")),
        };
        let missing: Vec<&str> = packlight_client::KINDS
            .iter()
            .filter(|(p, _)| !served.iter().any(|s| s == p))
            .map(|(p, _)| *p)
            .collect();
        let crds = if missing.is_empty() {
            "packlight CRDs installed".to_string()
        } else if missing.len() == packlight_client::KINDS.len() {
            "packlight CRDs not installed".to_string()
        } else {
            format!("packlight CRDs missing: {}", missing.join(", "))
        };
        let mut objects = Vec::new();
        for (plural, kind) in packlight_client::KINDS {
            let Some(ar) = resource(plural).filter(|_| !missing.contains(&plural)) else {
                objects.push((plural.to_string(), Vec::new()));
                continue;
            };
            let all: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
            let list = match all.list(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) if api_error(&e).is_some_and(|s| s.code == 403) => {
                    let here: Api<DynamicObject> =
                        Api::namespaced_with(self.client.clone(), &self.namespace, &ar);
                    here.list(&ListParams::default()).await.map_err(|e| {
                        format!("listing {plural} in namespace {}: {e}", self.namespace)
                    })?
                }
                Err(e) => return Err(format!("listing {plural}: {e}")),
            };
            let items = list
                .items
                .into_iter()
                .map(|o| as_json(o, &ar, kind))
                .collect();
            objects.push((plural.to_string(), items));
        }
        Ok(Read {
            version: format!("{} · {crds}", info.git_version),
            objects,
        })
    }

    /// Whether the user may `patch` Routes in `namespace`
    /// (SelfSubjectAccessReview).
    pub async fn may_change_routes(&self, namespace: &str) -> Access {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(packlight_api::GROUP.into()),
                    resource: Some("routes".into()),
                    verb: Some("patch".into()),
                    namespace: Some(namespace.into()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &review).await {
            Ok(r) => match r.status {
                Some(s) if s.allowed => Access::Allowed,
                Some(_) => Access::Denied(format!(
                    "your credentials may not change Routes in {namespace}"
                )),
                None => Access::Unknown("the access review had no answer".into()),
            },
            Err(e) => Access::Unknown(format!("could not review your rights: {e}")),
        }
    }

    /// Server-side applies every document of `text` as the user, with
    /// field manager [`FIELD_MANAGER`] and strict field validation;
    /// `force` takes over fields other managers own, `dry_run` is
    /// `dryRun=All`. Only `apiVersion`, `kind`, `metadata.name`,
    /// `metadata.namespace` and `spec` are sent, so the console owns no
    /// more than what it edits.
    pub async fn apply(&self, text: &str, dry_run: bool, force: bool) -> Result<Applied, String> {
        // Parsed before the first request: the YAML deserializer is not Send.
        let docs = serde_yaml::Deserializer::from_str(text)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).map_err(|e| e.to_string()))
            .collect::<Result<Vec<Value>, String>>()?;
        let mut done = Vec::new();
        for v in docs.into_iter().filter(|v| !v.is_null()) {
            let kind = v["kind"].as_str().unwrap_or("");
            let Some(ar) = packlight_client::KINDS
                .iter()
                .find(|(_, k)| *k == kind)
                .and_then(|(p, _)| resource(p))
            else {
                return Ok(Applied::Refused(vec![Diagnostic::error(format!(
                    "{kind:?} is not a packlight kind"
                ))]));
            };
            let (ns, name) = crate::cluster::ns_name(&v);
            let (ns, name) = (ns.to_string(), name.to_string());
            let object = json!({
                "apiVersion": ar.api_version,
                "kind": ar.kind,
                "metadata": {"name": name, "namespace": ns},
                "spec": v["spec"],
            });
            let mut params = PatchParams::apply(FIELD_MANAGER).validation_strict();
            params.force = force;
            params.dry_run = dry_run;
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
            match api.patch(&name, &params, &Patch::Apply(&object)).await {
                Ok(o) => done.push(format!(
                    "{kind} {ns}/{name} {} (resourceVersion {})",
                    match (dry_run, force) {
                        (true, _) => "valid (dry run)",
                        (false, true) => "applied, fields taken over",
                        (false, false) => "applied",
                    },
                    o.metadata.resource_version.as_deref().unwrap_or("?")
                )),
                Err(kube::Error::Api(s)) if is_field_conflict(&s) => {
                    return Ok(Applied::Conflict(conflict(&s)));
                }
                Err(kube::Error::Api(s)) => {
                    return Ok(Applied::Refused(vec![Diagnostic {
                        kind: Some(kind.to_string()),
                        namespace: Some(ns),
                        name: Some(name),
                        ..Diagnostic::error(format!(
                            "the API server answered {} {}: {}",
                            s.code, s.reason, s.message
                        ))
                    }]));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Applied::Accepted(done, Vec::new()))
    }
}

/// An object as the standalone API shows it: apiVersion, kind, metadata
/// (without managedFields) and the rest (spec, status).
fn as_json(o: DynamicObject, ar: &ApiResource, kind: &str) -> Value {
    let mut v = serde_json::to_value(&o).unwrap_or(Value::Null);
    v["apiVersion"] = json!(ar.api_version);
    v["kind"] = json!(kind);
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    v
}

/// Fields other managers own, as a 409 from server-side apply names them.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The managers that own the fields (`someone-else`...).
    pub managers: Vec<String>,
    /// The fields (`.spec.rules`...).
    pub fields: Vec<String>,
    /// The API server's message.
    pub message: String,
}

fn is_field_conflict(s: &Status) -> bool {
    s.code == 409
        && (s.message.contains("conflict with")
            || s.details
                .as_ref()
                .is_some_and(|d| d.causes.iter().any(|c| c.reason == "FieldManagerConflict")))
}

/// The manager named in `conflict with "NAME"...`.
fn manager_in(text: &str) -> Vec<String> {
    text.split("conflict with \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

fn conflict(s: &Status) -> Conflict {
    let mut managers = Vec::new();
    let mut fields = Vec::new();
    let causes = s
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or(&[]);
    for c in causes {
        managers.extend(manager_in(&c.message));
        if !c.field.is_empty() {
            fields.push(c.field.clone());
        }
    }
    if managers.is_empty() {
        managers = manager_in(&s.message);
    }
    managers.sort();
    managers.dedup();
    fields.sort();
    fields.dedup();
    Conflict {
        managers,
        fields,
        message: s.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_name_their_managers_and_fields() {
        let s: Status = serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
            "reason": "Conflict",
            "message": "Apply failed with 1 conflict: conflict with \"someone-else\" using packlight.dev/v1alpha1: .spec.rules",
            "details": {"name": "httpbin", "group": "packlight.dev", "kind": "routes", "causes": [
                {"reason": "FieldManagerConflict",
                 "message": "conflict with \"someone-else\" using packlight.dev/v1alpha1",
                 "field": ".spec.rules"}]}
        }))
        .unwrap();
        assert!(is_field_conflict(&s));
        let c = conflict(&s);
        assert_eq!(c.managers, vec!["someone-else"]);
        assert_eq!(c.fields, vec![".spec.rules"]);
        let bare: Status = serde_json::from_value(json!({"code": 409, "message":
            "Apply failed with 2 conflicts: conflict with \"a\": .spec.x; conflict with \"b\" with subresource \"status\": .spec.y"}))
        .unwrap();
        assert_eq!(conflict(&bare).managers, vec!["a", "b"]);
        let rv: Status =
            serde_json::from_value(json!({"code": 409, "message": "the object has been modified"}))
                .unwrap();
        assert!(!is_field_conflict(&rv));
    }

    #[test]
    fn every_packlight_plural_has_its_resource() {
        for (plural, kind) in packlight_client::KINDS {
            let ar = resource(plural).unwrap();
            assert_eq!((ar.plural.as_str(), ar.kind.as_str()), (plural, kind));
            assert_eq!(ar.api_version, "packlight.dev/v1alpha1");
        }
        assert!(resource("pods").is_none());
    }
}
