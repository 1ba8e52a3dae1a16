//! The console's access token (a cookie after the first visit) and its
//! CSRF token.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use crate::{Console, ConsoleError};

/// The cookie holding the access token.
pub const COOKIE: &str = "packlight_console";

/// 24 random bytes, hex.
pub fn random_hex() -> Result<String, ConsoleError> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| ConsoleError::Random(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Compares in constant time (`subtle`; only the lengths leak).
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The access token a request carries: the cookie, or `Authorization:
/// Bearer` (for scripts).
pub fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(v.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Lets a request through when it carries the access token.
pub async fn require_token(
    State(console): State<Arc<Console>>,
    req: Request,
    next: Next,
) -> Response {
    match presented(req.headers()) {
        Some(t) if same(&t, &console.token) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "packlight console: open the URL with ?token= that `packlight console` printed\n",
        )
            .into_response(),
    }
}

/// Whether a POST carries the CSRF token (form field `csrf` or header
/// `x-csrf-token`).
pub fn csrf_ok(console: &Console, headers: &HeaderMap, form: &[(String, String)]) -> bool {
    let from_header = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from_form = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.clone());
    from_header
        .or(from_form)
        .is_some_and(|t| same(&t, &console.csrf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_and_bearer_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=b; packlight_console=xyz".parse().unwrap(),
        );
        assert_eq!(presented(&h).as_deref(), Some("xyz"));
        h.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(presented(&h).as_deref(), Some("tok"));
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert_eq!(random_hex().unwrap().len(), 48);
    }
}
