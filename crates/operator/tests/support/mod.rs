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
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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

fn spawn(client: kube::Client, config: OperatorConfig) -> Running {
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

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

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
        eventually(
            &format!("CRD {name} Established"),
            Duration::from_secs(20),
            || async {
                let got = api.get(&name).await?;
                Ok(got
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True"))
            },
        )
        .await?;
    }
    Ok(())
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
            .find(|d| d["kind"] == "Role")
            .context("no Role in deploy/rbac.yaml")?;
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

    /// Namespace, CRDs and the operator's identity; no operator running.
    pub async fn setup(hint: &str) -> anyhow::Result<Harness> {
        let ns = packlight_testenv::namespace(hint).await?;
        let admin = ns.client();
        install_crds(&admin).await?;

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
        for mut doc in documents(yaml) {
            doc["metadata"]["namespace"] = json!(self.name());
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let api = self.packlight(&kind);
            api.patch(
                &name,
                &PatchParams::apply("packlight-test")
                    .force()
                    .validation_strict(),
                &Patch::Apply(&doc),
            )
            .await
            .with_context(|| format!("applying {kind} {name}"))?;
        }
        Ok(())
    }

    /// A dynamic API of a packlight kind in the namespace.
    pub fn packlight(&self, kind: &str) -> Api<DynamicObject> {
        let plural = format!("{}s", kind.to_lowercase()).replace("policys", "policies");
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("packlight.dev", "v1alpha1", kind),
            &plural,
        );
        Api::namespaced_with(self.admin.clone(), self.name(), &ar)
    }

    /// A dynamic API of an output kind (`VirtualService`, ...) in the namespace.
    pub fn output(&self, kind: &str) -> Api<DynamicObject> {
        let i = outputs::OUTPUT_KINDS
            .iter()
            .position(|k| k.2 == kind)
            .expect("an output kind");
        let ar = outputs::output_resource(i).expect("kind");
        Api::namespaced_with(self.admin.clone(), self.name(), &ar)
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
