//! The behaviour table's format (docs/behaviour.md): one YAML file per
//! group of cases, parsed strictly (unknown fields are errors, as
//! everywhere in packlight).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One file of `tests/behaviour/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaseFile {
    /// What the file shows.
    pub name: String,
    /// The resources the engine is started with.
    pub resources: Resources,
    /// Login users created before the engine starts.
    #[serde(default)]
    pub users: Vec<User>,
    /// Engines the whole file applies to (default: all).
    #[serde(default)]
    pub engines: Option<Vec<Engine>>,
    /// The cases, run in order against one engine.
    pub cases: Vec<Case>,
}

/// Where the resources come from: an example directory, inline text, or
/// both plus `extra` documents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// `examples/NAME/` (every `*.yaml` in it).
    #[serde(default)]
    pub example: Option<String>,
    /// Multi-document YAML.
    #[serde(default)]
    pub inline: Option<String>,
}

/// A login user (`packlight user add NAME --password-stdin`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
}

/// The engines a case can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Standalone,
    Kubernetes,
}

/// Who sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// To the ingress gateway's port.
    Ingress,
    /// Straight to an instance address (`to`), without a mesh certificate.
    Outside,
    /// The engine's API with its token: `apply` (POST /apply) or a GET of
    /// `request.path`.
    Api,
    /// From inside a workload (`ns/service` or `service`).
    Workload {
        namespace: Option<String>,
        service: String,
    },
}

impl<'de> Deserialize<'de> for From {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "ingress" => From::Ingress,
            "outside" => From::Outside,
            "api" => From::Api,
            other => match other.split_once('/') {
                Some((ns, svc)) if !ns.is_empty() && !svc.is_empty() => From::Workload {
                    namespace: Some(ns.to_owned()),
                    service: svc.to_owned(),
                },
                Some(_) => {
                    return Err(serde::de::Error::custom(format!(
                        "from: {other:?} is not ingress, outside, api, SERVICE or NS/SERVICE"
                    )));
                }
                None => From::Workload {
                    namespace: None,
                    service: other.to_owned(),
                },
            },
        })
    }
}

/// How a workload sends: through its sidecar as an HTTP proxy (`proxy`),
/// or by asking its demo-app to call (`call`, `GET /call?url=...`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    #[default]
    Proxy,
    Call,
}

/// Which address of an instance `from: outside` reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Port {
    /// The app itself (bypassing Envoy).
    #[default]
    App,
    /// The sidecar's inbound (mTLS) port.
    Inbound,
}

/// The instance `from: outside` reaches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `service` or `ns/service`.
    pub service: String,
    /// A version (default: the first instance of the service).
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub port: Port,
}

/// A login step: `POST loginUrl` at the ingress; the session is kept
/// under `session` (default: the user's name) for later cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Login {
    pub user: String,
    pub password: String,
    /// The IngressPolicy's `loginUrl` (default `/login`).
    #[serde(default = "default_login_url")]
    pub url: String,
    /// `bearer` (JSON login, token) or `cookie` (form login, cookie).
    #[serde(default)]
    pub mode: LoginMode,
    #[serde(default)]
    pub session: Option<String>,
    /// The Host header (default `localhost`).
    #[serde(default)]
    pub host: Option<String>,
}

fn default_login_url() -> String {
    "/login".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginMode {
    #[default]
    Bearer,
    Cookie,
}

/// One case: a request sent `count` times, or a login step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    pub name: String,
    pub from: From,
    #[serde(default)]
    pub via: Via,
    /// For `from: outside`.
    #[serde(default)]
    pub to: Option<Target>,
    /// A login step instead of a request (`from: ingress`).
    #[serde(default)]
    pub login: Option<Login>,
    /// Resources to `POST /apply` (`from: api`); after a 2xx answer the
    /// runner waits until every instance is ready again (ACKed).
    #[serde(default)]
    pub apply: Option<String>,
    /// With `apply`: `?dryRun=true`.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub request: Request,
    /// A session from an earlier login step.
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default)]
    pub engines: Option<Vec<Engine>>,
    /// Why this case's expectation differs between engines.
    #[serde(default)]
    pub differs: Option<String>,
    /// Seconds to wait before the case (e.g. for a rate limit's token
    /// bucket to refill after the cases before it); at most 10.
    #[serde(default)]
    pub pause_seconds: Option<f64>,
    /// A known defect: the case is expected to fail, for this reason. It
    /// is reported as KNOWN, and as a failure once it passes (remove the
    /// field then).
    #[serde(default)]
    pub known_failure: Option<String>,
}

fn one() -> u32 {
    1
}

/// The request of a case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Request {
    /// Default `GET`; `CONNECT` opens a tunnel to `authority`.
    #[serde(default)]
    pub method: Option<String>,
    /// Absolute URL (workloads: the mesh name, e.g. `http://httpbin:8000/get`).
    #[serde(default)]
    pub url: Option<String>,
    /// Path with query (ingress and outside).
    #[serde(default)]
    pub path: Option<String>,
    /// The Host header at the ingress (default `localhost`).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    /// `CONNECT` target, `host:port`.
    #[serde(default)]
    pub authority: Option<String>,
    /// After a `CONNECT` answered 200: a GET of this path through the tunnel.
    #[serde(default)]
    pub tunnel: Option<String>,
}

/// What every response (or the set of them) must show.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub status_in: Option<Vec<u16>>,
    /// Minimum number of responses with a status (e.g. `{429: 1}`).
    #[serde(default)]
    pub at_least: BTreeMap<u16, u32>,
    /// The request itself fails (refused, reset, closed, no HTTP answer).
    #[serde(default)]
    pub fails: bool,
    /// Denied either way: a failure or a non-2xx status.
    #[serde(default)]
    pub refused: bool,
    #[serde(default)]
    pub body_contains: Vec<String>,
    #[serde(default)]
    pub body_not_contains: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderExpect>,
    /// Every response came from this version (body `version`).
    #[serde(default)]
    pub version: Option<String>,
    /// Only these versions answer.
    #[serde(default)]
    pub versions_in: Option<Vec<String>>,
    /// Percent per version; versions not named must not answer.
    #[serde(default)]
    pub versions: Option<BTreeMap<String, f64>>,
    /// Points of tolerance for `versions` (default 4).
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// `x-packlight-version` equals the body's `version` on every response.
    #[serde(default)]
    pub version_header_matches_body: bool,
}

/// One header's expectation (names are matched case-insensitively).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderExpect {
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
}

impl CaseFile {
    /// Parses a case file's text (after placeholder substitution) and
    /// checks what serde cannot.
    pub fn parse(text: &str) -> Result<CaseFile, String> {
        let file: CaseFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        file.check()?;
        Ok(file)
    }

    fn check(&self) -> Result<(), String> {
        match (&self.resources.example, &self.resources.inline) {
            (None, None) => return Err("resources: give example or inline".into()),
            (Some(_), Some(_)) => {
                return Err("resources: give example or inline, not both".into());
            }
            _ => {}
        }
        for c in &self.cases {
            let at = |m: &str| format!("case {:?}: {m}", c.name);
            if c.pause_seconds.is_some_and(|p| !(0.0..=10.0).contains(&p)) {
                return Err(at("pauseSeconds must be 0..=10"));
            }
            if c.count == 0 || c.count > 20_000 {
                return Err(at("count must be 1..=20000"));
            }
            if c.login.is_some() {
                if c.from != From::Ingress {
                    return Err(at("a login step is from: ingress"));
                }
                continue;
            }
            if c.from == From::Api {
                if c.apply.is_none() && c.request.path.is_none() {
                    return Err(at("from: api needs apply or request.path"));
                }
                if c.count != 1 && c.apply.is_some() {
                    return Err(at("an apply is sent once (count 1)"));
                }
                continue;
            }
            if c.apply.is_some() {
                return Err(at("apply is sent from: api"));
            }
            let connect = c.request.method.as_deref() == Some("CONNECT");
            match &c.from {
                From::Ingress | From::Outside if c.request.path.is_none() => {
                    return Err(at("request.path is required"));
                }
                From::Outside if c.to.is_none() => return Err(at("from: outside needs to")),
                From::Workload { .. } if connect && c.request.authority.is_none() => {
                    return Err(at("CONNECT needs request.authority"));
                }
                From::Workload { .. } if !connect && c.request.url.is_none() => {
                    return Err(at("request.url is required"));
                }
                _ => {}
            }
            if connect && (c.via == Via::Call || !matches!(c.from, From::Workload { .. })) {
                return Err(at("CONNECT is sent by a workload through its proxy"));
            }
            if let Some(v) = &c.expect.versions {
                let sum: f64 = v.values().sum();
                if (sum - 100.0).abs() > 1e-9 {
                    return Err(at(&format!("expect.versions sum to {sum}, not 100")));
                }
            }
        }
        Ok(())
    }

    /// Whether the file or case applies to `engine`.
    pub fn applies(engines: &Option<Vec<Engine>>, engine: Engine) -> bool {
        engines.as_ref().is_none_or(|e| e.contains(&engine))
    }
}

/// Replaces `${NAME}` placeholders; an unknown one is an error.
pub fn substitute(text: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed placeholder near {:?}", &rest[start..]));
        };
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(format!("unknown placeholder ${{{name}}}")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The case files, sorted by name.
pub fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"));
    files.sort();
    files
}
