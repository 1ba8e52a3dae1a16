//! Typed inputs: one of packlight's six resources, with where it came from.

use packlight_api as api;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, ResourceId};

/// One packlight resource.
#[derive(Clone, Debug)]
pub enum Resource {
    /// A Microservice.
    Microservice(api::Microservice),
    /// A Route.
    Route(api::Route),
    /// An EgressPolicy.
    EgressPolicy(api::EgressPolicy),
    /// An AccessPolicy.
    AccessPolicy(api::AccessPolicy),
    /// A MeshPolicy.
    MeshPolicy(api::MeshPolicy),
    /// An IngressPolicy.
    IngressPolicy(api::IngressPolicy),
}

macro_rules! each {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            Resource::Microservice($r) => $e,
            Resource::Route($r) => $e,
            Resource::EgressPolicy($r) => $e,
            Resource::AccessPolicy($r) => $e,
            Resource::MeshPolicy($r) => $e,
            Resource::IngressPolicy($r) => $e,
        }
    };
}

impl Resource {
    /// The kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Microservice(_) => "Microservice",
            Resource::Route(_) => "Route",
            Resource::EgressPolicy(_) => "EgressPolicy",
            Resource::AccessPolicy(_) => "AccessPolicy",
            Resource::MeshPolicy(_) => "MeshPolicy",
            Resource::IngressPolicy(_) => "IngressPolicy",
        }
    }

    /// Its metadata.
    pub fn meta(&self) -> &k8s_meta::ObjectMeta {
        each!(self, r => &r.metadata)
    }

    /// Its metadata, mutably.
    pub fn meta_mut(&mut self) -> &mut k8s_meta::ObjectMeta {
        each!(self, r => &mut r.metadata)
    }

    /// Kind, namespace (`default` when unset) and name.
    pub fn id(&self) -> ResourceId {
        let m = self.meta();
        ResourceId {
            kind: self.kind().to_string(),
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
        }
    }

    /// The object as JSON (apiVersion, kind, metadata, spec, status).
    pub fn to_value(&self) -> Value {
        // Serialising these plain data types cannot fail.
        each!(self, r => serde_json::to_value(r).unwrap_or(Value::Null))
    }
}

/// Re-export of the metadata type, so users need not name k8s-openapi.
pub mod k8s_meta {
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
}

/// A resource with where it was read from (for positions).
#[derive(Clone, Debug)]
pub struct Input {
    /// The resource.
    pub resource: Resource,
    /// Its document, when it came from text.
    pub origin: Option<Origin>,
}

/// Where a document came from: which input text, which document in it.
/// Positions are found only when a diagnostic needs one, by parsing that
/// text again with positions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// Index of the text in the list given to [`crate::load`].
    pub text: usize,
    /// Index of the document in that text (empty documents count).
    pub doc: usize,
}

impl Input {
    /// A resource without a source (from the API server, say).
    pub fn new(resource: Resource) -> Self {
        Input {
            resource,
            origin: None,
        }
    }
}

/// Turns the parsed documents of text number `text` into resources. Empty
/// documents are skipped; anything that is not a packlight resource, or
/// does not fit its schema, is a diagnostic (with its origin, to be placed
/// later). `namespace` is used where a resource names none.
pub fn from_documents(
    docs: Vec<Value>,
    text: usize,
    namespace: &str,
) -> (Vec<Input>, Vec<(Origin, Diagnostic)>) {
    let mut inputs = Vec::new();
    let mut diags = Vec::new();
    for (doc, value) in docs.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let origin = Origin { text, doc };
        match from_document(value, namespace) {
            Ok(resource) => inputs.push(Input {
                resource,
                origin: Some(origin),
            }),
            Err(d) => diags.push((origin, *d)),
        }
    }
    (inputs, diags)
}

fn from_document(value: Value, namespace: &str) -> Result<Resource, Box<Diagnostic>> {
    let v = &value;
    let Some(obj) = v.as_object() else {
        return Err(Box::new(
            Diagnostic::error("a document must be a mapping (apiVersion, kind, metadata, spec)")
                .hint("write one resource per YAML document, separated by ---"),
        ));
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let want = format!("{}/{}", api::GROUP, api::VERSION);
    let mut id = ResourceId {
        kind: kind.to_string(),
        namespace: v
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(namespace)
            .to_string(),
        name: v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    if kind.is_empty() {
        return Err(Box::new(
            Diagnostic::error("missing kind")
                .at("kind")
                .hint(format!("set kind to one of {}", api::KINDS.join(", "))),
        ));
    }
    if api_version != want {
        return Err(Box::new(
            Diagnostic::error(format!("apiVersion {api_version:?} is not {want:?}"))
                .on(&id)
                .at("apiVersion")
                .hint(format!("packlight reads only {want} resources")),
        ));
    }
    if !api::KINDS.contains(&kind) {
        id.kind = kind.to_string();
        return Err(Box::new(
            Diagnostic::error(format!("unknown kind {kind:?}"))
                .at("kind")
                .hint(format!("use one of {}", api::KINDS.join(", "))),
        ));
    }
    if id.name.is_empty() {
        return Err(Box::new(
            Diagnostic::error("missing metadata.name")
                .on(&id)
                .at("metadata.name")
                .hint("give the resource a name"),
        ));
    }
    for (field, value) in [
        ("metadata.name", &id.name),
        ("metadata.namespace", &id.namespace),
    ] {
        if !is_dns_label(value) {
            return Err(Box::new(
                Diagnostic::error(format!("{value:?} is not a valid name"))
                    .on(&id)
                    .at(field)
                    .hint("use lower-case letters, digits and '-', at most 63 characters"),
            ));
        }
    }
    let kind = kind.to_string();
    let mut resource = match kind.as_str() {
        "Microservice" => Resource::Microservice(typed(value, &id)?),
        "Route" => Resource::Route(typed(value, &id)?),
        "EgressPolicy" => Resource::EgressPolicy(typed(value, &id)?),
        "AccessPolicy" => Resource::AccessPolicy(typed(value, &id)?),
        "MeshPolicy" => Resource::MeshPolicy(typed(value, &id)?),
        _ => Resource::IngressPolicy(typed(value, &id)?),
    };
    resource.meta_mut().namespace = Some(id.namespace);
    Ok(resource)
}

/// True for an RFC 1123 label: what Kubernetes accepts as a namespace or
/// a Service name.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn typed<T: DeserializeOwned>(mut top: Value, id: &ResourceId) -> Result<T, Box<Diagnostic>> {
    if let Some(o) = top.as_object_mut() {
        // Status is written by engines; it never makes input invalid.
        o.remove("status");
        for key in o.keys() {
            if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "spec") {
                return Err(Box::new(
                    Diagnostic::error(format!("unknown field {key:?}"))
                        .on(id)
                        .at(key.clone())
                        .hint("remove it; a resource has apiVersion, kind, metadata and spec"),
                ));
            }
        }
    }
    serde_path_to_error::deserialize(top).map_err(|e| {
        let path = field_path(&e.path().to_string());
        let inner = e.into_inner().to_string();
        let (message, hint) = explain(&inner, &path);
        let mut d = Diagnostic::error(message).on(id);
        if !path.is_empty() {
            d = d.at(path);
        }
        Box::new(d.hint(hint))
    })
}

/// serde_path_to_error writes `.` for the root and `rules[0]` for items.
fn field_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

fn explain(inner: &str, path: &str) -> (String, String) {
    if let Some(rest) = inner.strip_prefix("unknown field ") {
        let field = rest.split(',').next().unwrap_or(rest).trim_matches('`');
        let expected = rest.split_once("expected ").map(|(_, e)| e).unwrap_or("");
        return (
            format!("unknown field {field:?}"),
            if expected.is_empty() {
                "remove it".into()
            } else {
                format!("remove it or use {}", expected.replace('`', ""))
            },
        );
    }
    if let Some(rest) = inner.strip_prefix("missing field ") {
        return (
            format!("missing field {}", rest.replace('`', "\"")),
            "add it".into(),
        );
    }
    if inner.starts_with("invalid type: floating point") && path.ends_with("version") {
        return (
            inner.to_string(),
            "quote the version, e.g. version: \"1.0\" (unquoted 1.0 is a number in YAML)".into(),
        );
    }
    (inner.to_string(), "fix the value's type or spelling".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    fn parse(text: &str) -> (Vec<Input>, Vec<Diagnostic>) {
        let (model, inputs) = crate::load(&[(Some("t.yaml"), text)], "demo");
        (inputs, model.diagnostics)
    }

    #[test]
    fn reads_a_route_and_defaults_the_namespace() {
        let (ok, errs) = parse(
            "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {name: httpbin}\nspec:\n  service: httpbin\n  rules:\n  - {version: \"1.0\", weight: 100}\n",
        );
        assert!(!errs.iter().any(Diagnostic::is_error), "{errs:?}");
        assert_eq!(ok[0].resource.id().to_string(), "Route demo/httpbin");
    }

    #[test]
    fn unknown_fields_point_at_themselves() {
        let (_, errs) = parse(
            "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec:\n  service: s\n  rules:\n  - version: \"1.0\"\n    wieght: 100\n",
        );
        let d = &errs[0];
        assert_eq!(d.message, "unknown field \"wieght\"");
        assert_eq!(d.field_path.as_deref(), Some("spec.rules[0].wieght"));
        assert_eq!((d.line, d.column), (Some(8), Some(13)), "{d}");
    }

    #[test]
    fn unquoted_versions_get_a_hint() {
        let (_, errs) = parse(
            "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec:\n  service: s\n  rules:\n  - {version: 1.0, weight: 100}\n",
        );
        assert!(
            errs[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("quote the version"),
            "{:?}",
            errs[0]
        );
        assert_eq!(errs[0].field_path.as_deref(), Some("spec.rules[0].version"));
    }
}
