//! The objects packlight writes: which kinds, where each one "lives" (its
//! home namespace, whose reconcile owns it), who its source resource is,
//! and whether a live object already says what the rendered one says.
//!
//! Pure: JSON in, answers out; no client.

use std::cmp::Ordering;

use kube::core::{ApiResource, GroupVersionKind};
use packlight_istio::meta::{MANAGED_BY, SERVICE, SOURCE_KIND, SOURCE_NAME, SOURCE_NAMESPACE};
use packlight_model::ResourceId;
use serde_json::Value;

/// The annotation on every object packlight applies: a digest of the
/// object as rendered (owner reference included). Server-side apply removes
/// a field its manager stops sending, but a live object only shows what is
/// there, not what was sent: a rendered object that dropped a field (a
/// Route's `timeout` removed) is still a subset of the live one. The digest
/// tells them apart, also after a restart with empty caches.
pub const RENDERED_DIGEST: &str = "packlight.dev/rendered-digest";

/// Stamps `obj` with [`RENDERED_DIGEST`], the SHA-256 of its JSON text
/// without that annotation (the first 16 bytes, hex), and returns the
/// digest's first 8 bytes as a number (the reconcile's memo key).
/// Deterministic: the same rendered object gives the same digest in every
/// process and on every restart.
pub fn stamp_digest(obj: &mut Value) -> u64 {
    // Digest the object as rendered: without a stamp of its own, and
    // without the annotations map an earlier stamp may have added.
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut)
    {
        a.remove(RENDERED_DIGEST);
        if a.is_empty() {
            meta.remove("annotations");
        }
    }
    // Writing plain data into a Vec cannot fail.
    let text = serde_json::to_vec(obj).unwrap_or_default();
    let d = ring::digest::digest(&ring::digest::SHA256, &text);
    let bytes = d.as_ref();
    let hex: String = bytes[..16].iter().map(|b| format!("{b:02x}")).collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(RENDERED_DIGEST.to_string(), Value::String(hex));
        }
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(first)
}

/// The label selector of every object packlight manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=packlight";

/// Every kind the Istio translator renders: (group, version, kind, plural).
pub const OUTPUT_KINDS: [(&str, &str, &str, &str); 12] = [
    ("apps", "v1", "Deployment", "deployments"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
    (
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    ),
    (
        "networking.istio.io",
        "v1",
        "DestinationRule",
        "destinationrules",
    ),
    (
        "networking.istio.io",
        "v1",
        "ServiceEntry",
        "serviceentries",
    ),
    ("networking.istio.io", "v1", "Sidecar", "sidecars"),
    ("networking.istio.io", "v1", "Gateway", "gateways"),
    (
        "networking.istio.io",
        "v1alpha3",
        "EnvoyFilter",
        "envoyfilters",
    ),
    (
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    (
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
    ),
];

/// The [`ApiResource`] of output kind number `i` of [`OUTPUT_KINDS`].
pub fn output_resource(i: usize) -> Option<ApiResource> {
    let (group, version, kind, plural) = OUTPUT_KINDS.get(i)?;
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// The API resource of an output kind by its name (`Gateway`...).
pub fn output_resource_named(kind: &str) -> Option<ApiResource> {
    output_resource(OUTPUT_KINDS.iter().position(|k| k.2 == kind)?)
}

/// The index in [`OUTPUT_KINDS`] of an object's `apiVersion` and `kind`.
pub fn output_kind_of(obj: &Value) -> Option<usize> {
    let api_version = str_at(obj, "/apiVersion")?;
    let kind = str_at(obj, "/kind")?;
    OUTPUT_KINDS.iter().position(|(g, v, k, _)| {
        *k == kind
            && if g.is_empty() {
                api_version == *v
            } else {
                api_version.split_once('/') == Some((g, v))
            }
    })
}

/// One output object: kind (index into [`OUTPUT_KINDS`]), namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Index into [`OUTPUT_KINDS`].
    pub kind: usize,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a rendered or live object.
    pub fn of(obj: &Value) -> Option<ObjectKey> {
        Some(ObjectKey {
            kind: output_kind_of(obj)?,
            namespace: str_at(obj, "/metadata/namespace")?.to_string(),
            name: str_at(obj, "/metadata/name")?.to_string(),
        })
    }

    /// The kind's name.
    pub fn kind_name(&self) -> &'static str {
        OUTPUT_KINDS.get(self.kind).map(|k| k.2).unwrap_or("object")
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind_name(), self.namespace, self.name)
    }
}

/// A string at a JSON pointer.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    // `Value::pointer` unescapes every segment into a new string; the
    // pointers here have no escapes, and this runs per object.
    if pointer.contains('~') || !(pointer.is_empty() || pointer.starts_with('/')) {
        return v.pointer(pointer).and_then(Value::as_str);
    }
    let mut cur = v;
    for segment in pointer.split('/').skip(1) {
        cur = match cur {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    cur.as_str()
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("labels")?.get(key)?.as_str()
}

/// True when the object carries `app.kubernetes.io/managed-by: packlight`.
pub fn is_managed(obj: &Value) -> bool {
    label(obj, MANAGED_BY) == Some("packlight")
}

/// The same test on an object's label map (from a metadata-only list).
pub fn labels_managed(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(MANAGED_BY))
        .is_some_and(|v| v == "packlight")
}

/// The namespace whose reconcile owns an object: the namespace of the
/// resource it was made from (`packlight.dev/source-namespace` on objects
/// written elsewhere, e.g. the gateway's namespace), else its own.
pub fn home_namespace(obj: &Value) -> Option<&str> {
    label(obj, SOURCE_NAMESPACE).or_else(|| str_at(obj, "/metadata/namespace"))
}

/// The resource an object was made from, when it was made from one.
pub fn source_of(obj: &Value) -> Option<ResourceId> {
    Some(ResourceId {
        kind: label(obj, SOURCE_KIND)?.to_string(),
        namespace: home_namespace(obj)?.to_string(),
        name: label(obj, SOURCE_NAME)?.to_string(),
    })
}

/// The service an object serves, when it serves one.
pub fn service_of(obj: &Value) -> Option<&str> {
    label(obj, SERVICE)
}

/// True when `live` already holds every field `desired` sets, with the same
/// value: the API server adds defaults and metadata, never removes what was
/// applied, so a subset is "identical" for server-side apply. Lists must
/// have the same length and match item by item. A field `desired` no longer
/// sets is not seen here: that is what the [`RENDERED_DIGEST`] annotation
/// (part of `desired`) is for.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            // An absent field and an empty or null one are the same to the
            // API server (omitempty).
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => {
            d == l
                || d.as_f64()
                    .zip(l.as_f64())
                    .is_some_and(|(a, b)| a.partial_cmp(&b) == Some(Ordering::Equal))
        }
        (d, l) => d == l || (is_empty(d) && is_empty(l)),
    }
}

/// The first path where `live` does not hold what `desired` sets (for
/// logs: why an object is re-applied).
pub fn difference(desired: &Value, live: &Value) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(k, dv)| match l.get(k) {
            Some(lv) => difference(dv, lv).map(|p| format!("/{k}{p}")),
            None if is_empty(dv) => None,
            None => Some(format!("/{k}")),
        }),
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => d
            .iter()
            .zip(l)
            .enumerate()
            .find_map(|(i, (dv, lv))| difference(dv, lv).map(|p| format!("/{i}{p}"))),
        _ if is_subset(desired, live) => None,
        _ => Some(String::new()),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn str_at_reads_as_a_json_pointer_does() {
        let v = serde_json::json!({"metadata": {"name": "n", "labels": {"a/b": "x", "c~d": "y"}},
            "items": [{"k": "first"}], "n": 1});
        for p in [
            "/metadata/name",
            "/items/0/k",
            "/items/1/k",
            "/items/x",
            "/metadata/labels/a~1b",
            "/metadata/labels/c~0d",
            "/n",
            "/missing/deeper",
            "",
            "metadata",
        ] {
            assert_eq!(str_at(&v, p), v.pointer(p).and_then(Value::as_str), "{p}");
        }
        assert_eq!(str_at(&v, "/items/0/k"), Some("first"));
    }

    #[test]
    fn a_dropped_field_changes_the_digest_a_subset_check_alone_misses() {
        let with = json!({"metadata": {"name": "vs"}, "spec": {"http": [{"timeout": "5s", "name": "default"}]}});
        let without = json!({"metadata": {"name": "vs"}, "spec": {"http": [{"name": "default"}]}});
        let (mut a, mut b) = (with.clone(), without.clone());
        let (ha, hb) = (stamp_digest(&mut a), stamp_digest(&mut b));
        assert_ne!(ha, hb);
        // The live object applied from `with`, defaults and all.
        let mut live = a.clone();
        live["metadata"]["resourceVersion"] = json!("7");
        assert!(is_subset(&a, &live));
        // Without the digest the dropped timeout would go unnoticed.
        assert!(is_subset(&without, &live));
        assert!(!is_subset(&b, &live));
        // Deterministic, and the stamp does not digest itself.
        let mut again = a.clone();
        assert_eq!(stamp_digest(&mut again), ha);
        assert_eq!(again, a);
        let digest = a["metadata"]["annotations"][RENDERED_DIGEST]
            .as_str()
            .unwrap();
        assert_eq!(digest.len(), 32);
        // Existing annotations are kept.
        let mut c = json!({"metadata": {"annotations": {"x": "1"}}});
        stamp_digest(&mut c);
        assert_eq!(c["metadata"]["annotations"]["x"], "1");
        assert!(c["metadata"]["annotations"][RENDERED_DIGEST].is_string());
    }

    #[test]
    fn kinds_are_found_by_api_version_and_kind() {
        let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService"});
        assert_eq!(
            output_kind_of(&vs)
                .and_then(|i| OUTPUT_KINDS.get(i))
                .map(|k| k.2),
            Some("VirtualService")
        );
        let svc = json!({"apiVersion": "v1", "kind": "Service"});
        assert_eq!(output_kind_of(&svc), Some(1));
        let ef = json!({"apiVersion": "networking.istio.io/v1", "kind": "EnvoyFilter"});
        assert_eq!(output_kind_of(&ef), None, "EnvoyFilter is v1alpha3 only");
        for i in 0..OUTPUT_KINDS.len() {
            assert!(output_resource(i).is_some());
        }
    }

    #[test]
    fn home_and_source_follow_the_labels() {
        let gw = json!({"metadata": {"namespace": "istio-system", "name": "demo-data", "labels": {
            "app.kubernetes.io/managed-by": "packlight",
            "packlight.dev/source-kind": "IngressPolicy",
            "packlight.dev/source-name": "data",
            "packlight.dev/source-namespace": "demo"}}});
        assert_eq!(home_namespace(&gw), Some("demo"));
        assert_eq!(
            source_of(&gw).map(|s| s.to_string()).as_deref(),
            Some("IngressPolicy demo/data")
        );
        assert!(is_managed(&gw));
        let shared = json!({"metadata": {"namespace": "istio-system", "name": "f",
            "labels": {"app.kubernetes.io/managed-by": "packlight"}}});
        assert_eq!(home_namespace(&shared), Some("istio-system"));
        assert_eq!(source_of(&shared), None);
    }

    #[test]
    fn defaults_added_by_the_server_still_match() {
        let desired =
            json!({"spec": {"ports": [{"port": 80, "name": "http"}], "x": [], "y": null}});
        let live = json!({"spec": {"ports": [{"port": 80.0, "name": "http", "protocol": "TCP"}],
            "clusterIP": "10.0.0.1"}, "status": {}});
        assert!(is_subset(&desired, &live));
        let changed = json!({"spec": {"ports": [{"port": 81, "name": "http"}]}});
        assert!(!is_subset(&changed, &live));
        let longer = json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}});
        assert!(!is_subset(&longer, &live));
        assert!(!is_subset(&json!({"a": "1"}), &json!({"a": 1})));
        assert_eq!(difference(&desired, &live), None);
        assert_eq!(
            difference(&changed, &live).as_deref(),
            Some("/spec/ports/0/port")
        );
        assert_eq!(difference(&longer, &live).as_deref(), Some("/spec/ports"));
        assert_eq!(
            difference(&json!({"kind": "X"}), &json!({})).as_deref(),
            Some("/kind")
        );
    }
}
