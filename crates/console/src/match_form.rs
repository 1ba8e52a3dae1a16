//! The Route editor's match-rule form: a Route's match rules as rows, in
//! their order. A rule sends to one version the requests that match any of
//! its alternatives (the schema's `matches` items, OR); an alternative
//! holds conditions that must all hold (AND): `header NAME
//! exact|prefix|regex VALUE` or `query NAME exact|regex VALUE`.
//!
//! In: the form's fields (`r0.version`, `r0.a1` for an alternative,
//! `r0.a1.c2.on|name|op|value` for a condition) and the add, remove and
//! move buttons (`op=add-cond:0:1`), each a server round trip that
//! re-renders the form: the page's script knows nothing of rules. Out: the
//! Route's match rules as JSON, for `packlight-model` to validate like any
//! other Route. Nothing here checks what the model checks: a query prefix,
//! a regex that is not RE2, an empty or invalid name go to the model as
//! typed and come back as its diagnostics, which [`Slot`] places on the row
//! they name. The only refusals here are of what a form could say but a
//! Route cannot hold (two conditions on one name in one alternative: the
//! schema's map has one entry per name) or a field the page never sends.

use std::collections::BTreeMap;

use maud::{Markup, html};
use packlight_model::Diagnostic;
use serde_json::{Map, Value, json};

/// What a condition looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// A request header (`headers`).
    Header,
    /// A query parameter (`queryParams`).
    Query,
}

impl On {
    fn word(self) -> &'static str {
        match self {
            On::Header => "header",
            On::Query => "query",
        }
    }
    fn key(self) -> &'static str {
        match self {
            On::Header => "headers",
            On::Query => "queryParams",
        }
    }
}

/// The condition's operator, as the schema names it.
pub const OPS: [&str; 3] = ["exact", "prefix", "regex"];

/// One condition: `header gray exact 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// Header or query parameter.
    pub on: On,
    /// Its name.
    pub name: String,
    /// `exact`, `prefix` or `regex`.
    pub op: &'static str,
    /// The value (or the regex).
    pub value: String,
}

impl Condition {
    /// A new row: `header … exact …`, to be filled in.
    pub fn blank() -> Condition {
        Condition {
            on: On::Header,
            name: String::new(),
            op: "exact",
            value: String::new(),
        }
    }
}

/// One match rule: the version, and its alternatives (any of them).
#[derive(Clone, Debug, PartialEq)]
pub struct MatchRule {
    /// The version the matching requests go to.
    pub version: String,
    /// Alternatives; each a list of conditions that must all hold.
    pub any_of: Vec<Vec<Condition>>,
}

/// The match rules of the form, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MatchForm {
    /// The rules, tried in this order.
    pub rules: Vec<MatchRule>,
}

/// Where a diagnostic about the match rules belongs on the form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Rule `r` as a whole (its version, its `matches`).
    Rule(usize),
    /// Alternative `a` of rule `r`.
    Any(usize, usize),
    /// Condition `c` of alternative `a` of rule `r`.
    Condition(usize, usize, usize),
}

impl Slot {
    /// The id of the element holding the slot's diagnostics.
    pub fn id(self) -> String {
        match self {
            Slot::Rule(r) => format!("rd-{r}"),
            Slot::Any(r, a) => format!("ad-{r}-{a}"),
            Slot::Condition(r, a, c) => format!("cd-{r}-{a}-{c}"),
        }
    }
}

/// The form field a key names: `r0.version`, `r0.a1`, `r0.a1.c2.name`.
enum Field {
    Version(usize),
    Any(usize, usize),
    Condition(usize, usize, usize, String),
}

fn index(part: &str, letter: char) -> Option<usize> {
    part.strip_prefix(letter)?.parse().ok()
}

fn field(key: &str) -> Option<Field> {
    let parts: Vec<&str> = key.split('.').collect();
    let r = index(parts.first()?, 'r')?;
    match parts[1..] {
        ["version"] => Some(Field::Version(r)),
        [a] => Some(Field::Any(r, index(a, 'a')?)),
        [a, c, attr] => Some(Field::Condition(
            r,
            index(a, 'a')?,
            index(c, 'c')?,
            attr.to_string(),
        )),
        _ => None,
    }
}

#[derive(Default)]
struct RuleFields {
    version: String,
    any_of: BTreeMap<usize, BTreeMap<usize, BTreeMap<String, String>>>,
}

fn condition(key: &str, mut attrs: BTreeMap<String, String>) -> Result<Condition, String> {
    let on = match attrs.remove("on").as_deref() {
        Some("header") => On::Header,
        Some("query") => On::Query,
        other => {
            let other = other.unwrap_or("");
            return Err(format!("{key}: {other:?} is neither header nor query"));
        }
    };
    let op = attrs.remove("op").unwrap_or_default();
    let Some(op) = OPS.into_iter().find(|o| *o == op) else {
        return Err(format!("{key}: {op:?} is not exact, prefix or regex"));
    };
    Ok(Condition {
        on,
        name: attrs.remove("name").unwrap_or_default().trim().to_string(),
        op,
        value: attrs.remove("value").unwrap_or_default(),
    })
}

impl MatchForm {
    /// The match rules of `route` (its rules with `matches`, in order).
    pub fn of_route(route: &Value) -> MatchForm {
        let rules = route["spec"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|rule| {
                let items = rule.get("matches")?.as_array()?;
                let any_of = items
                    .iter()
                    .map(|item| {
                        let mut conds = Vec::new();
                        for on in [On::Header, On::Query] {
                            for (name, cond) in item[on.key()].as_object().into_iter().flatten() {
                                for (op, value) in cond.as_object().into_iter().flatten() {
                                    let Some(op) = OPS.into_iter().find(|o| o == op) else {
                                        continue;
                                    };
                                    conds.push(Condition {
                                        on,
                                        name: name.clone(),
                                        op,
                                        value: value
                                            .as_str()
                                            .map(str::to_string)
                                            .unwrap_or_else(|| value.to_string()),
                                    });
                                }
                            }
                        }
                        conds
                    })
                    .collect();
                Some(MatchRule {
                    version: rule["version"].as_str().unwrap_or("").to_string(),
                    any_of,
                })
            })
            .collect();
        MatchForm { rules }
    }

    /// Reads the form's rows from its fields (in the order of their
    /// indices; other fields are ignored). `None` when the form has no
    /// match-rule form (the `match-form` field), an error when a field is
    /// not one the page sends.
    pub fn from_fields(form: &[(String, String)]) -> Option<Result<MatchForm, String>> {
        if !form.iter().any(|(k, _)| k == "match-form") {
            return None;
        }
        let mut rules: BTreeMap<usize, RuleFields> = BTreeMap::new();
        for (k, v) in form {
            if !k.starts_with('r') {
                continue;
            }
            match field(k) {
                Some(Field::Version(r)) => rules.entry(r).or_default().version = v.trim().into(),
                Some(Field::Any(r, a)) => {
                    rules.entry(r).or_default().any_of.entry(a).or_default();
                }
                Some(Field::Condition(r, a, c, attr)) => {
                    let conds = rules.entry(r).or_default().any_of.entry(a).or_default();
                    conds.entry(c).or_default().insert(attr, v.clone());
                }
                None => {}
            }
        }
        let mut out = MatchForm::default();
        for (r, fields) in rules {
            let mut any_of = Vec::new();
            for (a, conds) in fields.any_of {
                let mut list = Vec::new();
                for (c, attrs) in conds {
                    match condition(&format!("r{r}.a{a}.c{c}"), attrs) {
                        Ok(cond) => list.push(cond),
                        Err(e) => return Some(Err(e)),
                    }
                }
                any_of.push(list);
            }
            out.rules.push(MatchRule {
                version: fields.version,
                any_of,
            });
        }
        Some(Ok(out))
    }

    /// The Route's match rules, `at[r]` being the index in `spec.rules`
    /// rule `r` will have (for the paths of the errors): a name with two
    /// conditions in one alternative is an error at that name's path.
    pub fn rules_json(&self, at: &[usize]) -> Result<Vec<Value>, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut out = Vec::new();
        for (r, rule) in self.rules.iter().enumerate() {
            let i = at.get(r).copied().unwrap_or(r);
            let mut items = Vec::new();
            for (a, conds) in rule.any_of.iter().enumerate() {
                let mut item = Map::new();
                for cond in conds {
                    let map = item
                        .entry(cond.on.key())
                        .or_insert_with(|| json!({}))
                        .as_object_mut();
                    let Some(map) = map else { continue };
                    if map.contains_key(&cond.name) {
                        errors.push((
                            format!("spec.rules[{i}].matches[{a}].{}.{}", cond.on.key(), cond.name),
                            format!(
                                "{} {:?} has two conditions in one alternative; give one (exact, prefix or regex), or put the other in an alternative of its own",
                                cond.on.word(),
                                cond.name
                            ),
                        ));
                        continue;
                    }
                    map.insert(cond.name.clone(), json!({ cond.op: cond.value }));
                }
                items.push(Value::Object(item));
            }
            out.push(json!({"version": rule.version, "matches": items}));
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Applies one of the form's buttons: `add-rule` (a rule to
    /// `version` with one blank condition), `remove-rule:R`, `up-rule:R`,
    /// `add-any:R`, `remove-any:R:A`, `add-cond:R:A`, `remove-cond:R:A:C`.
    pub fn apply(&mut self, op: &str, version: &str) -> Result<(), String> {
        let mut parts = op.split(':');
        let verb = parts.next().unwrap_or("");
        let n: Vec<usize> = parts.filter_map(|p| p.parse().ok()).collect();
        let bad = || format!("{op:?} is not a change of the match rules");
        let rules = &mut self.rules;
        match (verb, n.as_slice()) {
            ("add-rule", []) => rules.push(MatchRule {
                version: version.to_string(),
                any_of: vec![vec![Condition::blank()]],
            }),
            ("remove-rule", [r]) if *r < rules.len() => {
                rules.remove(*r);
            }
            ("up-rule", [r]) if *r > 0 && *r < rules.len() => rules.swap(*r - 1, *r),
            ("add-any", [r]) if *r < rules.len() => rules[*r].any_of.push(vec![Condition::blank()]),
            ("remove-any", [r, a]) if *r < rules.len() && *a < rules[*r].any_of.len() => {
                rules[*r].any_of.remove(*a);
            }
            ("add-cond", [r, a]) if *r < rules.len() && *a < rules[*r].any_of.len() => {
                rules[*r].any_of[*a].push(Condition::blank());
            }
            ("remove-cond", [r, a, c])
                if *r < rules.len()
                    && *a < rules[*r].any_of.len()
                    && *c < rules[*r].any_of[*a].len() =>
            {
                rules[*r].any_of[*a].remove(*c);
            }
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Where the diagnostic at `path` belongs, `at[r]` being rule `r`'s
    /// index in `spec.rules`; `None` when it is not about a match rule.
    pub fn slot(&self, at: &[usize], path: &str) -> Option<Slot> {
        let (r, rest) = at.iter().enumerate().find_map(|(r, i)| {
            let rest = path.strip_prefix(&format!("spec.rules[{i}]"))?;
            (rest.is_empty() || rest.starts_with('.')).then_some((r, rest))
        })?;
        let Some(rest) = rest.strip_prefix(".matches[") else {
            return Some(Slot::Rule(r));
        };
        let Some((a, rest)) = rest.split_once(']') else {
            return Some(Slot::Rule(r));
        };
        let Ok(a) = a.parse::<usize>() else {
            return Some(Slot::Rule(r));
        };
        let conds = self.rules.get(r)?.any_of.get(a)?;
        let c = [On::Header, On::Query].into_iter().find_map(|on| {
            let name = rest.strip_prefix(&format!(".{}.", on.key()))?;
            conds.iter().position(|c| {
                c.on == on
                    && (name == c.name
                        || name
                            .strip_prefix(c.name.as_str())
                            .and_then(|x| x.strip_prefix('.'))
                            .is_some_and(|op| OPS.contains(&op)))
            })
        });
        Some(match c {
            Some(c) => Slot::Condition(r, a, c),
            None => Slot::Any(r, a),
        })
    }

    /// Every slot of the form, in order.
    pub fn slots(&self) -> Vec<Slot> {
        let mut out = Vec::new();
        for (r, rule) in self.rules.iter().enumerate() {
            out.push(Slot::Rule(r));
            for (a, conds) in rule.any_of.iter().enumerate() {
                out.push(Slot::Any(r, a));
                out.extend((0..conds.len()).map(|c| Slot::Condition(r, a, c)));
            }
        }
        out
    }
}

/// The diagnostics of one slot.
fn slot_diagnostics(id: String, ds: &[&Diagnostic], oob: bool) -> Markup {
    html! {
        span.slot-diagnostics id=(id) hx-swap-oob=[oob.then_some("true")] {
            @for d in ds {
                span.diagnostic.error[d.is_error()].warning[!d.is_error()] {
                    @if let Some(f) = &d.field_path { code { (f) } ": " }
                    (d.message)
                }
            }
        }
    }
}

/// The diagnostics of `ds` by slot (`at` as for [`MatchForm::slot`]).
fn by_slot<'a>(
    form: &MatchForm,
    at: &[usize],
    ds: &'a [Diagnostic],
) -> BTreeMap<String, Vec<&'a Diagnostic>> {
    let mut out: BTreeMap<String, Vec<&Diagnostic>> = BTreeMap::new();
    for d in ds {
        if let Some(s) = d.field_path.as_deref().and_then(|p| form.slot(at, p)) {
            out.entry(s.id()).or_default().push(d);
        }
    }
    out
}

/// Every slot's diagnostics as out-of-band swaps (the editor's live
/// check puts each diagnostic on its row and clears the others).
pub fn slots_oob(form: &MatchForm, at: &[usize], ds: &[Diagnostic]) -> Markup {
    let placed = by_slot(form, at, ds);
    html! {
        @for s in form.slots() {
            (slot_diagnostics(s.id(), placed.get(&s.id()).map(Vec::as_slice).unwrap_or(&[]), true))
        }
    }
}

fn button(base: &str, op: &str, label: &str, title: &str) -> Markup {
    html! {
        button.match-op type="button" name="op" value=(op) title=(title)
            hx-post={ (base) "/rules" } hx-target="#match-rules" hx-swap="outerHTML" { (label) }
    }
}

/// The form: a fieldset per rule (version, alternatives, conditions) with
/// its buttons; `base` is the editor's path, `versions` the service's
/// versions, `at` and `ds` the spec indices of the rules and the
/// diagnostics to place on the rows.
pub fn render(
    base: &str,
    form: &MatchForm,
    versions: &[String],
    at: &[usize],
    ds: &[Diagnostic],
) -> Markup {
    let placed = by_slot(form, at, ds);
    let diags = |s: Slot| {
        slot_diagnostics(
            s.id(),
            placed.get(&s.id()).map(Vec::as_slice).unwrap_or(&[]),
            false,
        )
    };
    html! {
        fieldset #match-rules {
            legend { "match rules (tried in order, before the weights; a rule matches when any alternative does, an alternative when all its conditions hold)" }
            input type="hidden" name="match-form" value="1";
            @if form.rules.is_empty() { p.note { "no match rules" } }
            @for (r, rule) in form.rules.iter().enumerate() {
                fieldset.match-rule data-rule=(r) {
                    legend { "rule " (r + 1)
                        @if let Some(i) = at.get(r) { " " code { "spec.rules[" (i) "]" } } }
                    label { "to version "
                        select name={ "r" (r) ".version" } {
                            @for v in versions {
                                option value=(v) selected[*v == rule.version] { (v) }
                            }
                            @if !versions.contains(&rule.version) {
                                option value=(rule.version) selected { (rule.version) }
                            }
                        }
                    }
                    @if r > 0 { " " (button(base, &format!("up-rule:{r}"), "↑", "try this rule before the one above")) }
                    " " (button(base, &format!("remove-rule:{r}"), "remove rule", "remove this rule"))
                    " " (diags(Slot::Rule(r)))
                    @for (a, conds) in rule.any_of.iter().enumerate() {
                        div.any data-any=(a) {
                            input type="hidden" name={ "r" (r) ".a" (a) } value="any";
                            span.any-word { @if a == 0 { "when" } @else { "or when" } }
                            " " (diags(Slot::Any(r, a)))
                            @for (c, cond) in conds.iter().enumerate() {
                                @let key = format!("r{r}.a{a}.c{c}");
                                div.condition data-condition=(key) {
                                    @if c > 0 { span.and { "and " } }
                                    select name={ (key) ".on" } aria-label="header or query" {
                                        @for on in [On::Header, On::Query] {
                                            option value=(on.word()) selected[cond.on == on] { (on.word()) }
                                        }
                                    }
                                    " "
                                    input.cond-name type="text" name={ (key) ".name" } value=(cond.name)
                                        placeholder="name" aria-label="name" size="14";
                                    " "
                                    select name={ (key) ".op" } aria-label="operator" {
                                        @for op in OPS {
                                            option value=(op) selected[cond.op == op] { (op) }
                                        }
                                    }
                                    " "
                                    input.cond-value type="text" name={ (key) ".value" } value=(cond.value)
                                        placeholder="value" aria-label="value" size="22" spellcheck="false";
                                    " " (button(base, &format!("remove-cond:{r}:{a}:{c}"), "×", "remove this condition"))
                                    " " (diags(Slot::Condition(r, a, c)))
                                }
                            }
                            div.any-ops {
                                (button(base, &format!("add-cond:{r}:{a}"), "and …", "add a condition that must also hold"))
                                " " (button(base, &format!("remove-any:{r}:{a}"), "remove alternative", "remove this alternative"))
                            }
                        }
                    }
                    (button(base, &format!("add-any:{r}"), "or …", "add an alternative"))
                }
            }
            (button(base, "add-rule", "add a match rule", "add a rule sending matching requests to one version"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn articles_route() -> Value {
        json!({"spec": {"service": "httpbin", "rules": [
            {"version": "1.0", "weight": 80}, {"version": "1.1", "weight": 20},
            {"version": "2.0", "matches": [{"headers": {"gray": {"exact": "1"}}},
                                          {"queryParams": {"debug": {"exact": "true"}}}]}]}})
    }

    #[test]
    fn a_route_round_trips_through_the_fields() {
        let form = MatchForm::of_route(&articles_route());
        assert_eq!(form.rules.len(), 1);
        assert_eq!(form.rules[0].any_of.len(), 2);
        let back = form.rules_json(&[2]).unwrap();
        assert_eq!(back, vec![articles_route()["spec"]["rules"][2].clone()]);
        // What the page sends for it.
        let sent = fields(&[
            ("csrf", "t"),
            ("w0", "80"),
            ("match-form", "1"),
            ("r0.version", "2.0"),
            ("r0.a0", "any"),
            ("r0.a0.c0.on", "header"),
            ("r0.a0.c0.name", "gray"),
            ("r0.a0.c0.op", "exact"),
            ("r0.a0.c0.value", "1"),
            ("r0.a1", "any"),
            ("r0.a1.c0.on", "query"),
            ("r0.a1.c0.name", " debug "),
            ("r0.a1.c0.op", "exact"),
            ("r0.a1.c0.value", "true"),
        ]);
        assert_eq!(MatchForm::from_fields(&sent), Some(Ok(form)));
        assert_eq!(MatchForm::from_fields(&fields(&[("w0", "80")])), None);
    }

    #[test]
    fn rows_are_read_in_index_order_and_an_empty_alternative_is_kept() {
        let sent = fields(&[
            ("match-form", "1"),
            ("r10.version", "1.1"),
            ("r2.version", "2.0"),
            ("r2.a0", "any"),
            ("r2.a0.c1.on", "query"),
            ("r2.a0.c1.name", "b"),
            ("r2.a0.c1.op", "regex"),
            ("r2.a0.c1.value", "x.*"),
            ("r2.a0.c0.on", "header"),
            ("r2.a0.c0.name", "a"),
            ("r2.a0.c0.op", "prefix"),
            ("r2.a0.c0.value", "v"),
            ("r10.a0", "any"),
        ]);
        let form = MatchForm::from_fields(&sent).unwrap().unwrap();
        assert_eq!(
            form.rules
                .iter()
                .map(|r| r.version.as_str())
                .collect::<Vec<_>>(),
            ["2.0", "1.1"]
        );
        assert_eq!(form.rules[0].any_of[0][0].name, "a");
        assert_eq!(form.rules[0].any_of[0][1].op, "regex");
        assert_eq!(form.rules[1].any_of, vec![Vec::<Condition>::new()]);
        let rules = form.rules_json(&[3, 4]).unwrap();
        assert_eq!(
            rules[0],
            json!({"version": "2.0", "matches": [
                {"headers": {"a": {"prefix": "v"}}, "queryParams": {"b": {"regex": "x.*"}}}]})
        );
        // An empty alternative goes to the model as it is (it says why).
        assert_eq!(rules[1], json!({"version": "1.1", "matches": [{}]}));
    }

    #[test]
    fn what_the_page_never_sends_is_refused_and_what_a_route_cannot_hold_too() {
        for (k, v) in [("r0.a0.c0.on", "cookie"), ("r0.a0.c0.op", "suffix")] {
            let mut sent = fields(&[
                ("match-form", "1"),
                ("r0.version", "2.0"),
                ("r0.a0.c0.on", "header"),
                ("r0.a0.c0.op", "exact"),
            ]);
            sent.retain(|(x, _)| x != k);
            sent.push((k.into(), v.into()));
            let e = MatchForm::from_fields(&sent).unwrap().unwrap_err();
            assert!(e.starts_with(&format!("r0.a0.c0: \"{v}\" is ")), "{e}");
        }
        let mut form = MatchForm::of_route(&articles_route());
        form.rules[0].any_of[0].push(Condition {
            on: On::Header,
            name: "gray".into(),
            op: "regex",
            value: "[0-9]".into(),
        });
        let e = form.rules_json(&[3]).unwrap_err();
        assert_eq!(e[0].0, "spec.rules[3].matches[0].headers.gray");
        assert!(e[0].1.contains("two conditions"), "{e:?}");
    }

    #[test]
    fn buttons_add_remove_and_move_rows() {
        let mut form = MatchForm::of_route(&articles_route());
        form.apply("add-rule", "1.1").unwrap();
        assert_eq!(form.rules[1].version, "1.1");
        assert_eq!(form.rules[1].any_of, vec![vec![Condition::blank()]]);
        form.apply("up-rule:1", "").unwrap();
        assert_eq!(form.rules[0].version, "1.1");
        form.apply("add-cond:0:0", "").unwrap();
        form.apply("add-any:0", "").unwrap();
        assert_eq!(form.rules[0].any_of.len(), 2);
        assert_eq!(form.rules[0].any_of[0].len(), 2);
        form.apply("remove-cond:0:0:1", "").unwrap();
        form.apply("remove-any:0:1", "").unwrap();
        assert_eq!(form.rules[0].any_of, vec![vec![Condition::blank()]]);
        form.apply("remove-rule:0", "").unwrap();
        assert_eq!(form, MatchForm::of_route(&articles_route()));
        for bad in [
            "up-rule:0",
            "remove-rule:5",
            "add-cond:0:9",
            "remove-cond:0:0:3",
            "drop",
        ] {
            assert!(form.apply(bad, "").is_err(), "{bad}");
        }
    }

    #[test]
    fn diagnostics_find_their_row() {
        let form = MatchForm::of_route(&articles_route());
        let at = [2];
        assert_eq!(
            form.slot(&at, "spec.rules[2].matches[0].headers.gray.regex"),
            Some(Slot::Condition(0, 0, 0))
        );
        assert_eq!(
            form.slot(&at, "spec.rules[2].matches[1].queryParams.debug"),
            Some(Slot::Condition(0, 1, 0))
        );
        assert_eq!(
            form.slot(&at, "spec.rules[2].matches[1]"),
            Some(Slot::Any(0, 1))
        );
        assert_eq!(form.slot(&at, "spec.rules[2].version"), Some(Slot::Rule(0)));
        assert_eq!(form.slot(&at, "spec.rules[20]"), None);
        assert_eq!(form.slot(&at, "spec.rules[0].weight"), None);
        let d = Diagnostic {
            field_path: Some("spec.rules[2].matches[0].headers.gray.regex".into()),
            ..Diagnostic::error("\"(\" is not an RE2 regex")
        };
        let page =
            render("/e", &form, &["2.0".into()], &at, std::slice::from_ref(&d)).into_string();
        assert!(!page.contains("up-rule:0"), "the first rule cannot move up");
        assert!(page.contains(r#"id="cd-0-0-0""#) && page.contains("is not an RE2 regex"));
        let html = slots_oob(&form, &at, &[d]).into_string();
        assert!(
            html.contains(r#"id="cd-0-0-0" hx-swap-oob="true""#),
            "{html}"
        );
        assert!(html.contains("is not an RE2 regex"), "{html}");
        assert_eq!(html.matches("hx-swap-oob").count(), form.slots().len());
    }
}
