//! The mesh's Prometheus: a real Prometheus server (built by
//! `scripts/build-prometheus`) in its own network namespace on the mesh's
//! bridge (`10.244.0.3`), scraping every sidecar's Envoy
//! (`POD_IP:15090/stats/prometheus`, outside the traffic capture) every
//! second; the list of Envoys is a file-discovery file this module rewrites
//! as pods start. Its query API reaches the host at `127.0.0.1:PORT`
//! through a pair of forwarders over a Unix socket (no 10.x address on the
//! host), which is what the console is given as `--prometheus`.
//! `scripts/testenv prometheus` starts it; `mesh-down` stops it with the
//! rest of the mesh.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::process::Command;

use super::{Mesh, run_script};

/// A running Prometheus of a [`Mesh`].
#[derive(Clone, Debug)]
pub struct Prometheus {
    url: String,
    dir: PathBuf,
}

impl Mesh {
    /// Starts the mesh's Prometheus (once; a second call returns the same
    /// one) and returns once its API answers on the host. The Envoys of
    /// pods started before and after are scraped.
    pub async fn start_prometheus(&self) -> anyhow::Result<Prometheus> {
        self.write_scrape_targets().await?;
        // A free loopback port for the host's forwarder.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = self.dir.display().to_string();
        let out = run_script(&["prometheus", &dir, &port.to_string()])
            .await
            .context("starting Prometheus")?;
        let url = out
            .lines()
            .find_map(|l| l.strip_prefix("PROMETHEUS="))
            .ok_or_else(|| anyhow!("scripts/testenv prometheus printed no URL: {out}"))?;
        Ok(Prometheus {
            url: url.trim().to_owned(),
            dir: self.dir.join("prometheus"),
        })
    }

    /// Rewrites `DIR/prometheus/targets.json` (Prometheus' file discovery)
    /// with every proxy's Envoy; written to a new file and renamed, so
    /// Prometheus never reads half a list.
    pub(super) async fn write_scrape_targets(&self) -> anyhow::Result<()> {
        let groups: Vec<Value> = self
            .state
            .lock()
            .map_err(|_| anyhow!("mesh state poisoned"))?
            .proxies
            .iter()
            .map(|(ip, namespace, pod)| {
                json!({"targets": [format!("{ip}:15090")],
                       "labels": {"namespace": namespace, "pod": pod}})
            })
            .collect();
        let dir = self.dir.join("prometheus");
        tokio::fs::create_dir_all(&dir).await?;
        let tmp = dir.join("targets.json.tmp");
        tokio::fs::write(&tmp, serde_json::to_vec(&groups)?).await?;
        tokio::fs::rename(&tmp, dir.join("targets.json")).await?;
        Ok(())
    }
}

impl Prometheus {
    /// Its API's base URL on the host (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its directory: `prometheus.yml`, `targets.json`, `log`.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// One instant query's `data.result` (curl on the host, 5 s at most).
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Value>> {
        let url = format!("{}/api/v1/query", self.url);
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "-G", &url, "--data-urlencode"])
            .arg(format!("query={promql}"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("running curl")?;
        let answer: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "Prometheus answered {:?} to {promql}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        if answer["status"] != "success" {
            bail!("Prometheus refused {promql}: {answer}");
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until at least `envoys` scrape targets are up (each Envoy
    /// scraped successfully), at most `limit`.
    pub async fn wait_scraping(&self, envoys: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let up = self.query("up == 1").await.map(|r| r.len()).unwrap_or(0);
            if up >= envoys {
                return Ok(());
            }
            if Instant::now() > deadline {
                let targets = self.query("up").await.unwrap_or_default();
                bail!(
                    "{up} of {envoys} Envoys scraped after {limit:?}: {targets:?} (log: {})",
                    self.dir.join("log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
