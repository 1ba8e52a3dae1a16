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
use maud::Markup;

use crate::cluster::Snapshot;
use crate::edit::{Edit, check};
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

async fn edit_page(
    State(console): Shared,
    Path((cluster, ns, name)): Path<(usize, String, String)>,
) -> Response {
    let Some(c) = console.clusters.get(cluster) else {
        return not_found(&console, "no such cluster");
    };
    let snap = c.snapshot().await;
    let Some(route) = snap.route(&ns, &name) else {
        return not_found(&console, &format!("no Route {ns}/{name} on {}", c.name));
    };
    // Other clusters holding the same Route can take the same change.
    let others = snapshots(&console).await;
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
    pages::editor(&console.csrf, &names(&console), cluster, route, &targets).into_response()
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
    pages::check(&check(&snap, route, &Edit::from_form(&form))).into_response()
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
        let report = if !snap.is_up() {
            match &snap.reach {
                crate::Reach::Down { error } => ApplyReport::Failed(error.clone()),
                crate::Reach::Up { .. } => ApplyReport::Failed(String::new()),
            }
        } else {
            match snap.route(&ns, &name) {
                None => ApplyReport::Failed(format!("no Route {ns}/{name} there")),
                Some(route) => {
                    let checked = check(&snap, route, &edit);
                    if checked.has_errors() {
                        ApplyReport::Invalid(checked.diagnostics)
                    } else {
                        match c
                            .apply(&checked.after, "console", false, force.contains(&j))
                            .await
                        {
                            Ok(a) => ApplyReport::Done(a),
                            Err(e) => ApplyReport::Failed(e),
                        }
                    }
                }
            }
        };
        tracing::info!(
            cluster = %c.name,
            kind = "Route",
            namespace = %ns,
            name = %name,
            force = force.contains(&j),
            "console apply"
        );
        results.push((j, c.name.clone(), report));
    }
    let apply = format!("/c/{cluster}/routes/{ns}/{name}/apply");
    pages::applied(&apply, &results).into_response()
}

async fn traffic_page(State(console): Shared, Path(cluster): Path<usize>) -> Response {
    let Some(c) = console.clusters.get(cluster) else {
        return not_found(&console, "no such cluster");
    };
    let t = c.traffic().await;
    pages::traffic(&console.csrf, &names(&console), cluster, &t).into_response()
}

/// Every 2 s (the engine's sampling interval): the table as HTML (`table`)
/// and the numbers as JSON (`data`) for the chart.
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
