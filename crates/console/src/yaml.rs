//! The YAML editor of any packlight resource: the edited text validated by
//! `packlight-model` in place of the resource, with every other resource of
//! its cluster; diagnostics carry the line and column in the edited text
//! (the model locates them from the parser's spans, as for `packlight
//! validate`). The page edits one resource: another kind, name or
//! namespace in the text is refused.

use packlight_model::Diagnostic;
use serde_json::{Value, json};

use crate::cluster::{Snapshot, ns_name};
use crate::edit::{Check, clean, validate};

/// The kind of a plural (`accesspolicies` → `AccessPolicy`).
pub fn kind_of(plural: &str) -> Option<&'static str> {
    packlight_client::KINDS
        .iter()
        .find(|(p, _)| *p == plural)
        .map(|(_, k)| *k)
}

/// The object as the editor shows it: apiVersion, kind, metadata (name,
/// namespace, labels, annotations) and spec, as YAML.
pub fn text(obj: &Value, kind: &str) -> String {
    let mut c = clean(obj);
    c["kind"] = json!(kind);
    serde_yaml::to_string(&c).unwrap_or_default()
}

/// Checks `edited` (YAML) as the new `obj` (of `kind`) on `snap`. The
/// Check's `object` is set only when the text is one resource, the same
/// kind, namespace and name; its `after` is then what an apply sends.
pub fn check(snap: &Snapshot, kind: &str, obj: &Value, edited: &str) -> Check {
    let (ns, name) = ns_name(obj);
    let before = text(obj, kind);
    let (_, mut diagnostics) = validate(snap, (kind, ns, name), edited);
    let mut out = Check {
        before,
        ..Check::default()
    };
    let refuse = |message: String| Diagnostic {
        file: Some("console".into()),
        kind: Some(kind.into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Diagnostic::error(message)
    };
    // The model reports a text it cannot read; one document is required
    // here besides.
    let parsed = match serde_yaml::from_str::<Value>(edited) {
        Ok(v) if v.is_object() => Some(v),
        Ok(_) => {
            diagnostics.push(refuse(
                "the text must be one YAML mapping (one resource)".into(),
            ));
            None
        }
        Err(e) if diagnostics.iter().any(|d| d.is_error()) => {
            tracing::debug!(error = %e, "edited YAML unreadable; the model said why");
            None
        }
        Err(e) => {
            diagnostics.push(refuse(format!("the text must be one resource: {e}")));
            None
        }
    };
    if let Some(mut v) = parsed {
        let (ens, ename) = ns_name(&v);
        let ens = if v["metadata"].get("namespace").is_none() {
            ns
        } else {
            ens
        };
        let ekind = v["kind"].as_str().unwrap_or("");
        if (ekind, ens, ename) != (kind, ns, name) {
            diagnostics.insert(
                0,
                refuse(format!(
                    "this page edits {kind} {ns}/{name} only; the text names {ekind} {ens}/{ename} \
                     (change kind, namespace or name with `packlight apply`)"
                )),
            );
        } else {
            v["metadata"]["namespace"] = json!(ns);
            let after = text(&v, kind);
            out.after = after;
            out.object = Some(v);
        }
    }
    out.diagnostics = diagnostics;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> (Snapshot, Value) {
        let ms = json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "Microservice",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"port": 8000, "versions": [{"version": "1.0"}, {"version": "1.1"}]}});
        let eg = json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "EgressPolicy",
            "metadata": {"name": "web-egress", "namespace": "shop", "resourceVersion": "4"},
            "spec": {"service": "web", "hosts": ["example.com"]},
            "status": {"conditions": []}});
        (
            Snapshot::up(vec![("microservices", ms), ("egresspolicies", eg.clone())]),
            eg,
        )
    }

    #[test]
    fn the_text_has_no_status_and_a_valid_edit_is_the_object() {
        let (s, eg) = snap();
        let t = text(&eg, "EgressPolicy");
        assert!(
            t.contains("kind: EgressPolicy") && t.contains("example.com"),
            "{t}"
        );
        assert!(
            !t.contains("status") && !t.contains("resourceVersion"),
            "{t}"
        );
        let edited = t.replace("- example.com", "- example.com\n  - api.example.org");
        let c = check(&s, "EgressPolicy", &eg, &edited);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        assert!(c.after.contains("api.example.org"), "{}", c.after);
        assert!(c.object.is_some());
    }

    #[test]
    fn a_diagnostic_points_at_the_edited_line() {
        let (s, eg) = snap();
        let edited = "apiVersion: packlight.dev/v1alpha1\nkind: EgressPolicy\nmetadata:\n  \
                      name: web-egress\n  namespace: shop\nspec:\n  service: nosuch\n  \
                      hosts: [example.com]\n";
        let c = check(&s, "EgressPolicy", &eg, edited);
        let d = c
            .diagnostics
            .iter()
            .find(|d| d.field_path.as_deref() == Some("spec.service"))
            .unwrap_or_else(|| panic!("{:?}", c.diagnostics));
        assert_eq!((d.line, d.column), (Some(7), Some(12)), "{d:?}");
        let ms = s.list("microservices")[0].clone();
        let t = text(&ms, "Microservice").replace("port: 8000", "port: 70000");
        let line = 1 + t.lines().position(|l| l.contains("70000")).unwrap();
        let c = check(&s, "Microservice", &ms, &t);
        assert!(c.has_errors(), "{:?}", c.diagnostics);
        let d = &c.diagnostics[0];
        assert_eq!(d.field_path.as_deref(), Some("spec.port"), "{d:?}");
        assert_eq!(d.line, Some(line as u32), "{d:?}");
    }

    #[test]
    fn another_name_or_kind_is_refused() {
        let (s, eg) = snap();
        let t = text(&eg, "EgressPolicy").replace("name: web-egress", "name: other");
        let c = check(&s, "EgressPolicy", &eg, &t);
        assert!(c.has_errors() && c.object.is_none());
        assert!(
            c.diagnostics[0]
                .message
                .contains("edits EgressPolicy shop/web-egress only")
        );
        let bad = check(&s, "EgressPolicy", &eg, "spec: [\n");
        assert!(bad.has_errors() && bad.object.is_none());
    }
}
