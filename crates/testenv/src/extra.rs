//! A second, independent bench for tests that need more than one cluster
//! (e.g. the console applying one change to two API servers).
//!
//! It is started by the same code path as the test binary's own bench
//! ([`crate::env`]) but never shared: every [`start_extra`] is a new etcd
//! and kube-apiserver with its own data directory, kept alive by the
//! returned [`ExtraBench`] and stopped (its data removed) when that is
//! dropped. `PACKLIGHT_TEST_KUBECONFIG` does not apply to it.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::bench::{TestEnv, spawn};

/// A running extra bench; dropping it stops the process.
pub struct ExtraBench {
    kubeconfig: PathBuf,
    process: Option<(Child, ChildStdin)>,
}

/// Starts a new, independent bench (building the binary first if needed,
/// `scripts/testenv build`) and waits until its API server is ready.
///
/// Blocking work runs off the async runtime; a failure to start is an
/// error, never a skip.
pub async fn start_extra() -> anyhow::Result<ExtraBench> {
    let (kubeconfig, child, stdin) = tokio::task::spawn_blocking(spawn)
        .await
        .map_err(|e| anyhow!("starting an extra bench: {e}"))??;
    Ok(ExtraBench {
        kubeconfig,
        process: Some((child, stdin)),
    })
}

impl ExtraBench {
    /// Its admin kubeconfig (user in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Its admin view, like [`crate::env`]'s: clients and namespaces. Make
    /// it inside the runtime that uses the clients.
    pub async fn env(&self) -> anyhow::Result<TestEnv> {
        let file = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {}", self.kubeconfig.display()))?;
        Ok(TestEnv::new(self.kubeconfig.clone(), config))
    }
}

impl Drop for ExtraBench {
    fn drop(&mut self) {
        let Some((mut child, stdin)) = self.process.take() else {
            return;
        };
        // Closing stdin asks the bench to exit and remove its data
        // (`--exit-on-stdin-eof --remove-data-dir`); kill it if it lingers.
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
