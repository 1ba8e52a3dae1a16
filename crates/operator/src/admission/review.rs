//! One AdmissionReview: the object under review, with everything else the
//! webhook knows, through the model; its errors refuse the request, its
//! warnings become admission warnings. Pure (no I/O): the same function
//! answers in the server and in unit tests.

use packlight_model::{Diagnostic, Input, ResourceId};
use serde_json::{Value, json};

/// What the webhook decides about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or refused.
    pub allowed: bool,
    /// The refusal message: the object's errors, one per line, as the CLI
    /// prints them.
    pub message: Option<String>,
    /// Admission warnings (the object's warnings, as the CLI prints them).
    pub warnings: Vec<String>,
}

impl Decision {
    /// Allowed, nothing to say.
    pub fn allow() -> Self {
        Decision {
            allowed: true,
            message: None,
            warnings: Vec::new(),
        }
    }
}

/// The request part of an AdmissionReview the webhook needs.
#[derive(Debug)]
pub struct Request<'a> {
    /// `request.uid`, echoed in the response.
    pub uid: &'a str,
    /// `CREATE`, `UPDATE`, ...
    pub operation: &'a str,
    /// `request.namespace`.
    pub namespace: &'a str,
    /// `request.object`.
    pub object: &'a Value,
    /// `request.oldObject` (UPDATE only).
    pub old_object: Option<&'a Value>,
}

impl<'a> Request<'a> {
    /// Reads the request out of an AdmissionReview; `None` when it has none.
    pub fn of(review: &'a Value) -> Option<Request<'a>> {
        let r = review.get("request")?;
        Some(Request {
            uid: r.get("uid").and_then(Value::as_str).unwrap_or_default(),
            operation: r
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            namespace: r
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            object: r.get("object").unwrap_or(&Value::Null),
            old_object: r.get("oldObject").filter(|v| !v.is_null()),
        })
    }

    /// The id of the object under review.
    pub fn id(&self) -> ResourceId {
        let s = |p: &str| {
            self.object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        ResourceId {
            kind: s("/kind"),
            namespace: self
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(self.namespace)
                .to_string(),
            name: s("/metadata/name"),
        }
    }

    /// True when the webhook has nothing to judge: not a create or an
    /// update, an object being deleted, or an update that leaves the spec
    /// as it was (labels, finalizers: a rejected resource must stay
    /// editable and deletable).
    pub fn needs_no_review(&self) -> bool {
        if !matches!(self.operation, "CREATE" | "UPDATE") {
            return true;
        }
        if self
            .object
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            return true;
        }
        self.old_object
            .is_some_and(|old| old.get("spec") == self.object.get("spec"))
    }
}

/// Judges `req.object` with the model (the same checks, diagnostics and
/// text as `packlight validate`/`render`), as DESIGN.md says admission
/// should: an error the object has on its own (a bad regex, duration,
/// host, version string...) refuses the request; what depends on other
/// objects (a version its Microservice lacks, two Routes for one service)
/// is never refused — admission cannot see a consistent whole (`kubectl
/// apply -f dir/` sends a Route before the Microservice it needs) — and
/// comes back as an admission warning, and in status. An error refuses
/// when the object has it alone and also with `others` (every other
/// resource the webhook knows; the object's own earlier version is left
/// out by the caller), so an error that another object would cure is not
/// refused either.
pub fn decide(req: &Request<'_>, others: &[Input]) -> Decision {
    if req.needs_no_review() {
        return Decision::allow();
    }
    let id = req.id();
    let (mut inputs, early) =
        packlight_model::resource::from_documents(vec![req.object.clone()], 0, req.namespace);
    let early: Vec<Diagnostic> = early.into_iter().map(|(_, d)| d).collect();
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) = if !early.is_empty() {
        early.into_iter().partition(Diagnostic::is_error)
    } else {
        let alone: Vec<String> = packlight_model::build(&inputs)
            .diagnostics_of(&id)
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        inputs.extend(others.iter().filter(|i| i.resource.id() != id).cloned());
        let model = packlight_model::build(&inputs);
        model
            .diagnostics_of(&id)
            .cloned()
            .partition(|d| d.is_error() && alone.contains(&d.to_string()))
    };
    Decision {
        allowed: errors.is_empty(),
        message: (!errors.is_empty()).then(|| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        }),
        // kubectl prints each as `Warning: <text>`; the CLI's own
        // `warning: ` prefix would only repeat it.
        warnings: warnings
            .iter()
            .map(|w| {
                let text = w.to_string();
                if w.is_error() {
                    // An error that depends on other objects: stored, and
                    // reported in status.
                    format!("{text} [stored; status Accepted=False until this is fixed]")
                } else {
                    text.strip_prefix("warning: ")
                        .map(str::to_string)
                        .unwrap_or(text)
                }
            })
            .collect(),
    }
}

/// The AdmissionReview that answers `uid` with `decision`.
pub fn response(uid: &str, decision: &Decision) -> Value {
    let mut response = json!({ "uid": uid, "allowed": decision.allowed });
    if let Some(message) = &decision.message {
        response["status"] = json!({
            "code": 422,
            "reason": "Invalid",
            "message": message,
        });
    }
    if !decision.warnings.is_empty() {
        response["warnings"] = json!(decision.warnings);
    }
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(name: &str, versions: &[&str]) -> Value {
        json!({
            "apiVersion": "packlight.dev/v1alpha1", "kind": "Microservice",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"port": 8000, "versions": versions.iter()
                .map(|v| json!({"version": v, "image": format!("example/app:{v}")}))
                .collect::<Vec<_>>()},
        })
    }

    fn route(name: &str, version: &str) -> Value {
        json!({
            "apiVersion": "packlight.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"service": "app", "rules": [{"version": version, "weight": 100}]},
        })
    }

    fn input(v: Value) -> Input {
        let (mut inputs, errs) = packlight_model::resource::from_documents(vec![v], 0, "ns");
        assert!(errs.is_empty(), "{errs:?}");
        inputs.remove(0)
    }

    fn create(obj: &Value) -> Value {
        json!({"request": {"uid": "u1", "operation": "CREATE", "namespace": "ns", "object": obj}})
    }

    fn bad_regex_route() -> Value {
        let mut r = route("app", "1.0");
        r["spec"]["rules"]
            .as_array_mut()
            .unwrap()
            .push(json!({"version": "1.0", "matches": [{"headers": {"gray": {"regex": "("}}}]}));
        r
    }

    #[test]
    fn an_error_of_the_object_alone_is_refused_with_the_cli_text() {
        let review = create(&bad_regex_route());
        let req = Request::of(&review).unwrap();
        let d = decide(&req, &[input(ms("app", &["1.0"]))]);
        assert!(!d.allowed);
        let msg = d.message.unwrap();
        assert!(
            msg.starts_with("Route ns/app: spec.rules[1].matches[0].headers.gray.regex: "),
            "{msg}"
        );
        assert!(msg.contains("is not an RE2 regex"), "{msg}");
        let resp = response(
            "u1",
            &Decision {
                allowed: false,
                message: Some(msg.clone()),
                warnings: vec![],
            },
        );
        assert_eq!(resp["response"]["uid"], "u1");
        assert_eq!(resp["response"]["status"]["message"], msg);
    }

    #[test]
    fn what_depends_on_other_objects_passes_with_a_warning() {
        // A version the Microservice lacks (DESIGN.md: status, not admission).
        let review = create(&route("app", "3.0"));
        let d = decide(
            &Request::of(&review).unwrap(),
            &[input(ms("app", &["1.0"]))],
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.warnings.len(), 1, "{d:?}");
        assert!(
            d.warnings[0].starts_with("Route ns/app: spec.rules[0].version: ")
                && d.warnings[0].contains("3.0")
                && d.warnings[0].ends_with("[stored; status Accepted=False until this is fixed]"),
            "{d:?}"
        );
        // A second Route for one service: both get Conflict in status.
        let others = [input(ms("app", &["1.0"])), input(route("app", "1.0"))];
        let review = create(&route("app-2", "1.0"));
        let d = decide(&Request::of(&review).unwrap(), &others);
        assert!(d.allowed, "{d:?}");
        assert!(d.warnings.iter().any(|w| w.contains("2 Routes")), "{d:?}");
        // The same name is the same resource (an update), not a second Route.
        let review = create(&route("app", "1.0"));
        let d = decide(&Request::of(&review).unwrap(), &others);
        assert!(d.allowed && d.warnings.is_empty(), "{d:?}");
    }

    #[test]
    fn warnings_pass_as_admission_warnings() {
        let review = create(&route("app", "1.0"));
        let d = decide(&Request::of(&review).unwrap(), &[]);
        assert!(d.allowed, "{d:?}");
        assert_eq!(
            d.warnings,
            [
                "Route ns/app: spec.service: no Microservice app is given; the Route is rendered alone"
            ]
        );
    }

    #[test]
    fn unchanged_specs_deletes_and_deleting_objects_are_not_judged() {
        let bad = route("app", "3.0");
        let review = json!({"request": {"uid": "u", "operation": "UPDATE", "namespace": "ns",
            "object": bad, "oldObject": bad}});
        assert!(decide(&Request::of(&review).unwrap(), &[]).allowed);
        let review = json!({"request": {"uid": "u", "operation": "DELETE", "namespace": "ns",
            "oldObject": bad}});
        assert!(decide(&Request::of(&review).unwrap(), &[]).allowed);
    }
}
