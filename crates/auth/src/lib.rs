//! The login service: an Envoy ext_authz **HTTP** server with a login page,
//! signed sessions and a built-in user store (DESIGN.md, IngressPolicy
//! `login`; `docs/auth.md` for users).
//!
//! What flows in: Envoy's check requests (the client's method and path,
//! with the `cookie`, `authorization`, `accept` and `x-forwarded-proto`
//! headers the gateway forwards) and, on the IngressPolicy's `loginUrl`,
//! the browser's or API client's own login requests. What flows out:
//! `200` + `x-packlight-user` (allow), `302` to the login page (browser),
//! `401` JSON (API), the login page, session cookies and bearer tokens.
//!
//! State lives in the data directory: `users.json` (argon2id PHC hashes,
//! see [`UserStore`]) and `auth-key` (the HMAC-SHA256 session signing key,
//! see [`SessionKey`]). The service never builds Envoy or Istio objects;
//! the translators (`packlight-xds`, `packlight-istio`) point the gateway
//! at it. No input makes it panic; slow password hashing never runs on the
//! async runtime.

#![forbid(unsafe_code)]

mod limit;
mod page;
mod server;
mod session;
mod store;

use std::path::PathBuf;
use std::time::Duration;

pub use server::serve;
pub use session::{Session, SessionKey};
pub use store::UserStore;

/// The default session cookie name.
pub const COOKIE_NAME: &str = "packlight_session";
/// The header carrying the authenticated user to the upstream on allow.
pub const USER_HEADER: &str = "x-packlight-user";

/// The login service's errors.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being read or written.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A state file exists but cannot be used.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong with it and what to do.
        message: String,
    },
    /// A user name outside `[A-Za-z0-9._@-]{1,64}` (starting with an
    /// alphanumeric character).
    #[error(
        "invalid user name {0:?}: use 1-64 characters of letters, digits, '.', '_', '@', '-', starting with a letter or digit"
    )]
    InvalidUser(String),
    /// An empty or over-long password.
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    /// Hashing failed (argon2).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// [`AuthOptions`] that cannot work.
    #[error("invalid login service options: {0}")]
    Options(String),
    /// A blocking task could not finish.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl AuthError {
    fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AuthError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// How the login service runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthOptions {
    /// Where `users.json` and `auth-key` live (the engine's `--data-dir`).
    pub data_dir: PathBuf,
    /// How long a session cookie or bearer token stays valid.
    pub session_ttl: Duration,
    /// The session cookie's name (default [`COOKIE_NAME`]).
    pub cookie_name: String,
    /// The login page's path (the IngressPolicy's `loginUrl`, default
    /// `/login`). Requests on it and below it are login requests; every
    /// other request is an authorization check.
    pub login_url: String,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            data_dir: PathBuf::from("."),
            session_ttl: Duration::from_secs(12 * 3600),
            cookie_name: COOKIE_NAME.to_string(),
            login_url: "/login".to_string(),
        }
    }
}

impl AuthOptions {
    /// Refuses options the service cannot honour, saying which.
    pub fn validate(&self) -> Result<(), AuthError> {
        let url = &self.login_url;
        if !url.starts_with('/') || url.starts_with("//") || url == "/" || url.ends_with('/') {
            return Err(AuthError::Options(format!(
                "login_url {url:?} must be an absolute path like /login (not / and no trailing /)"
            )));
        }
        if url
            .bytes()
            .any(|b| !b.is_ascii_graphic() || matches!(b, b'?' | b'#' | b'"' | b'<' | b'>' | b'\\'))
        {
            return Err(AuthError::Options(format!(
                "login_url {url:?} must be a plain path (no query, fragment, quotes or spaces)"
            )));
        }
        let name_ok = !self.cookie_name.is_empty()
            && self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            return Err(AuthError::Options(format!(
                "cookie_name {:?} must be letters, digits, '_', '-' or '.'",
                self.cookie_name
            )));
        }
        if self.session_ttl.is_zero() {
            return Err(AuthError::Options(
                "session_ttl must be longer than zero".to_string(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(AuthOptions::default().validate().is_ok());
        for bad in [
            "", "/", "login", "//evil", "/login/", "/a b", "/x?y", "/\"x",
        ] {
            let o = AuthOptions {
                login_url: bad.to_string(),
                ..AuthOptions::default()
            };
            assert!(o.validate().is_err(), "{bad:?}");
        }
        let o = AuthOptions {
            cookie_name: "a;b".to_string(),
            ..AuthOptions::default()
        };
        assert!(o.validate().is_err());
        let o = AuthOptions {
            session_ttl: Duration::ZERO,
            ..AuthOptions::default()
        };
        assert!(o.validate().is_err());
    }
}
