//! The Kubernetes engine proven by traffic (issue 10): packlight resources
//! are applied to the bench's API server, `packlight operator` turns them
//! into Istio objects, a real istiod programs real Envoy sidecars (stock
//! Envoy 1.40 under pilot-agent), and requests are sent from inside the
//! pods' network namespaces (`packlight_testenv::mesh`, docs/testing.md
//! "Istio traffic bench"). Root only: network namespaces and iptables.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::ListParams;
use packlight_testenv::TestNamespace;
use packlight_testenv::mesh::{Mesh, Pod, Reply};

mod istio_bench;

use istio_bench::{PACKLIGHT, install_crds, operator};
use packlight_testenv::Operator;

struct Bench {
    // Dropped in this order: the operator, the mesh, then the namespace.
    _operator: Operator,
    mesh: Mesh,
    ns: TestNamespace,
}

impl Bench {
    async fn start(hint: &str) -> Bench {
        let env = packlight_testenv::env().await.expect("test bench");
        install_crds(&env).await;
        let ns = env.namespace(hint).await.expect("namespace");
        let mesh = Mesh::start(&env).await.expect("istiod");
        let operator = operator(&env, Some(ns.name())).await.expect("operator");
        Bench {
            _operator: operator,
            mesh,
            ns,
        }
    }

    /// Applies packlight resources (YAML with `namespace: demo` standing
    /// for this test's namespace).
    async fn apply(&self, yaml: &str) {
        let text = yaml.replace("namespace: demo", &format!("namespace: {}", self.ns.name()));
        self.mesh
            .apply_yaml(Some(self.ns.name()), &text)
            .await
            .expect("apply");
    }

    /// Waits until the operator wrote `n` Deployments, then runs their pods.
    async fn run_deployments(&self, n: usize) {
        let api: Api<Deployment> = self.ns.api();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = api
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len();
            if got >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the operator wrote {got} of {n} Deployments"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.mesh
            .start_deployments(self.ns.name(), Path::new(PACKLIGHT))
            .await
            .expect("pods");
    }

    /// A started pod of `app` (its first one).
    async fn pod_of(&self, app: &str) -> Pod {
        self.mesh
            .pods()
            .into_iter()
            .find(|p| p.namespace == self.ns.name() && p.app.as_deref() == Some(app))
            .unwrap_or_else(|| panic!("no pod of {app}"))
    }
}

/// Polls with single requests until `ok` holds for one reply (config
/// reached the sidecars), at most `limit`.
async fn until(
    pod: &Pod,
    url: &str,
    headers: &[(&str, &str)],
    limit: Duration,
    ok: impl Fn(&Reply) -> bool,
) {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        let replies = pod.requests(url, headers, 1).await.expect("curl");
        if let Some(r) = replies.first() {
            if ok(r) {
                return;
            }
            last = Some(r.clone());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{url}: not as expected within {limit:?}; last reply {last:?}");
}

fn versions(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in replies {
        *counts
            .entry(r.version.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    counts
}

fn assert_share(counts: &BTreeMap<String, usize>, total: usize, version: &str, percent: f64) {
    let got = counts.get(version).copied().unwrap_or(0) as f64 * 100.0 / total as f64;
    assert!(
        (got - percent).abs() <= 4.0,
        "{version}: {got:.1}% of {total}, expected {percent}% ± 4 ({counts:?})"
    );
}

const HTTPBIN: &str = r#"
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: httpbin, namespace: demo}
spec:
  port: 8000
  protocol: http
  versions:
  - {version: "1.0", image: example/httpbin:1.0, command: ["packlight", "demo-app"]}
  - {version: "1.1", image: example/httpbin:1.1, command: ["packlight", "demo-app"]}
  - {version: "2.0", image: example/httpbin:2.0, command: ["packlight", "demo-app"]}
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: sleep, namespace: demo}
spec:
  port: 8080
  versions: [{version: "1.0", image: example/sleep:1.0, command: ["packlight", "demo-app"]}]
"#;

const ROUTE_80_20: &str = r#"
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {name: httpbin, namespace: demo}
spec:
  service: httpbin
  rules:
  - {version: "1.0", weight: 80}
  - {version: "1.1", weight: 20}
  - {version: "2.0", weight: 100}
  - version: "2.0"
    matches:
    - headers: {gray: {exact: "1"}}
    - queryParams: {debug: {exact: "true"}}
"#;

/// Route 80/20 + major 2 + rules, then 50/50 under traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_split_rules_and_a_weight_change_under_traffic() {
    let bench = Bench::start("istio-route").await;
    bench.apply(HTTPBIN).await;
    bench.apply(ROUTE_80_20).await;
    bench.run_deployments(4).await;
    let sleep = bench.pod_of("sleep").await;
    let url = "http://httpbin:8000/get";
    // The config reached sleep's sidecar once the versioned route answers.
    until(&sleep, url, &[], Duration::from_secs(90), |r| {
        r.status == 200 && r.version.is_some()
    })
    .await;

    let replies = sleep.requests(url, &[], 2000).await.expect("requests");
    assert_eq!(replies.len(), 2000);
    assert!(
        replies.iter().all(|r| r.status == 200),
        "every request answered 200"
    );
    assert!(
        replies.iter().all(|r| r.version.is_some()),
        "x-packlight-version on every response"
    );
    let counts = versions(&replies);
    assert_share(&counts, 2000, "1.0", 80.0);
    assert_share(&counts, 2000, "1.1", 20.0);
    assert_eq!(
        counts.get("2.0"),
        None,
        "major 1 never reaches 2.0: {counts:?}"
    );

    for (url, headers) in [
        ("http://httpbin:8000/v2/get", &[][..]),
        ("http://httpbin:8000/get", &[("gray", "1")][..]),
        ("http://httpbin:8000/get?debug=true", &[][..]),
    ] {
        let replies = sleep.requests(url, headers, 100).await.expect("requests");
        assert_eq!(replies.len(), 100);
        assert!(
            replies
                .iter()
                .all(|r| r.status == 200 && r.version.as_deref() == Some("2.0")),
            "{url} {headers:?} -> 2.0 always: {:?}",
            versions(&replies)
        );
    }
    let replies = sleep
        .requests(url, &[("gray", "2")], 100)
        .await
        .expect("requests");
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.version.as_deref() != Some("2.0"))
    );

    // 50/50 while traffic flows: no request fails, then the new split holds.
    let during = {
        let sleep = sleep.clone();
        tokio::spawn(async move { sleep.requests("http://httpbin:8000/get", &[], 1500).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    bench
        .apply(
            &ROUTE_80_20
                .replace("weight: 80", "weight: 50")
                .replace("weight: 20", "weight: 50"),
        )
        .await;
    let during = during.await.expect("task").expect("requests");
    assert_eq!(during.len(), 1500);
    let failed: Vec<_> = during.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} requests failed during the change: {:?}",
        failed.len(),
        failed.first()
    );
    // Wait for the change (a 50/50 window), then count.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = sleep.requests(url, &[], 200).await.expect("requests");
        let c = versions(&probe);
        let share = c.get("1.1").copied().unwrap_or(0) as f64 / 2.0;
        if share >= 38.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 50/50 split never showed: {c:?}"
        );
    }
    let replies = sleep.requests(url, &[], 2000).await.expect("requests");
    assert!(replies.iter().all(|r| r.status == 200));
    let counts = versions(&replies);
    assert_share(&counts, 2000, "1.0", 50.0);
    assert_share(&counts, 2000, "1.1", 50.0);
}

const SECURITY: &str = r#"
apiVersion: packlight.dev/v1alpha1
kind: MeshPolicy
metadata: {name: default, namespace: demo}
spec: {mtls: strict, access: deny}
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: httpbin, namespace: demo}
spec:
  port: 8000
  protocol: http
  versions: [{version: "1.0", image: example/httpbin:1.0, command: ["packlight", "demo-app"]}]
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: sleep, namespace: demo}
spec:
  port: 8080
  versions: [{version: "1.0", image: example/sleep:1.0, command: ["packlight", "demo-app"]}]
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: curl, namespace: demo}
spec:
  port: 8080
  versions: [{version: "1.0", image: example/curl:1.0, command: ["packlight", "demo-app"]}]
---
apiVersion: packlight.dev/v1alpha1
kind: AccessPolicy
metadata: {name: httpbin, namespace: demo}
spec:
  service: httpbin
  allow:
  - from: [sleep]
    methods: [GET]
  - from: [curl]
    methods: [GET]
    paths: ["/status/*"]
"#;

/// MeshPolicy deny + mTLS STRICT, AccessPolicy allowing `sleep` to GET
/// and `curl` to GET `/status/*` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_policy_allows_one_caller_and_strict_mtls_refuses_plain_text() {
    let bench = Bench::start("istio-access").await;
    bench.apply(SECURITY).await;
    bench.run_deployments(3).await;
    let sleep = bench.pod_of("sleep").await;
    let curl = bench.pod_of("curl").await;
    let httpbin = bench.pod_of("httpbin").await;
    let plain = bench
        .mesh
        .outside("plain", &[])
        .await
        .expect("plain caller");
    let url = "http://httpbin:8000/get";
    until(&sleep, url, &[], Duration::from_secs(90), |r| {
        r.status == 200
    })
    .await;

    let replies = sleep.requests(url, &[], 50).await.expect("requests");
    assert!(
        replies.len() == 50 && replies.iter().all(|r| r.status == 200),
        "{replies:?}"
    );

    // The policy reaches curl's and httpbin's sidecars: 403 from RBAC.
    until(&curl, url, &[], Duration::from_secs(60), |r| {
        r.status == 403
    })
    .await;
    let denied = curl.request("GET", url, &[], &[]).await.expect("curl");
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.body, "RBAC: access denied");
    let post = sleep.request("POST", url, &[], &[]).await.expect("curl");
    assert_eq!(post.status, 403, "sleep may only GET: {post:?}");
    assert_eq!(post.body, "RBAC: access denied");

    // curl's path rule: /status/* passes, and dot segments sent as they
    // are (`--path-as-is`) are normalised before the rule, so
    // `/status/../get` is `/get`, denied.
    let status = curl
        .request("GET", "http://httpbin:8000/status/200", &[], &[])
        .await
        .expect("curl");
    assert_eq!(status.status, 200, "curl may GET /status/*: {status:?}");
    let dodge = curl
        .request(
            "GET",
            "http://httpbin:8000/status/../get",
            &[],
            &["--path-as-is"],
        )
        .await
        .expect("curl");
    assert_eq!(dodge.status, 403, "a path dodge passed the rule: {dodge:?}");
    assert_eq!(dodge.body, "RBAC: access denied");

    // A caller without a sidecar, straight to the pod: STRICT mTLS resets it.
    let direct = format!("http://{}:8000/get", httpbin.ip);
    let reply = plain.request("GET", &direct, &[], &[]).await.expect("curl");
    assert_eq!(
        reply.status, 0,
        "a plain-text caller got an answer: {reply:?}"
    );
    assert_ne!(reply.curl_exit, 0);
    assert_ne!(
        reply.curl_exit, 7,
        "refused instead of reset by the sidecar: {reply:?}"
    );
}

const EGRESS: &str = r#"
apiVersion: packlight.dev/v1alpha1
kind: MeshPolicy
metadata: {name: default, namespace: demo}
spec: {egress: deny}
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: httpbin, namespace: demo}
spec:
  port: 80
  protocol: http
  versions: [{version: "1.0", image: example/httpbin:1.0, command: ["packlight", "demo-app"]}]
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: sleep, namespace: demo}
spec:
  port: 8080
  versions: [{version: "1.0", image: example/sleep:1.0, command: ["packlight", "demo-app"]}]
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: curl, namespace: demo}
spec:
  port: 8080
  versions: [{version: "1.0", image: example/curl:1.0, command: ["packlight", "demo-app"]}]
---
apiVersion: packlight.dev/v1alpha1
kind: EgressPolicy
metadata: {name: sleep-egress, namespace: demo}
spec:
  service: sleep
  hosts: ["web.outside.test"]
"#;

/// EgressPolicy under `egress: deny`: the whitelisted host answers `sleep`
/// only; another host, and the same host for the neighbour, get the mesh's
/// 502 (both callers have an HTTP listener on port 80: httpbin's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_policy_whitelists_a_host_for_one_service() {
    let bench = Bench::start("istio-egress").await;
    bench.apply(EGRESS).await;
    let server = bench
        .mesh
        .outside(
            "web",
            &[
                "env".into(),
                "PORT=80".into(),
                "PACKLIGHT_SERVICE=web".into(),
                "PACKLIGHT_VERSION=9.9".into(),
                PACKLIGHT.into(),
                "demo-app".into(),
                "--listen-address".into(),
                "0.0.0.0".into(),
            ],
        )
        .await
        .expect("outside server");
    bench
        .mesh
        .add_host("web.outside.test", server.ip)
        .await
        .expect("hosts");
    bench
        .mesh
        .add_host("blocked.outside.test", server.ip)
        .await
        .expect("hosts");
    bench.run_deployments(3).await;
    let sleep = bench.pod_of("sleep").await;
    let curl = bench.pod_of("curl").await;

    until(
        &sleep,
        "http://web.outside.test/get",
        &[],
        Duration::from_secs(90),
        |r| r.status == 200,
    )
    .await;
    let ok = sleep
        .request("GET", "http://web.outside.test/get", &[], &[])
        .await
        .expect("curl");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(
        ok.body.contains("\"web\""),
        "the outside server answered: {}",
        ok.body
    );

    let blocked = sleep
        .request("GET", "http://blocked.outside.test/get", &[], &[])
        .await
        .expect("curl");
    assert_eq!(blocked.status, 502, "not whitelisted: {blocked:?}");
    let neighbour = curl
        .request("GET", "http://web.outside.test/get", &[], &[])
        .await
        .expect("curl");
    assert_eq!(
        neighbour.status, 502,
        "whitelisted for sleep only: {neighbour:?}"
    );
}

/// Benchmark, not a check (run with `--ignored --nocapture`): time from
/// applying a weight change (80/20 <-> 20/80) through the operator and
/// istiod until the new split shows in traffic (a window of 40 requests
/// with at least 24 on the newly heavy version), over 20 changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints p50/p99 of weight-change convergence"]
async fn bench_weight_change_to_traffic() {
    let bench = Bench::start("istio-bench").await;
    bench.apply(HTTPBIN).await;
    bench.apply(ROUTE_80_20).await;
    bench.run_deployments(4).await;
    let sleep = bench.pod_of("sleep").await;
    let url = "http://httpbin:8000/get";
    until(&sleep, url, &[], Duration::from_secs(90), |r| {
        r.status == 200 && r.version.is_some()
    })
    .await;
    let mut times = Vec::new();
    for round in 0..20 {
        let (heavy, a, b) = if round % 2 == 0 {
            ("1.1", "weight: 20", "weight: 80")
        } else {
            ("1.0", "weight: 80", "weight: 20")
        };
        let route = ROUTE_80_20
            .replace("weight: 80", "W1")
            .replace("weight: 20", "W2")
            .replace("W1", a)
            .replace("W2", b);
        let t0 = Instant::now();
        bench.apply(&route).await;
        loop {
            let window = sleep.requests(url, &[], 40).await.expect("requests");
            if versions(&window).get(heavy).copied().unwrap_or(0) >= 24 {
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
        "weight change -> new split in traffic (operator + istiod), 20 changes: p50 {:?}, p99 {:?}, min {:?}",
        p(0.5),
        p(0.99),
        times[0]
    );
}
