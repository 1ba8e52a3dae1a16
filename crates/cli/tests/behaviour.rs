//! # The behaviour table on the standalone engine
//!
//! Runs every case file of `tests/behaviour/` (format: docs/behaviour.md)
//! against `packlight up` with real Envoy: one engine per file, on
//! ephemeral ports, cases in order; every failed expectation of every case
//! is reported, then the test fails if any case failed.
//! `PACKLIGHT_BEHAVIOUR=routing` runs only files whose name contains it.

#[path = "behaviour/check.rs"]
mod check;
#[path = "behaviour/client.rs"]
mod client;
#[path = "behaviour/engine.rs"]
mod engine;
#[path = "behaviour/report.rs"]
mod report;
#[path = "behaviour/table.rs"]
mod table;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use check::{Outcome, Tally};
use engine::Up;
use report::{CaseReport, Verdict, form_escape};
use table::{Case, CaseFile, Engine, From, LoginMode, Port, Via};

/// Time budget of one case's request loop.
const CASE_BUDGET: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A local "outside" HTTP server on 127.0.0.2 (a demo-app reporting
/// service `egress`), for whitelisted egress.
async fn egress_server() -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .map_err(|e| {
            format!("cannot bind 127.0.0.2 (loopback alias needed for egress cases): {e}")
        })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let identity = packlight_demo_app::Identity {
        service: "egress".to_owned(),
        version: "0.0".to_owned(),
    };
    tokio::spawn(packlight_demo_app::serve(listener, identity, async {
        let _ = rx.await;
    }));
    Ok((addr, tx))
}

/// Writes the file's resources into `dir`.
fn write_resources(file: &CaseFile, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    if let Some(name) = &file.resources.example {
        let src = root().join("examples").join(name);
        let entries = std::fs::read_dir(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            {
                std::fs::copy(&p, dir.join(e.file_name())).map_err(|e| e.to_string())?;
            }
        }
    }
    if let Some(text) = &file.resources.inline {
        std::fs::write(dir.join("inline.yaml"), text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs one case file; a problem before any case ran fails all its cases.
async fn run_file(path: &Path) -> Vec<CaseReport> {
    let fname = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail_all = |cases: &[String], msg: String| -> Vec<CaseReport> {
        let names = if cases.is_empty() {
            vec!["(file)".to_owned()]
        } else {
            cases.to_vec()
        };
        names
            .into_iter()
            .map(|c| CaseReport::failed(&fname, &c, msg.clone()))
            .collect()
    };
    let raw = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return fail_all(&[], e.to_string()),
    };
    let (egress, _stop_egress) = match egress_server().await {
        Ok(x) => x,
        Err(e) => return fail_all(&[], e),
    };
    let ingress_port = engine::free_port();
    let vars: BTreeMap<&str, String> = BTreeMap::from([
        ("EGRESS_PORT", egress.port().to_string()),
        ("EGRESS", egress.to_string()),
        ("EGRESS_HOST", egress.ip().to_string()),
        ("INGRESS_PORT", ingress_port.to_string()),
        ("INGRESS", format!("127.0.0.1:{ingress_port}")),
        ("INGRESS_HOST", format!("localhost:{ingress_port}")),
    ]);
    let file = match table::substitute(&raw, &vars).and_then(|t| CaseFile::parse(&t)) {
        Ok(f) => f,
        Err(e) => return fail_all(&[], format!("cannot parse: {e}")),
    };
    let names: Vec<String> = file.cases.iter().map(|c| c.name.clone()).collect();
    if !CaseFile::applies(&file.engines, Engine::Standalone) {
        return names
            .into_iter()
            .map(|c| CaseReport {
                file: fname.clone(),
                case: c,
                verdict: Verdict::Skipped("not for standalone".into()),
                differs: None,
            })
            .collect();
    }
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return fail_all(&names, e.to_string()),
    };
    let resources = tmp.path().join("resources");
    if let Err(e) = write_resources(&file, &resources) {
        return fail_all(&names, e);
    }
    eprintln!("behaviour: {fname} ({}): starting packlight up", file.name);
    let up = match Up::start(
        &resources,
        tmp.path().join("data"),
        ingress_port,
        &file.users,
    )
    .await
    {
        Ok(up) => up,
        Err(e) => return fail_all(&names, format!("packlight up: {e}")),
    };
    let mut run = Run {
        up: &up,
        sessions: BTreeMap::new(),
        ingress_port,
    };
    let mut out = Vec::new();
    for case in &file.cases {
        let verdict = if !CaseFile::applies(&case.engines, Engine::Standalone) {
            Verdict::Skipped("not for standalone".into())
        } else {
            if let Some(p) = case.pause_seconds {
                tokio::time::sleep(Duration::from_secs_f64(p)).await;
            }
            report::verdict(case, run.case(case).await)
        };
        report::record(&mut out, "behaviour", &fname, case, verdict);
    }
    let tail = up.stderr_tail();
    if out.iter().any(|r| matches!(r.verdict, Verdict::Fail(_))) {
        eprintln!("--- {fname}: packlight up stderr (tail) ---\n{tail}");
    }
    if let Some(e) = up.stop().await {
        out.push(CaseReport::failed(&fname, "(stop)", e));
    }
    out
}

/// State shared by the cases of one file.
struct Run<'a> {
    up: &'a Up,
    /// Session name -> the header that carries it.
    sessions: BTreeMap<String, (String, String)>,
    ingress_port: u16,
}

impl Run<'_> {
    fn default_host(&self) -> String {
        format!("localhost:{}", self.ingress_port)
    }

    async fn case(&mut self, case: &Case) -> Vec<String> {
        if let Some(login) = &case.login {
            return match self.login(login).await {
                Ok(()) => Vec::new(),
                Err(e) => {
                    let mut v = vec![e];
                    v.extend(self.up.warnings.iter().cloned());
                    v
                }
            };
        }
        match self.requests(case).await {
            Ok(problems) => problems,
            Err(e) => vec![e],
        }
    }

    async fn login(&mut self, login: &table::Login) -> Result<(), String> {
        let host = login.host.clone().unwrap_or_else(|| self.default_host());
        let url = format!("http://{}{}", self.up.ingress, login.url);
        let http = client::client(None)?;
        let b = http
            .post(&url)
            .header("host", &host)
            .header("origin", format!("http://{host}"));
        let session = login.session.clone().unwrap_or_else(|| login.user.clone());
        match login.mode {
            LoginMode::Bearer => {
                let body = serde_json::json!({"username": login.user, "password": login.password});
                let resp = b
                    .header("content-type", "application/json")
                    .header("accept", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| format!("login POST {url}: {e}"))?;
                let status = resp.status();
                let text = resp.text().await.map_err(|e| e.to_string())?;
                let token = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("token")?.as_str().map(str::to_owned));
                match (status.as_u16(), token) {
                    (200, Some(t)) => {
                        self.sessions
                            .insert(session, ("authorization".into(), format!("Bearer {t}")));
                        Ok(())
                    }
                    _ => Err(format!("login as {} answered {status}: {text}", login.user)),
                }
            }
            LoginMode::Cookie => {
                let form = format!(
                    "username={}&password={}",
                    form_escape(&login.user),
                    form_escape(&login.password)
                );
                let resp = b
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
                    .send()
                    .await
                    .map_err(|e| format!("login POST {url}: {e}"))?;
                let status = resp.status().as_u16();
                let cookie = resp
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(|v| v.split(';').next())
                    .map(str::to_owned)
                    .next();
                match (status, cookie) {
                    (302 | 303 | 200, Some(c)) => {
                        self.sessions.insert(session, ("cookie".into(), c));
                        Ok(())
                    }
                    (s, c) => Err(format!(
                        "form login as {} answered {s}, cookie {c:?}",
                        login.user
                    )),
                }
            }
        }
    }

    async fn requests(&self, case: &Case) -> Result<Vec<String>, String> {
        let req = &case.request;
        let mut extra: Vec<(String, String)> = Vec::new();
        if let Some(s) = &case.session {
            let h = self.sessions.get(s).ok_or_else(|| {
                let mut m = format!("no session {s:?} (its login step failed or is missing)");
                for w in &self.up.warnings {
                    let _ = write!(m, "; {w}");
                }
                m
            })?;
            extra.push(h.clone());
        }
        enum Sender {
            Http(reqwest::Client, String),
            Call(reqwest::Client, String),
            Connect(String, String),
        }
        let sender = match &case.from {
            From::Ingress => {
                let host = req.host.clone().unwrap_or_else(|| self.default_host());
                extra.push(("host".into(), host));
                let path = req.path.as_deref().unwrap_or("/");
                Sender::Http(
                    client::client(None)?,
                    format!("http://{}{path}", self.up.ingress),
                )
            }
            From::Api => {
                if let Some(text) = &case.apply {
                    return self.apply(case, text).await;
                }
                extra.push(("authorization".into(), format!("Bearer {}", self.up.token)));
                let path = req.path.as_deref().unwrap_or("/");
                Sender::Http(
                    client::client(None)?,
                    format!("http://{}{path}", self.up.api),
                )
            }
            From::Outside => {
                let to = case.to.as_ref().ok_or("from: outside needs to")?;
                let (ns, svc) = split_service(&to.service);
                let inst = self
                    .up
                    .find(ns, svc, to.version.as_deref())
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("no instance of {} {:?}", to.service, to.version))?;
                let addr = match to.port {
                    Port::App => inst.app.clone(),
                    Port::Inbound => inst.inbound.clone(),
                }
                .ok_or_else(|| {
                    format!("instance of {} has no {:?} address", to.service, to.port)
                })?;
                let path = req.path.as_deref().unwrap_or("/");
                Sender::Http(client::client(None)?, format!("http://{addr}{path}"))
            }
            From::Workload { namespace, service } => {
                let inst = self
                    .up
                    .find(namespace.as_deref(), service, None)
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("no instance of workload {service}"))?;
                let connect = req.method.as_deref() == Some("CONNECT");
                match case.via {
                    _ if connect => Sender::Connect(
                        inst.outbound.clone().ok_or("workload without outbound")?,
                        req.authority.clone().unwrap_or_default(),
                    ),
                    Via::Proxy => {
                        let outbound = inst
                            .outbound
                            .as_deref()
                            .ok_or("workload without outbound")?;
                        Sender::Http(
                            client::client(Some(outbound))?,
                            req.url.clone().unwrap_or_default(),
                        )
                    }
                    Via::Call => Sender::Call(
                        client::client(None)?,
                        inst.app.clone().ok_or("workload without app address")?,
                    ),
                }
            }
        };
        let mut tally = Tally::default();
        let deadline = tokio::time::Instant::now() + CASE_BUDGET;
        for _ in 0..case.count {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            let outcome: Outcome = match &sender {
                Sender::Http(c, url) => client::send(c, url, req, &extra).await?,
                Sender::Call(c, app) => client::send_via_call(c, app, req).await?,
                Sender::Connect(proxy, authority) => {
                    client::connect(proxy, authority, req.tunnel.as_deref()).await
                }
            };
            tally.add(&case.expect, &outcome);
        }
        Ok(tally.verdict(&case.expect, case.count))
    }
}

impl Run<'_> {
    /// `POST /apply[?dryRun=true]`; after a 2xx real apply, waits until
    /// every instance has ACKed again.
    async fn apply(&self, case: &Case, text: &str) -> Result<Vec<String>, String> {
        let q = if case.dry_run { "?dryRun=true" } else { "" };
        let url = format!("http://{}/apply{q}", self.up.api);
        let http = client::client(None)?;
        let resp = http
            .post(&url)
            .bearer_auth(&self.up.token)
            .header("content-type", "application/yaml")
            .body(text.to_owned())
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        let mut tally = Tally::default();
        tally.add(
            &case.expect,
            &Outcome::Response {
                status,
                headers,
                body,
            },
        );
        let mut problems = tally.verdict(&case.expect, 1);
        if (200..300).contains(&status) && !case.dry_run {
            // Let the engine start pushing, then wait for every ACK.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Err(e) = self.up.wait_ready().await {
                problems.push(format!("after the apply: {e}"));
            }
        }
        Ok(problems)
    }
}

fn split_service(s: &str) -> (Option<&str>, &str) {
    match s.split_once('/') {
        Some((ns, svc)) => (Some(ns), svc),
        None => (None, s),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_table_standalone() {
    let filter = std::env::var("PACKLIGHT_BEHAVIOUR").unwrap_or_default();
    let files: Vec<PathBuf> = table::case_files(&root().join("tests/behaviour"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&filter))
        })
        .collect();
    assert!(
        !files.is_empty(),
        "no case files in tests/behaviour matching {filter:?}"
    );
    let mut reports = Vec::new();
    for f in &files {
        reports.extend(run_file(f).await);
    }
    report::conclude(&reports, "standalone");
}

/// The format and the statistics, without an engine.
mod unit {
    use super::check::{Outcome, Tally, distribution_problems};
    use super::table::{self, CaseFile, From, Via};
    use std::collections::BTreeMap;

    #[test]
    fn every_case_file_parses() {
        let vars = BTreeMap::from([
            ("EGRESS_PORT", "1".to_owned()),
            ("EGRESS", "127.0.0.2:1".to_owned()),
            ("EGRESS_HOST", "127.0.0.2".to_owned()),
            ("INGRESS_PORT", "2".to_owned()),
            ("INGRESS", "127.0.0.1:2".to_owned()),
            ("INGRESS_HOST", "localhost:2".to_owned()),
        ]);
        let files = table::case_files(&super::root().join("tests/behaviour"));
        assert!(!files.is_empty());
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let text =
                table::substitute(&text, &vars).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let file = CaseFile::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(!file.cases.is_empty(), "{}", f.display());
            if let Some(ex) = &file.resources.example {
                assert!(
                    super::root().join("examples").join(ex).is_dir(),
                    "{}: example {ex}",
                    f.display()
                );
            }
        }
    }

    #[test]
    fn parses_from_and_rejects_bad_files() {
        let ok = r#"
name: t
resources: {inline: "x"}
cases:
- {name: a, from: demo/sleep, via: call, request: {url: "http://httpbin:8000/"}, expect: {status: 200}}
- {name: b, from: ingress, request: {path: /x}, count: 3, expect: {versions: {"1.0": 80, "1.1": 20}}}
- {name: c, from: sleep, request: {method: CONNECT, authority: "a:443"}, expect: {refused: true}}
- {name: d, from: api, apply: "kind: Route", dryRun: true, expect: {status: 422}}
"#;
        let f = CaseFile::parse(ok).unwrap();
        assert_eq!(
            f.cases[0].from,
            From::Workload {
                namespace: Some("demo".into()),
                service: "sleep".into()
            }
        );
        assert_eq!(f.cases[0].via, Via::Call);
        assert_eq!(f.cases[1].from, From::Ingress);
        assert_eq!(f.cases[1].count, 3);
        assert_eq!(f.cases[3].from, From::Api);
        assert!(f.cases[3].dry_run);
        for (bad, why) in [
            ("name: t\nresources: {}\ncases: []\n", "example or inline"),
            (
                "name: t\nresources: {inline: x}\ncases: [{name: a, from: ingress, expect: {}}]\n",
                "path",
            ),
            (
                "name: t\nresources: {inline: x}\ncases: [{name: a, from: ingress, request: {path: /}, expect: {versions: {'1.0': 50}}}]\n",
                "sum",
            ),
            (
                "name: t\nresources: {inline: x}\ncases: [{name: a, from: ingress, request: {path: /}, expect: {stauts: 200}}]\n",
                "unknown field",
            ),
            (
                "name: t\nresources: {inline: x}\ncases: [{name: a, from: /x, request: {url: u}}]\n",
                "NS/SERVICE",
            ),
            (
                "name: t\nresources: {inline: x}\ncases: [{name: a, from: ingress, request: {path: /, method: CONNECT, authority: a}}]\n",
                "CONNECT",
            ),
            (
                "name: t\nresources: {inline: x}\ncases: [{name: a, from: api, apply: x, count: 2}]\n",
                "once",
            ),
            (
                "name: t\nresources: {inline: x}\ncases: [{name: a, from: sleep, apply: x, request: {url: u}}]\n",
                "from: api",
            ),
        ] {
            let e = CaseFile::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn substitutes_placeholders() {
        let vars = BTreeMap::from([("A", "1".to_owned())]);
        assert_eq!(table::substitute("x${A}y${A}", &vars).unwrap(), "x1y1");
        assert!(
            table::substitute("${B}", &vars)
                .unwrap_err()
                .contains("unknown")
        );
        assert!(
            table::substitute("${A", &vars)
                .unwrap_err()
                .contains("unclosed")
        );
    }

    fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn distribution_within_tolerance() {
        let want: BTreeMap<String, f64> =
            [("1.0".to_string(), 80.0), ("1.1".to_string(), 20.0)].into();
        assert!(
            distribution_problems(&counts(&[("1.0", 1610), ("1.1", 390)]), &want, 4.0).is_empty()
        );
        // 76% is the edge, 75.9% is out.
        assert!(
            distribution_problems(&counts(&[("1.0", 1520), ("1.1", 480)]), &want, 4.0).is_empty()
        );
        let p = distribution_problems(&counts(&[("1.0", 1518), ("1.1", 482)]), &want, 4.0);
        assert_eq!(p.len(), 2, "{p:?}");
        // An unexpected version is reported even when the rest is fine.
        let p = distribution_problems(
            &counts(&[("1.0", 800), ("1.1", 199), ("2.0", 1)]),
            &want,
            4.0,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("2.0"));
        assert_eq!(distribution_problems(&BTreeMap::new(), &want, 4.0).len(), 1);
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Outcome {
        Outcome::Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_owned(),
        }
    }

    fn expect(yaml: &str) -> table::Expect {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn tally_reports_every_failed_expectation_once_per_kind() {
        let e = expect(
            "{status: 200, versionHeaderMatchesBody: true, bodyContains: [httpbin], headers: {x-a: {present: false}}}",
        );
        let mut t = Tally::default();
        let good = resp(
            200,
            &[("x-packlight-version", "1.0")],
            r#"{"service":"httpbin","version":"1.0"}"#,
        );
        let wrong_header = resp(
            200,
            &[("x-packlight-version", "1.1")],
            r#"{"service":"httpbin","version":"1.0"}"#,
        );
        let denied = resp(403, &[("x-a", "1")], "RBAC: access denied");
        for o in [
            &good,
            &good,
            &wrong_header,
            &denied,
            &Outcome::Failed("reset".into()),
        ] {
            t.add(&e, o);
        }
        let v = t.verdict(&e, 5);
        let joined = v.join("\n");
        assert!(
            joined.contains("1 of 5 responses: status 403 (expected 200)"),
            "{joined}"
        );
        assert!(joined.contains("request failed"), "{joined}");
        assert!(joined.contains("header x-a present"), "{joined}");
        assert!(joined.contains("body lacks \"httpbin\""), "{joined}");
        // Wrong header on one response, missing on the 403.
        assert_eq!(joined.matches("x-packlight-version").count(), 2, "{joined}");
        assert_eq!(t.versions.get("1.0"), Some(&3));
        assert_eq!(t.versions.get("-"), Some(&1));
    }

    #[test]
    fn refused_fails_and_at_least() {
        let e = expect("{refused: true}");
        let mut t = Tally::default();
        t.add(&e, &resp(502, &[], ""));
        t.add(&e, &Outcome::Failed("closed".into()));
        assert!(t.verdict(&e, 2).is_empty());
        t.add(&e, &resp(200, &[], ""));
        assert_eq!(t.verdict(&e, 3).len(), 1);

        let e = expect("{fails: true}");
        let mut t = Tally::default();
        t.add(&e, &resp(403, &[], ""));
        assert_eq!(t.verdict(&e, 1).len(), 1);

        let e = expect("{statusIn: [200, 429], atLeast: {429: 1}}");
        let mut t = Tally::default();
        for _ in 0..10 {
            t.add(&e, &resp(200, &[], ""));
        }
        assert_eq!(t.verdict(&e, 10).len(), 1);
        t.add(&e, &resp(429, &[], ""));
        assert!(t.verdict(&e, 11).is_empty());
        // Fewer requests than asked for (the time budget ran out).
        assert_eq!(t.verdict(&e, 20).len(), 1);
    }
}
