//! The console's Kubernetes clusters in a real headless Chromium
//! (chromedriver + fantoccini) against real kube-apiservers: this test
//! binary's bench (`packlight_testenv::env`) and, for two clusters, a
//! second independent bench (`packlight_testenv::start_extra`). packlight's
//! CRDs are installed into each, the httpbin example (Microservice + Route
//! 80/20, ...) is applied into a fresh namespace, and the console runs in
//! this process (`clusters_from_args` on the real flags, `serve`) with a
//! kubeconfig of three contexts: `alpha` and `beta` (each bench's admin)
//! and `reader` (a ServiceAccount token bound to a Role that may only get,
//! list and watch packlight resources in that namespace).
//!
//! * two contexts listed; one edit applied to both at once (SSA, manager
//!   `packlight-console`), read back from both API servers;
//! * the read-only context: no apply control, and a forced POST is refused
//!   with the API server's 403 message;
//! * an invalid edit shows the model's diagnostic and applies nothing (and
//!   the API server's own CEL refusal is shown with its message; a dry run
//!   stores nothing);
//! * a conflict names the other field manager; only "take over" applies;
//! * a standalone engine (`packlight up` with real Envoy) and a context
//!   take one edit together.
//!
//! Needs Chromium (`scripts/install-chromium`), the bench (`scripts/testenv
//! build`, run on first use), and for the mixed test the `packlight`
//! binary (`PACKLIGHT_BIN`, else beside this test: `cargo build -p
//! packlight`) and Envoy (`PACKLIGHT_ENVOY` or `scripts/install-envoy`).
//! It fails, never skips.
//! Screenshots: `target/console-screenshots/kubernetes-*.png`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use packlight_console::kubernetes::resource;
use packlight_console::{Console, ConsoleArgs, clusters_from_args};
use packlight_testenv::TestEnv;
use serde_json::{Value, json};
use tokio::sync::oneshot;

fn target_dir() -> PathBuf {
    // target/debug/deps/kubernetes-HASH -> target/debug
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process stopped (SIGTERM, then SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn packlight() -> PathBuf {
    if let Some(p) = std::env::var_os("PACKLIGHT_BIN") {
        return PathBuf::from(p);
    }
    let p = target_dir().join("packlight");
    assert!(
        p.is_file(),
        "no packlight binary at {p:?}: run `cargo build -p packlight` or set PACKLIGHT_BIN"
    );
    p
}

fn envoy() -> PathBuf {
    if let Some(p) = std::env::var_os("PACKLIGHT_ENVOY") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let p = Path::new(&home).join(".cache/packlight/envoy-venv/bin/envoy");
    assert!(
        p.is_file(),
        "no Envoy: run scripts/install-envoy or set PACKLIGHT_ENVOY"
    );
    p
}

/// `packlight up` on the httpbin example moved to namespace `ns`; its API
/// URL and token file. Ready when it prints `packlight: ready`.
fn standalone(ns: &str, data: &Path, example: &Path) -> (Proc, String, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/httpbin");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("namespace: demo", &format!("namespace: {ns}"));
            std::fs::write(example.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    let api = free_port();
    let mut child = Command::new(packlight())
        .arg("up")
        .arg(example)
        .arg("--data-dir")
        .arg(data)
        .args(["--ingress-port", &free_port().to_string()])
        .args(["--api", &format!("127.0.0.1:{api}")])
        .env("PACKLIGHT_ENVOY", envoy())
        .env("PACKLIGHT_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("packlight up");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "packlight: ready" => break,
            Ok(_) => {}
            Err(_) => panic!("packlight up not ready within 120 s"),
        }
    }
    (proc, format!("http://127.0.0.1:{api}"), data.join("token"))
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match f().await {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            anyhow::bail!("{what}: not within {secs} s ({last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// packlight's CRDs, applied and Established.
async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("packlight-test").force();
    let crds = packlight_api::crds();
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(crd))
            .await
            .with_context(|| format!("CRD {name}"))?;
    }
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        eventually(&format!("CRD {name} Established"), 30, || async {
            let got = api.get(&name).await?;
            Ok(got
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await?;
    }
    Ok(())
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn routes(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource("routes").unwrap())
}

/// The namespace `ns` (created when missing) with the httpbin example in
/// it, applied with field manager `manager`.
async fn example_into(client: &kube::Client, ns: &str, manager: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(ns).await?.is_none() {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/httpbin");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|x| x == "yaml"));
    files.sort();
    for f in files {
        for mut doc in documents(&std::fs::read_to_string(&f)?) {
            doc["metadata"]["namespace"] = json!(ns);
            let plural = packlight_client::KINDS
                .iter()
                .find(|(_, k)| doc["kind"] == *k)
                .map(|(p, _)| *p)
                .context("a packlight kind")?;
            let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), ns, &resource(plural).unwrap());
            api.patch(
                &name,
                &PatchParams::apply(manager).validation_strict(),
                &Patch::Apply(&doc),
            )
            .await
            .with_context(|| format!("{} {ns}/{name}", doc["kind"]))?;
        }
    }
    Ok(())
}

/// A ServiceAccount that may only get/list/watch packlight resources in
/// `ns`; returns its token (TokenRequest).
async fn reader_token(client: &kube::Client, ns: &str) -> anyhow::Result<String> {
    let pp = PatchParams::apply("packlight-test").force();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "reader", "namespace": ns}}))?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.patch("reader", &pp, &Patch::Apply(&sa)).await?;
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "packlight-reader", "namespace": ns},
        "rules": [{"apiGroups": ["packlight.dev"], "resources": ["*"],
                   "verbs": ["get", "list", "watch"]}]
    }))?;
    Api::<Role>::namespaced(client.clone(), ns)
        .patch("packlight-reader", &pp, &Patch::Apply(&role))
        .await?;
    let rb: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "packlight-reader", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "packlight-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]
    }))?;
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .patch("packlight-reader", &pp, &Patch::Apply(&rb))
        .await?;
    let request = serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}}))?;
    let token = sas
        .create_token_request("reader", &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .context("TokenRequest without a token")?;
    Ok(token)
}

/// The first cluster and user of an admin kubeconfig.
fn admin_of(path: &Path) -> anyhow::Result<(Value, Value)> {
    let k: Value = serde_yaml::from_str(&std::fs::read_to_string(path)?)?;
    Ok((
        k["clusters"][0]["cluster"].clone(),
        k["users"][0]["user"].clone(),
    ))
}

/// A kubeconfig with contexts `alpha` (admin of `alpha`), `beta` (admin of
/// `beta`, when given) and `reader` (on `alpha`, with `reader`'s token),
/// all in namespace `ns`.
fn kubeconfig(
    dir: &Path,
    alpha: &Path,
    beta: Option<&Path>,
    reader: &str,
    ns: &str,
) -> anyhow::Result<PathBuf> {
    let (ca, ua) = admin_of(alpha)?;
    let mut clusters = vec![json!({"name": "alpha", "cluster": ca})];
    let mut users = vec![
        json!({"name": "alpha-admin", "user": ua}),
        json!({"name": "reader", "user": {"token": reader}}),
    ];
    let mut contexts = vec![
        json!({"name": "alpha", "context": {"cluster": "alpha", "user": "alpha-admin", "namespace": ns}}),
        json!({"name": "reader", "context": {"cluster": "alpha", "user": "reader", "namespace": ns}}),
    ];
    if let Some(beta) = beta {
        let (cb, ub) = admin_of(beta)?;
        clusters.push(json!({"name": "beta", "cluster": cb}));
        users.push(json!({"name": "beta-admin", "user": ub}));
        contexts.push(json!({"name": "beta", "context": {"cluster": "beta", "user": "beta-admin", "namespace": ns}}));
    }
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "alpha",
            "clusters": clusters, "users": users, "contexts": contexts,
        }))?,
    )?;
    Ok(path)
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    console: ConsoleArgs,
}

/// The console, in this process, on the given flags; its base URL and
/// login URL. Stopped when the sender drops.
async fn console(flags: &[&str]) -> anyhow::Result<(String, String, oneshot::Sender<()>)> {
    let mut argv = vec!["console", "--listen", "127.0.0.1:0", "--token", "t0ken"];
    argv.extend(flags);
    let args = Flags::try_parse_from(argv)?.console;
    let clusters = clusters_from_args(&args).await?;
    let console = Arc::new(Console::new(clusters, args.token.clone())?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(packlight_console::serve(listener, console, async {
        let _ = rx.await;
    }));
    Ok((base.clone(), format!("{base}/login?token=t0ken"), tx))
}

/// chromedriver and a headless Chromium session.
async fn chromium() -> (Proc, Client) {
    let port = free_port();
    let driver = Proc(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver: run scripts/install-chromium"),
    );
    let profile = tempfile::tempdir().unwrap().keep();
    let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-proxy-server",
                     "--window-size=1280,1000",
                     format!("--user-data-dir={}", profile.display())]
        }
    }))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        b.capabilities(caps.clone());
        match b.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return (driver, c),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver session: {e}"),
        }
    }
}

async fn screenshot(b: &Client, name: &str) {
    let dir = target_dir().parent().unwrap().join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = b.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("kubernetes-{name}.png")), png).unwrap();
}

/// Waits (bounded) until the element's text satisfies `ok`; returns it.
async fn wait_text(b: &Client, css: &str, ok: impl Fn(&str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(e) = b.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if ok(&t) {
                return t;
            }
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: `{css}` never satisfied; last text {last:?}");
}

async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Types `n` into the number field of `version` (the form sends these).
async fn type_weight(b: &Client, version: &str, n: &str) {
    let f = b
        .find(Locator::Css(&format!(
            "input.weight[data-version='{version}']"
        )))
        .await
        .unwrap();
    f.clear().await.unwrap();
    f.send_keys(n).await.unwrap();
}

fn weights(r: &DynamicObject) -> Vec<(String, u64)> {
    r.data["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x.get("weight").is_some())
        .map(|x| {
            (
                x["version"].as_str().unwrap().to_string(),
                x["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn managers(r: &DynamicObject) -> Vec<String> {
    r.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect()
}

fn split(a: u64, b: u64) -> Vec<(String, u64)> {
    vec![("1.0".into(), a), ("1.1".into(), b), ("2.0".into(), 100)]
}

/// This binary's bench with packlight's CRDs, and a fresh namespace there
/// holding the httpbin example.
async fn alpha(hint: &str) -> anyhow::Result<(TestEnv, packlight_testenv::TestNamespace)> {
    let env = packlight_testenv::env().await?;
    install_crds(&env.client()?).await?;
    let ns = env.namespace(hint).await?;
    example_into(&ns.client(), ns.name(), "packlight-console").await?;
    Ok((env, ns))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_contexts_listed_and_one_edit_applied_to_both_in_chromium() -> anyhow::Result<()> {
    let started = Instant::now();
    let extra = packlight_testenv::start_extra().await?;
    let (env, ns) = alpha("console-two").await?;
    let beta_env = extra.env().await?;
    let beta = beta_env.client()?;
    install_crds(&beta).await?;
    // The example as an earlier console apply left it: the console's own
    // fields (a Route another manager owns is the conflict test's case).
    example_into(&beta, ns.name(), "packlight-console").await?;
    let dir = tempfile::tempdir()?;
    let token = reader_token(&ns.client(), ns.name()).await?;
    let kc = kubeconfig(
        dir.path(),
        env.kubeconfig(),
        Some(extra.kubeconfig()),
        &token,
        ns.name(),
    )?;
    let kc = kc.to_str().unwrap();
    let (base, login, _stop) = console(&[
        "--kubeconfig",
        kc,
        "--context",
        "alpha",
        "--context",
        "beta",
    ])
    .await?;
    eprintln!("two benches ready in {:?}", started.elapsed());
    let (_driver, b) = chromium().await;

    // Overview: both contexts, read from the page.
    b.goto(&login).await?;
    wait_text(
        &b,
        "#clusters",
        |t| t.matches("packlight CRDs installed").count() >= 2,
        "both up",
    )
    .await;
    let mut names = Vec::new();
    for row in b.find_all(Locator::Css("tr.cluster")).await? {
        let name = row.find(Locator::Css("td.name")).await?.text().await?;
        let text = row.text().await?;
        assert!(text.contains("kubernetes"), "{text}");
        assert!(text.contains("packlight CRDs installed"), "{text}");
        names.push(name);
    }
    assert_eq!(names, ["alpha", "beta"]);
    screenshot(&b, "overview").await;

    // The traffic page of a Kubernetes cluster says why it has none.
    b.goto(&format!("{base}/c/1/traffic")).await?;
    wait_text(
        &b,
        "#traffic",
        |t| t.contains("Prometheus is not configured"),
        "traffic",
    )
    .await;

    // One edit, both clusters: the slider to 50/50, beta ticked too.
    b.goto(&format!("{base}/c/0/routes/{}/httpbin/edit", ns.name()))
        .await?;
    wait_text(&b, "#validation", |t| t.contains("valid"), "first check").await;
    let targets = wait_text(&b, "#targets", |t| t.contains("beta"), "targets").await;
    assert!(targets.contains("alpha"), "{targets}");
    click(&b, "#targets input[name=to][value='1']").await;
    let slider = b
        .find(Locator::Css("input.slider[data-version='1.0']"))
        .await?;
    slider.click().await?;
    let keys: String = std::iter::once(Key::Home.to_string())
        .chain(std::iter::repeat_n(Key::Right.to_string(), 50))
        .collect();
    slider.send_keys(&keys).await?;
    wait_text(
        &b,
        "#preview",
        |t| t.contains("1.0 50%, 1.1 50%"),
        "preview of 50/50",
    )
    .await;
    screenshot(&b, "route-editor").await;
    click(&b, "#apply").await;
    let result = wait_text(
        &b,
        "#results",
        |t| t.matches("applied").count() >= 2,
        "applied to both",
    )
    .await;
    assert!(
        result.contains("alpha") && result.contains("beta"),
        "{result}"
    );
    screenshot(&b, "applied-to-both").await;

    for (who, client) in [("alpha", ns.client()), ("beta", beta.clone())] {
        let r = routes(&client, ns.name()).get("httpbin").await?;
        assert_eq!(weights(&r), split(50, 50), "{who}");
        assert!(
            managers(&r).contains(&"packlight-console".to_string()),
            "{who}: {:?}",
            managers(&r)
        );
    }
    // The services page: the new split on both clusters, side by side.
    b.goto(&format!("{base}/services")).await?;
    let row = wait_text(
        &b,
        &format!("tr.service[data-service='{}/httpbin']", ns.name()),
        |t| t.matches("1.0 50%").count() == 2,
        "services of both",
    )
    .await;
    assert_eq!(row.matches("1.1 50%").count(), 2, "{row}");

    // beta's API server stops: beta is down with the error, alpha works on.
    drop(extra);
    b.goto(&base).await?;
    let down = wait_text(
        &b,
        "tr.cluster[data-cluster='beta']",
        |t| t.contains("down"),
        "beta down",
    )
    .await;
    assert!(
        down.len() > "beta kubernetes down".len(),
        "no error: {down}"
    );
    let up = wait_text(
        &b,
        "tr.cluster[data-cluster='alpha']",
        |t| t.contains("up"),
        "alpha",
    )
    .await;
    assert!(up.contains("packlight CRDs installed"), "{up}");
    screenshot(&b, "one-down").await;
    b.close().await?;
    eprintln!("two contexts test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_context_has_no_apply_and_a_forced_post_shows_the_403() -> anyhow::Result<()> {
    let started = Instant::now();
    let (env, ns) = alpha("console-ro").await?;
    let token = reader_token(&ns.client(), ns.name()).await?;
    // RBAC sees new bindings through its informers: wait for them.
    let as_reader = env.client_with_token(&token)?;
    eventually("the reader may list routes", 20, || async {
        Ok(routes(&as_reader, ns.name())
            .list(&ListParams::default())
            .await
            .is_ok())
    })
    .await?;
    let before = routes(&ns.client(), ns.name()).get("httpbin").await?;
    let dir = tempfile::tempdir()?;
    let kc = kubeconfig(dir.path(), env.kubeconfig(), None, &token, ns.name())?;
    let (base, login, _stop) =
        console(&["--kubeconfig", kc.to_str().unwrap(), "--context", "reader"]).await?;
    let (_driver, b) = chromium().await;
    b.goto(&login).await?;
    // The reader may not list across namespaces: its own namespace is read.
    let row = wait_text(&b, "tr.cluster", |t| t.contains("up"), "reader up").await;
    assert!(
        row.contains("reader") && row.contains("kubernetes"),
        "{row}"
    );

    let edit = format!("{base}/c/0/routes/{}/httpbin/edit", ns.name());
    b.goto(&edit).await?;
    let note = wait_text(&b, "#no-apply", |t| !t.is_empty(), "no-apply note").await;
    assert_eq!(
        note,
        format!("your credentials may not change Routes in {}", ns.name())
    );
    assert!(
        b.find_all(Locator::Css("#apply, #targets"))
            .await?
            .is_empty(),
        "an apply control is shown to a read-only user"
    );
    screenshot(&b, "read-only-editor").await;

    // A forced POST, with the page's CSRF token, from the page itself.
    let answer = b
        .execute_async(
            r#"const [url, done] = arguments;
               const csrf = document.querySelector('input[name=csrf]').value;
               fetch(url, {method: 'POST', headers: {'x-csrf-token': csrf,
                 'content-type': 'application/x-www-form-urlencoded'},
                 body: 'w0=50&w1=50&to=0'}).then(r => r.text()).then(done);"#,
            vec![json!(format!(
                "{base}/c/0/routes/{}/httpbin/apply",
                ns.name()
            ))],
        )
        .await?;
    let answer = answer.as_str().unwrap_or_default().to_string();
    assert!(answer.contains("refused"), "{answer}");
    assert!(answer.contains("403"), "{answer}");
    assert!(
        answer.contains(&format!(
            "User &quot;system:serviceaccount:{}:reader&quot; cannot patch resource &quot;routes&quot;",
            ns.name()
        )),
        "{answer}"
    );
    let after = routes(&ns.client(), ns.name()).get("httpbin").await?;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    b.close().await?;
    eprintln!("read-only test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_edit_shows_the_models_diagnostic_and_applies_nothing() -> anyhow::Result<()> {
    let started = Instant::now();
    let (env, ns) = alpha("console-bad").await?;
    let before = routes(&ns.client(), ns.name()).get("httpbin").await?;
    let dir = tempfile::tempdir()?;
    let kc = kubeconfig(dir.path(), env.kubeconfig(), None, "unused", ns.name())?;
    let kc = kc.to_str().unwrap();
    let (base, login, _stop) = console(&["--kubeconfig", kc, "--context", "alpha"]).await?;
    let (_driver, b) = chromium().await;
    b.goto(&login).await?;
    b.goto(&format!("{base}/c/0/routes/{}/httpbin/edit", ns.name()))
        .await?;
    wait_text(&b, "#validation", |t| t.contains("valid"), "first check").await;
    type_weight(&b, "1.0", "60").await;
    type_weight(&b, "1.1", "30").await;
    let diag = wait_text(&b, "#diagnostics", |t| t.contains("90"), "60/30").await;
    assert!(
        diag.contains("major 1") && diag.contains("sum to 90"),
        "{diag}"
    );
    click(&b, "#apply").await;
    let result = wait_text(&b, "#results", |t| !t.is_empty(), "refused apply").await;
    assert!(result.contains("not applied (invalid)"), "{result}");
    screenshot(&b, "invalid-edit").await;
    let after = routes(&ns.client(), ns.name()).get("httpbin").await?;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    b.close().await?;

    // The API server's own refusal (the CRD's CEL rule, 422) of the same
    // Route, were it sent: reported with the API server's message.
    let args = Flags::try_parse_from(["console", "--kubeconfig", kc, "--context", "alpha"])?;
    let clusters = clusters_from_args(&args.console).await?;
    let mut bad = serde_json::to_value(&before)?;
    bad["spec"]["rules"][0]["weight"] = json!(60);
    bad["spec"]["rules"][1]["weight"] = json!(30);
    match clusters[0]
        .apply(&serde_json::to_string(&bad)?, "console", false, false)
        .await
    {
        Ok(packlight_console::cluster::Applied::Refused(d)) => {
            assert!(d[0].message.contains("422"), "{d:?}");
            assert!(d[0].message.contains("Invalid"), "{d:?}");
        }
        other => panic!("a 60/30 Route was not refused: {other:?}"),
    }
    // A valid Route as a dry run (dryRun=All): accepted, nothing stored.
    let mut good = serde_json::to_value(&before)?;
    good["spec"]["rules"][0]["weight"] = json!(50);
    good["spec"]["rules"][1]["weight"] = json!(50);
    match clusters[0]
        .apply(&serde_json::to_string(&good)?, "console", true, false)
        .await
    {
        Ok(packlight_console::cluster::Applied::Accepted(done, _)) => {
            assert!(done[0].contains("dry run"), "{done:?}");
        }
        other => panic!("the dry run was not accepted: {other:?}"),
    }
    let after = routes(&ns.client(), ns.name()).get("httpbin").await?;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    eprintln!("invalid edit test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_names_the_other_manager_and_applies_only_after_take_over() -> anyhow::Result<()>
{
    let started = Instant::now();
    let (env, ns) = alpha("console-conflict").await?;
    // Someone else takes the weights: 70/30.
    let mut theirs = serde_json::to_value(routes(&ns.client(), ns.name()).get("httpbin").await?)?;
    theirs["spec"]["rules"][0]["weight"] = json!(70);
    theirs["spec"]["rules"][1]["weight"] = json!(30);
    let theirs = json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": "httpbin", "namespace": ns.name()}, "spec": theirs["spec"]});
    routes(&ns.client(), ns.name())
        .patch(
            "httpbin",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&theirs),
        )
        .await?;
    let before = routes(&ns.client(), ns.name()).get("httpbin").await?;
    assert_eq!(weights(&before), split(70, 30));

    let dir = tempfile::tempdir()?;
    let kc = kubeconfig(dir.path(), env.kubeconfig(), None, "unused", ns.name())?;
    let (base, login, _stop) =
        console(&["--kubeconfig", kc.to_str().unwrap(), "--context", "alpha"]).await?;
    let (_driver, b) = chromium().await;
    b.goto(&login).await?;
    b.goto(&format!("{base}/c/0/routes/{}/httpbin/edit", ns.name()))
        .await?;
    wait_text(&b, "#validation", |t| t.contains("valid"), "first check").await;
    type_weight(&b, "1.0", "50").await;
    type_weight(&b, "1.1", "50").await;
    wait_text(
        &b,
        "#preview",
        |t| t.contains("1.0 50%, 1.1 50%"),
        "preview of 50/50",
    )
    .await;
    click(&b, "#apply").await;
    let conflict = wait_text(
        &b,
        "#results",
        |t| t.contains("someone-else"),
        "the conflict",
    )
    .await;
    assert!(conflict.contains("not applied"), "{conflict}");
    assert!(conflict.contains(".spec.rules"), "{conflict}");
    screenshot(&b, "conflict").await;
    let still = routes(&ns.client(), ns.name()).get("httpbin").await?;
    assert_eq!(
        still.metadata.resource_version,
        before.metadata.resource_version
    );

    // Applying again without ticking "take over" changes nothing either.
    click(&b, "#take-over").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_text(&b, "#results", |t| t.contains("someone-else"), "again").await;
    let still = routes(&ns.client(), ns.name()).get("httpbin").await?;
    assert_eq!(weights(&still), split(70, 30));

    click(&b, "#results input[name=force]").await;
    click(&b, "#take-over").await;
    let done = wait_text(
        &b,
        "#results",
        |t| t.contains("fields taken over"),
        "take over",
    )
    .await;
    assert!(done.contains("applied"), "{done}");
    screenshot(&b, "taken-over").await;
    let after = routes(&ns.client(), ns.name()).get("httpbin").await?;
    assert_eq!(weights(&after), split(50, 50));
    let owners: Vec<(String, String)> = after
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.to_string().contains("f:rules"))
        })
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        [("packlight-console".to_string(), "Apply".to_string())]
    );
    b.close().await?;
    eprintln!("conflict test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standalone_engine_and_a_context_take_one_edit_together() -> anyhow::Result<()> {
    let started = Instant::now();
    let (env, ns) = alpha("console-mixed").await?;
    let (data, example) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (_up, api, token_file) = standalone(ns.name(), data.path(), example.path());
    let dir = tempfile::tempdir()?;
    let kc = kubeconfig(dir.path(), env.kubeconfig(), None, "unused", ns.name())?;
    let engine = format!("{api}#{}", token_file.display());
    let (base, login, _stop) = console(&[
        "--standalone",
        &engine,
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--context",
        "alpha",
    ])
    .await?;
    let (_driver, b) = chromium().await;
    b.goto(&login).await?;
    let overview = wait_text(
        &b,
        "#clusters",
        |t| t.contains("standalone") && t.contains("packlight CRDs installed"),
        "both up",
    )
    .await;
    assert!(overview.contains("alpha"), "{overview}");

    // The standalone engine's editor; alpha ticked too.
    b.goto(&format!("{base}/c/0/routes/{}/httpbin/edit", ns.name()))
        .await?;
    wait_text(&b, "#validation", |t| t.contains("valid"), "first check").await;
    click(&b, "#targets input[name=to][value='1']").await;
    type_weight(&b, "1.0", "30").await;
    type_weight(&b, "1.1", "70").await;
    wait_text(
        &b,
        "#preview",
        |t| t.contains("1.0 30%, 1.1 70%"),
        "preview of 30/70",
    )
    .await;
    click(&b, "#apply").await;
    let result = wait_text(
        &b,
        "#results",
        |t| t.matches("applied").count() >= 2,
        "applied to both",
    )
    .await;
    assert!(result.contains("configured"), "standalone: {result}");
    assert!(result.contains("resourceVersion"), "kubernetes: {result}");
    screenshot(&b, "mixed-applied").await;
    b.close().await?;

    let r = routes(&ns.client(), ns.name()).get("httpbin").await?;
    assert_eq!(weights(&r), split(30, 70));
    let token = std::fs::read_to_string(&token_file)?;
    let engine: Value = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!(
            "{api}/apis/packlight.dev/v1alpha1/namespaces/{}/routes/httpbin",
            ns.name()
        ))
        .bearer_auth(token.trim())
        .send()
        .await?
        .json()
        .await?;
    let rules = engine["spec"]["rules"].as_array().context("rules")?;
    assert_eq!(
        (&rules[0]["weight"], &rules[1]["weight"]),
        (&json!(30), &json!(70))
    );
    eprintln!("mixed test took {:?}", started.elapsed());
    Ok(())
}
