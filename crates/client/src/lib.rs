//! # packlight-client — talk to a standalone engine
//!
//! The client side of the standalone API (`docs/api.md`), used by the CLI
//! (`apply`, `get`, `delete`) and the console: where the engine is
//! (`--server`, `PACKLIGHT_SERVER`, default `http://127.0.0.1:7400`), its
//! token (`PACKLIGHT_TOKEN`, else `DATA_DIR/token`), and typed calls. The
//! request and response types live in [`types`] and are the ones the
//! engine serves. No engine code is linked here.
#![forbid(unsafe_code)]

pub mod types;

use std::path::Path;

use packlight_model::Diagnostic;
use serde_json::Value;

pub use types::*;

/// The engine's default address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7400";

/// What a call can fail at.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The engine cannot be reached (exit code 3).
    #[error("cannot reach the packlight engine at {server}: {message}")]
    Unreachable {
        /// The address tried.
        server: String,
        /// Why.
        message: String,
    },
    /// The engine answered with an error status.
    #[error("{status}: {}", .diagnostics.first().map(|d| d.message.as_str()).unwrap_or("request failed"))]
    Status {
        /// HTTP status.
        status: u16,
        /// Its diagnostics.
        diagnostics: Vec<Diagnostic>,
    },
    /// A response that is not what the API documents.
    #[error("unexpected response from the engine: {0}")]
    Decode(String),
}

/// A change the engine refused (422), or accepted.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Accepted.
    Accepted(T),
    /// Refused with diagnostics; nothing changed.
    Refused(Vec<Diagnostic>),
}

/// A client of one engine.
#[derive(Clone, Debug)]
pub struct Client {
    server: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of `server` (`http://host:port`) with `token`.
    pub fn new(server: &str, token: Option<String>) -> Self {
        Client {
            server: server.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
        }
    }

    /// The engine named by `server`, else `PACKLIGHT_SERVER`, else the
    /// default; the token from `PACKLIGHT_TOKEN`, else `data_dir/token`.
    pub fn from_env(server: Option<&str>, data_dir: &Path) -> Self {
        let server = server
            .map(str::to_string)
            .or_else(|| std::env::var("PACKLIGHT_SERVER").ok())
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let token = std::env::var("PACKLIGHT_TOKEN").ok().or_else(|| {
            std::fs::read_to_string(data_dir.join("token"))
                .ok()
                .map(|t| t.trim().to_string())
        });
        Client::new(&server, token)
    }

    /// The engine's address.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        req.send().await.map_err(|e| ClientError::Unreachable {
            server: self.server.clone(),
            message: e.to_string(),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if !status.is_success() {
            let diagnostics = serde_json::from_slice::<Refusal>(&bytes)
                .map(|r| r.diagnostics)
                .unwrap_or_else(|_| {
                    vec![Diagnostic::error(
                        String::from_utf8_lossy(&bytes).into_owned(),
                    )]
                });
            return Err(ClientError::Status {
                status: status.as_u16(),
                diagnostics,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Turns a 422 into `Outcome::Refused`.
    fn outcome<T>(r: Result<T, ClientError>) -> Result<Outcome<T>, ClientError> {
        match r {
            Ok(v) => Ok(Outcome::Accepted(v)),
            Err(ClientError::Status {
                status: 422,
                diagnostics,
            }) => Ok(Outcome::Refused(diagnostics)),
            Err(e) => Err(e),
        }
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<Value, ClientError> {
        Self::json(self.send(self.http.get(self.url("/version"))).await?).await
    }

    /// `POST /apply`: multi-document YAML or JSON; `file` names the text in
    /// diagnostics; `namespace` applies where none is given.
    pub async fn apply(
        &self,
        text: &str,
        file: Option<&str>,
        namespace: Option<&str>,
        dry_run: bool,
    ) -> Result<Outcome<Applied>, ClientError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if dry_run {
            query.push(("dryRun", "true"));
        }
        if let Some(f) = file {
            query.push(("file", f));
        }
        if let Some(n) = namespace {
            query.push(("namespace", n));
        }
        let req = self
            .http
            .post(self.url("/apply"))
            .query(&query)
            .header("content-type", "application/yaml")
            .body(text.to_string());
        Self::outcome(Self::json(self.send(req).await?).await)
    }

    fn resource_path(plural: &str, namespace: Option<&str>, name: Option<&str>) -> String {
        let base = "/apis/packlight.dev/v1alpha1";
        match (namespace, name) {
            (Some(ns), Some(n)) => format!("{base}/namespaces/{ns}/{plural}/{n}"),
            (Some(ns), None) => format!("{base}/namespaces/{ns}/{plural}"),
            (None, _) => format!("{base}/{plural}"),
        }
    }

    /// One object with its status; `None` when there is none.
    pub async fn get(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ClientError> {
        let path = Self::resource_path(plural, Some(namespace), Some(name));
        match Self::json(self.send(self.http.get(self.url(&path))).await?).await {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Objects of one kind (one namespace, or all).
    pub async fn list(
        &self,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ClientError> {
        let path = Self::resource_path(plural, namespace, None);
        let v: Value = Self::json(self.send(self.http.get(self.url(&path))).await?).await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// Deletes one object; `Accepted(false)` when there was none.
    pub async fn delete(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Outcome<bool>, ClientError> {
        let path = Self::resource_path(plural, Some(namespace), Some(name));
        let r: Result<Value, _> =
            Self::json(self.send(self.http.delete(self.url(&path))).await?).await;
        match r {
            Ok(_) => Ok(Outcome::Accepted(true)),
            Err(ClientError::Status { status: 404, .. }) => Ok(Outcome::Accepted(false)),
            Err(e) => Self::outcome(Err(e)),
        }
    }

    /// `GET /instances`.
    pub async fn instances(&self) -> Result<Vec<InstanceInfo>, ClientError> {
        Self::json(self.send(self.http.get(self.url("/instances"))).await?).await
    }

    /// `GET /traffic`.
    pub async fn traffic(&self) -> Result<Vec<VersionTraffic>, ClientError> {
        Self::json(self.send(self.http.get(self.url("/traffic"))).await?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural_of("Route"), Some("routes"));
        assert_eq!(plural_of("route"), Some("routes"));
        assert_eq!(plural_of("egresspolicies"), Some("egresspolicies"));
        assert_eq!(plural_of("msvc"), Some("microservices"));
        assert_eq!(plural_of("pods"), None);
        assert_eq!(kind_of("meshpolicies"), Some("MeshPolicy"));
    }

    #[tokio::test]
    async fn unreachable_is_its_own_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), None);
        assert!(matches!(
            c.version().await,
            Err(ClientError::Unreachable { .. })
        ));
    }
}
