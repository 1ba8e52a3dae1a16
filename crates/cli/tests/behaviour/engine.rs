//! The standalone engine under test: `packlight up DIR` as a child process
//! in its own process group, on ephemeral ports, with its own data dir.
//! Dropping an [`Up`] stops it (SIGTERM, then SIGKILL to the group).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::table::User;

/// How long `packlight up` may take to print `packlight: ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(240);
/// How long every instance may take to report `ready: true` after that.
const INSTANCES_TIMEOUT: Duration = Duration::from_secs(60);

/// One entry of `GET /instances`.
#[derive(Debug, Clone, Deserialize)]
pub struct Instance {
    pub namespace: String,
    pub service: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub outbound: Option<String>,
    #[serde(default)]
    pub inbound: Option<String>,
    #[serde(default)]
    pub ready: bool,
}

/// A running `packlight up`.
pub struct Up {
    child: Option<Child>,
    pub ingress: SocketAddr,
    pub api: SocketAddr,
    pub token: String,
    pub data_dir: PathBuf,
    pub instances: Vec<Instance>,
    /// Problems met while starting that do not stop the run (e.g. a user
    /// that could not be created); reported against the cases that need it.
    pub warnings: Vec<String>,
    stderr_path: PathBuf,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    packlight_testenv::free_port()
}

/// The packlight binary under test.
pub fn packlight() -> &'static str {
    env!("CARGO_BIN_EXE_packlight")
}

/// Real Envoy for the engine (installed on demand, as `scripts/test`
/// does: no test is skipped for a missing tool).
pub fn envoy() -> Result<PathBuf, String> {
    packlight_testenv::envoy().map_err(|e| format!("{e:#}"))
}

/// `packlight user add NAME --data-dir D --password-stdin`.
async fn add_user(data_dir: &Path, user: &User) -> Result<(), String> {
    let mut child = Command::new(packlight())
        .args(["user", "add", &user.name, "--data-dir"])
        .arg(data_dir)
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run packlight user add: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin
            .write_all(format!("{}\n", user.password).as_bytes())
            .await;
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| "packlight user add did not finish in 60 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "packlight user add {} failed ({}): {}",
            user.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Up {
    /// Creates the users, starts `packlight up dir`, waits for `ready`,
    /// reads the token and the instances.
    pub async fn start(
        dir: &Path,
        data_dir: PathBuf,
        ingress_port: u16,
        users: &[User],
    ) -> Result<Up, String> {
        let envoy = envoy()?;
        std::fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
        let mut warnings = Vec::new();
        for u in users {
            if let Err(e) = add_user(&data_dir, u).await {
                warnings.push(e);
            }
        }
        let api: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let ingress = SocketAddr::from(([127, 0, 0, 1], ingress_port));
        let stderr_path = data_dir.join("up.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(packlight());
        cmd.arg("up")
            .arg(dir)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--ingress-port")
            .arg(ingress_port.to_string())
            .arg("--api")
            .arg(api.to_string())
            .env("PACKLIGHT_ENVOY", envoy)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start packlight up: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut up = Up {
            child: Some(child),
            ingress,
            api,
            token: String::new(),
            data_dir,
            instances: Vec::new(),
            warnings,
            stderr_path,
        };
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(l)) if l.trim() == "packlight: ready" => return Ok(()),
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        return Err(
                            "packlight up closed its stdout before `packlight: ready`".to_owned()
                        );
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(up.explain(&e).await),
            Err(_) => {
                return Err(up
                    .explain(&format!("no `packlight: ready` within {READY_TIMEOUT:?}"))
                    .await);
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        up.token = std::fs::read_to_string(up.data_dir.join("token"))
            .map_err(|e| format!("token: {e}"))?
            .trim()
            .to_owned();
        up.wait_instances().await?;
        Ok(up)
    }

    /// `e` plus the exit status and the tail of the engine's stderr.
    async fn explain(&mut self, e: &str) -> String {
        let status = match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(s))) => format!(" (exited: {s})"),
            _ => String::new(),
        };
        format!(
            "{e}{status}\n--- packlight up stderr (tail) ---\n{}",
            self.stderr_tail()
        )
    }

    /// The last lines of the engine's stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// An API client call: GET `path` with the bearer token.
    pub async fn api_get(&self, path: &str) -> Result<serde_json::Value, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(format!("http://{}{path}", self.api))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}: {text}"))
    }

    async fn wait_instances(&mut self) -> Result<(), String> {
        self.instances = self.wait_ready().await?;
        Ok(())
    }

    /// Polls `GET /instances` until every instance is ready (its Envoy
    /// ACKed the latest config, its app accepts), bounded.
    pub async fn wait_ready(&self) -> Result<Vec<Instance>, String> {
        let deadline = tokio::time::Instant::now() + INSTANCES_TIMEOUT;
        loop {
            let v = self.api_get("/instances").await?;
            let list: Vec<Instance> =
                serde_json::from_value(v.clone()).map_err(|e| format!("/instances: {e}: {v}"))?;
            let waiting: Vec<String> = list
                .iter()
                .filter(|i| !i.ready)
                .map(|i| {
                    format!(
                        "{}/{} {}",
                        i.namespace,
                        i.service,
                        i.version.as_deref().unwrap_or("")
                    )
                })
                .collect();
            if waiting.is_empty() {
                return Ok(list);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "instances not ready after {INSTANCES_TIMEOUT:?}: {waiting:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The instances of `service` (`ns/service` or `service`).
    pub fn find(
        &self,
        namespace: Option<&str>,
        service: &str,
        version: Option<&str>,
    ) -> Vec<&Instance> {
        self.instances
            .iter()
            .filter(|i| i.service == service)
            .filter(|i| namespace.is_none_or(|ns| ns == i.namespace))
            .filter(|i| version.is_none_or(|v| i.version.as_deref() == Some(v)))
            .collect()
    }

    /// SIGTERM, up to 20 s for a clean stop, then SIGKILL to the group.
    pub async fn stop(mut self) -> Option<String> {
        let child = self.child.take()?;
        stop_child(child).await
    }
}

async fn stop_child(mut child: Child) -> Option<String> {
    let pid = child.id()?;
    signal(&pid.to_string(), "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    // Whatever it left behind in its group goes too.
    signal(&format!("-{pid}"), "-KILL");
    match status {
        Ok(Ok(s)) if s.success() => None,
        Ok(Ok(s)) => Some(format!("packlight up exited with {s} on SIGTERM")),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => {
            let _ = child.kill().await;
            Some("packlight up did not stop within 20 s of SIGTERM".to_owned())
        }
    }
}

/// `kill SIG -- TARGET` (a pid, or `-PGID` for a group). The test crate
/// uses no `unsafe`, so no libc::kill.
fn signal(target: &str, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(child) = self.child.take()
            && let Some(pid) = child.id()
        {
            signal(&format!("-{pid}"), "-KILL");
        }
    }
}
