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

mod in_process;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use fantoccini::{Client, Locator};
use in_process::console;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use packlight_console::kubernetes::resource;
use packlight_testenv::{TestEnv, TestNamespace};
use serde_json::{Value, json};
use support::{
    Proc, apply, chromium, click, example, free_port, move_slider, open_editor, packlight_up,
    screenshot, type_weights, wait_preview, wait_text, weights,
};
use tokio::sync::oneshot;

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
/// all in namespace `ns`; removed when dropped.
fn kubeconfig(
    alpha: &Path,
    beta: Option<&Path>,
    reader: &str,
    ns: &str,
) -> anyhow::Result<tempfile::TempPath> {
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
    let path = tempfile::NamedTempFile::new()?.into_temp_path();
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "alpha",
            "clusters": clusters, "users": users, "contexts": contexts,
        }))?,
    )?;
    Ok(path)
}

/// The console on a kubeconfig and a headless Chromium logged in to it;
/// both stop when this drops.
struct Session {
    /// The console's base URL.
    base: String,
    b: Client,
    _driver: Proc,
    _stop: oneshot::Sender<()>,
}

impl Session {
    /// Ends the browser session and stops both.
    async fn close(self) -> anyhow::Result<()> {
        self.b.close().await?;
        Ok(())
    }
}

/// [`console`] on `--kubeconfig kc` and `flags`, then Chromium at its
/// login URL.
async fn session(kc: &Path, flags: &[&str]) -> anyhow::Result<Session> {
    let mut argv = vec!["--kubeconfig", kc.to_str().context("kubeconfig path")?];
    argv.extend(flags);
    let (base, login, stop) = console(&argv).await?;
    let (driver, b) = chromium().await;
    b.goto(&login).await?;
    Ok(Session {
        base,
        b,
        _driver: driver,
        _stop: stop,
    })
}

/// The Route `httpbin` in `ns`, read as admin.
async fn httpbin(ns: &TestNamespace) -> anyhow::Result<DynamicObject> {
    Ok(routes(&ns.client(), ns.name()).get("httpbin").await?)
}

/// Asserts that the Route `httpbin` in `ns` is still `before` (the same
/// resourceVersion: nothing was stored).
async fn assert_unchanged(ns: &TestNamespace, before: &DynamicObject) -> anyhow::Result<()> {
    let after = httpbin(ns).await?;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    Ok(())
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
async fn alpha(hint: &str) -> anyhow::Result<(TestEnv, TestNamespace)> {
    let env = packlight_testenv::env().await?;
    packlight_testenv::install_crds(&env.client()?, &packlight_api::crds()).await?;
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
    packlight_testenv::install_crds(&beta, &packlight_api::crds()).await?;
    // The example as an earlier console apply left it: the console's own
    // fields (a Route another manager owns is the conflict test's case).
    example_into(&beta, ns.name(), "packlight-console").await?;
    let token = reader_token(&ns.client(), ns.name()).await?;
    let kc = kubeconfig(
        env.kubeconfig(),
        Some(extra.kubeconfig()),
        &token,
        ns.name(),
    )?;
    eprintln!("two benches ready in {:?}", started.elapsed());
    let s = session(&kc, &["--context", "alpha", "--context", "beta"]).await?;
    let (base, b) = (s.base.as_str(), &s.b);

    // Overview: both contexts, read from the page.
    wait_text(
        b,
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
    screenshot(b, "kubernetes-overview").await;

    // The traffic page of a Kubernetes cluster says why it has none.
    b.goto(&format!("{base}/c/1/traffic")).await?;
    wait_text(
        b,
        "#traffic",
        |t| t.contains("no Prometheus for this context"),
        "traffic",
    )
    .await;

    // One edit, both clusters: the slider to 50/50, beta ticked too.
    open_editor(b, base, ns.name()).await;
    let targets = wait_text(b, "#targets", |t| t.contains("beta"), "targets").await;
    assert!(targets.contains("alpha"), "{targets}");
    click(b, "#targets input[name=to][value='1']").await;
    move_slider(b, "1.0", 50).await;
    wait_preview(b, 50, 50).await;
    screenshot(b, "kubernetes-route-editor").await;
    let result = apply(b, |t| t.matches("applied").count() >= 2, "applied to both").await;
    assert!(
        result.contains("alpha") && result.contains("beta"),
        "{result}"
    );
    screenshot(b, "kubernetes-applied-to-both").await;

    for (who, client) in [("alpha", ns.client()), ("beta", beta.clone())] {
        let r = routes(&client, ns.name()).get("httpbin").await?;
        assert_eq!(weights(&r.data), split(50, 50), "{who}");
        assert!(
            managers(&r).contains(&"packlight-console".to_string()),
            "{who}: {:?}",
            managers(&r)
        );
    }
    // The services page: the new split on both clusters, side by side.
    b.goto(&format!("{base}/services")).await?;
    let row = wait_text(
        b,
        &format!("tr.service[data-service='{}/httpbin']", ns.name()),
        |t| t.matches("1.0 50%").count() == 2,
        "services of both",
    )
    .await;
    assert_eq!(row.matches("1.1 50%").count(), 2, "{row}");

    // beta's API server stops: beta is down with the error, alpha works on.
    drop(extra);
    b.goto(base).await?;
    let down = wait_text(
        b,
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
        b,
        "tr.cluster[data-cluster='alpha']",
        |t| t.contains("up"),
        "alpha",
    )
    .await;
    assert!(up.contains("packlight CRDs installed"), "{up}");
    screenshot(b, "kubernetes-one-down").await;
    s.close().await?;
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
    let before = httpbin(&ns).await?;
    let kc = kubeconfig(env.kubeconfig(), None, &token, ns.name())?;
    let s = session(&kc, &["--context", "reader"]).await?;
    let (base, b) = (s.base.as_str(), &s.b);
    // The reader may not list across namespaces: its own namespace is read.
    let row = wait_text(b, "tr.cluster", |t| t.contains("up"), "reader up").await;
    assert!(
        row.contains("reader") && row.contains("kubernetes"),
        "{row}"
    );

    b.goto(&format!("{base}/c/0/routes/{}/httpbin/edit", ns.name()))
        .await?;
    let note = wait_text(b, "#no-apply", |t| !t.is_empty(), "no-apply note").await;
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
    screenshot(b, "kubernetes-read-only-editor").await;

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
    assert_unchanged(&ns, &before).await?;
    s.close().await?;
    eprintln!("read-only test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_edit_shows_the_models_diagnostic_and_applies_nothing() -> anyhow::Result<()> {
    let started = Instant::now();
    let (env, ns) = alpha("console-bad").await?;
    let before = httpbin(&ns).await?;
    let kc = kubeconfig(env.kubeconfig(), None, "unused", ns.name())?;
    let s = session(&kc, &["--context", "alpha"]).await?;
    let (base, b) = (s.base.as_str(), &s.b);
    open_editor(b, base, ns.name()).await;
    type_weights(b, &[("1.0", "60"), ("1.1", "30")]).await;
    let diag = wait_text(b, "#diagnostics", |t| t.contains("90"), "60/30").await;
    assert!(
        diag.contains("major 1") && diag.contains("sum to 90"),
        "{diag}"
    );
    let result = apply(b, |t| !t.is_empty(), "refused apply").await;
    assert!(result.contains("not applied (invalid)"), "{result}");
    screenshot(b, "kubernetes-invalid-edit").await;
    assert_unchanged(&ns, &before).await?;
    s.close().await?;

    // The API server's own refusal (the CRD's CEL rule, 422) of the same
    // Route, were it sent: reported with the API server's message.
    let kc = kc.to_str().unwrap();
    let args = in_process::args(&["--kubeconfig", kc, "--context", "alpha"])?;
    let clusters = packlight_console::clusters_from_args(&args).await?;
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
    assert_unchanged(&ns, &before).await?;
    eprintln!("invalid edit test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_names_the_other_manager_and_applies_only_after_take_over() -> anyhow::Result<()>
{
    let started = Instant::now();
    let (env, ns) = alpha("console-conflict").await?;
    // Someone else takes the weights: 70/30.
    let mut theirs = serde_json::to_value(httpbin(&ns).await?)?;
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
    let before = httpbin(&ns).await?;
    assert_eq!(weights(&before.data), split(70, 30));

    let kc = kubeconfig(env.kubeconfig(), None, "unused", ns.name())?;
    let s = session(&kc, &["--context", "alpha"]).await?;
    let (base, b) = (s.base.as_str(), &s.b);
    open_editor(b, base, ns.name()).await;
    type_weights(b, &[("1.0", "50"), ("1.1", "50")]).await;
    wait_preview(b, 50, 50).await;
    let conflict = apply(b, |t| t.contains("someone-else"), "the conflict").await;
    assert!(conflict.contains("not applied"), "{conflict}");
    assert!(conflict.contains(".spec.rules"), "{conflict}");
    screenshot(b, "kubernetes-conflict").await;
    assert_unchanged(&ns, &before).await?;

    // Applying again without ticking "take over" changes nothing either.
    click(b, "#take-over").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_text(b, "#results", |t| t.contains("someone-else"), "again").await;
    let still = httpbin(&ns).await?;
    assert_eq!(weights(&still.data), split(70, 30));

    click(b, "#results input[name=force]").await;
    click(b, "#take-over").await;
    let done = wait_text(
        b,
        "#results",
        |t| t.contains("fields taken over"),
        "take over",
    )
    .await;
    assert!(done.contains("applied"), "{done}");
    screenshot(b, "kubernetes-taken-over").await;
    let after = httpbin(&ns).await?;
    assert_eq!(weights(&after.data), split(50, 50));
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
    s.close().await?;
    eprintln!("conflict test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standalone_engine_and_a_context_take_one_edit_together() -> anyhow::Result<()> {
    let started = Instant::now();
    let (env, ns) = alpha("console-mixed").await?;
    // `packlight up` on the httpbin example moved to the test's namespace.
    let up = packlight_up(example(ns.name()), free_port());
    let kc = kubeconfig(env.kubeconfig(), None, "unused", ns.name())?;
    let engine = format!("{}#{}", up.api, up.token_file.display());
    let s = session(&kc, &["--standalone", &engine, "--context", "alpha"]).await?;
    let (base, b) = (s.base.as_str(), &s.b);
    let overview = wait_text(
        b,
        "#clusters",
        |t| t.contains("standalone") && t.contains("packlight CRDs installed"),
        "both up",
    )
    .await;
    assert!(overview.contains("alpha"), "{overview}");

    // The standalone engine's editor; alpha ticked too.
    open_editor(b, base, ns.name()).await;
    click(b, "#targets input[name=to][value='1']").await;
    type_weights(b, &[("1.0", "30"), ("1.1", "70")]).await;
    wait_preview(b, 30, 70).await;
    let result = apply(b, |t| t.matches("applied").count() >= 2, "applied to both").await;
    assert!(result.contains("configured"), "standalone: {result}");
    assert!(result.contains("resourceVersion"), "kubernetes: {result}");
    screenshot(b, "kubernetes-mixed-applied").await;
    s.close().await?;

    let r = httpbin(&ns).await?;
    assert_eq!(weights(&r.data), split(30, 70));
    let engine = up.route(ns.name()).await;
    let rules = engine["spec"]["rules"].as_array().context("rules")?;
    assert_eq!(
        (&rules[0]["weight"], &rules[1]["weight"]),
        (&json!(30), &json!(70))
    );
    eprintln!("mixed test took {:?}", started.elapsed());
    Ok(())
}
