//! What the Istio traffic tests share: packlight's CRDs installed on the
//! bench, and `packlight operator` as a child process.

use std::path::Path;
use std::process::{Child, Command, Stdio};

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
    let client = env.client().expect("client");
    packlight_testenv::install_crds(&client, &packlight_api::crds())
        .await
        .expect("packlight's CRDs");
}
