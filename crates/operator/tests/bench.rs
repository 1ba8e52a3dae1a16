//! The issue's benchmark, on the real API server bench (ignored by default:
//! it measures, it asserts only that the operator converges).
//!
//! `PACKLIGHT_BENCH_ROUTES=1000 cargo test -p packlight-operator --test bench -- --ignored --nocapture`
//!
//! Applies N Microservices with a Route each, at once; reports the time
//! until every Route is `Programmed`, the write requests the operator sent,
//! and this test process's peak RSS (operator, clients and test together);
//! then changes one Route's weights and reports the time until its
//! VirtualService shows them.

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

fn resources(i: usize, w10: u32) -> String {
    format!(
        r#"
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {{name: svc-{i}}}
spec:
  port: 8000
  versions:
  - {{version: "1.0", image: "example/app:1.0"}}
  - {{version: "1.1", image: "example/app:1.1"}}
---
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {{name: svc-{i}}}
spec:
  service: svc-{i}
  rules:
  - {{version: "1.0", weight: {w10}}}
  - {{version: "1.1", weight: {}}}
"#,
        100 - w10
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored"]
async fn bench_many_routes_then_one_change() -> anyhow::Result<()> {
    let n: usize = std::env::var("PACKLIGHT_BENCH_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let h = Harness::start("op-bench").await?;
    let start = Instant::now();
    let h_ref = &h;
    let applied: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| async move { h_ref.apply(&resources(i, 80)).await })
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
        "routes={n} applied_by_test_in={applied_in:?} all_programmed_in={programmed_in:?} \
         applies={} status_writes={} deletes={} reads={} reconciles={} peak_rss={} MB",
        s.applies.load(Ordering::Relaxed),
        s.status_writes.load(Ordering::Relaxed),
        s.deletes.load(Ordering::Relaxed),
        s.reads.load(Ordering::Relaxed),
        s.reconciles.load(Ordering::Relaxed),
        peak_rss_kb() / 1024
    );

    let target = format!("svc-{}", n / 2);
    let before = s.writes();
    let t = Instant::now();
    h.apply(&resources(n / 2, 30)).await?;
    // Polled every 10 ms (the 100 ms of `eventually` would blur it).
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
            "the change never showed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "one_change_visible_in={:?} writes_for_it={}",
        t.elapsed(),
        s.writes() - before
    );
    h.finish().await
}
