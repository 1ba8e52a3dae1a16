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
//! ServiceAccount, as in the tests. The bulk phase also reports the CPU
//! the API server process (the bench binary: etcd, kube-apiserver and its
//! controllers in one process) and this process used, and what the API
//! server's `/metrics` say happened (requests by verb and resource, flow
//! control waits, etcd latency). The bulk phase sees the Routes become
//! Programmed through a watch started before the load (the moment is the
//! watch event's). It used to list them every 1 s (earlier every 100 ms):
//! each list of 1,000 whole Routes cost the API server ~130 ms of the CPU
//! the operator's writes need, and the figure was late by up to a period.
//!
//! `PACKLIGHT_BENCH_CEILING=1`: no operator. The floor any operator faces
//! on this API server: per round (`PACKLIGHT_BENCH_CEILING_INFLIGHT`,
//! default `16,64`: requests in flight), a fresh namespace, the same N
//! Microservices and Routes applied as above, then exactly the writes the
//! operator issues for them, made by the operator's own code from the
//! same objects: the objects `packlight_istio` renders from the model of
//! those resources (owner references to their UIDs, as the operator adds
//! them), server-side applied with field manager `packlight`, force and
//! strict validation, under the operator's ServiceAccount, a kind at a time
//! (each kind reported on its own, then their sum); then the status
//! of every Microservice and every Route, written by
//! `packlight_operator::status::write` (a merge patch of `status`, and an
//! Event per transition, as the operator does;
//! `PACKLIGHT_BENCH_CEILING_EVENTS=0` writes the status alone). Each phase
//! reports wall time, writes/s, CPU of the API server process and of this
//! process (from /proc), and the `/metrics` deltas.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use packlight_model::ResourceId;
use packlight_operator::index::SourceKind;
use packlight_operator::outputs::{self, ObjectKey};
use packlight_operator::reconcile::FIELD_MANAGER;
use packlight_operator::status;
use serde_json::{Value, json};
use support::Harness;

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

// ---------------------------------------------------------------- measuring

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// utime + stime of a process, in ticks.
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3,
    // utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The bench binary's process (etcd + kube-apiserver + controllers): this
/// process's child named `testenv`, else the one process of that name.
fn apiserver_pid() -> Option<u32> {
    let me = std::process::id();
    let mut named = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if stat.get(open + 1..close) != Some("testenv") {
            continue;
        }
        let rest = stat.get(close + 1..).unwrap_or_default();
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(me) {
            return Some(pid);
        }
        named.push(pid);
    }
    (named.len() == 1).then(|| named[0])
}

/// (busy, total) ticks of the whole machine (busy: not idle, not iowait).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// One sample of the API server's `/metrics`: (name, labels, value).
struct Metrics(Vec<(String, String, f64)>);

impl Metrics {
    async fn read(admin: &kube::Client) -> Metrics {
        let Ok(req) = http::Request::get("/metrics").body(Vec::new()) else {
            return Metrics(Vec::new());
        };
        let text = admin.request_text(req).await.unwrap_or_default();
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            out.push((name.to_string(), labels.to_string(), value));
        }
        Metrics(out)
    }

    /// The sum of `name` over the series whose labels contain every `has`.
    fn sum(&self, name: &str, has: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| n == name && has.iter().all(|h| l.contains(h)))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Per value of label `by`: the sum of `name` (labels containing `has`).
    fn by(&self, name: &str, by: &str, has: &[&str]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, l, v) in &self.0 {
            if n == name && has.iter().all(|h| l.contains(h)) {
                *out.entry(label(l, by)).or_default() += v;
            }
        }
        out
    }
}

fn label(labels: &str, key: &str) -> String {
    let pat = format!("{key}=\"");
    labels
        .split(',')
        .find_map(|kv| kv.trim().strip_prefix(&pat))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_default()
}

/// What the machine, the API server and this process had done by a moment.
struct Snap {
    at: Instant,
    api: u64,
    me: u64,
    machine: (u64, u64),
    metrics: Metrics,
}

impl Snap {
    async fn take(admin: &kube::Client, api_pid: Option<u32>) -> Snap {
        // The scrape first: its cost lands before the counters.
        let metrics = Metrics::read(admin).await;
        Snap {
            at: Instant::now(),
            api: api_pid.and_then(proc_ticks).unwrap_or(0),
            me: proc_ticks(std::process::id()).unwrap_or(0),
            machine: machine_ticks(),
            metrics,
        }
    }
}

/// Prints what happened between two samples; `writes` is what the phase
/// meant to write (for writes/s).
fn report(what: &str, a: &Snap, b: &Snap, writes: usize) {
    let wall = (b.at - a.at).as_secs_f64();
    let api = (b.api.saturating_sub(a.api)) as f64 / TICKS;
    let me = (b.me.saturating_sub(a.me)) as f64 / TICKS;
    let busy = (b.machine.0 - a.machine.0) as f64;
    let total = (b.machine.1 - a.machine.1).max(1) as f64;
    let delta = |name: &str, has: &[&str]| b.metrics.sum(name, has) - a.metrics.sum(name, has);
    let mean_ms = |name: &str, has: &[&str]| {
        let n = delta(&format!("{name}_count"), has);
        if n > 0.0 {
            delta(&format!("{name}_sum"), has) / n * 1e3
        } else {
            0.0
        }
    };
    println!(
        "{what}: writes={writes} wall={wall:.2}s writes_per_s={:.0} apiserver_cpu={api:.1}s ({:.2} cores) \
         bench_process_cpu={me:.1}s ({:.2} cores) machine_busy={:.0}% (of 2 cores; others' load included) \
         load1={}",
        writes as f64 / wall,
        api / wall,
        me / wall,
        busy / total * 100.0,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?"),
    );
    // Requests the API server answered, by verb, resource and subresource.
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for (snap, sign) in [(b, 1.0), (a, -1.0)] {
        for (n, l, v) in &snap.metrics.0 {
            if n == "apiserver_request_total" {
                let k = format!(
                    "{} {}{}",
                    label(l, "verb"),
                    label(l, "resource"),
                    match label(l, "subresource") {
                        s if s.is_empty() => String::new(),
                        s => format!("/{s}"),
                    }
                );
                *counts.entry(k).or_default() += sign * v;
            }
        }
    }
    // Every write request the API server answered (the API server's own
    // loopback writes, e.g. a Service's IPAddress, included).
    let server_writes: f64 = counts
        .iter()
        .filter(|(k, _)| {
            ["APPLY", "PATCH", "POST", "PUT", "DELETE"]
                .iter()
                .any(|v| k.starts_with(&format!("{v} ")))
        })
        .map(|(_, v)| v)
        .sum();
    println!(
        "  write requests the API server answered: {server_writes:.0} ({:.0}/s)",
        server_writes / wall
    );
    let counts: Vec<String> = counts
        .iter()
        .filter(|(k, v)| **v >= 1.0 && !k.starts_with("WATCH"))
        .map(|(k, v)| format!("{k}={v:.0}"))
        .collect();
    println!("  requests: {}", counts.join(" "));
    // Mean latency of the write verbs, as the API server saw them.
    let verbs: Vec<String> = ["APPLY", "PATCH", "POST", "LIST", "GET"]
        .iter()
        .filter_map(|v| {
            let has = [&format!("verb=\"{v}\"")[..]];
            let n = delta("apiserver_request_duration_seconds_count", &has);
            (n >= 1.0).then(|| {
                format!(
                    "{v} n={n:.0} mean={:.1}ms",
                    mean_ms("apiserver_request_duration_seconds", &has)
                )
            })
        })
        .collect();
    println!("  apiserver latency: {}", verbs.join(", "));
    // Flow control (APF): waits in queues, rejections, per priority level.
    let waits = b.metrics.by(
        "apiserver_flowcontrol_request_wait_duration_seconds_count",
        "priority_level",
        &[],
    );
    let mut apf = Vec::new();
    for (pl, n) in waits {
        let has = [&format!("priority_level=\"{pl}\"")[..]];
        let n = n - a.metrics.sum(
            "apiserver_flowcontrol_request_wait_duration_seconds_count",
            &has,
        );
        if n < 1.0 {
            continue;
        }
        let sum = delta(
            "apiserver_flowcontrol_request_wait_duration_seconds_sum",
            &has,
        );
        let seats = b
            .metrics
            .sum("apiserver_flowcontrol_nominal_limit_seats", &has);
        apf.push(format!(
            "{pl}: n={n:.0} wait_mean={:.3}ms wait_total={sum:.2}s nominal_seats={seats:.0}",
            sum / n * 1e3
        ));
    }
    println!(
        "  flow control: {} rejected={:.0}",
        apf.join("; "),
        delta("apiserver_flowcontrol_rejected_requests_total", &[])
    );
    // etcd as the API server's storage saw it.
    let ops = b
        .metrics
        .by("etcd_request_duration_seconds_count", "operation", &[]);
    let mut etcd = Vec::new();
    for (op, _) in ops {
        let has = [&format!("operation=\"{op}\"")[..]];
        let n = delta("etcd_request_duration_seconds_count", &has);
        if n < 1.0 {
            continue;
        }
        etcd.push(format!(
            "{op} n={n:.0} mean={:.2}ms",
            mean_ms("etcd_request_duration_seconds", &has)
        ));
    }
    println!(
        "  etcd: {} total={:.1}s",
        etcd.join(", "),
        delta("etcd_request_duration_seconds_sum", &[])
    );
    println!(
        "  watch events sent={:.0} ({:.0} MB)",
        delta("apiserver_watch_events_total", &[]),
        delta("apiserver_watch_events_sizes_sum", &[]) / 1e6,
    );
}

// ---------------------------------------------------------------- the bench

/// Applies the N Microservices and Routes as a user would, 16 in flight.
async fn apply_sources(h: &Harness, n: usize) -> anyhow::Result<()> {
    let applied: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| async move { h.apply(&support::service_with_route(i, 80)).await })
        .buffer_unordered(16)
        .collect()
        .await;
    applied.into_iter().collect()
}

/// True when the Route says `Programmed` at its generation.
fn is_programmed(route: &DynamicObject) -> bool {
    let v = serde_json::to_value(route).unwrap_or_default();
    support::condition(&v, "Programmed").is_some_and(|c| {
        c["status"] == "True" && c["observedGeneration"] == v["metadata"]["generation"]
    })
}

/// Watches the Routes (from before the load) and returns the moment all
/// `n` say `Programmed` at their generation. A watch, not a poll: the
/// moment is the event's, and the API server serializes each Route event
/// once for all its watchers (the operator watches them too), where a list
/// of 1,000 Routes costs it ~130 ms of CPU.
fn watch_programmed(
    routes: Api<DynamicObject>,
    n: usize,
    limit: Duration,
) -> tokio::task::JoinHandle<anyhow::Result<Instant>> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, bool> = BTreeMap::new();
        let mut done = 0usize;
        let stream = watcher(routes, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let event = tokio::time::timeout_at(deadline, stream.next())
                .await
                .context("timed out waiting for every Route Programmed")?
                .context("the Route watch ended")?;
            // The watcher relists after an error (a 410, a dropped
            // connection on the loaded API server), with backoff.
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("bench: the Route watch: {e}; it retries");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => {
                    seen.clear();
                    done = 0;
                }
                watcher::Event::Apply(r) | watcher::Event::InitApply(r) => {
                    let now = is_programmed(&r);
                    match seen.insert(r.name_any(), now) {
                        Some(true) if !now => done -= 1,
                        Some(true) => {}
                        _ if now => done += 1,
                        _ => {}
                    }
                }
                watcher::Event::Delete(r) => {
                    if seen.remove(&r.name_any()) == Some(true) {
                        done -= 1;
                    }
                }
                watcher::Event::InitDone => {}
            }
            if done == n {
                return Ok(Instant::now());
            }
        }
    })
}

async fn bench(n: usize) -> anyhow::Result<()> {
    let h = Harness::start("op-bench").await?;
    let api_pid = apiserver_pid();
    println!(
        "apiserver_pid={} bench_pid={}",
        api_pid.map(|p| p.to_string()).unwrap_or("?".into()),
        std::process::id()
    );
    let rss_idle = peak_rss_kb();
    let all_programmed = watch_programmed(h.packlight("Route"), n, Duration::from_secs(1800));
    let before = Snap::take(&h.admin, api_pid).await;
    eprintln!("bench: bulk load starts");
    let start = Instant::now();
    apply_sources(&h, n).await?;
    let applied_in = start.elapsed();
    let after_sources = Snap::take(&h.admin, api_pid).await;
    let programmed_in = all_programmed.await?? - start;
    let after = Snap::take(&h.admin, api_pid).await;
    eprintln!("bench: bulk load done");
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
    let writes = 2 * n + s.writes() as usize;
    report(
        "bulk: the bench's applies (operator running)",
        &before,
        &after_sources,
        2 * n,
    );
    report(
        "bulk: start to all Programmed (bench applies + operator writes, Events not counted)",
        &before,
        &after,
        writes,
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

// ---------------------------------------------------------------- the ceiling

/// A source resource's owner reference data: (apiVersion, uid).
type Owners = BTreeMap<ResourceId, (String, String)>;

/// The model inputs and owners of the listed resources, as the operator's
/// index collects them (sorted by namespace and name).
fn collect<K: SourceKind>(
    mut objs: Vec<K>,
    inputs: &mut Vec<packlight_model::Input>,
    owners: &mut Owners,
) -> Vec<K> {
    objs.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    for obj in &objs {
        let input = obj.input();
        owners.insert(
            input.resource.id(),
            (
                K::api_version(&()).into_owned(),
                obj.uid().unwrap_or_default(),
            ),
        );
        inputs.push(input);
    }
    objs
}

/// The owner reference the operator adds (`index::add_owner`): to the
/// source resource when it is in the object's namespace.
fn add_owner(obj: &mut Value, owners: &Owners) {
    let Some(source) = outputs::source_of(obj) else {
        return;
    };
    if outputs::str_at(obj, "/metadata/namespace") != Some(source.namespace.as_str()) {
        return;
    }
    let Some((api_version, uid)) = owners.get(&source) else {
        return;
    };
    obj["metadata"]["ownerReferences"] = json!([{
        "apiVersion": api_version,
        "kind": source.kind,
        "name": source.name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
}

/// Writes the status of every `items` (as the operator's `statuses` step
/// does, `inflight` at a time); returns how many were written.
#[allow(clippy::too_many_arguments)]
async fn write_statuses<K: SourceKind>(
    client: &kube::Client,
    ns: &str,
    items: &[K],
    model: &packlight_model::Model,
    outcomes: &BTreeMap<ResourceId, status::Outcome>,
    recorder: &Recorder,
    inflight: usize,
    events: bool,
) -> anyhow::Result<usize> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let api = &api;
    let written: Vec<anyhow::Result<bool>> = futures::stream::iter(items)
        .map(|obj| async move {
            let id = ResourceId {
                kind: K::KIND.to_string(),
                namespace: ns.to_string(),
                name: obj.name_any(),
            };
            let outcome = outcomes.get(&id).cloned().unwrap_or_default();
            let conds = status::conditions(model, &id, &outcome);
            let value = serde_json::to_value(obj)?;
            let current = value.get("status").cloned().unwrap_or(Value::Null);
            let next =
                status::status_value(&current, obj.meta().generation, &conds, K::KIND, &value);
            if events {
                let w = status::write(api, recorder, obj, &current, &next, &conds).await?;
                Ok(w.is_some())
            } else {
                api.patch_status(
                    &obj.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": next })),
                )
                .await?;
                Ok(true)
            }
        })
        .buffer_unordered(inflight)
        .collect()
        .await;
    let mut n = 0;
    for w in written {
        n += usize::from(w?);
    }
    Ok(n)
}

async fn ceiling_round(n: usize, inflight: usize, events: bool) -> anyhow::Result<()> {
    let h = Harness::setup(&format!("op-ceiling-{inflight}")).await?;
    let api_pid = apiserver_pid();
    let ns = h.name().to_string();
    println!(
        "ceiling round: routes={n} inflight={inflight} events={events} namespace={ns} apiserver_pid={}",
        api_pid.map(|p| p.to_string()).unwrap_or("?".into())
    );
    let s0 = Snap::take(&h.admin, api_pid).await;
    apply_sources(&h, n).await?;
    let s1 = Snap::take(&h.admin, api_pid).await;
    report(
        &format!(
            "ceiling inflight={inflight}: the bench's applies of the sources (16 in flight, no operator)"
        ),
        &s0,
        &s1,
        2 * n,
    );

    // What the operator's reflectors hold, its model, its render.
    let t = Instant::now();
    let mut inputs = Vec::new();
    let mut owners = Owners::new();
    let lp = ListParams::default();
    let ms = Api::<packlight_api::Microservice>::namespaced(h.client.clone(), &ns)
        .list(&lp)
        .await?
        .items;
    let rs = Api::<packlight_api::Route>::namespaced(h.client.clone(), &ns)
        .list(&lp)
        .await?
        .items;
    let ms = collect(ms, &mut inputs, &mut owners);
    let rs = collect(rs, &mut inputs, &mut owners);
    let model = packlight_model::build(&inputs);
    let render = h.config().render;
    let mut objects: Vec<(ObjectKey, Value)> = Vec::new();
    let mut outcomes: BTreeMap<ResourceId, status::Outcome> = BTreeMap::new();
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut unplaced = 0usize;
    packlight_istio::render_each(&model.mesh, &render, |o| {
        let mut value = o.to_value();
        add_owner(&mut value, &owners);
        outputs::stamp_digest(&mut value);
        // The operator places in its reconcile the objects whose home is
        // the namespace; here every object is in it.
        match ObjectKey::of(&value) {
            Some(key) if outputs::home_namespace(&value) == Some(ns.as_str()) => {
                *kinds.entry(key.kind_name()).or_default() += 1;
                if let Some(s) = outputs::source_of(&value) {
                    outcomes.entry(s).or_default().objects += 1;
                }
                objects.push((key, value));
            }
            _ => unplaced += 1,
        }
    });
    anyhow::ensure!(unplaced == 0, "{unplaced} rendered objects outside {ns}");
    println!(
        "  rendered {} objects in {:.2?} ({kinds:?}) from {} Microservices and {} Routes",
        objects.len(),
        t.elapsed(),
        ms.len(),
        rs.len()
    );

    // The applies, a kind at a time (each kind's share of the floor).
    let client = &h.client;
    let a0 = Snap::take(&h.admin, api_pid).await;
    for kind in kinds.keys() {
        let k0 = Snap::take(&h.admin, api_pid).await;
        let of_kind: Vec<&(ObjectKey, Value)> = objects
            .iter()
            .filter(|(key, _)| key.kind_name() == *kind)
            .collect();
        let applied: Vec<anyhow::Result<()>> = futures::stream::iter(&of_kind)
            .map(|(key, value)| async move {
                let ar = outputs::output_resource(key.kind).context("an output kind")?;
                let api =
                    Api::<DynamicObject>::namespaced_with(client.clone(), &key.namespace, &ar);
                let params = PatchParams::apply(FIELD_MANAGER)
                    .force()
                    .validation_strict();
                api.patch(&key.name, &params, &Patch::Apply(value))
                    .await
                    .with_context(|| format!("applying {key}"))?;
                Ok(())
            })
            .buffer_unordered(inflight)
            .collect()
            .await;
        applied.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let k1 = Snap::take(&h.admin, api_pid).await;
        report(
            &format!("ceiling inflight={inflight}: operator applies of {kind}"),
            &k0,
            &k1,
            of_kind.len(),
        );
    }
    let a1 = Snap::take(&h.admin, api_pid).await;
    report(
        &format!("ceiling inflight={inflight}: operator applies (the kinds one after another)"),
        &a0,
        &a1,
        objects.len(),
    );

    // The statuses: Microservices, then Routes, as the reconcile does.
    let recorder = Recorder::new(
        h.client.clone(),
        Reporter {
            controller: "packlight".to_string(),
            instance: h.config().instance.clone(),
        },
    );
    let mut written = write_statuses(
        &h.client, &ns, &ms, &model, &outcomes, &recorder, inflight, events,
    )
    .await?;
    written += write_statuses(
        &h.client, &ns, &rs, &model, &outcomes, &recorder, inflight, events,
    )
    .await?;
    let a2 = Snap::take(&h.admin, api_pid).await;
    report(
        &format!(
            "ceiling inflight={inflight}: status writes{}",
            if events {
                " (+ an Event per transition)"
            } else {
                ""
            }
        ),
        &a1,
        &a2,
        written,
    );
    report(
        &format!("ceiling inflight={inflight}: operator total (applies + status)"),
        &a0,
        &a2,
        objects.len() + written,
    );
    report(
        &format!("ceiling inflight={inflight}: bench applies + operator total"),
        &s0,
        &a2,
        2 * n + objects.len() + written,
    );
    let admin = h.admin.clone();
    h.finish().await?;
    // The namespace controller deletes what the round made: wait for it,
    // so the next round has the API server to itself.
    let t = Instant::now();
    let namespaces: Api<Namespace> = Api::all(admin);
    while namespaces.get_opt(&ns).await?.is_some() {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "namespace {ns} not gone after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("  namespace {ns} deleted in {:.1?}", t.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

async fn ceiling(n: usize) -> anyhow::Result<()> {
    let rounds: Vec<usize> = std::env::var("PACKLIGHT_BENCH_CEILING_INFLIGHT")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let events = std::env::var("PACKLIGHT_BENCH_CEILING_EVENTS").as_deref() != Ok("0");
    for inflight in rounds {
        ceiling_round(n, inflight.max(1), events).await?;
    }
    Ok(())
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if std::env::var("PACKLIGHT_BENCH_CEILING").is_ok_and(|v| v == "1") {
        runtime.block_on(ceiling(n))
    } else {
        runtime.block_on(bench(n))
    }
}
