//! `packlight up` end to end, with real Envoy: live changes without
//! failed requests, refused changes that leave traffic alone, certificate
//! rotation, config scoping, a sidecar that exits and comes back, a
//! restart from the store, the API's token,
//! and the CLI's `apply`/`get`/`delete` with their exit codes.
//!
//! Every test starts its own engine on free ports with its own data
//! directory and stops it (the whole process group) at the end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn packlight() -> &'static str {
    env!("CARGO_BIN_EXE_packlight")
}

fn free_port() -> u16 {
    packlight_testenv::free_port()
}

/// Real Envoy (installed on demand; never skips).
fn envoy() -> PathBuf {
    packlight_testenv::envoy().expect("real Envoy")
}

/// A running `packlight up`.
struct Up {
    child: Child,
    data: tempfile::TempDir,
    api: String,
    token: String,
    http: reqwest::Client,
}

impl Drop for Up {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl Up {
    /// Stops the engine, keeping its data directory.
    fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }

    fn terminate(&mut self) {
        // SIGTERM: packlight stops its Envoys and apps, then exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

fn write_dir(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

impl Up {
    /// Starts `packlight up` on `resources` (a directory), waits for
    /// `packlight: ready`.
    fn start(resources: &Path, extra: &[&str]) -> Up {
        Self::start_in(tempfile::tempdir().unwrap(), Some(resources), extra)
    }

    fn start_in(data: tempfile::TempDir, resources: Option<&Path>, extra: &[&str]) -> Up {
        let api_port = free_port();
        let ingress = free_port();
        let mut cmd = Command::new(packlight());
        cmd.arg("up");
        if let Some(r) = resources {
            cmd.arg(r);
        }
        cmd.args(["--data-dir"])
            .arg(data.path())
            .args(["--ingress-port", &ingress.to_string()])
            .args(["--api", &format!("127.0.0.1:{api_port}")])
            .args(extra)
            .env("PACKLIGHT_ENVOY", envoy())
            .env("PACKLIGHT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("packlight up");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == "packlight: ready" => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "packlight up not ready within 120 s; printed {seen:?}; its logs:\n{}",
                    packlight_testenv::log_tails(&data.path().join("logs"), 5)
                ),
            }
        }
        let token = std::fs::read_to_string(data.path().join("token"))
            .unwrap()
            .trim()
            .to_string();
        Up {
            child,
            data,
            api: format!("http://127.0.0.1:{api_port}"),
            token,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("API reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn apply(&self, yaml: &str) -> (u16, Value) {
        self.api(reqwest::Method::POST, "/apply", Some(yaml)).await
    }

    async fn instance(&self, service: &str) -> Value {
        let (_, list) = self.api(reqwest::Method::GET, "/instances", None).await;
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["service"] == service)
            .cloned()
            .unwrap_or_else(|| panic!("no instance of {service}: {list}"))
    }

    /// A client whose HTTP proxy is `service`'s sidecar (what its app
    /// gets as HTTP_PROXY).
    async fn client_of(&self, service: &str) -> reqwest::Client {
        let out = self.instance(service).await["outbound"]
            .as_str()
            .unwrap()
            .to_string();
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(format!("http://{out}")).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// Waits (bounded) until the Route is Programmed at `generation`.
    async fn programmed(&self, ns: &str, name: &str, generation: i64) {
        let path = format!("/apis/packlight.dev/v1alpha1/namespaces/{ns}/routes/{name}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = self.api(reqwest::Method::GET, &path, None).await;
            let ok = v["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Programmed"
                        && c["status"] == "True"
                        && c["observedGeneration"] == generation
                })
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "not programmed: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const MESH: &str = r#"
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: web, namespace: shop}
spec:
  port: 8000
  versions:
  - {version: "1.0", command: ["packlight", "demo-app"]}
  - {version: "1.1", command: ["packlight", "demo-app"]}
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: client, namespace: shop}
spec:
  port: 8000
  versions:
  - {version: "1.0", command: ["packlight", "demo-app"]}
---
apiVersion: packlight.dev/v1alpha1
kind: MeshPolicy
metadata: {name: default, namespace: shop}
spec: {mtls: strict, access: deny, egress: deny}
---
apiVersion: packlight.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web, namespace: shop}
spec:
  service: web
  allow:
  - from: [client]
"#;

fn route(w0: u32, w1: u32) -> String {
    format!(
        "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {{name: web, namespace: shop}}\nspec:\n  service: web\n  rules:\n  - {{version: \"1.0\", weight: {w0}}}\n  - {{version: \"1.1\", weight: {w1}}}\n"
    )
}

fn mesh_dir(route_text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_dir(
        dir.path(),
        &[("mesh.yaml", MESH), ("route.yaml", route_text)],
    );
    dir
}

/// Sends `n` GETs; returns (versions seen by header, failures).
async fn send(
    client: &reqwest::Client,
    n: usize,
) -> (std::collections::BTreeMap<String, usize>, usize) {
    let mut seen = std::collections::BTreeMap::new();
    let mut failed = 0;
    for _ in 0..n {
        match client.get("http://web.shop:8000/hello").send().await {
            Ok(r) if r.status() == 200 => {
                let v = r
                    .headers()
                    .get("x-packlight-version")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if v != "none" {
                    assert_eq!(body["version"], v.as_str(), "header and body disagree");
                }
                *seen.entry(v).or_default() += 1;
            }
            _ => failed += 1,
        }
    }
    (seen, failed)
}

fn share(seen: &std::collections::BTreeMap<String, usize>, v: &str) -> f64 {
    let total: usize = seen.values().sum();
    100.0 * *seen.get(v).unwrap_or(&0) as f64 / total.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_weight_change_loses_no_request_and_a_bad_change_changes_nothing() {
    let dir = mesh_dir(&route(80, 20));
    let up = Up::start(dir.path(), &[]);
    let client = up.client_of("client").await;

    let (seen, failed) = send(&client, 1000).await;
    assert_eq!(failed, 0);
    assert!((share(&seen, "1.0") - 80.0).abs() <= 4.0, "{seen:?}");

    // Change the split to 50/50 while requests flow.
    let sender = {
        let client = client.clone();
        tokio::spawn(async move { send(&client, 1500).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = up.apply(&route(50, 50)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["action"], "configured");
    up.programmed("shop", "web", 2).await;
    let (_, failed) = sender.await.unwrap();
    assert_eq!(failed, 0, "requests failed during a live weight change");
    let (seen, failed) = send(&client, 1000).await;
    assert_eq!(failed, 0);
    assert!((share(&seen, "1.0") - 50.0).abs() <= 5.0, "{seen:?}");

    // A bad change (weights of major 1 sum to 90) is refused with its
    // diagnostic and position; the generation and the traffic stay.
    let (status, body) = up.apply(&route(70, 20)).await;
    assert_eq!(status, 422, "{body}");
    let d = &body["diagnostics"][0];
    assert_eq!(d["kind"], "Route");
    assert_eq!(d["name"], "web");
    assert!(d["message"].as_str().unwrap().contains("90"), "{d}");
    assert!(d["line"].as_u64().is_some(), "no position: {d}");
    let (_, r) = up
        .api(
            reqwest::Method::GET,
            "/apis/packlight.dev/v1alpha1/namespaces/shop/routes/web",
            None,
        )
        .await;
    assert_eq!(r["metadata"]["generation"], 2);
    assert_eq!(r["status"]["split"], "1.0=50,1.1=50");
    let (seen, failed) = send(&client, 600).await;
    assert_eq!(failed, 0);
    assert!((share(&seen, "1.0") - 50.0).abs() <= 7.0, "{seen:?}");

    // A dry run validates and changes nothing.
    let (status, _) = up
        .api(
            reqwest::Method::POST,
            "/apply?dryRun=true",
            Some(&route(10, 90)),
        )
        .await;
    assert_eq!(status, 200);
    let (_, r) = up
        .api(
            reqwest::Method::GET,
            "/apis/packlight.dev/v1alpha1/namespaces/shop/routes/web",
            None,
        )
        .await;
    assert_eq!(r["metadata"]["generation"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_while_requests_succeed() {
    let dir = mesh_dir(&route(50, 50));
    let up = Up::start(dir.path(), &["--cert-ttl", "20s"]);
    let client = up.client_of("client").await;
    let admin = up.instance("web").await["admin"]
        .as_str()
        .unwrap()
        .to_string();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let serial = || async {
        let v: Value = http
            .get(format!("http://{admin}/certs"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["certificates"][0]["cert_chain"][0]["serial_number"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let first = serial().await;
    assert!(!first.is_empty());
    // Renewed at half the lifetime (10 s): within 20 s a new serial shows,
    // before the first expires; requests keep succeeding meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failed = 0;
    let mut sent = 0;
    let rotated = loop {
        let (_, f) = send(&client, 20).await;
        failed += f;
        sent += 20;
        let now = serial().await;
        if !now.is_empty() && now != first {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(rotated, "serial still {first} after 20 s");
    let (_, f) = send(&client, 100).await;
    assert_eq!(failed + f, 0, "{failed} of {sent} failed during rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_holds_only_what_it_may_call() {
    // 200 services without processes; `client` may call only svc-7.
    let mut text = String::from(
        "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default, namespace: big}\nspec: {mtls: strict, access: deny, egress: deny}\n---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: client, namespace: big}\nspec:\n  port: 8000\n  versions:\n  - {version: \"1.0\", command: [\"packlight\", \"demo-app\"]}\n---\napiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: svc-7, namespace: big}\nspec:\n  service: svc-7\n  allow:\n  - from: [client]\n",
    );
    for i in 0..200 {
        text.push_str(&format!(
            "---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: svc-{i}, namespace: big}}\nspec:\n  port: 8000\n  versions:\n  - {{version: \"1.0\"}}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &[("big.yaml", &text)]);
    let up = Up::start(dir.path(), &[]);
    let admin = up.instance("client").await["admin"]
        .as_str()
        .unwrap()
        .to_string();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let dump: Value = http
        .get(format!(
            "http://{admin}/config_dump?resource=dynamic_active_clusters"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names = cluster_names(&dump);
    let svc: Vec<&String> = names.iter().filter(|n| n.contains(".big.svc")).collect();
    assert_eq!(
        svc,
        [&"outbound|8000||svc-7.big.svc.cluster.local".to_string()],
        "all clusters: {names:?}"
    );
}

/// The cluster names of an Envoy admin `config_dump` of
/// `dynamic_active_clusters` (none when it is not one).
fn cluster_names(dump: &Value) -> Vec<String> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cluster"]["name"].as_str().map(str::to_string))
        .collect()
}

/// The pids of the Envoys whose bootstrap is under `data` (found through
/// `/proc`, so the test sees the real processes).
fn envoys_of(data: &Path) -> Vec<u32> {
    let needle = data.join("run").display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("envoy") && cmd.contains(&needle) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_exits_comes_back_with_its_config_on_a_fresh_admin_port() {
    let dir = mesh_dir(&route(50, 50));
    let up = Up::start(dir.path(), &[]);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // No Envoy of the engine keeps a hot-restart shared memory region
    // (each would leave a file in /dev/shm behind).
    let pids = envoys_of(up.data.path());
    assert_eq!(pids.len(), 4, "ingress + 3 sidecars: {pids:?}");
    for pid in &pids {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        assert!(maps.contains("envoy"), "cannot read Envoy {pid}'s maps");
        assert!(
            !maps.contains("envoy_shared_memory"),
            "Envoy {pid} maps a hot-restart region"
        );
    }

    let before = up.instance("client").await;
    let admin = before["admin"].as_str().unwrap().to_string();
    assert!(admin.parse::<std::net::SocketAddr>().is_ok(), "{before}");
    let restarts = before["restarts"].as_u64().unwrap();
    // The sidecar quits (exit 0); the engine starts it again.
    let quit = http
        .post(format!("http://{admin}/quitquitquit"))
        .send()
        .await
        .unwrap();
    assert_eq!(quit.status(), 200);
    // Someone else takes its old admin port as soon as it is free: the
    // restarted Envoy must not need it (a port fixed in its bootstrap
    // would fail every restart from now on).
    let held = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(l) = std::net::TcpListener::bind(admin.as_str()) {
                break l;
            }
            assert!(Instant::now() < deadline, "{admin} never freed");
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    // Bounded wait: the API reports the restart and an admin address
    // that answers with the config the new Envoy was served.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    let clusters = loop {
        assert!(
            Instant::now() < deadline,
            "no restarted sidecar with its config: {last}\n{}",
            packlight_testenv::log_tails(&up.data.path().join("logs"), 5)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = up.instance("client").await;
        if last["restarts"].as_u64().unwrap() <= restarts {
            continue;
        }
        let Some(admin) = last["admin"].as_str().filter(|a| !a.is_empty()) else {
            continue;
        };
        let Ok(resp) = http
            .get(format!(
                "http://{admin}/config_dump?resource=dynamic_active_clusters"
            ))
            .send()
            .await
        else {
            continue;
        };
        let dump: Value = resp.json().await.unwrap_or(Value::Null);
        let names = cluster_names(&dump);
        if names.iter().any(|n| n.contains("web.shop.svc")) {
            break names;
        }
    };
    assert!(
        clusters.iter().any(|n| n.contains("|v1-0|web.shop")),
        "{clusters:?}"
    );

    assert_ne!(last["admin"].as_str(), Some(admin.as_str()));
    drop(held);

    // And it carries traffic again: once its listener is up (its clusters
    // may come first), every request answered.
    let client = up.client_of("client").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while send(&client, 1).await.1 != 0 {
        assert!(
            Instant::now() < deadline,
            "the restarted sidecar never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (seen, failed) = send(&client, 100).await;
    assert_eq!(failed, 0, "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 100);
    assert!(
        seen.contains_key("1.0") && seen.contains_key("1.1"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_survives_a_restart_and_the_api_wants_its_token() {
    let dir = mesh_dir(&route(100, 0));
    let up = Up::start(dir.path(), &[]);
    // Without the token: 401; /version needs none.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = plain
        .get(format!("{}/instances", up.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = plain
        .get(format!("{}/version", up.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Change through the CLI, as a user would.
    let routes = tempfile::tempdir().unwrap();
    write_dir(routes.path(), &[("route.yaml", &route(0, 100))]);
    let cli = |args: &[&str]| {
        Command::new(packlight())
            .args(args)
            .args(["--server", &up.api, "--data-dir"])
            .arg(up.data.path())
            .output()
            .unwrap()
    };
    let out = cli(&["apply", "-f", routes.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configured"));
    up.programmed("shop", "web", 2).await;
    let out = cli(&["get", "routes", "-n", "shop"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("1.0=0,1.1=100"), "{table}");
    let out = cli(&["get", "route", "nope", "-n", "shop"]);
    assert_eq!(out.status.code(), Some(1));
    // Stop, start again from the data directory alone.
    let data = up.stop();
    let up = Up::start_in(data, None, &[]);
    let client = up.client_of("client").await;
    let (seen, failed) = send(&client, 50).await;
    assert_eq!(failed, 0);
    assert_eq!(seen.get("1.1"), Some(&50), "{seen:?}");
    // Delete the Route: the service is served by all versions, no header.
    let out = Command::new(packlight())
        .args([
            "delete",
            "route",
            "web",
            "-n",
            "shop",
            "--server",
            &up.api,
            "--data-dir",
        ])
        .arg(up.data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (seen, _) = send(&client, 10).await;
        if seen.contains_key("none") {
            break;
        }
        assert!(Instant::now() < deadline, "header still set: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn an_unreachable_engine_is_exit_code_3_and_bad_input_exit_1() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &[("route.yaml", &route(80, 20))]);
    let out = Command::new(packlight())
        .args(["apply", "-f", dir.path().to_str().unwrap()])
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // `up` with invalid resources starts nothing and exits 1 with the
    // diagnostic's position.
    write_dir(dir.path(), &[("route.yaml", &route(80, 10))]);
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(packlight())
        .arg("up")
        .arg(dir.path())
        .arg("--data-dir")
        .arg(data.path())
        .args(["--ingress-port", &free_port().to_string()])
        .args(["--api", &format!("127.0.0.1:{}", free_port())])
        .env("PACKLIGHT_ENVOY", envoy())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("route.yaml:") && err.contains("90"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "printed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_counts_per_version_and_events_stream_changes() {
    let dir = mesh_dir(&route(80, 20));
    let up = Up::start(dir.path(), &[]);
    // Events: subscribe first, then change something.
    let mut events = up
        .http
        .get(format!("{}/events", up.api))
        .bearer_auth(&up.token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let (status, _) = up.apply(&route(70, 30)).await;
    assert_eq!(status, 200);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(text.contains("\"configured\"") && text.contains("\"Programmed\"")) {
        assert!(Instant::now() < deadline, "events so far: {text}");
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.chunk()).await {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("event stream ended: {other:?}; got {text}"),
        }
    }
    assert!(text.contains("\"kind\":\"Route\""), "{text}");
    drop(events);
    up.programmed("shop", "web", 2).await;

    // Traffic: what the sidecars served, per version, from their stats.
    let client = up.client_of("client").await;
    let (seen, failed) = send(&client, 400).await;
    assert_eq!(failed, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, report) = up.api(reqwest::Method::GET, "/traffic", None).await;
        let total = |v: &str| {
            report
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["service"] == "web" && t["version"] == v)
                .and_then(|t| t["requestsTotal"].as_u64())
                .unwrap_or(0)
        };
        let (a, b) = (total("1.0"), total("1.1"));
        if a + b >= 400 {
            // Exactly what the client saw per version (the inbound side
            // counts each request once).
            assert_eq!(a as usize, seen["1.0"], "{report}");
            assert_eq!(b as usize, seen["1.1"], "{report}");
            let rps: f64 = report
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["service"] == "web")
                .filter_map(|t| t["requestsPerSecond"].as_f64())
                .sum();
            assert!(rps >= 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "traffic report: {report}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[test]
fn the_login_service_runs_alone_for_the_kubernetes_engine() {
    let data = tempfile::tempdir().unwrap();
    let mut add = Command::new(packlight())
        .args(["user", "add", "alice", "--password-stdin", "--data-dir"])
        .arg(data.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(add.stdin.as_mut().unwrap(), b"secret-pass\n").unwrap();
    assert!(add.wait().unwrap().success());
    let port = free_port();
    /// Kills the service if the test fails before stopping it.
    struct Service(Child);
    impl Drop for Service {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut service = Service(
        Command::new(packlight())
            .args(["login-service", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let check = loop {
            match http.get(format!("{base}/app/data")).send().await {
                Ok(r) => break r,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("login service not up: {e}"),
            }
        };
        // An ext_authz check without a session: a browser is sent to the
        // login page; with a token from a JSON login: allowed, with the user.
        assert_eq!(check.status(), 302);
        let login: Value = http
            .post(format!("{base}/login"))
            .json(&serde_json::json!({"username": "alice", "password": "secret-pass"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"].as_str().expect("token").to_string();
        let ok = http
            .get(format!("{base}/app/data"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["x-packlight-user"], "alice");
    });
    let _ = Command::new("kill")
        .args(["-TERM", &service.0.id().to_string()])
        .status();
    let status = service.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Benchmark, not a check (run with `--ignored --nocapture`): the
/// standalone twin of `istio_traffic.rs::bench_weight_change_to_traffic`,
/// with the same criterion: time from `POST /apply` of the Route with its
/// weights flipped (80/20 <-> 20/80) until a window of 40 requests from
/// `client` (one keep-alive client through its sidecar) has at least 24 on
/// the newly heavy version, over 20 changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test -p packlight --test standalone -- --ignored --nocapture bench_weight_change"]
async fn bench_weight_change_to_traffic() {
    let dir = mesh_dir(&route(80, 20));
    let up = Up::start(dir.path(), &[]);
    let client = up.client_of("client").await;
    let (_, failed) = send(&client, 40).await;
    assert_eq!(failed, 0);
    let mut times = Vec::new();
    for round in 0..20u32 {
        let (heavy, w0, w1) = if round % 2 == 0 {
            ("1.1", 20, 80)
        } else {
            ("1.0", 80, 20)
        };
        let t0 = Instant::now();
        let (status, body) = up.apply(&route(w0, w1)).await;
        assert_eq!(status, 200, "{body}");
        loop {
            let (seen, failed) = send(&client, 40).await;
            assert_eq!(failed, 0, "round {round}: requests failed");
            if seen.get(heavy).copied().unwrap_or(0) >= 24 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "round {round} never converged"
            );
        }
        times.push(t0.elapsed());
        eprintln!("round {round}: {:?}", t0.elapsed());
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    eprintln!(
        "weight change -> new split in traffic (standalone), 20 changes: p50 {:?}, p99 {:?}, min {:?}",
        p(0.5),
        p(0.99),
        times[0]
    );
}
