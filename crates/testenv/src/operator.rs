//! `packlight operator` as a child process of a test, on the bench.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `packlight operator`, killed (and waited for) on drop.
pub struct Operator(Child);

impl Operator {
    /// Starts the `packlight` binary at `packlight` as the operator with
    /// `kubeconfig`, for one namespace or (`None`) all of them: no leader
    /// election, metrics on a free loopback port, warnings only, as text.
    pub fn start(packlight: &Path, kubeconfig: &Path, namespace: Option<&str>) -> Operator {
        let mut cmd = Command::new(packlight);
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
