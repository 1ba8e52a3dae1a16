//! # packlight demo-app — the workload used by demos and tests
//!
//! A small HTTP/1.1 service. In: any request. Out: `200` JSON naming this
//! instance (`service`, `version`) and echoing the request (`method`,
//! `path` with its query, `headers` with lower-case names), so a test can
//! see which version answered and what the mesh added or removed.
//!
//! * `GET /call?url=URL[&method=POST][&header=Name:Value]...` calls `URL`
//!   through the proxy named by `HTTP_PROXY`/`HTTPS_PROXY` (under
//!   `packlight up`, the instance's sidecar) and answers `200`
//!   `{"status", "body", "headers"}`, or `502 {"error"}` when the call
//!   itself failed (refused, reset, timed out).
//! * `/status/N` answers status `N` with the usual JSON body.
//!
//! It must never set `x-packlight-version`: that header is the mesh's
//! proof of routing, and a direct call to the app must show none.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Serialize;
use serde_json::json;

/// How long `/call` waits for the upstream before answering `502`.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Flags of `packlight demo-app`; each also comes from the environment that
/// `packlight up` gives a workload.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoAppArgs {
    /// The service name this instance reports.
    #[arg(long, env = "PACKLIGHT_SERVICE", default_value = "demo")]
    pub service: String,
    /// The version this instance reports.
    #[arg(long, env = "PACKLIGHT_VERSION", default_value = "0.0")]
    pub version: String,
    /// The port to listen on.
    #[arg(long, env = "PORT")]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub listen_address: IpAddr,
}

/// Who this instance is, as reported in every answer.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Service name.
    pub service: String,
    /// Version string.
    pub version: String,
}

struct AppState {
    identity: Identity,
    client: reqwest::Client,
}

/// Runs the demo app until SIGINT or SIGTERM, then drains open requests.
pub async fn run(args: DemoAppArgs) -> anyhow::Result<()> {
    let addr = SocketAddr::new(args.listen_address, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, service = %args.service, version = %args.version, "demo-app listening");
    let identity = Identity {
        service: args.service,
        version: args.version,
    };
    serve(listener, identity, shutdown_signal()).await
}

/// Serves the demo app on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    identity: Identity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(identity)?)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// The demo app's routes. The `/call` client reads its proxies from the
/// environment (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`).
pub fn router(identity: Identity) -> anyhow::Result<Router> {
    let client = client_builder().build()?;
    Ok(router_with(identity, client))
}

/// The demo app's routes with `/call` sent through the HTTP proxy at
/// `proxy_url` (for every scheme), whatever the environment says.
pub fn router_via_proxy(identity: Identity, proxy_url: &str) -> anyhow::Result<Router> {
    let client = client_builder()
        .proxy(reqwest::Proxy::all(proxy_url)?)
        .build()?;
    Ok(router_with(identity, client))
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
}

fn router_with(identity: Identity, client: reqwest::Client) -> Router {
    let state = Arc::new(AppState { identity, client });
    Router::new()
        .route("/call", get(call))
        .route("/status/{code}", any(status))
        .fallback(echo)
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot wait for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot wait for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("demo-app stopping");
}

/// The echo body every plain request gets.
#[derive(Serialize)]
struct Echo<'a> {
    service: &'a str,
    version: &'a str,
    method: &'a str,
    path: &'a str,
    headers: BTreeMap<String, String>,
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

fn echo_response(state: &AppState, req: &Request, status: StatusCode) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |pq| pq.as_str());
    let body = Echo {
        service: &state.identity.service,
        version: &state.identity.version,
        method: req.method().as_str(),
        path,
        headers: header_map(req.headers()),
    };
    (status, axum::Json(body)).into_response()
}

async fn echo(State(state): State<Arc<AppState>>, req: Request) -> Response {
    echo_response(&state, &req, StatusCode::OK)
}

async fn status(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(code): axum::extract::Path<String>,
    req: Request,
) -> Response {
    match code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        Some(code) => echo_response(&state, &req, code),
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": format!("not an HTTP status code: {code}")})),
        )
            .into_response(),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `/call?url=...&method=...&header=Name:Value...`: the query as pairs, so
/// `header` may repeat.
async fn call(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut url = None;
    let mut method = Method::GET;
    let mut headers = reqwest::header::HeaderMap::new();
    for (key, value) in params {
        match key.as_str() {
            "url" => url = Some(value),
            "method" => match Method::from_bytes(value.as_bytes()) {
                Ok(m) => method = m,
                Err(_) => {
                    return error(StatusCode::BAD_REQUEST, format!("bad method {value:?}"));
                }
            },
            "header" => {
                let Some((name, val)) = value.split_once(':') else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("header {value:?} is not Name:Value"),
                    );
                };
                let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes());
                let val = reqwest::header::HeaderValue::from_str(val.trim());
                match (name, val) {
                    (Ok(n), Ok(v)) => {
                        headers.append(n, v);
                    }
                    _ => {
                        return error(StatusCode::BAD_REQUEST, format!("bad header {value:?}"));
                    }
                }
            }
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {other:?} (url, method, header)"),
                );
            }
        }
    }
    let Some(url) = url else {
        return error(StatusCode::BAD_REQUEST, "missing url parameter".to_owned());
    };
    let result = state
        .client
        .request(method, &url)
        .headers(headers)
        .send()
        .await;
    let upstream = match result {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_GATEWAY, error_chain(&e)),
    };
    let status = upstream.status().as_u16();
    let headers = header_map(upstream.headers());
    match upstream.bytes().await {
        Ok(body) => (
            StatusCode::OK,
            axum::Json(json!({
                "status": status,
                "body": String::from_utf8_lossy(&body),
                "headers": headers,
            })),
        )
            .into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
