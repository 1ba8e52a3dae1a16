//! Status: the `Accepted` and `Programmed` conditions of one resource,
//! computed from the model's verdict and what applying its objects did;
//! written only when they differ from what the resource shows, with one
//! Kubernetes Event per change of the resource's conditions.
//!
//! [`conditions`] and [`transition`] are pure; [`write`] is the one place
//! that writes status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, ResourceExt};
use packlight_api::{CONDITION_ACCEPTED, CONDITION_PROGRAMMED, reason};
use packlight_model::{Diagnostic, Model, Reason, ResourceId, Verdict};
use serde_json::{Value, json};

use crate::Error;
use crate::index::SourceKind;

/// The longest condition message the API server accepts.
const MAX_MESSAGE: usize = 32 * 1024;

/// What applying a resource's objects did in this reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Objects made from it that are in place (applied or already equal).
    pub objects: usize,
    /// Objects whose apply or delete failed, with the error.
    pub failures: Vec<String>,
    /// Objects of the same name that packlight does not manage.
    pub conflicts: Vec<String>,
}

/// One condition, before times are filled in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cond {
    /// `Accepted` or `Programmed`.
    pub type_: &'static str,
    /// `True` or `False`.
    pub ok: bool,
    /// Reason (see `packlight_api::reason`).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl Cond {
    /// Its status as the API writes it: `True` or `False`.
    pub fn status(&self) -> &'static str {
        if self.ok { "True" } else { "False" }
    }
}

/// The resource's conditions: the model's verdict and diagnostics, then
/// whether every object made from it is in place.
pub fn conditions(model: &Model, id: &ResourceId, outcome: &Outcome) -> [Cond; 2] {
    let diags: Vec<&Diagnostic> = model.diagnostics_of(id).collect();
    let text = |errors: bool| -> String {
        diags
            .iter()
            .filter(|d| d.is_error() == errors)
            .map(|d| short(d))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let accepted = match model.verdicts.get(id) {
        Some(Verdict::Rejected(r)) => Cond {
            type_: CONDITION_ACCEPTED,
            ok: false,
            reason: match r {
                Reason::Invalid => reason::INVALID,
                Reason::Conflict => reason::CONFLICT,
            },
            message: format!("{}; its last accepted output stays in place", text(true)),
        },
        _ if !outcome.conflicts.is_empty() => Cond {
            type_: CONDITION_ACCEPTED,
            ok: false,
            reason: reason::CONFLICT,
            message: format!(
                "{} already exist{} and {} not managed by packlight; rename or delete {}",
                outcome.conflicts.join(", "),
                if outcome.conflicts.len() == 1 {
                    "s"
                } else {
                    ""
                },
                if outcome.conflicts.len() == 1 {
                    "is"
                } else {
                    "are"
                },
                if outcome.conflicts.len() == 1 {
                    "it"
                } else {
                    "them"
                },
            ),
        },
        _ => {
            let warnings = text(false);
            Cond {
                type_: CONDITION_ACCEPTED,
                ok: true,
                reason: reason::VALID,
                message: if warnings.is_empty() {
                    "valid".to_string()
                } else {
                    format!("valid, with warnings: {warnings}")
                },
            }
        }
    };
    let programmed = if !accepted.ok {
        Cond {
            type_: CONDITION_PROGRAMMED,
            ok: false,
            reason: reason::PENDING,
            message: "not programmed: the resource is not accepted".to_string(),
        }
    } else if !outcome.failures.is_empty() {
        Cond {
            type_: CONDITION_PROGRAMMED,
            ok: false,
            reason: reason::APPLY_FAILED,
            message: outcome.failures.join("; "),
        }
    } else {
        Cond {
            type_: CONDITION_PROGRAMMED,
            ok: true,
            reason: reason::PROGRAMMED,
            message: format!(
                "{} object{} applied",
                outcome.objects,
                if outcome.objects == 1 { "" } else { "s" }
            ),
        }
    };
    [accepted, programmed]
}

/// `field: message (hint)`: a diagnostic without the resource it is on.
fn short(d: &Diagnostic) -> String {
    Diagnostic {
        kind: None,
        namespace: None,
        name: None,
        file: None,
        line: None,
        column: None,
        ..d.clone()
    }
    .to_string()
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// The status object for `conds`, keeping each condition's
/// `lastTransitionTime` when its status did not change. `split` is the
/// Route's accepted split (kept from `current` while rejected).
pub fn status_value(
    current: &Value,
    generation: Option<i64>,
    conds: &[Cond],
    kind: &str,
    obj: &Value,
) -> Value {
    let old = current.get("conditions").and_then(Value::as_array);
    let now = Time(Timestamp::now());
    let conditions: Vec<Condition> = conds
        .iter()
        .map(|c| {
            let status = c.status();
            let kept = old
                .into_iter()
                .flatten()
                .find(|o| o["type"] == c.type_ && o["status"] == status)
                .and_then(|o| serde_json::from_value::<Time>(o["lastTransitionTime"].clone()).ok());
            Condition {
                type_: c.type_.to_string(),
                status: status.to_string(),
                reason: c.reason.to_string(),
                message: clip(c.message.clone()),
                observed_generation: generation,
                last_transition_time: kept.unwrap_or_else(|| now.clone()),
            }
        })
        .collect();
    let mut status = json!({"conditions": conditions});
    if let Some(g) = generation {
        status["observedGeneration"] = json!(g);
    }
    if kind == "Route" {
        let accepted = conds.first().is_some_and(|c| c.ok);
        let split = if accepted { split_of(obj) } else { None }.or_else(|| {
            current
                .get("split")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        if let Some(s) = split {
            status["split"] = json!(s);
        }
    }
    status
}

/// `1.0=80,1.1=20,2.0=100`: a Route's weight rules.
pub fn split_of(route: &Value) -> Option<String> {
    let rules = route.pointer("/spec/rules")?.as_array()?;
    let parts: Vec<String> = rules
        .iter()
        .filter(|r| r.get("matches").is_none())
        .filter_map(|r| {
            let v = r.get("version")?.as_str()?;
            let w = r.get("weight").and_then(Value::as_u64).unwrap_or(100);
            Some(format!("{v}={w}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// True when two statuses say the same (times of unchanged conditions are
/// carried over by [`status_value`], so plain equality works).
pub fn same(current: &Value, next: &Value) -> bool {
    current == next
}

/// Writes `next` as the status of `obj` if it differs from the current
/// one, and publishes the Event of the [`transition`], if any. Returns the
/// resourceVersion it wrote (`None`: nothing to write).
pub async fn write<K: SourceKind>(
    api: &Api<K>,
    recorder: &Recorder,
    obj: &K,
    current: &Value,
    next: &Value,
    conds: &[Cond],
) -> Result<Option<String>, Error> {
    if same(current, next) {
        return Ok(None);
    }
    let name = obj.name_any();
    let written = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": next})),
        )
        .await
        .map_err(|e| Error::Kube(format!("writing status of {} {name}", K::KIND), e))?;
    if let Some(event) = transition(current, conds) {
        // An event is a courtesy: a failure to publish one is logged, not
        // retried (the status already says it).
        if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(kind = K::KIND, name = %name, error = %e, "publishing event failed");
        }
    }
    Ok(Some(written.resource_version().unwrap_or_default()))
}

/// The one Event for a status change (`None`: no condition's status or
/// reason changed). It names the change that matters most: the first
/// changed condition that is False (a Warning), else the last one that changed
/// (Programmed before Accepted: a new resource's Accepted and Programmed
/// are one transition, one Event). The note lists every changed condition.
pub fn transition(current: &Value, conds: &[Cond]) -> Option<Event> {
    let old = current.get("conditions").and_then(Value::as_array);
    let changed: Vec<&Cond> = conds
        .iter()
        .filter(|c| {
            !old.into_iter().flatten().any(|o| {
                o["type"] == c.type_ && o["status"] == c.status() && o["reason"] == c.reason
            })
        })
        .collect();
    let lead = changed.iter().find(|c| !c.ok).or_else(|| changed.last())?;
    let note = changed
        .iter()
        .map(|c| format!("{}={} ({}): {}", c.type_, c.status(), c.reason, c.message))
        .collect::<Vec<_>>()
        .join("; ");
    Some(Event {
        type_: if lead.ok {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: lead.reason.to_string(),
        note: Some(clip_note(&note)),
        action: lead.type_.to_string(),
        secondary: None,
    })
}

fn clip_note(s: &str) -> String {
    // Events allow 1 kB of note.
    let mut end = s.len().min(1000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_of(yaml: &str) -> Model {
        packlight_model::load(&[(Some("t.yaml"), yaml)], "demo").0
    }

    const ROUTE: &str = "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {name: r, namespace: demo}\nspec:\n  service: s\n  rules:\n  - {version: \"1.0\", weight: 80}\n  - {version: \"1.1\", weight: 20}\n";

    fn id() -> ResourceId {
        ResourceId {
            kind: "Route".into(),
            namespace: "demo".into(),
            name: "r".into(),
        }
    }

    #[test]
    fn accepted_with_warning_and_programmed() {
        let m = model_of(ROUTE);
        let [a, p] = conditions(
            &m,
            &id(),
            &Outcome {
                objects: 2,
                ..Outcome::default()
            },
        );
        assert!(a.ok && a.reason == "Valid", "{a:?}");
        assert!(a.message.contains("no Microservice s"), "{a:?}");
        assert!(p.ok && p.message == "2 objects applied", "{p:?}");
    }

    #[test]
    fn conflicts_and_failures_are_reported() {
        let m = model_of(ROUTE);
        let [a, p] = conditions(
            &m,
            &id(),
            &Outcome {
                conflicts: vec!["VirtualService demo/s".into()],
                ..Outcome::default()
            },
        );
        assert!(!a.ok && a.reason == "Conflict", "{a:?}");
        assert!(a.message.contains("VirtualService demo/s already exists"));
        assert_eq!(p.reason, "Pending");
        let [_, p] = conditions(
            &m,
            &id(),
            &Outcome {
                failures: vec!["boom".into()],
                ..Outcome::default()
            },
        );
        assert_eq!(
            (p.ok, p.reason, p.message.as_str()),
            (false, "ApplyFailed", "boom")
        );
    }

    fn cond(type_: &'static str, ok: bool, reason: &'static str, message: &str) -> Cond {
        Cond {
            type_,
            ok,
            reason,
            message: message.to_string(),
        }
    }

    #[test]
    fn one_event_per_transition() {
        let good = [
            cond("Accepted", true, "Valid", "valid"),
            cond("Programmed", true, "Programmed", "2 objects applied"),
        ];
        // New: accepted and programmed at once is one Programmed event.
        let e = transition(&Value::Null, &good).expect("an event");
        assert_eq!(
            (e.type_, e.reason.as_str(), e.action.as_str()),
            (EventType::Normal, "Programmed", "Programmed")
        );
        assert_eq!(
            e.note.as_deref(),
            Some("Accepted=True (Valid): valid; Programmed=True (Programmed): 2 objects applied")
        );
        let obj: Value = serde_yaml::from_str(ROUTE).unwrap();
        let shown = status_value(&Value::Null, Some(1), &good, "Route", &obj);
        // Same conditions (another message, a new generation): no event.
        let moved = [
            good[0].clone(),
            cond("Programmed", true, "Programmed", "3 objects applied"),
        ];
        assert!(transition(&shown, &moved).is_none());
        // Rejected: one Warning named after the first condition that turned False.
        let bad = [
            cond(
                "Accepted",
                false,
                "Invalid",
                "spec.rules: weights sum to 90",
            ),
            cond("Programmed", false, "Pending", "not programmed"),
        ];
        let e = transition(&shown, &bad).expect("an event");
        assert_eq!(
            (e.type_, e.reason.as_str(), e.action.as_str()),
            (EventType::Warning, "Invalid", "Accepted")
        );
        let note = e.note.unwrap_or_default();
        assert!(note.contains("Programmed=False (Pending)"), "{note}");
        // Only Programmed fails: the Warning is ApplyFailed.
        let failed = [
            good[0].clone(),
            cond("Programmed", false, "ApplyFailed", "boom"),
        ];
        let e = transition(&shown, &failed).expect("an event");
        assert_eq!(
            (e.type_, e.reason.as_str()),
            (EventType::Warning, "ApplyFailed")
        );
        assert_eq!(
            e.note.as_deref(),
            Some("Programmed=False (ApplyFailed): boom")
        );
        // Back to good from a failure: a Normal Programmed event.
        let failed_shown = status_value(&shown, Some(1), &failed, "Route", &obj);
        let e = transition(&failed_shown, &good).expect("an event");
        assert_eq!(
            (e.type_, e.reason.as_str()),
            (EventType::Normal, "Programmed")
        );
        // A long message is clipped to what the API server takes.
        let long = [cond("Accepted", false, "Invalid", &"x".repeat(5000))];
        assert!(transition(&Value::Null, &long).unwrap().note.unwrap().len() <= 1000);
    }

    #[test]
    fn times_are_kept_while_the_status_holds() {
        let m = model_of(ROUTE);
        let obj: Value = serde_yaml::from_str(ROUTE).unwrap();
        let conds = conditions(&m, &id(), &Outcome::default());
        let first = status_value(&Value::Null, Some(1), &conds, "Route", &obj);
        assert_eq!(first["split"], "1.0=80,1.1=20");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = status_value(&first, Some(1), &conds, "Route", &obj);
        assert!(same(&first, &again), "{first}\n{again}");
        let moved = status_value(&first, Some(2), &conds, "Route", &obj);
        assert!(!same(&first, &moved));
    }
}
