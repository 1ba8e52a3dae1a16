//! What the Istio traffic tests share: packlight's CRDs installed on the
//! bench, and `packlight operator` as a child process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use packlight_testenv::TestEnv;

pub const PACKLIGHT: &str = env!("CARGO_BIN_EXE_packlight");

/// `packlight operator`, killed on drop.
pub struct Operator(Child);

impl Operator {
    /// Starts the operator with the bench's admin kubeconfig, for one
    /// namespace or (`None`) all of them.
    pub fn start(kubeconfig: &Path, namespace: Option<&str>) -> Operator {
        let mut cmd = Command::new(PACKLIGHT);
        cmd.arg("operator");
        if let Some(ns) = namespace {
            cmd.args(["--namespace", ns]);
        }
        let child = cmd
            .args(["--no-leader-election", "--http-address", "127.0.0.1:0"])
            .args(["--log-format", "text"])
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

/// Applies packlight's CRDs and waits until each is Established.
pub async fn install_crds(env: &TestEnv) {
    let api: Api<CustomResourceDefinition> = Api::all(env.client().expect("client"));
    let pp = PatchParams::apply("packlight-test").force();
    for crd in packlight_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(&crd))
            .await
            .expect("CRD");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = api.get(&name).await.expect("CRD");
            let established = got
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} not Established");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
