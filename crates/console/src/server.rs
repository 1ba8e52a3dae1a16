//! The HTTP side: routes, the token gate, CSRF checks, SSE.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream, StreamExt};
use maud::{Markup, html};

use crate::cluster::Snapshot;
use crate::edit::{Check, Edit, check};
use crate::match_form;
use crate::pages::{self, ApplyReport, Target};
use crate::{Console, auth};

type Shared = State<Arc<Console>>;
type FormFields = Form<Vec<(String, String)>>;

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    let gated = Router::new()
        .route("/", get(overview))
        .route("/services", get(services))
        .route("/policies", get(crate::policies::page))
        .route("/c/{cluster}/routes/{ns}/{name}/edit", get(edit_page))
        .route("/c/{cluster}/routes/{ns}/{name}/check", post(edit_check))
        .route("/c/{cluster}/routes/{ns}/{name}/apply", post(edit_apply))
        .route("/c/{cluster}/routes/{ns}/{name}/rules", post(edit_rules))
        .route("/c/{cluster}/yaml/{plural}/{ns}/{name}", get(yaml_page))
        .route(
            "/c/{cluster}/yaml/{plural}/{ns}/{name}/check",
            post(yaml_check),
        )
        .route(
            "/c/{cluster}/yaml/{plural}/{ns}/{name}/apply",
            post(yaml_apply),
        )
        .route("/c/{cluster}/traffic", get(traffic_page))
        .route("/c/{cluster}/traffic/events", get(traffic_events))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/login", get(login))
        .route("/assets/{name}", get(asset))
        .merge(gated)
        .with_state(console)
}

fn names(console: &Console) -> Vec<String> {
    console.clusters.iter().map(|c| c.name.clone()).collect()
}

/// Snapshots of every cluster, read at once.
pub async fn snapshots(console: &Console) -> Vec<Snapshot> {
    futures_util::future::join_all(console.clusters.iter().map(|c| c.snapshot())).await
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

async fn login(State(console): Shared, Query(q): Query<LoginQuery>) -> Response {
    match q.token {
        Some(t) if auth::same(&t, &console.token) => (
            [(
                header::SET_COOKIE,
                format!(
                    "{}={}; HttpOnly; SameSite=Strict; Path=/",
                    auth::COOKIE,
                    console.token
                ),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        _ => (StatusCode::UNAUTHORIZED, "wrong or missing token\n").into_response(),
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    match crate::assets::get(&name) {
        Some((ctype, bytes)) => (
            [
                (header::CONTENT_TYPE, ctype),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn overview(State(console): Shared) -> Markup {
    let snaps = snapshots(&console).await;
    pages::overview(&console.csrf, &snaps)
}

async fn services(State(console): Shared) -> Markup {
    let snaps = snapshots(&console).await;
    pages::services(&console.csrf, &snaps)
}

fn not_found(console: &Console, what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        pages::message(&console.csrf, &names(console), "Not found", what),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct EditQuery {
    /// `yaml`: the match rules as a YAML list instead of the form's rows.
    matches: Option<String>,
}

async fn edit_page(
    State(console): Shared,
    Path((cluster, ns, name)): Path<(usize, String, String)>,
    Query(q): Query<EditQuery>,
) -> Response {
    // This cluster and the others: those holding the same Route can take
    // the same change.
    let others = snapshots(&console).await;
    let Some(snap) = others.get(cluster) else {
        return not_found(&console, "no such cluster");
    };
    let Some(route) = snap.route(&ns, &name) else {
        return not_found(
            &console,
            &format!("no Route {ns}/{name} on {}", snap.cluster),
        );
    };
    let holding: Vec<usize> = others
        .iter()
        .enumerate()
        .filter(|(j, s)| *j == cluster || s.route(&ns, &name).is_some())
        .map(|(j, _)| j)
        .collect();
    // What the user may do on each: the API server's access review.
    let access = futures_util::future::join_all(
        holding
            .iter()
            .filter_map(|j| console.clusters.get(*j))
            .map(|c| c.may_change_routes(&ns)),
    )
    .await;
    let targets: Vec<Target> = holding
        .iter()
        .zip(access)
        .map(|(j, access)| Target {
            index: *j,
            name: others[*j].cluster.clone(),
            access,
        })
        .collect();
    let mode = match q.matches.as_deref() {
        Some("yaml") => pages::MatchMode::Yaml,
        _ => pages::MatchMode::Form,
    };
    let versions = snap.versions(&ns, route["spec"]["service"].as_str().unwrap_or(""));
    pages::editor(
        &console.csrf,
        &names(&console),
        cluster,
        route,
        &versions,
        mode,
        &targets,
    )
    .into_response()
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "missing or wrong CSRF token\n").into_response()
}

async fn edit_check(
    State(console): Shared,
    Path((cluster, ns, name)): Path<(usize, String, String)>,
    headers: HeaderMap,
    Form(form): FormFields,
) -> Response {
    if !auth::csrf_ok(&console, &headers, &form) {
        return forbidden();
    }
    let Some(c) = console.clusters.get(cluster) else {
        return not_found(&console, "no such cluster");
    };
    let snap = c.snapshot().await;
    let Some(route) = snap.route(&ns, &name) else {
        return not_found(&console, &format!("no Route {ns}/{name} on {}", c.name));
    };
    let edit = Edit::from_form(&form);
    let checked = check(&snap, route, &edit);
    match &edit.match_form {
        // The form's rows get their diagnostics too.
        Some(Ok(rows)) => html! {
            (pages::check(&checked))
            (match_form::slots_oob(rows, &checked.match_at, &checked.diagnostics))
        }
        .into_response(),
        _ => pages::check(&checked).into_response(),
    }
}

/// A button of the match-rule form (`op`: add, remove or move a rule, an
/// alternative or a condition): the form's rows re-rendered after it, and
/// the live check of the result (out of band, into `#check`).
async fn edit_rules(
    State(console): Shared,
    Path((cluster, ns, name)): Path<(usize, String, String)>,
    headers: HeaderMap,
    Form(form): FormFields,
) -> Response {
    if !auth::csrf_ok(&console, &headers, &form) {
        return forbidden();
    }
    let Some(c) = console.clusters.get(cluster) else {
        return not_found(&console, "no such cluster");
    };
    let snap = c.snapshot().await;
    let Some(route) = snap.route(&ns, &name) else {
        return not_found(&console, &format!("no Route {ns}/{name} on {}", c.name));
    };
    let mut edit = Edit::from_form(&form);
    let versions = snap.versions(&ns, route["spec"]["service"].as_str().unwrap_or(""));
    let op = form
        .iter()
        .find(|(k, _)| k == "op")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let mut rows = match edit.match_form.take() {
        Some(Ok(rows)) => rows,
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        None => return (StatusCode::BAD_REQUEST, "no match-rule form\n").into_response(),
    };
    // A new rule goes to the newest version listed.
    if let Err(e) = rows.apply(op, versions.last().map(String::as_str).unwrap_or("")) {
        return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
    }
    edit.match_form = Some(Ok(rows.clone()));
    let checked = check(&snap, route, &edit);
    let base = format!("/c/{cluster}/routes/{ns}/{name}");
    html! {
        (match_form::render(&base, &rows, &versions, &checked.match_at, &checked.diagnostics))
        div #check hx-swap-oob="true" { (pages::check(&checked)) }
    }
    .into_response()
}

async fn edit_apply(
    State(console): Shared,
    Path((cluster, ns, name)): Path<(usize, String, String)>,
    headers: HeaderMap,
    Form(form): FormFields,
) -> Response {
    if !auth::csrf_ok(&console, &headers, &form) {
        return forbidden();
    }
    let edit = Edit::from_form(&form);
    let indices = |field: &str| -> Vec<usize> {
        form.iter()
            .filter(|(k, _)| k == field)
            .filter_map(|(_, v)| v.parse().ok())
            .collect()
    };
    // Clusters where the user chose to take over fields other managers own.
    let force = indices("force");
    let mut targets = indices("to");
    targets.extend(&force);
    if targets.is_empty() {
        targets.push(cluster);
    }
    targets.sort_unstable();
    targets.dedup();
    let mut results = Vec::new();
    for j in targets {
        let Some(c) = console.clusters.get(j) else {
            continue;
        };
        let snap = c.snapshot().await;
        let checked = snap
            .route(&ns, &name)
            .map(|route| check(&snap, route, &edit))
            .ok_or_else(|| format!("no Route {ns}/{name} there"));
        let id = ("Route", ns.as_str(), name.as_str());
        let report = apply_checked(c, &snap, checked, id, force.contains(&j)).await;
        results.push((j, c.name.clone(), report));
    }
    let apply = format!("/c/{cluster}/routes/{ns}/{name}/apply");
    pages::applied(&apply, &results).into_response()
}

/// Applies a checked edit of `(kind, ns, name)` on `c` (read as `snap`):
/// nothing when the cluster is down, the resource is gone or the edit has
/// an error.
async fn apply_checked(
    c: &crate::Cluster,
    snap: &Snapshot,
    checked: Result<Check, String>,
    (kind, ns, name): (&str, &str, &str),
    force: bool,
) -> ApplyReport {
    let report = match (&snap.reach, checked) {
        (crate::Reach::Down { error }, _) => ApplyReport::Failed(error.clone()),
        (_, Err(e)) => ApplyReport::Failed(e),
        (_, Ok(checked)) if checked.has_errors() || checked.object.is_none() => {
            ApplyReport::Invalid(checked.diagnostics)
        }
        (_, Ok(checked)) => match c.apply(&checked.after, "console", false, force).await {
            Ok(a) => ApplyReport::Done(a),
            Err(e) => ApplyReport::Failed(e),
        },
    };
    tracing::info!(cluster = %c.name, kind, namespace = %ns, name = %name, force, "console apply");
    report
}

type YamlPath = Path<(usize, String, String, String)>;

/// The cluster, its snapshot, the kind and the object of a YAML page.
async fn yaml_target(
    console: &Console,
    (cluster, plural, ns, name): &(usize, String, String, String),
) -> Result<(Snapshot, &'static str, serde_json::Value), Response> {
    let Some(c) = console.clusters.get(*cluster) else {
        return Err(not_found(console, "no such cluster"));
    };
    let Some(kind) = crate::yaml::kind_of(plural) else {
        return Err(not_found(
            console,
            &format!("{plural:?} is not a packlight kind"),
        ));
    };
    let snap = c.snapshot().await;
    match snap.get(plural, ns, name).cloned() {
        Some(obj) => Ok((snap, kind, obj)),
        None => Err(not_found(
            console,
            &format!("no {kind} {ns}/{name} on {}", c.name),
        )),
    }
}

fn yaml_field(form: &[(String, String)]) -> &str {
    form.iter()
        .find(|(k, _)| k == "yaml")
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

async fn yaml_page(State(console): Shared, Path(p): YamlPath) -> Response {
    let (_, kind, obj) = match yaml_target(&console, &p).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (cluster, plural, ns, name) = &p;
    pages::yaml_editor(
        &console.csrf,
        &names(&console),
        *cluster,
        &format!("/c/{cluster}/yaml/{plural}/{ns}/{name}"),
        &format!("{kind} {ns}/{name}"),
        &crate::yaml::text(&obj, kind),
    )
    .into_response()
}

/// A YAML page's POST: the CSRF token, then the edited text checked
/// against the cluster as it is now.
async fn yaml_checked(
    console: &Console,
    p: &(usize, String, String, String),
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(Snapshot, &'static str, Check), Response> {
    if !auth::csrf_ok(console, headers, form) {
        return Err(forbidden());
    }
    let (snap, kind, obj) = yaml_target(console, p).await?;
    let checked = crate::yaml::check(&snap, kind, &obj, yaml_field(form));
    Ok((snap, kind, checked))
}

async fn yaml_check(
    State(console): Shared,
    Path(p): YamlPath,
    headers: HeaderMap,
    Form(form): FormFields,
) -> Response {
    match yaml_checked(&console, &p, &headers, &form).await {
        Ok((_, _, checked)) => pages::check(&checked).into_response(),
        Err(r) => r,
    }
}

async fn yaml_apply(
    State(console): Shared,
    Path(p): YamlPath,
    headers: HeaderMap,
    Form(form): FormFields,
) -> Response {
    let (snap, kind, checked) = match yaml_checked(&console, &p, &headers, &form).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (cluster, plural, ns, name) = &p;
    let Some(c) = console.clusters.get(*cluster) else {
        return not_found(&console, "no such cluster");
    };
    let force = form
        .iter()
        .any(|(k, v)| k == "force" && *v == cluster.to_string());
    let report = apply_checked(c, &snap, Ok(checked), (kind, ns, name), force).await;
    let apply = format!("/c/{cluster}/yaml/{plural}/{ns}/{name}/apply");
    pages::applied(&apply, &[(*cluster, c.name.clone(), report)]).into_response()
}

async fn traffic_page(State(console): Shared, Path(cluster): Path<usize>) -> Response {
    let Some(c) = console.clusters.get(cluster) else {
        return not_found(&console, "no such cluster");
    };
    let t = c.traffic().await;
    pages::traffic(
        &console.csrf,
        &names(&console),
        cluster,
        &c.traffic_source(),
        &t,
    )
    .into_response()
}

/// Every 2 s (the engine's sampling interval; a context's Prometheus is
/// queried as often): the table as HTML (`table`) and the numbers as JSON
/// (`data`) for the chart.
async fn traffic_events(
    State(console): Shared,
    Path(cluster): Path<usize>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = stream::unfold(true, move |first| {
        let console = console.clone();
        async move {
            if !first {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let t = match console.clusters.get(cluster) {
                Some(c) => c.traffic().await,
                None => Err("no such cluster".to_string()),
            };
            let table = pages::traffic_table(&t).into_string();
            let data = serde_json::to_string(t.as_deref().unwrap_or(&[])).unwrap_or_default();
            let events = vec![
                Ok(Event::default().event("table").data(table)),
                Ok(Event::default().event("data").data(data)),
            ];
            Some((stream::iter(events), false))
        }
    })
    .flatten();
    Sse::new(ticks).keep_alive(KeepAlive::default())
}
