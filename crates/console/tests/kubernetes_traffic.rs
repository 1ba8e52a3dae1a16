//! The console's Kubernetes traffic page in a real headless Chromium,
//! against the Istio traffic bench (docs/testing.md): the bench's API
//! server with packlight's CRDs, `packlight operator` rendering the
//! resources, a real istiod, real Envoy sidecars under pilot-agent in
//! network namespaces, and a real Prometheus (`scripts/build-prometheus`)
//! scraping those Envoys every second (`Mesh::start_prometheus`). The
//! console runs in this process on the real flags (`--kubeconfig`,
//! `--context`, `--prometheus CONTEXT=URL`) and queries that Prometheus with
//! PromQL; nothing here stands in for Prometheus, Envoy or istiod.
//!
//! * ≥ 2,000 requests from `sleep` to `httpbin` under a Route 80/20: the
//!   page shows `NS/httpbin` with both versions at non-zero rates whose
//!   ratio is within ±5 points of 80/20 (values read from the page's
//!   table, which server-sent events keep replacing), latencies present;
//!   then 200 answers 500 show as a non-zero error rate of both versions;
//! * a context whose Prometheus does not answer shows "traffic
//!   unavailable: …" while the other context's page keeps its numbers.
//!
//! Root only (network namespaces, iptables), like the other bench tests;
//! needs Chromium (`scripts/install-chromium`), the `packlight` binary
//! (`PACKLIGHT_BIN`, else beside this test: `cargo build -p packlight`),
//! Envoy, the Istio tools and Prometheus (built on first use). It fails,
//! never skips. Screenshot: `target/console-screenshots/kubernetes-traffic.png`.

mod in_process;
// The editor's helpers, which this file does not use.
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, Locator};
use in_process::console;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::ListParams;
use packlight_testenv::Operator;
use packlight_testenv::mesh::{Mesh, Pod};
use serde_json::json;
use support::{chromium, free_port, packlight, screenshot, wait_text};

/// Requests sent through the split (the issue asks for at least 2,000).
const REQUESTS: usize = 2400;
/// Requests answered 500 afterwards.
const ERRORS: usize = 200;

const HTTPBIN: &str = r#"
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: httpbin}
spec:
  port: 8000
  protocol: http
  versions:
  - {version: "1.0", image: example/httpbin:1.0, command: ["packlight", "demo-app"]}
  - {version: "1.1", image: example/httpbin:1.1, command: ["packlight", "demo-app"]}
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: sleep}
spec:
  port: 8080
  versions: [{version: "1.0", image: example/sleep:1.0, command: ["packlight", "demo-app"]}]
---
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {name: httpbin}
spec:
  service: httpbin
  rules:
  - {version: "1.0", weight: 80}
  - {version: "1.1", weight: 20}
"#;

/// A kubeconfig with two contexts on the bench's admin: `mesh` and
/// `elsewhere`, both in `ns`; removed when dropped.
fn kubeconfig(admin: &Path, ns: &str) -> anyhow::Result<tempfile::TempPath> {
    let k: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(admin)?)?;
    let contexts: Vec<_> = ["mesh", "elsewhere"]
        .iter()
        .map(|name| json!({"name": name, "context": {"cluster": "bench", "user": "admin", "namespace": ns}}))
        .collect();
    let path = tempfile::NamedTempFile::new()?.into_temp_path();
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "mesh",
            "clusters": [{"name": "bench", "cluster": k["clusters"][0]["cluster"]}],
            "users": [{"name": "admin", "user": k["users"][0]["user"]}],
            "contexts": contexts,
        }))?,
    )?;
    Ok(path)
}

/// Waits until the operator wrote `n` Deployments in `ns`.
async fn deployments(client: &kube::Client, ns: &str, n: usize) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = api.list(&ListParams::default()).await?.items.len();
        if got >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the operator wrote {got} of {n} Deployments");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One request at a time until one is answered by a version (the config
/// reached the sidecar), at most 90 s.
async fn until_routed(pod: &Pod, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let replies = pod.requests(url, &[], 1).await?;
        if replies
            .first()
            .is_some_and(|r| r.status == 200 && r.version.is_some())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url}: never routed; last {replies:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One row of the page's traffic table.
#[derive(Debug)]
struct Row {
    rps: f64,
    errors: String,
    total: u64,
    p50: String,
    p99: String,
}

/// The table's rows of `service` (`NS/NAME`) by version, as the page
/// shows them now: the cells' text, read in one script run (the events
/// replace the table every 2 s, so elements found one by one go stale).
async fn rows(b: &Client, service: &str) -> anyhow::Result<BTreeMap<String, Row>> {
    let cells = b
        .execute(
            r##"return Array.from(document.querySelectorAll("#traffic tr.traffic"))
                 .filter(tr => tr.dataset.service === arguments[0])
                 .map(tr => ["service", "version", "rps", "errors", "p50", "p99", "total"]
                   .map(c => tr.querySelector("td." + c).textContent));"##,
            vec![json!(service)],
        )
        .await?;
    let cells: Vec<Vec<String>> = serde_json::from_value(cells)?;
    let mut out = BTreeMap::new();
    for c in cells {
        let [shown, version, rps, errors, p50, p99, total] = <[String; 7]>::try_from(c)
            .map_err(|c| anyhow::anyhow!("a row of {} cells", c.len()))?;
        anyhow::ensure!(shown == service, "row of {service} shows {shown}");
        let row = Row {
            rps: rps.parse().with_context(|| format!("req/s {rps:?}"))?,
            errors,
            total: total
                .parse()
                .with_context(|| format!("requests {total:?}"))?,
            p50,
            p99,
        };
        out.insert(version, row);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn istio_traffic_split_read_from_prometheus_on_the_page_in_chromium() -> anyhow::Result<()> {
    let started = Instant::now();
    // `packlight render --mesh-config` is what the bench's istiod and
    // sidecars read (scripts/testenv mesh-up takes its golden file).
    let printed = Command::new(packlight())
        .args(["render", "--mesh-config"])
        .output()?;
    assert!(printed.status.success(), "{printed:?}");
    let golden = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/out/mesh-config.yaml"),
    )?;
    assert_eq!(String::from_utf8(printed.stdout)?, golden);

    let env = packlight_testenv::env().await?;
    packlight_testenv::install_crds(&env.client()?, &packlight_api::crds()).await?;
    let ns = env.namespace("console-traffic").await?;
    let mesh = Mesh::start(&env).await?;
    // The operator under its own ServiceAccount and ClusterRole.
    let operator_kubeconfig = packlight_testenv::operator_kubeconfig(&env).await?;
    let _operator = Operator::start(&packlight(), &operator_kubeconfig, Some(ns.name()));
    mesh.apply_yaml(Some(ns.name()), HTTPBIN).await?;
    deployments(&ns.client(), ns.name(), 3).await?;
    mesh.start_deployments(ns.name(), &packlight()).await?;
    let prometheus = mesh.start_prometheus().await?;
    prometheus.wait_scraping(3, Duration::from_secs(60)).await?;
    let sleep = mesh
        .pods()
        .into_iter()
        .find(|p| p.app.as_deref() == Some("sleep"))
        .context("the sleep pod")?;
    let url = "http://httpbin:8000/get";
    until_routed(&sleep, url).await?;
    eprintln!(
        "mesh, operator, 3 pods and Prometheus ready in {:?}",
        started.elapsed()
    );

    let kc = kubeconfig(env.kubeconfig(), ns.name())?;
    let nowhere = format!("elsewhere=http://127.0.0.1:{}", free_port());
    let good = format!("mesh={}", prometheus.url());
    let (base, login, _stop) = console(&[
        "--kubeconfig",
        kc.to_str().context("kubeconfig path")?,
        "--context",
        "mesh",
        "--context",
        "elsewhere",
        "--prometheus",
        &good,
        "--prometheus",
        &nowhere,
    ])
    .await?;
    let (_driver, b) = chromium().await;
    b.goto(&login).await?;

    // The load: REQUESTS through the split, from inside the sleep pod (one
    // curl, bounded in time by Pod::requests).
    let load_started = Instant::now();
    let replies = sleep.requests(url, &[], REQUESTS).await?;
    let load_time = load_started.elapsed();
    assert_eq!(replies.len(), REQUESTS);
    assert!(replies.iter().all(|r| r.status == 200), "every request 200");
    let sent_11 = replies
        .iter()
        .filter(|r| r.version.as_deref() == Some("1.1"))
        .count();
    let sent_share = 100.0 * sent_11 as f64 / REQUESTS as f64;
    eprintln!("{REQUESTS} requests in {load_time:?}: 1.1 got {sent_share:.1}%");
    assert!(
        (sent_share - 20.0).abs() <= 4.0,
        "the mesh split {sent_share:.1}% to 1.1"
    );

    // The page: read from the table the server-sent events replace every
    // 2 s, once Prometheus has scraped the whole load (the versions'
    // request counts add up to it) and Envoy has flushed its latency
    // histograms (every 5 s); bounded, and well inside the rates' minute.
    b.goto(&format!("{base}/c/0/traffic")).await?;
    let service = format!("{}/httpbin", ns.name());
    wait_text(&b, "#traffic", |t| t.contains(&service), "traffic table").await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let seen = loop {
        let seen = rows(&b, &service).await?;
        let total: u64 = seen.values().map(|r| r.total).sum();
        let latencies = ["1.0", "1.1"].iter().all(|v| {
            seen.get(*v)
                .is_some_and(|r| r.p50.parse::<f64>().is_ok() && r.p99.parse::<f64>().is_ok())
        });
        if total >= REQUESTS as u64 && latencies {
            break seen;
        }
        if Instant::now() > deadline {
            bail!("the page never showed the whole load of {service} with latencies: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let rate = |v: &str| seen.get(v).map_or(0.0, |r| r.rps);
    let (a, c) = (rate("1.0"), rate("1.1"));
    assert!(a > 0.0 && c > 0.0, "both versions have a rate: {seen:?}");
    let share = 100.0 * c / (a + c);
    eprintln!(
        "page {:?} after the load started: {seen:?} → 1.1 at {share:.1}% of the rates",
        load_started.elapsed()
    );
    assert!(
        (share - 20.0).abs() <= 5.0,
        "the page's rates put 1.1 at {share:.1}%, not 20 ± 5: {seen:?}"
    );
    for (version, row) in &seen {
        assert_eq!(row.errors, "0.0%", "{version}: {row:?}");
    }
    let text = wait_text(&b, "main", |t| t.contains("Prometheus at"), "source").await;
    assert!(text.contains(prometheus.url()), "{text}");
    screenshot(&b, "kubernetes-traffic").await;

    // Errors: answers 500 (never retried) show as a non-zero error rate
    // of both versions (the 5xx query on Envoy's real tags).
    let failing = sleep
        .requests("http://httpbin:8000/status/500", &[], ERRORS)
        .await?;
    assert!(failing.iter().all(|r| r.status == 500), "{failing:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen = rows(&b, &service).await?;
        let failing = |v: &str| seen.get(v).is_some_and(|r| r.errors != "0.0%");
        if failing("1.0") && failing("1.1") {
            break seen;
        }
        if Instant::now() > deadline {
            let series = prometheus
                .query(r#"{__name__=~"envoy_cluster_upstream_rq.*",cluster_name=~".*httpbin.*"}"#)
                .await?;
            bail!(
                "no error rate on the page after {ERRORS} answers 500: {seen:?}; Envoy's series: {:#?}",
                series.iter().map(|s| &s["metric"]).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("after {ERRORS} answers 500: {seen:?}");

    // A context whose Prometheus does not answer: said so, on its page only.
    b.goto(&format!("{base}/c/1/traffic")).await?;
    let down = wait_text(
        &b,
        "#traffic",
        |t| t.contains("traffic unavailable: Prometheus at"),
        "down Prometheus",
    )
    .await;
    assert!(down.contains("does not answer"), "{down}");
    b.goto(&format!("{base}/")).await?;
    let overview = wait_text(&b, "#clusters", |t| t.contains("elsewhere"), "overview").await;
    let up = b.find_all(Locator::Css("#clusters td.state.up")).await?;
    assert_eq!(up.len(), 2, "both contexts up: {overview}");
    b.goto(&format!("{base}/c/0/traffic")).await?;
    wait_text(&b, "#traffic", |t| t.contains(&service), "traffic again").await;

    b.close().await?;
    eprintln!("test done in {:?}", started.elapsed());
    Ok(())
}
