//! The benchmark on the real API server bench (release build):
//!
//! `cargo bench -p packlight-operator --bench operator` (N from
//! `PACKLIGHT_BENCH_ROUTES`, default 1000).
//!
//! Applies N Microservices with a Route each, at once (16 requests in
//! flight); reports the time until every Route is `Programmed`, the write
//! requests the operator sent, and this process's peak RSS (the operator
//! runs in-process: operator, clients and bench together); then changes
//! the weights of one Route at a time (`PACKLIGHT_BENCH_CHANGES`, default
//! 20, each a different Route) and reports p50/p99 of the time until its
//! VirtualService shows them (polled every 10 ms). The operator runs under its own
//! ServiceAccount, as in the tests.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::ListParams;
use support::{Harness, eventually};

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn bench(n: usize) -> anyhow::Result<()> {
    let h = Harness::start("op-bench").await?;
    let rss_idle = peak_rss_kb();
    let start = Instant::now();
    let h_ref = &h;
    let applied: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| async move { h_ref.apply(&support::service_with_route(i, 80)).await })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in applied {
        r?;
    }
    let applied_in = start.elapsed();
    let routes = h.packlight("Route");
    eventually(
        "every Route Programmed",
        Duration::from_secs(1800),
        || async {
            let list = routes.list(&ListParams::default()).await?;
            let done = list
                .items
                .iter()
                .filter(|r| {
                    let v = serde_json::to_value(r).unwrap_or_default();
                    support::condition(&v, "Programmed").is_some_and(|c| {
                        c["status"] == "True"
                            && c["observedGeneration"] == v["metadata"]["generation"]
                    })
                })
                .count();
            Ok(done == n)
        },
    )
    .await?;
    let programmed_in = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = &h.stats;
    println!(
        "routes={n} applied_by_bench_in={applied_in:.2?} all_programmed_in={programmed_in:.2?} \
         applies={} status_writes={} deletes={} reads={} reconciles={} \
         peak_rss={} MB (before the load: {} MB)",
        s.applies.load(Ordering::Relaxed),
        s.status_writes.load(Ordering::Relaxed),
        s.deletes.load(Ordering::Relaxed),
        s.reads.load(Ordering::Relaxed),
        s.reconciles.load(Ordering::Relaxed),
        peak_rss_kb() / 1024,
        rss_idle / 1024,
    );

    // One weight change at a time, on CHANGES different Routes: the time
    // until its VirtualService shows it.
    let changes: usize = std::env::var("PACKLIGHT_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .clamp(1, n);
    let before = s.writes();
    let mut times = Vec::new();
    for k in 0..changes {
        let i = (n / 2 + k) % n;
        let target = format!("svc-{i}");
        let t = Instant::now();
        h.apply(&support::service_with_route(i, 30)).await?;
        loop {
            let vs = h
                .get_output("VirtualService", &target)
                .await?
                .unwrap_or_default();
            if vs["spec"]["http"].to_string().contains("\"weight\":30") {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(120),
                "the change of {target} never showed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        times.push(t.elapsed());
        // Let its status write land before the next change.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    times.sort();
    let pick = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "changes={changes} one_change_visible_in p50={:.2?} p99={:.2?} max={:.2?} writes_per_change={:.1}",
        pick(0.5),
        pick(0.99),
        times[times.len() - 1],
        (s.writes() - before) as f64 / changes as f64
    );
    h.finish().await
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then
    // only check that it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    // RUST_LOG=packlight_operator=debug shows each reconcile's steps.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let n: usize = std::env::var("PACKLIGHT_BENCH_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(n))
}
