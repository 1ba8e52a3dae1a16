//! Console render benchmark: one cluster with 1,000 services (each a
//! Microservice with three versions and a Route with a split and a match
//! rule, all with status), the overview and the services page rendered
//! repeatedly. Prints p50/p99 server render time, bytes, and the process's
//! peak RSS. Goal (issue 9): p99 under 100 ms, under 100 MB.
//!
//! `cargo bench -p packlight-console --bench render` (release profile).

use std::collections::BTreeMap;
use std::time::Instant;

use packlight_console::cluster::{Reach, Snapshot};
use packlight_console::pages;
use serde_json::{Value, json};

fn status(generation: u64) -> Value {
    json!({"observedGeneration": generation, "conditions": [
        {"type": "Accepted", "status": "True", "reason": "Valid", "message": "", "observedGeneration": generation},
        {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "", "observedGeneration": generation}]})
}

fn snapshot(n: usize) -> Snapshot {
    let mut ms = Vec::new();
    let mut routes = Vec::new();
    for i in 0..n {
        let ns = format!("team-{}", i % 20);
        let name = format!("svc-{i}");
        ms.push(json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "Microservice",
            "metadata": {"name": name, "namespace": ns, "generation": 1, "resourceVersion": "1"},
            "spec": {"port": 8000, "versions": [{"version": "1.0"}, {"version": "1.1"}, {"version": "2.0"}]},
            "status": status(1)}));
        routes.push(json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "namespace": ns, "generation": 2, "resourceVersion": "2"},
            "spec": {"service": name, "rules": [
                {"version": "1.0", "weight": 80}, {"version": "1.1", "weight": 20}, {"version": "2.0", "weight": 100},
                {"version": "2.0", "matches": [{"headers": {"gray": {"exact": "1"}}}]}]},
            "status": status(2)}));
    }
    let mut objects = BTreeMap::new();
    objects.insert("microservices".to_string(), ms);
    objects.insert("routes".to_string(), routes);
    Snapshot {
        cluster: "http://127.0.0.1:7400".into(),
        engine: "standalone",
        reach: Reach::Up {
            version: "0.1.0".into(),
        },
        objects,
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn measure(name: &str, runs: usize, mut f: impl FnMut() -> String) {
    let mut times = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let html = f();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = html.len();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name}: runs {runs}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {bytes} bytes",
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

fn main() {
    let n = std::env::var("CONSOLE_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let snaps = vec![snapshot(n)];
    println!("console render, {n} services in one cluster");
    measure("overview", 200, || {
        pages::overview("csrf", &snaps).into_string()
    });
    measure("services page", 200, || {
        pages::services("csrf", &snaps).into_string()
    });
    measure("policies page", 20, || {
        packlight_console::policies::cluster_policies(0, &snaps[0]).into_string()
    });
    println!("peak RSS {:.1} MB", peak_rss_mb());
}
