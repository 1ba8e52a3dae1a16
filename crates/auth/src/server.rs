//! The HTTP server: Envoy's authorization checks (every path outside the
//! login URL) and the login page, login and logout (the login URL and
//! below). One contract for both engines (docs/auth.md):
//!
//! * check allowed: `200`, `x-packlight-user: NAME`;
//! * check denied, API client (`Accept: application/json`, or any
//!   `Authorization: Bearer`): `401`, `www-authenticate: Bearer`, JSON
//!   `{"error":"unauthenticated","login":LOGIN_URL}`;
//! * check denied, browser: `302`, `location: LOGIN_URL?redirect=PATH`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::limit::LoginLimiter;
use crate::page::{login_form, safe_redirect};
use crate::session::SessionKey;
use crate::store::{UserStore, valid_user};
use crate::{AuthError, AuthOptions, USER_HEADER};

type Resp = Response<Full<Bytes>>;

/// Largest login request body read.
const MAX_BODY: usize = 16 * 1024;
/// How long a client may take to send its request head or body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a login waits for a free argon2 slot before `503`.
const SLOT_WAIT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections.
const DRAIN: Duration = Duration::from_secs(5);

struct State {
    opts: AuthOptions,
    store: Arc<UserStore>,
    key: SessionKey,
    limiter: LoginLimiter,
    slots: Semaphore,
}

/// Serves the login service on `listener` until `shutdown` completes,
/// then stops accepting and gives open connections a few seconds to
/// finish. Fails only on bad options or an unusable data directory.
pub async fn serve(
    listener: TcpListener,
    opts: AuthOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AuthError> {
    opts.validate()?;
    let dir = opts.data_dir.clone();
    let (store, key) = tokio::task::spawn_blocking(move || {
        Ok::<_, AuthError>((UserStore::open(&dir)?, SessionKey::open(&dir)?))
    })
    .await
    .map_err(|e| AuthError::Task(e.to_string()))??;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let state = Arc::new(State {
        opts,
        store: Arc::new(store),
        key,
        limiter: LoginLimiter::default(),
        slots: Semaphore::new(cores),
    });
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        login_url = %state.opts.login_url,
        "login service listening"
    );
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), svc);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("login service stopped with connections still open");
    }
    tracing::info!("login service stopped");
    Ok(())
}

async fn handle(state: &State, req: Request<Incoming>) -> Resp {
    let base = state.opts.login_url.as_str();
    let sub = req
        .uri()
        .path()
        .strip_prefix(base)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .map(str::to_string);
    match sub.as_deref() {
        None => check(state, req.headers(), req.uri()),
        Some("" | "/") => match *req.method() {
            Method::GET | Method::HEAD => {
                let redirect = query_param(req.uri().query(), "redirect").unwrap_or_default();
                page(
                    StatusCode::OK,
                    base,
                    safe_redirect(&redirect),
                    "",
                    None,
                    &[],
                )
            }
            Method::POST => login(state, req).await,
            _ => not_allowed("GET, HEAD, POST"),
        },
        Some("/logout") => match *req.method() {
            Method::POST => logout(state, req.headers()),
            _ => not_allowed("POST"),
        },
        Some(_) => respond(StatusCode::NOT_FOUND, &[], "not found\n"),
    }
}

/// Envoy's authorization check for the client's request.
fn check(state: &State, headers: &HeaderMap, uri: &hyper::Uri) -> Resp {
    let bearer = bearer_token(headers);
    let candidates = cookie_values(headers, &state.opts.cookie_name)
        .into_iter()
        .chain(bearer);
    let mut user = None;
    for token in candidates {
        let Some(session) = state.key.verify(token) else {
            continue;
        };
        // The user must still exist with the password the session was
        // issued under (removal or a new password ends sessions).
        match state.store.password_stamp(&session.user) {
            Ok(Some(stamp)) if stamp == session.stamp => {
                user = Some(session.user);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "user store unreadable");
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &[],
                    &serde_json::json!({"error": "login service unavailable"}),
                );
            }
        }
    }
    if let Some(user) = user {
        tracing::debug!(user, path = uri.path(), "allowed");
        return respond(StatusCode::OK, &[(user_header(), user)], "");
    }
    let login = &state.opts.login_url;
    if bearer.is_some() || wants_json(headers) {
        return json(
            StatusCode::UNAUTHORIZED,
            &[(header::WWW_AUTHENTICATE, "Bearer".to_string())],
            &serde_json::json!({"error": "unauthenticated", "login": login}),
        );
    }
    let original = uri.path_and_query().map_or("/", |p| p.as_str());
    let target: String = form_urlencoded::byte_serialize(original.as_bytes()).collect();
    let location = format!("{login}?redirect={target}");
    let body = format!(
        "<!doctype html><a href=\"{}\">Sign in</a>\n",
        crate::page::escape(&location)
    );
    respond(
        StatusCode::FOUND,
        &[
            (header::LOCATION, location),
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
}

#[derive(Deserialize)]
struct JsonLogin {
    username: String,
    password: String,
}

/// `POST LOGIN_URL`: a form (browser) or JSON (API client).
async fn login(state: &State, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let base = state.opts.login_url.as_str();
    let ctype = media_type(&parts.headers);
    let is_json = ctype == "application/json";
    if !is_json && ctype != "application/x-www-form-urlencoded" {
        return respond(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &[],
            "send application/x-www-form-urlencoded or application/json\n",
        );
    }
    let bytes = match tokio::time::timeout(READ_TIMEOUT, Limited::new(body, MAX_BODY).collect())
        .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return respond(StatusCode::PAYLOAD_TOO_LARGE, &[], "request too large\n"),
        Err(_) => return respond(StatusCode::REQUEST_TIMEOUT, &[], "request too slow\n"),
    };
    let (user, password, redirect) = if is_json {
        match serde_json::from_slice::<JsonLogin>(&bytes) {
            Ok(l) => (l.username, l.password, String::new()),
            Err(_) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &[],
                    &serde_json::json!({"error": "expected {\"username\": ..., \"password\": ...}"}),
                );
            }
        }
    } else {
        let mut f = (String::new(), String::new(), String::new());
        for (k, v) in form_urlencoded::parse(&bytes) {
            match &*k {
                "username" => f.0 = v.into_owned(),
                "password" => f.1 = v.into_owned(),
                "redirect" => f.2 = v.into_owned(),
                _ => {}
            }
        }
        f
    };
    let redirect = safe_redirect(&redirect);
    let verdict = authenticate(state, &user, &password).await;
    let secure = forwarded_https(&parts.headers);
    match (verdict, is_json) {
        (Verdict::Ok(stamp), true) => {
            let expires = std::time::SystemTime::now() + state.opts.session_ttl;
            let token = state.key.issue_until(&user, &stamp, expires);
            let at = expires
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            json(
                StatusCode::OK,
                &[],
                &serde_json::json!({"token": token, "expiresAt": at}),
            )
        }
        (Verdict::Ok(stamp), false) => {
            let token = state.key.issue(&user, &stamp, state.opts.session_ttl);
            let cookie = format!(
                "{}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{}",
                state.opts.cookie_name,
                state.opts.session_ttl.as_secs(),
                if secure { "; Secure" } else { "" }
            );
            respond(
                StatusCode::FOUND,
                &[
                    (header::LOCATION, redirect.to_string()),
                    (header::SET_COOKIE, cookie),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
                "",
            )
        }
        (Verdict::Wrong, true) => json(
            StatusCode::UNAUTHORIZED,
            &[(header::WWW_AUTHENTICATE, "Bearer".to_string())],
            &serde_json::json!({"error": "invalid credentials"}),
        ),
        (Verdict::Wrong, false) => page(
            StatusCode::UNAUTHORIZED,
            base,
            redirect,
            &user,
            Some("Wrong user name or password."),
            &[],
        ),
        (Verdict::Limited(wait), is_json) => {
            let secs = wait.as_secs().max(1);
            let retry = [(header::RETRY_AFTER, secs.to_string())];
            let msg = format!("Too many failed attempts; try again in {secs} s.");
            if is_json {
                json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &retry,
                    &serde_json::json!({"error": msg}),
                )
            } else {
                page(
                    StatusCode::TOO_MANY_REQUESTS,
                    base,
                    redirect,
                    &user,
                    Some(&msg),
                    &retry,
                )
            }
        }
        (Verdict::Unavailable, _) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            &[(header::RETRY_AFTER, "1".to_string())],
            "login service busy, try again\n",
        ),
    }
}

enum Verdict {
    /// Right password; the user's password stamp.
    Ok(String),
    Wrong,
    Limited(Duration),
    Unavailable,
}

/// Checks a password off the runtime, within the guessing limits.
async fn authenticate(state: &State, user: &str, password: &str) -> Verdict {
    if !valid_user(user) {
        return Verdict::Wrong;
    }
    if let Some(wait) = state.limiter.blocked(user, Instant::now()) {
        tracing::warn!(user, "login refused: too many failures");
        return Verdict::Limited(wait);
    }
    let Ok(Ok(_slot)) = tokio::time::timeout(SLOT_WAIT, state.slots.acquire()).await else {
        return Verdict::Unavailable;
    };
    let store = state.store.clone();
    let (u, p) = (user.to_string(), password.to_string());
    let stamp = match tokio::task::spawn_blocking(move || store.verify_stamped(&u, &p)).await {
        Ok(Ok(stamp)) => stamp,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "user store unreadable");
            return Verdict::Unavailable;
        }
        Err(e) => {
            tracing::error!(error = %e, "password check failed");
            return Verdict::Unavailable;
        }
    };
    state.limiter.record(user, stamp.is_some(), Instant::now());
    match stamp {
        Some(stamp) => {
            tracing::info!(user, "login");
            Verdict::Ok(stamp)
        }
        None => {
            tracing::info!(user, "login failed");
            Verdict::Wrong
        }
    }
}

/// `POST LOGIN_URL/logout`: clears the cookie (the token itself stays
/// valid until it expires; see docs/auth.md).
fn logout(state: &State, headers: &HeaderMap) -> Resp {
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{}",
        state.opts.cookie_name,
        if forwarded_https(headers) {
            "; Secure"
        } else {
            ""
        }
    );
    if wants_json(headers) {
        return respond(StatusCode::NO_CONTENT, &[(header::SET_COOKIE, cookie)], "");
    }
    respond(
        StatusCode::FOUND,
        &[
            (header::SET_COOKIE, cookie),
            (header::LOCATION, state.opts.login_url.clone()),
        ],
        "",
    )
}

fn page(
    status: StatusCode,
    action: &str,
    redirect: &str,
    user: &str,
    error: Option<&str>,
    extra: &[(HeaderName, String)],
) -> Resp {
    let mut headers = vec![
        (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
        (header::CACHE_CONTROL, "no-store".to_string()),
        (header::X_FRAME_OPTIONS, "DENY".to_string()),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
                .to_string(),
        ),
    ];
    headers.extend(extra.iter().cloned());
    respond(status, &headers, login_form(action, redirect, user, error))
}

fn not_allowed(allow: &str) -> Resp {
    respond(
        StatusCode::METHOD_NOT_ALLOWED,
        &[(header::ALLOW, allow.to_string())],
        "method not allowed\n",
    )
}

fn json(status: StatusCode, extra: &[(HeaderName, String)], body: &serde_json::Value) -> Resp {
    let mut headers = vec![(header::CONTENT_TYPE, "application/json".to_string())];
    headers.extend(extra.iter().cloned());
    respond(status, &headers, format!("{body}\n"))
}

/// A response; a header value that is not a valid header (which the
/// callers never produce) is left out and logged rather than panicking.
fn respond(status: StatusCode, headers: &[(HeaderName, String)], body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    for (name, value) in headers {
        match HeaderValue::from_str(value) {
            Ok(v) => {
                r.headers_mut().append(name.clone(), v);
            }
            Err(_) => tracing::warn!(header = %name, "dropped an invalid header value"),
        }
    }
    r
}

fn user_header() -> HeaderName {
    HeaderName::from_static(USER_HEADER)
}

/// Every value of cookie `name` in the `Cookie` headers.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .collect()
}

/// The token of an `Authorization: Bearer TOKEN` header, if one was sent
/// (even an empty or garbage one: the client is an API client).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let v = v.trim();
            let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
}

/// Whether `Accept` lists `application/json` (with a q above 0).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/json") && !q_zero
        })
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn json_clients_are_told_apart_from_browsers() {
        assert!(wants_json(&headers(&[("accept", "application/json")])));
        assert!(wants_json(&headers(&[(
            "accept",
            "text/plain, Application/JSON;q=0.5"
        )])));
        assert!(!wants_json(&headers(&[(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )])));
        assert!(!wants_json(&headers(&[("accept", "application/json;q=0")])));
        assert!(!wants_json(&headers(&[])));
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer")])),
            Some("")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic YTpi")])),
            None
        );
    }

    #[test]
    fn cookies_are_found_among_others() {
        let h = headers(&[
            ("cookie", "a=1; packlight_session=tok1"),
            ("cookie", "packlight_session=\"tok2\""),
        ]);
        assert_eq!(cookie_values(&h, "packlight_session"), ["tok1", "tok2"]);
        assert!(cookie_values(&h, "other").is_empty());
    }
}
