//! The pages, rendered on the server (maud). Pure functions of what was
//! read from the clusters, so the benchmark times exactly what a request
//! costs after its reads.

use maud::{DOCTYPE, Markup, html};
use packlight_client::VersionTraffic;
use packlight_model::Diagnostic;
use serde_json::Value;

use crate::cluster::{Applied, Reach, Snapshot, condition, match_rules, ns_name, split_per_major};
use crate::diff;
use crate::edit::{Check, match_at};
use crate::kubernetes::Access;
use crate::match_form::{self, MatchForm};

/// A cluster the editor may apply to, with whether the user may change
/// Routes there.
#[derive(Clone, Debug)]
pub struct Target {
    /// The cluster's index.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// The access review's answer for the Route's namespace.
    pub access: Access,
}

/// The page frame: head, navigation, the CSRF token for htmx calls.
pub fn layout(csrf: &str, title: &str, clusters: &[String], body: Markup) -> Markup {
    let headers = format!(r#"{{"x-csrf-token": "{csrf}"}}"#);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · packlight console" }
                link rel="stylesheet" href="/assets/console.css";
                link rel="stylesheet" href="/assets/uPlot.min.css";
                script src="/assets/htmx.min.js" {}
                script src="/assets/uPlot.iife.min.js" {}
                script src="/assets/console.js" defer {}
            }
            body hx-headers=(headers) {
                nav {
                    strong { "packlight" }
                    a href="/" { "Overview" }
                    a href="/services" { "Services" }
                    a href="/policies" { "Policies" }
                    @for (i, c) in clusters.iter().enumerate() {
                        a href={ "/c/" (i) "/traffic" } title=(c) { "Traffic " (c) }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn cluster_names(snaps: &[Snapshot]) -> Vec<String> {
    snaps.iter().map(|s| s.cluster.clone()).collect()
}

/// The overview: every cluster with reachability, version, counts and
/// what is not Programmed.
pub fn overview(csrf: &str, snaps: &[Snapshot]) -> Markup {
    let body = html! {
        table #clusters {
            thead { tr { th { "cluster" } th { "engine" } th { "state" } th { "version" }
                th { "services" } th { "routes" } th { "policies" } th { "not Programmed" } } }
            tbody {
                @for (i, s) in snaps.iter().enumerate() {
                    tr.cluster data-cluster=(s.cluster) {
                        td.name { (s.cluster) }
                        td { (s.engine) }
                        @match &s.reach {
                            Reach::Up { version } => {
                                td.state.up { "up" }
                                td.version { (version) }
                                td.services { (s.list("microservices").len()) }
                                td.routes { (s.list("routes").len()) }
                                td.policies { (s.policy_count()) }
                                td.unsettled {
                                    @let u = s.unsettled();
                                    @if u.is_empty() { "none" } @else {
                                        ul { @for x in &u { li { b { (x.id) } ": " (x.why)
                                            " " a.yaml href={ "/c/" (i) "/yaml/" (x.path) } { "YAML" } } } }
                                    }
                                    " " a href={ "/c/" (i) "/traffic" } { "traffic" }
                                }
                            }
                            Reach::Down { error } => {
                                td.state.down { "down" }
                                td.error colspan="5" { (error) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(csrf, "Overview", &cluster_names(snaps), body)
}

fn conditions(o: &Value) -> Markup {
    html! {
        @for kind in ["Accepted", "Programmed"] {
            @if let Some(c) = condition(o, kind) {
                @let ok = c["status"] == "True";
                span.cond.ok[ok].bad[!ok] title=(c["message"].as_str().unwrap_or("")) {
                    (kind) "=" (c["status"].as_str().unwrap_or("?"))
                    @if !ok { " (" (c["reason"].as_str().unwrap_or("")) ")" }
                }
                @if !ok { @if let Some(m) = c["message"].as_str() { @if !m.is_empty() {
                    div.diagnostic { (m) }
                } } }
            }
        }
    }
}

/// The link to the YAML editor of a resource.
pub fn yaml_link(cluster: usize, plural: &str, ns: &str, name: &str) -> Markup {
    html! {
        a.yaml href={ "/c/" (cluster) "/yaml/" (plural) "/" (ns) "/" (name) }
            data-resource={ (plural) "/" (ns) "/" (name) } { "YAML" }
    }
}

/// One service on one cluster: versions, split bars, match rules,
/// conditions.
fn service_cell(cluster: usize, ms: &Value, route: Option<&Value>) -> Markup {
    let versions: Vec<&str> = ms["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["version"].as_str())
        .collect();
    let (ns, name) = ns_name(ms);
    html! {
        div.versions { "versions: " (versions.join(", ")) " " (yaml_link(cluster, "microservices", ns, name)) }
        (conditions(ms))
        @match route {
            None => { div.noroute { "no Route: every version serves" } }
            Some(r) => {
                @for (major, ws) in split_per_major(r) {
                    div.bar data-major=(major) title={ "major " (major) } {
                        @for (v, w) in &ws {
                            span.seg style={ "width:" (w) "%" } data-version=(v) { (v) " " (w) "%" }
                        }
                    }
                }
                @for m in match_rules(r) { div.match { (m) } }
                (conditions(r))
                @let (ns, name) = ns_name(r);
                a.edit href={ "/c/" (cluster) "/routes/" (ns) "/" (name) "/edit" } { "edit Route" }
                " " (yaml_link(cluster, "routes", ns, name))
            }
        }
    }
}

/// The services of every cluster, the same service side by side.
pub fn services(csrf: &str, snaps: &[Snapshot]) -> Markup {
    let mut keys: Vec<(&str, &str)> = snaps
        .iter()
        .flat_map(|s| s.services().into_iter().map(|v| (v.namespace, v.name)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let views: Vec<std::collections::BTreeMap<(&str, &str), crate::cluster::ServiceView<'_>>> =
        snaps
            .iter()
            .map(|s| {
                s.services()
                    .into_iter()
                    .map(|v| ((v.namespace, v.name), v))
                    .collect()
            })
            .collect();
    let body = html! {
        table #services {
            thead { tr { th { "service" } @for s in snaps { th { (s.cluster)
                @if !s.is_up() { " (down)" } } } } }
            tbody {
                @for key in &keys {
                    tr.service data-service={ (key.0) "/" (key.1) } {
                        td.name { (key.0) "/" b { (key.1) } }
                        @for (i, v) in views.iter().enumerate() {
                            td { @if let Some(sv) = v.get(key) {
                                (service_cell(i, sv.microservice, sv.route))
                            } @else { "—" } }
                        }
                    }
                }
            }
        }
    };
    layout(csrf, "Services", &cluster_names(snaps), body)
}

fn default_samples(route: &Value) -> String {
    let mut lines = vec!["/".to_string()];
    for (major, _) in split_per_major(route) {
        lines.push(format!("/v{major}/x"));
    }
    for rule in route["spec"]["rules"].as_array().into_iter().flatten() {
        for item in rule["matches"].as_array().into_iter().flatten() {
            if let Some((k, c)) = item["headers"].as_object().and_then(|m| m.iter().next()) {
                if let Some(v) = c["exact"].as_str().or(c["prefix"].as_str()) {
                    lines.push(format!("/ {k}:{v}"));
                }
            } else if let Some((k, c)) = item["queryParams"]
                .as_object()
                .and_then(|m| m.iter().next())
                && let Some(v) = c["exact"].as_str()
            {
                lines.push(format!("/?{k}={v}"));
            }
        }
    }
    lines.join("\n")
}

/// One weight slider: rule index, version, weight.
type Slider = (usize, String, u64);

/// How the editor shows the match rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchMode {
    /// As the form's rows (the default).
    Form,
    /// As a YAML list in a textarea (`?matches=yaml`, for what the rows do
    /// not make easy, e.g. pasting rules).
    Yaml,
}

/// The Route editor: sliders per major, match rules (rows, or YAML),
/// samples, targets. `versions` are the service's versions (the match
/// rules' choices). When the user may not change Routes on this cluster,
/// there is no Apply control, and a note says why; a target where they may
/// not is disabled.
pub fn editor(
    csrf: &str,
    clusters: &[String],
    cluster: usize,
    route: &Value,
    versions: &[String],
    mode: MatchMode,
    targets: &[Target],
) -> Markup {
    let own = targets
        .iter()
        .find(|t| t.index == cluster)
        .map(|t| t.access.clone())
        .unwrap_or(Access::Allowed);
    let (ns, name) = ns_name(route);
    let base = format!("/c/{cluster}/routes/{ns}/{name}");
    let rules = route["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let match_yaml = {
        let m: Vec<Value> = rules
            .iter()
            .filter(|r| r.get("matches").is_some())
            .cloned()
            .collect();
        if m.is_empty() {
            String::new()
        } else {
            serde_yaml::to_string(&m).unwrap_or_default()
        }
    };
    let mut majors: Vec<(String, Vec<Slider>)> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if r.get("matches").is_some() {
            continue;
        }
        let Some(v) = r["version"].as_str() else {
            continue;
        };
        let w = r["weight"].as_u64().unwrap_or(100);
        let major = v.split('.').next().unwrap_or("").to_string();
        match majors.iter_mut().find(|(m, _)| *m == major) {
            Some((_, l)) => l.push((i, v.to_string(), w)),
            None => majors.push((major, vec![(i, v.to_string(), w)])),
        }
    }
    let body = html! {
        p { "Service " b { (route["spec"]["service"].as_str().unwrap_or("")) } " on " (clusters.get(cluster).map(String::as_str).unwrap_or("")) }
        form #edit hx-post={ (base) "/check" } hx-trigger="input delay:250ms, load" hx-target="#check" {
            input type="hidden" name="csrf" value=(csrf);
            @for (major, ws) in &majors {
                fieldset.major data-major=(major) {
                    legend { "major " (major) " (sum stays 100)" }
                    @for (i, v, w) in ws {
                        div.weight {
                            label for={ "w" (i) } { (v) }
                            input.slider type="range" min="0" max="100" step="1" value=(w)
                                data-major=(major) data-for={ "w" (i) } data-version=(v) aria-label={ "weight of " (v) };
                            input.weight type="number" min="0" max="100" name={ "w" (i) } id={ "w" (i) } value=(w) data-version=(v);
                            "%"
                        }
                    }
                }
            }
            @match mode {
                MatchMode::Form => {
                    (match_form::render(&base, &MatchForm::of_route(route), versions, &match_at(route), &[]))
                    p.note { a #match-mode href={ (base) "/edit?matches=yaml" } { "edit the match rules as YAML" }
                        " (reloads the page: unsaved changes are lost)" }
                }
                MatchMode::Yaml => {
                    fieldset {
                        legend { "match rules (YAML list; headers exact/prefix/regex, queryParams exact/regex)" }
                        textarea name="match-rules" rows="8" cols="70" { (match_yaml) }
                    }
                    p.note { a #match-mode href={ (base) "/edit" } { "edit the match rules as a form" }
                        " (reloads the page: unsaved changes are lost)" }
                }
            }
            fieldset {
                legend { "sample requests: PATH[?QUERY] [header:value]..." }
                textarea name="samples" rows="5" cols="70" { (default_samples(route)) }
            }
            @match &own {
                Access::Denied(note) => { p #no-apply.note { (note) } }
                _ => {
                    fieldset #targets {
                        legend { "apply to" }
                        @for t in targets {
                            @let denied = matches!(t.access, Access::Denied(_));
                            label data-cluster=(t.name) {
                                input type="checkbox" name="to" value=(t.index)
                                    checked[t.index == cluster] disabled[denied];
                                " " (t.name)
                                @match &t.access {
                                    Access::Denied(n) => { " " span.note { "(" (n) ")" } }
                                    Access::Unknown(n) => { " " span.note { "(" (n) ")" } }
                                    Access::Allowed => {}
                                }
                            } " "
                        }
                    }
                    button #apply type="button" hx-post={ (base) "/apply" } hx-target="#result" { "Apply" }
                }
            }
        }
        div #result {}
        div #check {}
    };
    layout(csrf, &format!("Route {ns}/{name}"), clusters, body)
}

/// The YAML editor of one resource: the text, Check and Apply. `base` is
/// the page's path.
pub fn yaml_editor(
    csrf: &str,
    clusters: &[String],
    cluster: usize,
    base: &str,
    title: &str,
    text: &str,
) -> Markup {
    let lines = text.lines().count() + 3;
    let body = html! {
        p { "On " b { (clusters.get(cluster).map(String::as_str).unwrap_or("")) }
            ": apiVersion, kind, metadata and spec (no status). Check validates the text with "
            "every other resource of the cluster; Apply validates again and applies only when "
            "there is no error." }
        form #edit hx-post={ (base) "/check" } hx-trigger="load" hx-target="#check" {
            input type="hidden" name="csrf" value=(csrf);
            textarea #yaml name="yaml" rows=(lines) cols="80" spellcheck="false" { (text) }
            div {
                button #check-button type="button" hx-post={ (base) "/check" } hx-target="#check" { "Check" }
                " "
                button #apply type="button" hx-post={ (base) "/apply" } hx-target="#result" { "Apply" }
            }
        }
        div #result {}
        div #check {}
    };
    layout(csrf, title, clusters, body)
}

fn diagnostic(d: &Diagnostic) -> Markup {
    html! {
        li.diagnostic.error[d.is_error()].warning[!d.is_error()] {
            @if let Some(f) = &d.field_path { code { (f) } ": " }
            (d.message)
            @if let (Some(l), Some(c)) = (d.line, d.column) { " (line " (l) ", column " (c) ")" }
            @if let Some(h) = &d.hint { " — " i { (h) } }
        }
    }
}

/// The editor's live check: diagnostics, preview, diff.
pub fn check(c: &Check) -> Markup {
    html! {
        section #validation {
            h2 { "Validation" }
            @if c.diagnostics.is_empty() { p.valid { "valid" } } @else {
                ul #diagnostics { @for d in &c.diagnostics { (diagnostic(d)) } }
            }
        }
        @if !c.preview.is_empty() { section {
            h2 { "Preview" }
            table #preview { @for (s, o) in &c.preview { tr { td { code { (s) } } td.goes { (o) } } } }
        } }
        section {
            h2 { "Diff" }
            pre #diff { @for l in diff::lines(&c.before, &c.after) {
                @match l {
                    diff::Line::Same(t) => { span { "  " (t) "\n" } }
                    diff::Line::Removed(t) => { span.removed { "- " (t) "\n" } }
                    diff::Line::Added(t) => { span.added { "+ " (t) "\n" } }
                }
            } }
        }
    }
}

/// What an apply did, per cluster.
pub enum ApplyReport {
    /// The console's own validation refused it; nothing was sent.
    Invalid(Vec<Diagnostic>),
    /// The cluster answered.
    Done(Applied),
    /// The cluster could not be asked.
    Failed(String),
}

/// The apply results, one per cluster; a failure is shown, never hidden.
/// A conflict names the managers that own the fields and offers, per
/// cluster, to take them over: a checkbox (unchecked) and a button that
/// applies again, with force only where the box is checked. `apply` is the
/// editor's apply path.
pub fn applied(apply: &str, results: &[(usize, String, ApplyReport)]) -> Markup {
    let conflicts = results
        .iter()
        .any(|(_, _, r)| matches!(r, ApplyReport::Done(Applied::Conflict(_))));
    html! {
        ul #results {
            @for (j, cluster, r) in results {
                @match r {
                    ApplyReport::Invalid(ds) => { li.result.refused data-cluster=(cluster) {
                        b { (cluster) } ": not applied (invalid)"
                        ul.diagnostics { @for d in ds { (diagnostic(d)) } }
                    } }
                    ApplyReport::Done(Applied::Accepted(done, warnings)) => { li.result.applied data-cluster=(cluster) {
                        b { (cluster) } ": applied: " (done.join(", "))
                        @if !warnings.is_empty() { ul { @for d in warnings { (diagnostic(d)) } } }
                    } }
                    ApplyReport::Done(Applied::Refused(ds)) => { li.result.refused data-cluster=(cluster) {
                        b { (cluster) } ": refused by the cluster"
                        ul.diagnostics { @for d in ds { (diagnostic(d)) } }
                    } }
                    ApplyReport::Done(Applied::Conflict(c)) => { li.result.conflict data-cluster=(cluster) {
                        b { (cluster) } ": not applied: other field managers own "
                        @if c.fields.is_empty() { "these fields" } @else { code { (c.fields.join(", ")) } }
                        ": " span.managers { (c.managers.join(", ")) }
                        div.diagnostic { (c.message) }
                        label.take-over {
                            input type="checkbox" name="force" value=(j);
                            " take over these fields on " (cluster)
                        }
                    } }
                    ApplyReport::Failed(e) => { li.result.failed data-cluster=(cluster) {
                        b { (cluster) } ": failed: " (e)
                    } }
                }
            }
        }
        @if conflicts {
            button #take-over type="button" hx-post=(apply) hx-include="#edit, #results input[name=force]"
                hx-target="#result" { "Apply again (taking over the checked clusters' fields)" }
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into())
}

/// The traffic numbers as text (also pushed live over SSE).
pub fn traffic_table(t: &Result<Vec<VersionTraffic>, String>) -> Markup {
    html! {
        div #traffic {
            @match t {
                Err(e) => { p.error { "traffic unavailable: " (e) } }
                Ok(rows) => {
                    table {
                        thead { tr { th { "service" } th { "version" } th { "req/s" } th { "errors" }
                            th { "p50 ms" } th { "p99 ms" } th { "requests" } } }
                        tbody {
                            @for r in rows {
                                tr.traffic data-service={ (r.namespace) "/" (r.service) } data-version=(r.version) {
                                    td.service { (r.namespace) "/" (r.service) }
                                    td.version { (r.version) }
                                    td.rps { (format!("{:.1}", r.requests_per_second)) }
                                    td.errors { (format!("{:.1}%", 100.0 * r.error_rate)) }
                                    td.p50 { (ms(r.p50_ms)) }
                                    td.p99 { (ms(r.p99_ms)) }
                                    td.total { (r.requests_total) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The traffic page of one cluster: the live chart and the numbers.
pub fn traffic(
    csrf: &str,
    clusters: &[String],
    cluster: usize,
    source: &str,
    t: &Result<Vec<VersionTraffic>, String>,
) -> Markup {
    let body = html! {
        p { "Requests per second per service version on "
            b { (clusters.get(cluster).map(String::as_str).unwrap_or("")) }
            ", " (source) ", live." }
        div #chart data-events={ "/c/" (cluster) "/traffic/events" } {}
        (traffic_table(t))
    };
    layout(csrf, "Traffic", clusters, body)
}

/// A page that says what went wrong.
pub fn message(csrf: &str, clusters: &[String], title: &str, text: &str) -> Markup {
    layout(csrf, title, clusters, html! { p.error { (text) } })
}
