//! The standalone REST API (DESIGN.md "Standalone API", `docs/api.md`):
//! Kubernetes-style resource paths, `POST /apply`, `/events`, `/traffic`,
//! `/instances`, `/version`; every call but `/version` needs the bearer
//! token of `DATA_DIR/token`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use packlight_model::{Diagnostic, ResourceId};
use serde::Deserialize;
use serde_json::json;

use crate::engine::Engine;
use crate::traffic::Traffic;

/// The API group and version of packlight's resources.
pub const GROUP_VERSION: &str = "packlight.dev/v1alpha1";

use packlight_client::types::kind_of;

#[derive(Clone)]
struct Api {
    engine: Engine,
    traffic: Traffic,
    token: String,
}

/// The API's router.
pub fn router(engine: Engine, traffic: Traffic, token: String) -> Router {
    let api = Api {
        engine,
        traffic,
        token,
    };
    let base = "/apis/packlight.dev/v1alpha1";
    let guarded = Router::new()
        .route("/apply", post(apply))
        .route("/instances", get(instances))
        .route("/events", get(events))
        .route("/traffic", get(traffic_report))
        .route(&format!("{base}/{{plural}}"), get(list_all))
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}"),
            get(list_ns),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{plural}}/{{name}}"),
            get(get_one).put(put_one).delete(delete_one),
        )
        .layer(middleware::from_fn_with_state(api.clone(), auth));
    Router::new()
        .route("/version", get(version))
        .merge(guarded)
        .with_state(api)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let d = Diagnostic::error(message);
    (status, axum::Json(json!({ "diagnostics": [d] }))).into_response()
}

async fn auth(State(api): State<Api>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), api.token.as_bytes()));
    if !ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (it is in DATA_DIR/token)",
        );
    }
    next.run(req).await
}

/// Compares in constant time (`subtle`; only the lengths leak).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

async fn version() -> Response {
    axum::Json(json!({"version": env!("CARGO_PKG_VERSION"), "engine": "standalone"}))
        .into_response()
}

#[derive(Deserialize)]
struct ApplyQuery {
    #[serde(default, rename = "dryRun")]
    dry_run: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    file: Option<String>,
}

async fn apply(State(api): State<Api>, Query(q): Query<ApplyQuery>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8 text");
    };
    let dry = matches!(q.dry_run.as_deref(), Some("true" | "All" | "1"));
    let ns = q.namespace.as_deref().unwrap_or("default");
    match api
        .engine
        .apply(&[(q.file.as_deref(), text)], ns, dry)
        .await
    {
        Ok(Ok(applied)) => axum::Json(applied).into_response(),
        Ok(Err(refused)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({ "diagnostics": refused.0 })),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn instances(State(api): State<Api>) -> Response {
    axum::Json(api.engine.instances().await).into_response()
}

fn list(kind: &str, items: Vec<serde_json::Value>) -> Response {
    axum::Json(json!({
        "apiVersion": GROUP_VERSION,
        "kind": format!("{kind}List"),
        "items": items,
    }))
    .into_response()
}

async fn list_all(State(api): State<Api>, Path(plural): Path<String>) -> Response {
    let Some(kind) = kind_of(&plural) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no resource type {plural:?}"),
        );
    };
    list(kind, api.engine.list(kind, None).await)
}

async fn list_ns(State(api): State<Api>, Path((ns, plural)): Path<(String, String)>) -> Response {
    let Some(kind) = kind_of(&plural) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no resource type {plural:?}"),
        );
    };
    list(kind, api.engine.list(kind, Some(&ns)).await)
}

fn id(ns: String, plural: &str, name: String) -> Result<ResourceId, Box<Response>> {
    let kind = kind_of(plural).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no resource type {plural:?}"),
        )
    })?;
    Ok(ResourceId {
        kind: kind.to_string(),
        namespace: ns,
        name,
    })
}

async fn get_one(
    State(api): State<Api>,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Response {
    let id = match id(ns, &plural, name) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match api.engine.get(&id).await {
        Some(v) => axum::Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("{id} not found")),
    }
}

async fn put_one(
    State(api): State<Api>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let id = match id(ns, &plural, name) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8 text");
    };
    // The path names the object: the body must be that one object.
    let texts = [(None, text)];
    let (alone, inputs) = packlight_model::load(&texts, &id.namespace);
    if inputs.len() > 1 || inputs.first().is_some_and(|i| i.resource.id() != id) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the body must be exactly {id}, the object the path names"),
        );
    }
    match api.engine.apply_loaded(&texts, alone, inputs, false).await {
        Ok(Ok(_)) => match api.engine.get(&id).await {
            Some(v) => axum::Json(v).into_response(),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "stored object vanished"),
        },
        Ok(Err(refused)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({ "diagnostics": refused.0 })),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn delete_one(
    State(api): State<Api>,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Response {
    let id = match id(ns, &plural, name) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match api.engine.delete(&id).await {
        Ok(None) => error(StatusCode::NOT_FOUND, format!("{id} not found")),
        Ok(Some(Ok(()))) => axum::Json(json!({
            "results": [{"kind": id.kind, "namespace": id.namespace, "name": id.name, "action": "deleted"}]
        }))
        .into_response(),
        Ok(Some(Err(refused))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({ "diagnostics": refused.0 })),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn events(State(api): State<Api>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = api.engine.events();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let data = serde_json::to_string(&ev).unwrap_or_default();
                    return Some((Ok(SseEvent::default().data(data)), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn traffic_report(State(api): State<Api>) -> Response {
    axum::Json(api.traffic.report().await).into_response()
}
