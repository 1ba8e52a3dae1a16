//! `packlight operator` as a child process of a test, on the bench, under
//! its own identity: the ServiceAccount and ClusterRole of
//! `deploy/rbac.yaml`, not the bench's admin.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::TestEnv;

/// Where `deploy/rbac.yaml` puts the operator's ServiceAccount.
const OPERATOR_NAMESPACE: &str = "packlight-system";
const OPERATOR_ACCOUNT: &str = "packlight-operator";

/// A kubeconfig for the operator's own identity on the bench of `env`:
/// applies `deploy/rbac.yaml` (the ServiceAccount `packlight-operator` in
/// `packlight-system`, its ClusterRole, Roles and bindings, as a cluster
/// install would), asks the TokenRequest API for a two-hour token of that
/// ServiceAccount and writes a kubeconfig with it next to the admin one.
/// RBAC then decides what the operator may do, as in a cluster.
pub async fn operator_kubeconfig(env: &TestEnv) -> anyhow::Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let admin = env.client()?;
    let rbac = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rbac.yaml");
    let text = std::fs::read_to_string(rbac).with_context(|| format!("reading {rbac}"))?;
    let namespace =
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NAMESPACE}}}\n");
    crate::mesh::apply_yaml(&admin, None, &namespace).await?;
    crate::mesh::apply_yaml(&admin, None, &text)
        .await
        .context("applying deploy/rbac.yaml")?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(7200),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin, OPERATOR_NAMESPACE)
        .create_token_request(OPERATOR_ACCOUNT, &PostParams::default(), &request)
        .await
        .context("a token for the operator's ServiceAccount")?
        .status
        .and_then(|s| s.token)
        .context("the TokenRequest gave no token")?;
    // RBAC takes a moment to see the new binding: wait until the token
    // may list what the operator lists first.
    let as_operator = env.client_with_token(&token)?;
    let namespaces: Api<Namespace> = Api::all(as_operator);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Err(e) = namespaces
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the operator's ServiceAccount still may not list namespaces: {e}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let admin_file = env.kubeconfig();
    let mut config: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(admin_file)
            .with_context(|| format!("reading {}", admin_file.display()))?,
    )?;
    config["users"] = serde_yaml::to_value(serde_json::json!([
        {"name": OPERATOR_ACCOUNT, "user": {"token": token}}
    ]))?;
    if let Some(contexts) = config["contexts"].as_sequence_mut() {
        for c in contexts {
            c["context"]["user"] = OPERATOR_ACCOUNT.into();
        }
    }
    let path = admin_file.with_file_name(format!(
        "operator-{}-{}.kubeconfig",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, serde_yaml::to_string(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `packlight operator`, killed (and waited for) on drop.
pub struct Operator(Child);

impl Operator {
    /// Starts the `packlight` binary at `packlight` as the operator with
    /// `kubeconfig` (its own identity: [`operator_kubeconfig`]), for one
    /// namespace or (`None`) all of them: no leader election, metrics on a
    /// free loopback port, warnings only, as JSON lines (the format a
    /// cluster runs it with).
    pub fn start(packlight: &Path, kubeconfig: &Path, namespace: Option<&str>) -> Operator {
        let mut cmd = Command::new(packlight);
        cmd.arg("operator");
        if let Some(ns) = namespace {
            cmd.args(["--namespace", ns]);
        }
        let child = cmd
            .args(["--no-leader-election", "--http-address", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("packlight operator");
        Operator(child)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
