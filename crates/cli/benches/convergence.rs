//! Convergence benchmark of the standalone engine (issue 8, "Benchmark"),
//! the packlight side of `/work/shared/bench/istio-anchor` (same mesh
//! shape: namespace `shop`, N services of 2 versions, each with a Route
//! 80/20 plus a `gray: 1` header rule).
//!
//! For each N it writes the mesh to a directory, starts the real
//! `packlight up` (the binary cargo built for this package) with its own
//! data directory, API and ingress port, waits for `packlight: ready`, and
//! then ROUNDS times changes the weights of Route `svc-0` through
//! `POST /apply` (alternating like the anchor's `poll.py`). Each round is
//! timed from just before the API write to:
//! * **envoy**: the last affected sidecar's accepted route update, read
//!   from its own admin `/stats` (from outside, as the anchor measures
//!   istiod + Envoy): `rds.outbound.update_success` increased, and the
//!   subscription's `update_time` gauge (wall clock, ms) says when. The
//!   Envoys are read once the change is Programmed (and again, every
//!   `POLL`, only for those not updated yet), never while they converge:
//!   polling 20 Envoys' admin every few ms competes with their xDS
//!   handling on the same main thread and slowed what it measured;
//! * **api**: Route `svc-0` shows `Programmed=True` with the new
//!   `observedGeneration` (the engine's own view: every Envoy ACKed),
//!   polled every `POLL`.
//!
//! Live workloads: `SLEEPS` (default 20) services `sleep-K` running
//! `packlight demo-app`, each with its sidecar Envoy (`--concurrency 1`).
//! The namespace is `access: deny`; AccessPolicies let `sleep-K` call
//! `svc-0`, `svc-K` and `svc-(SLEEPS+K)`. The model makes every service
//! with an AccessPolicy routable by every caller (denied callers get 403),
//! so each sidecar holds those 2 * SLEEPS + 1 services whatever N is, and
//! all of them are affected by `svc-0`.
//! Services without `command` or endpoints run no process.
//!
//! Also reported, per round: the CPU time packlight and its Envoys used
//! from the write to `Programmed` (`/proc/PID/task/*/schedstat`; the
//! Envoys' stats are read after that). And: config bytes of one sidecar (`/config_dump?include_eds`),
//! and VmRSS / VmHWM of the packlight process after the rounds.
//!
//! Run: `cargo bench -p packlight --bench convergence`. Environment:
//! `CONVERGENCE_SERVICES` (default `100,1000`), `CONVERGENCE_ROUNDS` (20),
//! `CONVERGENCE_SLEEPS` (20), `CONVERGENCE_KEEP=1` keeps the work
//! directory (logs), `CONVERGENCE_LOG` is `packlight up`'s `PACKLIGHT_LOG`
//! (default `warn`; `packlight_standalone::engine=debug` logs each
//! step's time to `packlight.log`), `CONVERGENCE_BIN` another
//! `packlight` binary to measure (e.g. a copy of an older build, to
//! alternate old and new in one session). Envoy: `PACKLIGHT_ENVOY`, else
//! `~/.cache/packlight/envoy-venv/bin/envoy`. Prints one JSON line per N.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

const API_BASE: &str = "/apis/packlight.dev/v1alpha1/namespaces/shop/routes";
/// Bound of one round (anchor: 30 s).
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// Bound of `packlight up` reaching `ready`.
const READY_LIMIT: Duration = Duration::from_secs(600);
/// Interval between two polls of the Envoys' stats (and of the Route's
/// status): the resolution of the measure, without keeping 20 Envoys and
/// the API busy answering polls.
const POLL: Duration = Duration::from_millis(5);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The Route of `svc-I` with weights `w` / `100 - w`.
fn route(i: usize, w: u32) -> String {
    format!(
        "apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {{name: svc-{i}, namespace: shop}}
spec:
  service: svc-{i}
  rules:
  - {{version: \"1.0\", weight: {w}}}
  - {{version: \"1.1\", weight: {}}}
  - version: \"1.1\"
    matches: [{{headers: {{gray: {{exact: \"1\"}}}}}}]
",
        100 - w
    )
}

/// The services `sleep-K` (1-based) may call.
fn deps(k: usize, sleeps: usize, services: usize) -> [usize; 3] {
    [0, k % services, (sleeps + k) % services]
}

/// The mesh as one multi-document YAML text.
fn mesh_yaml(services: usize, sleeps: usize) -> String {
    let mut docs = vec![
        "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default, namespace: shop}\nspec: {mtls: strict, access: deny}\n".to_string(),
    ];
    for i in 0..services {
        docs.push(format!(
            "apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {{name: svc-{i}, namespace: shop}}
spec:
  port: 8000
  versions:
  - {{version: \"1.0\", image: \"example/app:1.0\"}}
  - {{version: \"1.1\", image: \"example/app:1.1\"}}
"
        ));
        docs.push(route(i, 80));
    }
    let mut callers: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for k in 1..=sleeps {
        docs.push(format!(
            "apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {{name: sleep-{k}, namespace: shop}}
spec:
  port: 8080
  versions:
  - {{version: \"1.0\", image: \"example/sleep:1.0\", command: [\"packlight\", \"demo-app\"]}}
"
        ));
        for d in deps(k, sleeps, services) {
            let c = callers.entry(d).or_default();
            if !c.contains(&format!("sleep-{k}")) {
                c.push(format!("sleep-{k}"));
            }
        }
    }
    for (svc, from) in callers {
        docs.push(format!(
            "apiVersion: packlight.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: svc-{svc}, namespace: shop}}
spec:
  service: svc-{svc}
  allow:
  - from: [{}]
",
            from.join(", ")
        ));
    }
    docs.join("---\n")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `packlight up`, its process group killed on drop.
struct Up {
    child: Child,
}

impl Up {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, up to 20 s for a clean stop, then SIGKILL to the group.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Starts `packlight up` and waits for `packlight: ready`.
fn start(work: &Path, api_port: u16, ingress_port: u16) -> anyhow::Result<(Up, Duration, String)> {
    let envoy = packlight_testenv::envoy()?;
    let log = std::fs::File::create(work.join("packlight.log"))?;
    let t0 = Instant::now();
    let bin = std::env::var_os("CONVERGENCE_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_packlight").into());
    let mut child = Command::new(bin)
        .arg("up")
        .arg(work.join("mesh"))
        .arg("--data-dir")
        .arg(work.join("data"))
        .args(["--ingress-port", &ingress_port.to_string()])
        .args(["--api", &format!("127.0.0.1:{api_port}")])
        .args(["--ready-timeout", &format!("{}s", READY_LIMIT.as_secs())])
        .env("PACKLIGHT_ENVOY", envoy)
        .env(
            "PACKLIGHT_LOG",
            std::env::var("CONVERGENCE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let up = Up { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = t0 + READY_LIMIT + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "packlight: ready" => break,
            Ok(line) if line.starts_with("packlight: not every proxy") => bail!("{line}"),
            Ok(_) => {}
            Err(_) => bail!(
                "packlight up did not get ready (see {})",
                work.join("packlight.log").display()
            ),
        }
    }
    let ready = t0.elapsed();
    let token = std::fs::read_to_string(work.join("data/token"))?
        .trim()
        .to_string();
    Ok((up, ready, token))
}

async fn json(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// One Envoy's outbound route subscriptions: the sum of
/// `update_success` and the latest `update_time` (ms since the epoch).
async fn rds_state(http: &reqwest::Client, admin: &str) -> anyhow::Result<(u64, u64)> {
    let url = format!(
        "http://{admin}/stats?filter=rds%5C.outbound%5C.update_%28success%7Ctime%29&format=json"
    );
    let v = json(http.get(url)).await?;
    let (mut count, mut time) = (0, 0);
    for s in v["stats"].as_array().into_iter().flatten() {
        let (Some(name), Some(value)) = (s["name"].as_str(), s["value"].as_u64()) else {
            continue;
        };
        if name.ends_with(".update_success") {
            count += value;
        } else if name.ends_with(".update_time") {
            time = time.max(value);
        }
    }
    Ok((count, time))
}

/// `rds_state` of the Envoys at `admins[i]` for each `i` of `which`,
/// concurrently, in that order.
async fn states_of(
    http: &reqwest::Client,
    admins: &[String],
    which: &[usize],
) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut set = tokio::task::JoinSet::new();
    for (slot, &i) in which.iter().enumerate() {
        let (http, admin) = (http.clone(), admins[i].clone());
        set.spawn(async move { (slot, rds_state(&http, &admin).await) });
    }
    let mut out = vec![(0, 0); which.len()];
    while let Some(done) = set.join_next().await {
        let (slot, state) = done?;
        out[slot] = state?;
    }
    Ok(out)
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// CPU time (ns) every thread of process `pid` has used so far, from
/// `/proc/PID/task/*/schedstat` (0 when it is gone).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The Envoys `packlight up` (`pid`) started: its children named `envoy`.
fn envoy_pids(pid: u32) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                // `PID (COMM) STATE PPID ...`; COMM may hold spaces.
                let Some((head, tail)) = st.rsplit_once(')') else {
                    return false;
                };
                head.ends_with("(envoy")
                    && tail.split_whitespace().nth(1) == Some(pid.to_string().as_str())
            })
        })
        .collect()
}

/// CPU (ns) of packlight and of its Envoys so far.
fn cpu_of(pid: u32, envoys: &[u32]) -> (u64, u64) {
    (cpu_ns(pid), envoys.iter().map(|&e| cpu_ns(e)).sum())
}

/// The anchor's weight for round `r`.
fn weight(r: usize) -> u32 {
    // r % 7 < 7 and r % 2 < 2: the sum fits u32.
    50 + (r % 2) as u32 * 10 + (r % 7) as u32
}

struct Round {
    envoy: Duration,
    api: Duration,
    apply: Duration,
    /// CPU used from the write to `Programmed` by packlight and by all
    /// its Envoys (before the Envoys' stats are read).
    cpu_packlight: Duration,
    cpu_envoys: Duration,
}

async fn round(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    admins: &[String],
    pids: (u32, &[u32]),
    r: usize,
) -> anyhow::Result<Round> {
    let route_url = format!("{api}{API_BASE}/svc-0");
    let before = json(http.get(&route_url).bearer_auth(token)).await?;
    let generation = before["metadata"]["generation"]
        .as_i64()
        .context("no generation")?
        + 1;
    let all: Vec<usize> = (0..admins.len()).collect();
    let base = states_of(http, admins, &all).await?;
    let body = route(0, weight(r));
    let cpu0 = cpu_of(pids.0, pids.1);
    let t0_ms = epoch_ms();
    let t0 = Instant::now();
    let apply_call = async {
        let applied = json(
            http.post(format!("{api}/apply"))
                .bearer_auth(token)
                .header("content-type", "application/yaml")
                .body(body),
        )
        .await?;
        if applied["results"][0]["action"] != "configured" {
            bail!("apply did not configure: {applied}");
        }
        anyhow::Ok(t0.elapsed())
    };
    let api_wait = async {
        loop {
            if t0.elapsed() > ROUND_LIMIT {
                bail!("Route svc-0 not Programmed at generation {generation}");
            }
            let v = json(http.get(&route_url).bearer_auth(token)).await?;
            let programmed = v["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Programmed"
                        && c["status"] == "True"
                        && c["observedGeneration"] == generation
                })
            });
            if programmed {
                return anyhow::Ok(t0.elapsed());
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let (apply, api) = tokio::join!(apply_call, api_wait);
    let (apply, api) = (apply?, api?);
    let cpu1 = cpu_of(pids.0, pids.1);
    // Now the Envoys: each one's last accepted update, by its own clock.
    let mut pending = all;
    let mut last_ms = t0_ms;
    while !pending.is_empty() {
        if t0.elapsed() > ROUND_LIMIT {
            bail!("{} proxies did not update", pending.len());
        }
        let now = states_of(http, admins, &pending).await?;
        let mut still = Vec::new();
        for (&i, (count, time)) in pending.iter().zip(now) {
            if count > base[i].0 {
                last_ms = last_ms.max(time);
            } else {
                still.push(i);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(Round {
        envoy: Duration::from_millis(last_ms - t0_ms),
        api,
        apply,
        cpu_packlight: Duration::from_nanos(cpu1.0.saturating_sub(cpu0.0)),
        cpu_envoys: Duration::from_nanos(cpu1.1.saturating_sub(cpu0.1)),
    })
}

/// p50 / p99 / max in ms, picked as the anchor's `poll.py` does.
fn percentiles(mut xs: Vec<Duration>) -> Value {
    xs.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
    let n = xs.len();
    if n == 0 {
        return Value::Null;
    }
    serde_json::json!({
        "p50_ms": ms(xs[n / 2]),
        "p99_ms": ms(xs[(n * 99 / 100).min(n - 1)]),
        "max_ms": ms(xs[n - 1]),
    })
}

fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn bench(services: usize, sleeps: usize, rounds: usize) -> anyhow::Result<Value> {
    let tmp = tempfile::Builder::new()
        .prefix("packlight-convergence-")
        .tempdir()?;
    let work = tmp.path().to_path_buf();
    std::fs::create_dir_all(work.join("mesh"))?;
    std::fs::write(work.join("mesh/mesh.yaml"), mesh_yaml(services, sleeps))?;
    let (api_port, ingress_port) = (free_port()?, free_port()?);
    let (mut up, ready, token) = start(&work, api_port, ingress_port)?;
    let pid = up.pid();
    let api = format!("http://127.0.0.1:{api_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;

    let instances = json(http.get(format!("{api}/instances")).bearer_auth(&token)).await?;
    let list = instances.as_array().context("instances")?;
    let mut admins = Vec::new();
    for k in 1..=sleeps {
        let i = list
            .iter()
            .find(|i| i["service"] == format!("sleep-{k}").as_str())
            .with_context(|| format!("no instance of sleep-{k}"))?;
        if i["ready"] != true {
            bail!("sleep-{k} not ready: {i}");
        }
        admins.push(i["admin"].as_str().context("admin")?.to_string());
    }
    let envoys = list.len();
    let dump = http
        .get(format!("http://{}/config_dump?include_eds", admins[0]))
        .send()
        .await?
        .bytes()
        .await?;
    let dump_json: Value = serde_json::from_slice(&dump)?;
    let clusters = dump_json["configs"]
        .as_array()
        .and_then(|cs| {
            cs.iter().find(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("ClustersConfigDump"))
            })
        })
        .and_then(|c| c["dynamic_active_clusters"].as_array())
        .map_or(0, Vec::len);
    let rss_ready = proc_kb(pid, "VmRSS:");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let envoy_pids = envoy_pids(pid);
    let mut times = Vec::new();
    for r in 0..rounds {
        times.push(round(&http, &api, &token, &admins, (pid, &envoy_pids), r).await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rss = proc_kb(pid, "VmRSS:");
    let hwm = proc_kb(pid, "VmHWM:");
    up.stop();
    if std::env::var_os("CONVERGENCE_KEEP").is_some() {
        let kept = tmp.keep();
        eprintln!("work directory kept: {}", kept.display());
    }
    Ok(serde_json::json!({
        "services": services,
        "sidecars_affected": sleeps,
        "envoys": envoys,
        "ready_s": (ready.as_secs_f64() * 10.0).round() / 10.0,
        "packlight_rss_mb": rss / 1024,
        "packlight_rss_ready_mb": rss_ready / 1024,
        "packlight_peak_mb": hwm / 1024,
        "config_dump_bytes_per_sidecar": dump.len(),
        "clusters_per_sidecar": clusters,
        "convergence_envoy": percentiles(times.iter().map(|t| t.envoy).collect()),
        "convergence_api": percentiles(times.iter().map(|t| t.api).collect()),
        "apply_call": percentiles(times.iter().map(|t| t.apply).collect()),
        "cpu_to_programmed_packlight": percentiles(times.iter().map(|t| t.cpu_packlight).collect()),
        "cpu_to_programmed_envoys": percentiles(times.iter().map(|t| t.cpu_envoys).collect()),
        "envoy_processes": envoy_pids.len(),
        "rounds": rounds,
    }))
}

fn main() -> anyhow::Result<()> {
    let services: Vec<usize> = std::env::var("CONVERGENCE_SERVICES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds = env_or("CONVERGENCE_ROUNDS", 20usize);
    let sleeps = env_or("CONVERGENCE_SLEEPS", 20usize);
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this
    // without it: then one tiny mesh, 2 rounds, proves the bench works.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let plan: Vec<(usize, usize, usize)> = if smoke {
        vec![(10, 2, 2)]
    } else {
        services.iter().map(|&n| (n, sleeps, rounds)).collect()
    };
    for (n, s, r) in plan {
        let line = rt.block_on(bench(n, s, r))?;
        println!("{line}");
    }
    Ok(())
}
