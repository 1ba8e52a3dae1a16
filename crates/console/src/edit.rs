//! The Route editor's server side: the form turned into a Route, validated
//! by `packlight-model` against the cluster's other resources (the same
//! rules the CLI and the engines apply), the preview of where sample
//! requests go (the model's routing algorithm) and the diff. The match
//! rules come from the form's rows ([`crate::match_form`]) or, in the
//! editor's YAML mode, from a YAML list.

use packlight_model::ir::ServiceKey;
use packlight_model::routing::{Decision, RequestSample, Vantage};
use packlight_model::{Diagnostic, Severity};
use serde_json::{Map, Value, json};

use crate::cluster::{Snapshot, ns_name};
use crate::match_form::MatchForm;

/// What the editor's form says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Edit {
    /// New weights by rule index (`w3=50` is `spec.rules[3].weight`).
    pub weights: Vec<(usize, String)>,
    /// The match rules as YAML (a list of rules), when the form has them
    /// (the editor's YAML mode).
    pub matches: Option<String>,
    /// The match rules as the form's rows, when the form has them (or why
    /// its fields cannot be read). Taken before `matches` when both are
    /// there (the page sends one or the other).
    pub match_form: Option<Result<MatchForm, String>>,
    /// Sample requests, one a line: `PATH[?QUERY] [header:value]...`.
    pub samples: String,
}

impl Edit {
    /// Reads the form fields.
    pub fn from_form(form: &[(String, String)]) -> Edit {
        let mut e = Edit {
            match_form: MatchForm::from_fields(form),
            ..Edit::default()
        };
        for (k, v) in form {
            if let Some(i) = k.strip_prefix('w').and_then(|i| i.parse::<usize>().ok()) {
                e.weights.push((i, v.trim().to_string()));
            } else if k == "match-rules" {
                e.matches = Some(v.clone());
            } else if k == "samples" {
                e.samples = v.clone();
            }
        }
        e
    }
}

/// The object as one writes it: apiVersion, kind, metadata (name,
/// namespace, labels, annotations) and spec; no status.
pub fn clean(obj: &Value) -> Value {
    let mut meta = Map::new();
    for k in ["name", "namespace", "labels", "annotations"] {
        if let Some(v) = obj["metadata"].get(k) {
            meta.insert(k.to_string(), v.clone());
        }
    }
    json!({
        "apiVersion": obj.get("apiVersion").cloned().unwrap_or_else(|| json!("packlight.dev/v1alpha1")),
        "kind": obj["kind"].clone(),
        "metadata": Value::Object(meta),
        "spec": obj["spec"].clone(),
    })
}

fn is_match_rule(rule: &Value) -> bool {
    rule.get("matches").is_some()
}

/// The index in `spec.rules` of each match rule of `route`, in order.
pub fn match_at(route: &Value) -> Vec<usize> {
    route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, r)| is_match_rule(r))
        .map(|(i, _)| i)
        .collect()
}

/// The Route after `edit`, or the diagnostics saying why the form cannot
/// be read.
pub fn edited(route: &Value, edit: &Edit) -> Result<Value, Vec<Diagnostic>> {
    let mut obj = clean(route);
    obj["kind"] = json!("Route");
    let (ns, name) = ns_name(route);
    let at = |field: String, message: String| Diagnostic {
        file: Some("console".into()),
        kind: Some("Route".into()),
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        field_path: Some(field),
        ..Diagnostic::error(message)
    };
    let mut errors = Vec::new();
    let mut rules: Vec<Value> = obj["spec"]["rules"].as_array().cloned().unwrap_or_default();
    for (i, w) in &edit.weights {
        let Some(rule) = rules.get_mut(*i) else {
            errors.push(at(
                format!("spec.rules[{i}]"),
                "no such rule (the Route changed; reload)".into(),
            ));
            continue;
        };
        match w.parse::<u64>() {
            Ok(w) if w <= 100 => {
                if !(rule.get("weight").is_none() && w == 100) {
                    rule["weight"] = json!(w);
                }
            }
            _ => errors.push(at(
                format!("spec.rules[{i}].weight"),
                format!("weight {w:?} is not a whole number from 0 to 100"),
            )),
        }
    }
    let wanted = match (&edit.match_form, &edit.matches) {
        (Some(Err(e)), _) => {
            errors.push(at("spec.rules".into(), format!("match rule form: {e}")));
            None
        }
        (Some(Ok(form)), _) => {
            // The match rules follow the others once replaced.
            let first = rules.iter().filter(|r| !is_match_rule(r)).count();
            let at_index: Vec<usize> = (first..first + form.rules.len()).collect();
            match form.rules_json(&at_index) {
                Ok(w) => Some(w),
                Err(es) => {
                    errors.extend(es.into_iter().map(|(path, m)| at(path, m)));
                    None
                }
            }
        }
        (None, Some(text)) => Some(yaml_rules(text, &mut |path, m| errors.push(at(path, m)))),
        (None, None) => None,
    };
    if let Some(wanted) = wanted {
        let current: Vec<Value> = rules.iter().filter(|r| is_match_rule(r)).cloned().collect();
        if wanted != current && errors.is_empty() {
            rules.retain(|r| !is_match_rule(r));
            rules.extend(wanted);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    obj["spec"]["rules"] = Value::Array(rules);
    Ok(obj)
}

/// The match rules of the YAML mode's text (a YAML list of rules); what
/// cannot be read is reported through `error`.
fn yaml_rules(text: &str, error: &mut dyn FnMut(String, String)) -> Vec<Value> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(Value::Null) => Vec::new(),
        Ok(_) => {
            error(
                "spec.rules".into(),
                "the match rules must be a YAML list of rules".into(),
            );
            Vec::new()
        }
        Err(e) => {
            error("spec.rules".into(), format!("match rules: {e}"));
            Vec::new()
        }
    }
}

/// A parsed sample request line.
pub fn sample(line: &str) -> Option<RequestSample> {
    let mut parts = line.split_whitespace();
    let path = parts.next()?;
    if !path.starts_with('/') {
        return None;
    }
    let mut req = RequestSample::get(path);
    for p in parts {
        if let Some((k, v)) = p.split_once(':') {
            req = req.header(k, v);
        }
    }
    Some(req)
}

/// What the editor shows for an edit.
#[derive(Clone, Debug, Default)]
pub struct Check {
    /// Errors and warnings about the edited Route.
    pub diagnostics: Vec<Diagnostic>,
    /// `(sample, where it goes)`.
    pub preview: Vec<(String, String)>,
    /// The Route before, as YAML.
    pub before: String,
    /// The Route after, as YAML (empty when the form cannot be read).
    pub after: String,
    /// The edited Route, when the form could be read.
    pub object: Option<Value>,
    /// The index in `spec.rules` of each match rule of the form, in order
    /// (to put the diagnostics on the form's rows).
    pub match_at: Vec<usize>,
}

impl Check {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// Every resource of the snapshot but `except` (kind, ns, name), as one
/// multi-document text.
pub(crate) fn store_text(snap: &Snapshot, except: (&str, &str, &str)) -> String {
    let mut out = String::new();
    for (plural, kind) in packlight_client::KINDS {
        for o in snap.list(plural) {
            let (ns, name) = ns_name(o);
            if (kind, ns, name) == except {
                continue;
            }
            let mut c = clean(o);
            c["kind"] = json!(kind);
            out.push_str("---\n");
            out.push_str(&serde_json::to_string(&c).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

/// Validates `text` (YAML, the file `console`) in place of the resource
/// `(kind, ns, name)` of `snap`, with every other resource of `snap`: the
/// model, and the diagnostics about the edited text (with line and column
/// in it) or about that resource.
pub fn validate(
    snap: &Snapshot,
    (kind, ns, name): (&str, &str, &str),
    text: &str,
) -> (packlight_model::Model, Vec<Diagnostic>) {
    let store = store_text(snap, (kind, ns, name));
    let (model, _) = packlight_model::load(
        &[(Some("store"), store.as_str()), (Some("console"), text)],
        ns,
    );
    let diagnostics: Vec<Diagnostic> = model
        .diagnostics
        .iter()
        .filter(|d| {
            d.file.as_deref() == Some("console")
                || (d.kind.as_deref() == Some(kind)
                    && d.namespace.as_deref() == Some(ns)
                    && d.name.as_deref() == Some(name))
        })
        .cloned()
        .collect();
    (model, diagnostics)
}

/// Validates `edit` of `route` with the rest of `snap` and previews it.
pub fn check(snap: &Snapshot, route: &Value, edit: &Edit) -> Check {
    let (ns, name) = ns_name(route);
    let mut before_obj = clean(route);
    before_obj["kind"] = json!("Route");
    let before = serde_yaml::to_string(&before_obj).unwrap_or_default();
    let obj = match edited(route, edit) {
        Ok(o) => o,
        Err(diagnostics) => {
            // Where the form's rules would have gone: after the others.
            let rules = route["spec"]["rules"].as_array();
            let first = rules
                .into_iter()
                .flatten()
                .filter(|r| !is_match_rule(r))
                .count();
            let n = match &edit.match_form {
                Some(Ok(f)) => f.rules.len(),
                _ => 0,
            };
            return Check {
                diagnostics,
                before,
                match_at: (first..first + n).collect(),
                ..Check::default()
            };
        }
    };
    let match_at = match_at(&obj);
    let after = serde_yaml::to_string(&obj).unwrap_or_default();
    let (model, diagnostics) = validate(snap, ("Route", ns, name), &after);
    let service = obj["spec"]["service"].as_str().unwrap_or("");
    let table = model
        .mesh
        .services
        .get(&ServiceKey::new(ns, service))
        .and_then(|s| s.route.as_ref());
    let preview = edit
        .samples
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let line = line.trim().to_string();
            let outcome = match (sample(&line), table) {
                (None, _) => "not a sample: PATH[?QUERY] [header:value]...".to_string(),
                (Some(_), None) => "not routed: the Route is not accepted".to_string(),
                (Some(req), Some(t)) => describe(&t.decide(&req, Vantage::Mesh)),
            };
            (line, outcome)
        })
        .collect();
    Check {
        diagnostics,
        preview,
        before,
        after,
        object: Some(obj),
        match_at,
    }
}

/// `2.0 (match rule 1)` or `major 1: 1.0 50%, 1.1 50%`.
pub fn describe(d: &Decision) -> String {
    match d {
        Decision::Pinned { version, rule } => format!("{version} (match rule {})", rule + 1),
        Decision::Weighted { major, weights } => format!(
            "major {major}: {}",
            weights
                .iter()
                .map(|w| format!("{} {}%", w.version, w.weight))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> (Snapshot, Value) {
        let ms = json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "Microservice",
            "metadata": {"name": "web", "namespace": "shop", "generation": 1},
            "spec": {"port": 8000, "versions": [{"version": "1.0"}, {"version": "1.1"}, {"version": "2.0"}]},
            "status": {"conditions": []}});
        let route = json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "3"},
            "spec": {"service": "web", "rules": [
                {"version": "1.0", "weight": 80}, {"version": "1.1", "weight": 20},
                {"version": "2.0", "matches": [{"headers": {"gray": {"exact": "1"}}}]}]}});
        (
            Snapshot::up(vec![("microservices", ms), ("routes", route.clone())]),
            route,
        )
    }

    #[test]
    fn a_valid_edit_previews_and_diffs() {
        let (s, route) = snap();
        let e = Edit::from_form(&[
            ("w0".into(), "50".into()),
            ("w1".into(), "50".into()),
            ("samples".into(), "/hello\n/x gray:1\nnope".into()),
        ]);
        let c = check(&s, &route, &e);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        assert_eq!(c.preview[0].1, "major 1: 1.0 50%, 1.1 50%");
        assert_eq!(c.preview[1].1, "2.0 (match rule 1)");
        assert!(c.preview[2].1.starts_with("not a sample"));
        assert!(c.before.contains("weight: 80") && c.after.contains("weight: 50"));
        assert!(!c.after.contains("resourceVersion"));
    }

    #[test]
    fn weights_that_do_not_sum_to_100_are_the_models_diagnostic() {
        let (s, route) = snap();
        let e = Edit::from_form(&[("w0".into(), "60".into()), ("w1".into(), "30".into())]);
        let c = check(&s, &route, &e);
        assert!(c.has_errors());
        let d = &c.diagnostics[0];
        assert_eq!(d.kind.as_deref(), Some("Route"));
        assert!(d.message.contains("90"), "{d:?}");
        let bad = check(&s, &route, &Edit::from_form(&[("w0".into(), "x".into())]));
        assert!(bad.has_errors());
        assert_eq!(
            bad.diagnostics[0].field_path.as_deref(),
            Some("spec.rules[0].weight")
        );
    }

    #[test]
    fn match_rules_are_replaced_from_yaml() {
        let (s, route) = snap();
        let e = Edit::from_form(&[
            (
                "match-rules".into(),
                "- version: \"2.0\"\n  matches:\n  - queryParams: {debug: {exact: \"true\"}}\n"
                    .into(),
            ),
            ("samples".into(), "/a?debug=true\n/a gray:1".into()),
        ]);
        let c = check(&s, &route, &e);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        assert_eq!(c.preview[0].1, "2.0 (match rule 1)");
        assert!(c.preview[1].1.starts_with("major 1"));
        let bad = check(
            &s,
            &route,
            &Edit::from_form(&[(
                "match-rules".into(),
                "- version: \"2.0\"\n  matches:\n  - headers: {gray: {regex: \"(\"}}\n".into(),
            )]),
        );
        assert!(bad.has_errors(), "a bad regex is the model's error");
    }

    /// The form's fields of the snapshot's match rule, plus `extra`.
    fn form_fields(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut f: Vec<(String, String)> = [
            ("w0", "80"),
            ("w1", "20"),
            ("match-form", "1"),
            ("r0.version", "2.0"),
            ("r0.a0", "any"),
            ("r0.a0.c0.on", "header"),
            ("r0.a0.c0.name", "gray"),
            ("r0.a0.c0.op", "exact"),
            ("r0.a0.c0.value", "1"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        f.push((
            "samples".into(),
            "/a x-canary:canary-7\n/a gray:1\n/a".into(),
        ));
        f
    }

    #[test]
    fn the_form_unchanged_changes_nothing() {
        let (s, route) = snap();
        let c = check(&s, &route, &Edit::from_form(&form_fields(&[])));
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        assert_eq!(c.before, c.after);
        assert_eq!(c.match_at, vec![2]);
    }

    #[test]
    fn a_header_regex_rule_from_the_form_pins_its_requests() {
        let (s, route) = snap();
        let rule = [
            ("r1.version", "1.1"),
            ("r1.a0", "any"),
            ("r1.a0.c0.on", "header"),
            ("r1.a0.c0.name", "x-canary"),
            ("r1.a0.c0.op", "regex"),
            ("r1.a0.c0.value", "canary-[0-9]+"),
        ];
        let c = check(&s, &route, &Edit::from_form(&form_fields(&rule)));
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        assert_eq!(c.preview[0].1, "1.1 (match rule 2)");
        assert_eq!(c.preview[1].1, "2.0 (match rule 1)");
        assert!(c.preview[2].1.starts_with("major 1: 1.0 80%"));
        assert!(c.after.contains("regex: canary-[0-9]+"), "{}", c.after);
        assert_eq!(c.match_at, vec![2, 3]);
    }

    #[test]
    fn an_invalid_regex_from_the_form_is_the_models_diagnostic_on_its_row() {
        let (s, route) = snap();
        let rule = [
            ("r1.version", "1.1"),
            ("r1.a0", "any"),
            ("r1.a0.c0.on", "header"),
            ("r1.a0.c0.name", "x-canary"),
            ("r1.a0.c0.op", "regex"),
            ("r1.a0.c0.value", "canary-("),
        ];
        let edit = Edit::from_form(&form_fields(&rule));
        let c = check(&s, &route, &edit);
        assert!(c.has_errors());
        let d = &c.diagnostics[0];
        assert_eq!(
            d.field_path.as_deref(),
            Some("spec.rules[3].matches[0].headers.x-canary.regex")
        );
        assert!(d.message.contains("not an RE2 regex"), "{d:?}");
        let Some(Ok(rows)) = &edit.match_form else {
            panic!("no rows")
        };
        let path = d.field_path.as_deref().unwrap_or("");
        assert_eq!(
            rows.slot(&c.match_at, path),
            Some(crate::match_form::Slot::Condition(1, 0, 0))
        );
        // A query prefix is the model's refusal too, not the form's.
        let q = [
            ("r1.version", "1.1"),
            ("r1.a0", "any"),
            ("r1.a0.c0.on", "query"),
            ("r1.a0.c0.name", "debug"),
            ("r1.a0.c0.op", "prefix"),
            ("r1.a0.c0.value", "t"),
        ];
        let c = check(&s, &route, &Edit::from_form(&form_fields(&q)));
        assert!(
            c.diagnostics
                .iter()
                .any(|d| d.message.contains("Istio has no query prefix")),
            "{:?}",
            c.diagnostics
        );
    }

    #[test]
    fn removing_every_row_removes_the_match_rules_and_a_bad_field_is_refused() {
        let (s, route) = snap();
        let e = Edit::from_form(&[("match-form".into(), "1".into())]);
        let c = check(&s, &route, &e);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        assert!(!c.after.contains("matches"), "{}", c.after);
        let bad = Edit::from_form(&form_fields(&[("r0.a0.c0.op", "suffix")]));
        let c = check(&s, &route, &bad);
        assert!(c.has_errors() && c.object.is_none());
        assert!(c.diagnostics[0].message.starts_with("match rule form: "));
    }
}
