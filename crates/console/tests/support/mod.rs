//! What the console's browser tests share (`browser.rs`, `kubernetes.rs`):
//! the `packlight` binary and Envoy, a `packlight up` on the httpbin
//! example, a headless Chromium under chromedriver, and the steps taken in
//! the console's pages (wait for a text, click, type weights, move a
//! slider, apply). Every helper here is used by both test binaries, so none
//! is dead code in either (but `Up::console`, which `kubernetes.rs` does
//! not need); a helper one file alone needs stays in it. `yaml.rs` and
//! `kubernetes_traffic.rs` use a few of them.
//!
//! Nothing here skips: a missing binary, Envoy or Chromium is a panic that
//! says how to install it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

fn target_dir() -> PathBuf {
    // target/debug/deps/TEST-HASH -> target/debug
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// `PACKLIGHT_BIN`, else the `packlight` beside this test in the target
/// directory (`cargo build -p packlight`).
pub fn packlight() -> PathBuf {
    if let Some(p) = std::env::var_os("PACKLIGHT_BIN") {
        return PathBuf::from(p);
    }
    let p = target_dir().join("packlight");
    assert!(
        p.is_file(),
        "no packlight binary at {p:?}: run `cargo build -p packlight` or set PACKLIGHT_BIN"
    );
    p
}

/// Real Envoy (installed on demand; never skips).
fn envoy() -> PathBuf {
    packlight_testenv::envoy().expect("real Envoy")
}

pub fn free_port() -> u16 {
    packlight_testenv::free_port()
}

/// A child process stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout piped; returns the first line satisfying `want`
/// (or panics after `secs` with what it printed and `why`, such as the
/// tails of its logs).
pub fn spawn_until(
    mut cmd: Command,
    want: impl Fn(&str) -> bool,
    secs: u64,
    why: impl Fn() -> String,
) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return (proc, line),
            Ok(line) => seen.push(line),
            Err(_) => panic!("not ready within {secs} s; printed {seen:?}\n{}", why()),
        }
    }
}

/// A directory holding the httpbin example's YAML files, moved to
/// namespace `ns` (they are in `demo`).
pub fn example(ns: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/httpbin");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("namespace: demo", &format!("namespace: {ns}"));
            std::fs::write(dir.path().join(p.file_name().unwrap()), text).unwrap();
        }
    }
    dir
}

/// A running `packlight up` (with real Envoy), stopped on drop.
pub struct Up {
    /// Its API, `http://127.0.0.1:PORT`.
    pub api: String,
    /// The file holding its API token.
    pub token_file: PathBuf,
    _process: Proc,
    _dirs: [tempfile::TempDir; 2],
}

/// `packlight up` on the files of `example`, its ingress on
/// `ingress_port`, its API on a free port and its data in a fresh
/// directory; ready when it prints `packlight: ready`.
pub fn packlight_up(example: tempfile::TempDir, ingress_port: u16) -> Up {
    let data = tempfile::tempdir().unwrap();
    let api = free_port();
    let mut up = Command::new(packlight());
    up.arg("up")
        .arg(example.path())
        .arg("--data-dir")
        .arg(data.path())
        .args(["--ingress-port", &ingress_port.to_string()])
        .args(["--api", &format!("127.0.0.1:{api}")])
        .env("PACKLIGHT_ENVOY", envoy())
        .env("PACKLIGHT_LOG", "warn")
        .stderr(Stdio::inherit());
    let logs = data.path().join("logs");
    let (process, _) = spawn_until(
        up,
        |l| l == "packlight: ready",
        120,
        || packlight_testenv::log_tails(&logs, 5),
    );
    Up {
        api: format!("http://127.0.0.1:{api}"),
        token_file: data.path().join("token"),
        _process: process,
        _dirs: [example, data],
    }
}

impl Up {
    /// `packlight console` on this engine, on a free port: the process,
    /// the login URL (with the token) and the base URL. (`kubernetes.rs`
    /// runs its console in the test process instead.)
    #[allow(dead_code)]
    pub fn console(&self) -> (Proc, String, String) {
        let mut console = Command::new(packlight());
        console
            .args(["console", "--listen", "127.0.0.1:0", "--standalone"])
            .arg(format!("{}#{}", self.api, self.token_file.display()))
            .env("PACKLIGHT_LOG", "warn")
            .stderr(Stdio::inherit());
        let (process, line) = spawn_until(
            console,
            |l| l.starts_with("packlight console: "),
            30,
            String::new,
        );
        let login = line.trim_start_matches("packlight console: ").to_string();
        let base = login.split("/login").next().unwrap().to_string();
        (process, login, base)
    }

    /// Its API token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .unwrap()
            .trim()
            .to_string()
    }

    /// The Route `ns/httpbin` as the engine has it.
    pub async fn route(&self, ns: &str) -> Value {
        self.get("routes", ns, "httpbin").await
    }

    /// The object `PLURAL ns/name` as the engine's API returns it.
    pub async fn get(&self, plural: &str, ns: &str, name: &str) -> Value {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!(
                "{}/apis/packlight.dev/v1alpha1/namespaces/{ns}/{plural}/{name}",
                self.api
            ))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The versions and weights of a Route's weighted rules (`r` is the
/// object's JSON, or a `DynamicObject`'s `data`).
pub fn weights(r: &Value) -> Vec<(String, u64)> {
    r["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x.get("weight").is_some())
        .map(|x| {
            (
                x["version"].as_str().unwrap().to_string(),
                x["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// chromedriver and a headless Chromium session; the driver stops when
/// the returned [`Proc`] drops.
pub async fn chromium() -> (Proc, Client) {
    let port = free_port();
    let driver = Proc(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver: run scripts/install-chromium"),
    );
    let profile = tempfile::tempdir().unwrap().keep();
    let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-proxy-server",
                     "--window-size=1280,1000",
                     format!("--user-data-dir={}", profile.display())]
        }
    }))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        b.capabilities(caps.clone());
        match b.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return (driver, c),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver session: {e}"),
        }
    }
}

/// Saves the page as `target/console-screenshots/NAME.png`.
pub async fn screenshot(b: &Client, name: &str) {
    let dir = target_dir().parent().unwrap().join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = b.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Waits (bounded) until the element's text satisfies `ok`; returns it.
pub async fn wait_text(b: &Client, css: &str, ok: impl Fn(&str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(e) = b.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if ok(&t) {
                return t;
            }
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: `{css}` never satisfied; last text {last:?}");
}

pub async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Opens the editor of Route `ns/httpbin` on the first cluster and waits
/// for its first check.
pub async fn open_editor(b: &Client, base: &str, ns: &str) {
    b.goto(&format!("{base}/c/0/routes/{ns}/httpbin/edit"))
        .await
        .unwrap();
    wait_text(b, "#validation", |t| t.contains("valid"), "first check").await;
}

/// The editor's `input.CLASS` (`weight` or `slider`) of `version`.
pub async fn version_input(b: &Client, class: &str, version: &str) -> Element {
    b.find(Locator::Css(&format!(
        "input.{class}[data-version='{version}']"
    )))
    .await
    .unwrap_or_else(|e| panic!("input.{class} of {version}: {e}"))
}

/// Types each `(version, weight)` into that version's number field (the
/// form sends these).
pub async fn type_weights(b: &Client, weights: &[(&str, &str)]) {
    for (version, n) in weights {
        let f = version_input(b, "weight", version).await;
        f.clear().await.unwrap();
        f.send_keys(n).await.unwrap();
    }
}

/// Moves the slider of `version` to exactly `steps` from its left end.
pub async fn move_slider(b: &Client, version: &str, steps: usize) {
    let slider = version_input(b, "slider", version).await;
    slider.click().await.unwrap();
    // A click lands mid-track; Home then `steps` right arrows is exact.
    let keys: String = std::iter::once(Key::Home.to_string())
        .chain(std::iter::repeat_n(Key::Right.to_string(), steps))
        .collect();
    slider.send_keys(&keys).await.unwrap();
}

/// Waits until the editor's preview shows 1.0 at `a`% and 1.1 at `c`%.
pub async fn wait_preview(b: &Client, a: u64, c: u64) {
    let split = format!("1.0 {a}%, 1.1 {c}%");
    wait_text(
        b,
        "#preview",
        |t| t.contains(&split),
        &format!("preview of {a}/{c}"),
    )
    .await;
}

/// Clicks the editor's apply and waits until its results satisfy `ok`;
/// returns them.
pub async fn apply(b: &Client, ok: impl Fn(&str) -> bool, what: &str) -> String {
    click(b, "#apply").await;
    wait_text(b, "#results", ok, what).await
}
