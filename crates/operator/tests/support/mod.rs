//! The operator under test: a fresh namespace on the real API server
//! bench, packlight's CRDs installed, and the operator running in-process
//! under its own ServiceAccount bound to `deploy/rbac.yaml`'s ClusterRole
//! (never as admin).

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use packlight_operator::{Operator, OperatorConfig, Stats, outputs};
use packlight_testenv::TestNamespace;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running operator and the namespace it serves.
pub struct Harness {
    pub ns: TestNamespace,
    pub admin: kube::Client,
    /// The first operator's counters.
    pub stats: Arc<Stats>,
    /// The operator's own client (its ServiceAccount token).
    pub client: kube::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    binding: String,
}

/// One more operator running in-process.
pub struct Running {
    pub stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops it as a crash would: no graceful shutdown, no Lease release.
    pub fn kill(&mut self) {
        self.stop.take();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Stops it gracefully.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An operator with `client` and `config` running in-process.
pub fn spawn(client: kube::Client, config: OperatorConfig) -> Running {
    let operator = Operator::new(client, config);
    let stats = operator.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));
    Running {
        stats,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A dynamic API of packlight kind `kind` (`Route`, `IngressPolicy`...) in
/// namespace `ns`.
pub fn packlight_api(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let plural = format!("{}s", kind.to_lowercase()).replace("policys", "policies");
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("packlight.dev", "v1alpha1", kind),
        &plural,
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Server-side applies packlight resources `docs` into namespace `ns`
/// (field manager `packlight-test`, forced, strict field validation), as a
/// user would.
pub async fn apply_packlight(
    client: &kube::Client,
    ns: &str,
    docs: Vec<Value>,
) -> anyhow::Result<()> {
    for mut doc in docs {
        doc["metadata"]["namespace"] = json!(ns);
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        packlight_api(client, ns, &kind)
            .patch(
                &name,
                &PatchParams::apply("packlight-test")
                    .force()
                    .validation_strict(),
                &Patch::Apply(&doc),
            )
            .await
            .with_context(|| format!("applying {kind} {name} in {ns}"))?;
    }
    Ok(())
}

pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The ClusterRole of `deploy/rbac.yaml`.
fn cluster_role() -> anyhow::Result<ClusterRole> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rbac.yaml");
    let text = std::fs::read_to_string(path).context("deploy/rbac.yaml")?;
    let doc = documents(&text)
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .context("no ClusterRole in deploy/rbac.yaml")?;
    Ok(serde_json::from_value(doc)?)
}

impl Harness {
    /// A namespace, CRDs, and the operator running under its own identity,
    /// scoped to the namespace (the gateway namespace is the same one).
    pub async fn start(hint: &str) -> anyhow::Result<Harness> {
        let mut h = Harness::setup(hint).await?;
        let mut running = spawn(h.client.clone(), h.config());
        h.stats = running.stats.clone();
        h.stop = running.stop.take();
        h.task = running.task.take();
        Ok(h)
    }

    /// The operator's configuration in this namespace (no leader election).
    pub fn config(&self) -> OperatorConfig {
        let mut config = OperatorConfig {
            namespace: Some(self.name().to_string()),
            instance: Some(format!("test-{}", self.name())),
            ..OperatorConfig::default()
        };
        config.render.gateway_namespace = self.name().to_string();
        config
    }

    /// Starts another operator with `config`, under the same identity.
    pub fn spawn(&self, config: OperatorConfig) -> Running {
        spawn(self.client.clone(), config)
    }

    /// Lets the operator's ServiceAccount use Leases in the namespace, by
    /// `deploy/rbac.yaml`'s leader Role.
    pub async fn allow_leases(&self) -> anyhow::Result<()> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rbac.yaml");
        let text = std::fs::read_to_string(path).context("deploy/rbac.yaml")?;
        let mut role = documents(&text)
            .into_iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "packlight-operator-leader")
            .context("no leader Role in deploy/rbac.yaml")?;
        role["metadata"]["namespace"] = json!(self.name());
        let role_name = role["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let pp = PatchParams::apply("packlight-test").force();
        let role: Role = serde_json::from_value(role)?;
        self.ns
            .api::<Role>()
            .patch(&role_name, &pp, &Patch::Apply(&role))
            .await?;
        let rb: RoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role_name, "namespace": self.name()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": "packlight-operator", "namespace": self.name()}],
        }))?;
        self.ns
            .api::<RoleBinding>()
            .patch(&role_name, &pp, &Patch::Apply(&rb))
            .await?;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), self.name());
        eventually(
            "the operator may read leases",
            Duration::from_secs(10),
            || async { Ok(leases.get_opt("probe").await.is_ok()) },
        )
        .await
    }

    /// Lets the operator's ServiceAccount keep the webhook's certificate
    /// Secret in the namespace (`deploy/rbac.yaml`'s webhook Role) and the
    /// caBundle of the ValidatingWebhookConfiguration `configuration` (the
    /// ClusterRole's rule for it, renamed to this test's configuration).
    pub async fn allow_webhook(&self, configuration: &str) -> anyhow::Result<()> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rbac.yaml");
        let docs = documents(&std::fs::read_to_string(path).context("deploy/rbac.yaml")?);
        let pp = PatchParams::apply("packlight-test").force();
        let mut role = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "packlight-operator-webhook")
            .context("no webhook Role in deploy/rbac.yaml")?
            .clone();
        role["metadata"]["namespace"] = json!(self.name());
        let role: Role = serde_json::from_value(role)?;
        self.ns
            .api::<Role>()
            .patch("packlight-operator-webhook", &pp, &Patch::Apply(&role))
            .await?;
        let subjects = json!([{"kind": "ServiceAccount", "name": "packlight-operator", "namespace": self.name()}]);
        let rb: RoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "packlight-operator-webhook", "namespace": self.name()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "packlight-operator-webhook"},
            "subjects": subjects,
        }))?;
        self.ns
            .api::<RoleBinding>()
            .patch("packlight-operator-webhook", &pp, &Patch::Apply(&rb))
            .await?;
        let mut rule = cluster_role()?
            .rules
            .unwrap_or_default()
            .into_iter()
            .find(|r| {
                r.resources
                    .as_ref()
                    .is_some_and(|x| x.iter().any(|x| x == "validatingwebhookconfigurations"))
            })
            .context("no webhook configuration rule in the ClusterRole")?;
        anyhow::ensure!(rule.resource_names == Some(vec!["packlight".into()]));
        rule.resource_names = Some(vec![configuration.to_string()]);
        let cr = ClusterRole {
            metadata: kube::api::ObjectMeta {
                name: Some(configuration.to_string()),
                ..Default::default()
            },
            rules: Some(vec![rule]),
            ..ClusterRole::default()
        };
        Api::<ClusterRole>::all(self.admin.clone())
            .patch(configuration, &pp, &Patch::Apply(&cr))
            .await?;
        let crb: ClusterRoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": configuration},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": configuration},
            "subjects": subjects,
        }))?;
        Api::<ClusterRoleBinding>::all(self.admin.clone())
            .patch(configuration, &pp, &Patch::Apply(&crb))
            .await?;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), self.name());
        eventually(
            "the operator may read its Secret",
            Duration::from_secs(10),
            || async { Ok(secrets.get_opt("packlight-webhook-tls").await.is_ok()) },
        )
        .await
    }

    /// Runs `kubectl` with the admin kubeconfig, `stdin` piped in:
    /// (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> anyhow::Result<(bool, String, String)> {
        use std::io::Write;
        let mut child = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.ns.env().kubeconfig())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Namespace, CRDs and the operator's identity; no operator running.
    pub async fn setup(hint: &str) -> anyhow::Result<Harness> {
        let ns = packlight_testenv::namespace(hint).await?;
        let admin = ns.client();
        packlight_testenv::install_crds(&admin, &packlight_api::crds()).await?;

        let pp = PatchParams::apply("packlight-test").force();
        let role = cluster_role()?;
        let role_name = role.metadata.name.clone().unwrap_or_default();
        Api::<ClusterRole>::all(admin.clone())
            .patch(&role_name, &pp, &Patch::Apply(&role))
            .await?;
        let sa_name = "packlight-operator";
        let sa: ServiceAccount = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa_name}
        }))?;
        ns.api::<ServiceAccount>()
            .create(&PostParams::default(), &sa)
            .await?;
        let binding = format!("packlight-operator-{}", ns.name());
        let crb: ClusterRoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": ns.name()}],
        }))?;
        Api::<ClusterRoleBinding>::all(admin.clone())
            .patch(&binding, &pp, &Patch::Apply(&crb))
            .await?;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token = ns
            .api::<ServiceAccount>()
            .create_token_request(sa_name, &PostParams::default(), &request)
            .await?
            .status
            .and_then(|s| s.token)
            .context("TokenRequest without a token")?;
        let client = ns.env().client_with_token(&token)?;
        // RBAC sees new bindings through its informers: wait for them.
        let routes: Api<packlight_api::Route> = Api::namespaced(client.clone(), ns.name());
        eventually(
            "the operator's token may list routes",
            Duration::from_secs(10),
            || async { Ok(routes.list(&ListParams::default()).await.is_ok()) },
        )
        .await?;

        Ok(Harness {
            ns,
            admin,
            stats: Arc::default(),
            client,
            stop: None,
            task: None,
            binding,
        })
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// Server-side applies a packlight resource (YAML), as a user would.
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        apply_packlight(&self.admin, self.name(), documents(yaml)).await
    }

    /// A dynamic API of a packlight kind in the namespace.
    pub fn packlight(&self, kind: &str) -> Api<DynamicObject> {
        packlight_api(&self.admin, self.name(), kind)
    }

    /// A dynamic API of an output kind (`VirtualService`, ...) in the namespace.
    pub fn output(&self, kind: &str) -> Api<DynamicObject> {
        self.output_in(kind, self.name())
    }

    /// Objects of an output kind (`VirtualService`...) in namespace `ns`.
    pub fn output_in(&self, kind: &str, ns: &str) -> Api<DynamicObject> {
        let ar = outputs::output_resource_named(kind).expect("an output kind");
        Api::namespaced_with(self.admin.clone(), ns, &ar)
    }

    /// An output object as JSON, if it exists.
    pub async fn get_output(&self, kind: &str, name: &str) -> anyhow::Result<Option<Value>> {
        Ok(self
            .output(kind)
            .get_opt(name)
            .await?
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null)))
    }

    /// A packlight resource as JSON.
    pub async fn get(&self, kind: &str, name: &str) -> anyhow::Result<Value> {
        Ok(serde_json::to_value(self.packlight(kind).get(name).await?)?)
    }

    /// Waits until a resource's condition has `status` and `reason` for
    /// its current generation; returns the resource.
    pub async fn wait_condition(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> anyhow::Result<Value> {
        let what = format!("{kind} {name}: {type_}={status} ({reason})");
        let last = std::cell::RefCell::new(Value::Null);
        let res = eventually(&what, Duration::from_secs(30), || {
            let last = &last;
            async move {
                let obj = self.get(kind, name).await?;
                let ok = condition(&obj, type_).is_some_and(|c| {
                    c["status"] == status
                        && c["reason"] == reason
                        && c["observedGeneration"] == obj["metadata"]["generation"]
                });
                *last.borrow_mut() = obj;
                Ok(ok)
            }
        })
        .await;
        let last = last.into_inner();
        res.with_context(|| format!("last seen: {}", last["status"]))?;
        Ok(last)
    }

    /// Waits until output `kind`/`name` exists and `want` holds of it
    /// (within 30 s); returns it. On timeout the error shows the last spec
    /// seen.
    pub async fn wait_output(
        &self,
        kind: &str,
        name: &str,
        what: &str,
        want: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let last = std::cell::RefCell::new(Value::Null);
        let res = eventually(what, Duration::from_secs(30), || {
            let (last, want) = (&last, &want);
            async move {
                let obj = self.get_output(kind, name).await?.unwrap_or_default();
                let ok = !obj.is_null() && want(&obj);
                *last.borrow_mut() = obj;
                Ok(ok)
            }
        })
        .await;
        let last = last.into_inner();
        res.with_context(|| format!("last {kind} {name} seen: {}", last["spec"]))?;
        Ok(last)
    }

    /// The resourceVersions of every managed object and of every packlight
    /// resource in the namespace.
    pub async fn versions(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let lp = ListParams::default();
        for (_, _, kind, _) in outputs::OUTPUT_KINDS {
            for o in self.output(kind).list(&lp).await? {
                out.push((
                    format!("{kind}/{}", o.metadata.name.unwrap_or_default()),
                    o.metadata.resource_version.unwrap_or_default(),
                ));
            }
        }
        for kind in packlight_api::KINDS {
            for o in self.packlight(kind).list(&lp).await? {
                out.push((
                    format!("{kind}/{}", o.metadata.name.unwrap_or_default()),
                    o.metadata.resource_version.unwrap_or_default(),
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Stops the operator and removes what the test made.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.shutdown().await;
        let _ = Api::<ClusterRoleBinding>::all(self.admin.clone())
            .delete(&self.binding, &DeleteParams::default())
            .await;
        Ok(())
    }

    /// Stops the operator (waits for it to return).
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .is_err()
        {
            panic!("the operator did not shut down within 20 s");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The condition of `type_` in an object's status.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Polls `check` every 100 ms until it returns true, for at most `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let start = std::time::Instant::now();
    let mut last_err = None;
    while start.elapsed() < limit {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match last_err {
        Some(e) => Err(e.context(format!("timed out waiting for {what}"))),
        None => anyhow::bail!("timed out waiting for {what}"),
    }
}

/// `GET path` over plain HTTP/1.1 on loopback: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The `helm` binary, built from tools/helm by scripts/build-helm (cached).
pub fn helm() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/build-helm"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running scripts/build-helm");
    assert!(out.status.success(), "scripts/build-helm failed");
    let dir = String::from_utf8(out.stdout).expect("UTF-8");
    std::path::Path::new(dir.lines().last().expect("a bin directory").trim()).join("helm")
}

/// Runs helm; its stdout (panics when it fails).
pub fn run_helm(args: &[&str]) -> String {
    let out = std::process::Command::new(helm())
        .args(args)
        .output()
        .expect("running helm");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `helm template` of deploy/helm/packlight into `namespace`, CRDs
/// included, with `extra` arguments (`--set ...`).
pub fn chart_objects(namespace: &str, extra: &[&str]) -> anyhow::Result<Vec<Value>> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/packlight");
    let mut args = vec![
        "template",
        "packlight",
        chart,
        "--namespace",
        namespace,
        "--include-crds",
    ];
    args.extend_from_slice(extra);
    Ok(documents(&run_helm(&args)))
}

/// Microservice `svc-I` (versions 1.0 and 1.1) and its Route sending
/// `w10`% to 1.0, the rest to 1.1 (the bench's and bulk tests' unit).
pub fn service_with_route(i: usize, w10: u32) -> String {
    format!(
        r#"
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {{name: svc-{i}}}
spec:
  port: 8000
  versions:
  - {{version: "1.0", image: "example/app:1.0"}}
  - {{version: "1.1", image: "example/app:1.1"}}
---
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {{name: svc-{i}}}
spec:
  service: svc-{i}
  rules:
  - {{version: "1.0", weight: {w10}}}
  - {{version: "1.1", weight: {}}}
"#,
        100 - w10
    )
}
