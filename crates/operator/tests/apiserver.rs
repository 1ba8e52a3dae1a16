//! The operator against a real kube-apiserver (`packlight-testenv`), running
//! under its own ServiceAccount and `deploy/rbac.yaml`'s ClusterRole.
//!
//! Each test has its own namespace and its own operator scoped to it, so
//! the tests run in parallel without seeing each other.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use packlight_operator::leader::LeaseConfig;
use serde_json::{Value, json};
use support::{Harness, condition, eventually};

const MICROSERVICE: &str = r#"
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: httpbin}
spec:
  port: 8000
  protocol: http
  versions:
  - {version: "1.0", image: "example/httpbin:1.0", replicas: 2}
  - {version: "1.1", image: "example/httpbin:1.1"}
  - {version: "2.0", image: "example/httpbin:2.0"}
"#;

fn route(w10: u32, w11: u32, major2: &str) -> String {
    route_with(w10, w11, major2, "")
}

/// [`route`] with more lines of its spec (indented by two spaces).
fn route_with(w10: u32, w11: u32, major2: &str, more: &str) -> String {
    format!(
        r#"
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {{name: httpbin}}
spec:
  service: httpbin
  rules:
  - {{version: "1.0", weight: {w10}}}
  - {{version: "1.1", weight: {w11}}}
  - {{version: "{major2}", weight: 100}}
  - version: "{major2}"
    matches: [{{headers: {{gray: {{exact: "1"}}}}}}]
{more}"#
    )
}

/// The `timeout` of each HTTP route of a VirtualService (`None` where it
/// has none).
fn timeouts(vs: &Value) -> Vec<Option<String>> {
    vs["spec"]["http"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["timeout"].as_str().map(str::to_string))
        .collect()
}

/// `(route name, [(subset, weight)])` of a VirtualService.
fn splits(vs: &Value) -> Vec<(String, Vec<(String, u64)>)> {
    vs["spec"]["http"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let dests = r["route"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    (
                        d["destination"]["subset"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        d["weight"].as_u64().unwrap_or(100),
                    )
                })
                .collect();
            (r["name"].as_str().unwrap_or_default().to_string(), dests)
        })
        .collect()
}

fn default_split(vs: &Value) -> Vec<(String, u64)> {
    splits(vs)
        .into_iter()
        .find(|(n, _)| n == "default")
        .map(|(_, d)| d)
        .unwrap_or_default()
}

/// The value of an unlabelled sample `name` in a Prometheus text page.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn pairs(p: &[(&str, u64)]) -> Vec<(String, u64)> {
    p.iter().map(|(s, w)| (s.to_string(), *w)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_articles_route_is_programmed_follows_changes_and_is_cleaned_up() -> anyhow::Result<()>
{
    let h = Harness::start("op-route").await?;
    h.apply(MICROSERVICE).await?;
    h.apply(&route_with(80, 20, "2.0", "  timeout: 5s\n"))
        .await?;

    let r = h
        .wait_condition("Route", "httpbin", "Programmed", "True", "Programmed")
        .await?;
    assert_eq!(
        condition(&r, "Accepted").unwrap()["reason"],
        "Valid",
        "{}",
        r["status"]
    );
    assert_eq!(r["status"]["split"], "1.0=80,1.1=20,2.0=100");
    assert_eq!(r["status"]["observedGeneration"], 1);
    h.wait_condition(
        "Microservice",
        "httpbin",
        "Programmed",
        "True",
        "Programmed",
    )
    .await?;

    let vs = h
        .get_output("VirtualService", "httpbin")
        .await?
        .context("VirtualService")?;
    assert_eq!(
        default_split(&vs),
        pairs(&[("v1-0", 80), ("v1-1", 20)]),
        "{}",
        vs["spec"]
    );
    let names: Vec<String> = splits(&vs).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"major-2".to_string()), "{names:?}");
    let t = timeouts(&vs);
    assert!(
        !t.is_empty() && t.iter().all(|t| t.as_deref() == Some("5s")),
        "{t:?}"
    );
    let owner = &vs["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Route");
    assert_eq!(owner["uid"], r["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    let dr = h
        .get_output("DestinationRule", "httpbin")
        .await?
        .context("DestinationRule")?;
    let subsets: Vec<(&str, &str)> = dr["spec"]["subsets"]
        .as_array()
        .context("subsets")?
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default(),
                s["labels"]["version"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        subsets,
        vec![("v1-0", "1.0"), ("v1-1", "1.1"), ("v2-0", "2.0")]
    );
    for name in ["httpbin-v1-0", "httpbin-v1-1", "httpbin-v2-0"] {
        let d = h.get_output("Deployment", name).await?.context(name)?;
        assert_eq!(d["metadata"]["ownerReferences"][0]["kind"], "Microservice");
    }

    // An output deleted by hand comes back (the reconcile that follows
    // the deletion reads the objects again, not a snapshot from before).
    let uid = vs["metadata"]["uid"].clone();
    h.output("VirtualService")
        .delete("httpbin", &DeleteParams::default())
        .await?;
    eventually(
        "the deleted VirtualService made again",
        Duration::from_secs(20),
        || async {
            Ok(h.get_output("VirtualService", "httpbin")
                .await?
                .is_some_and(|v| v["metadata"]["uid"] != uid && default_split(&v).len() == 2))
        },
    )
    .await?;

    // One Event per transition: a Programmed event when the Route becomes
    // programmed, none for Accepted alone (its first status write names
    // both conditions in one event; a failed apply first would give an
    // ApplyFailed Warning, then the Programmed event).
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(h.admin.clone(), h.name());
    let route_events = || async {
        anyhow::Ok(
            events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Route"))
                .collect::<Vec<_>>(),
        )
    };
    eventually(
        "a Programmed event on the Route",
        Duration::from_secs(10),
        || async {
            Ok(route_events()
                .await?
                .iter()
                .any(|e| e.reason.as_deref() == Some("Programmed")))
        },
    )
    .await?;
    let seen = route_events().await?;
    let said: Vec<(Option<&str>, Option<&str>)> = seen
        .iter()
        .map(|e| (e.reason.as_deref(), e.note.as_deref()))
        .collect();
    assert!(
        said.iter().all(|(r, _)| *r != Some("Valid"))
            && said.iter().any(|(r, note)| *r == Some("Programmed")
                && note.is_some_and(|n| n.contains("Programmed=True (Programmed)"))),
        "one event per transition: {said:?}"
    );

    // Only the timeout goes: a field dropped, nothing else changed, so
    // the VirtualService without it is a subset of the live one; the
    // operator still applies it (its digest differs).
    h.apply(&route(80, 20, "2.0")).await?;
    h.wait_output(
        "VirtualService",
        "httpbin",
        "the VirtualService without the timeout",
        |vs| {
            default_split(vs) == pairs(&[("v1-0", 80), ("v1-1", 20)])
                && timeouts(vs).iter().all(Option::is_none)
        },
    )
    .await?;

    // Weights change: the VirtualService follows.
    h.apply(&route(50, 50, "2.0")).await?;
    h.wait_output(
        "VirtualService",
        "httpbin",
        "the VirtualService at 50/50",
        |vs| default_split(vs) == pairs(&[("v1-0", 50), ("v1-1", 50)]),
    )
    .await?;
    let r = h
        .wait_condition("Route", "httpbin", "Programmed", "True", "Programmed")
        .await?;
    assert_eq!(r["status"]["observedGeneration"], 3);
    assert_eq!(r["status"]["split"], "1.0=50,1.1=50,2.0=100");

    // Steady state: nothing is written, by the counters and by the API
    // server's resourceVersions.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = h.versions().await?;
    let writes = h.stats.writes();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        h.stats.writes(),
        writes,
        "the operator wrote in steady state"
    );
    assert_eq!(
        h.versions().await?,
        before,
        "resourceVersions moved in steady state"
    );

    // An invalid change (a version the Microservice lacks) is reported and
    // keeps the last good output.
    h.apply(&route(50, 50, "3.0")).await?;
    let r = h
        .wait_condition("Route", "httpbin", "Accepted", "False", "Invalid")
        .await?;
    let msg = condition(&r, "Accepted").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("3.0"), "{msg}");
    assert_eq!(condition(&r, "Programmed").unwrap()["reason"], "Pending");
    assert_eq!(
        r["status"]["split"], "1.0=50,1.1=50,2.0=100",
        "the last accepted split stays"
    );
    let vs = h
        .get_output("VirtualService", "httpbin")
        .await?
        .context("VirtualService kept")?;
    assert_eq!(default_split(&vs), pairs(&[("v1-0", 50), ("v1-1", 50)]));
    assert!(h.get_output("DestinationRule", "httpbin").await?.is_some());

    // Fixed again: programmed again.
    h.apply(&route(90, 10, "2.0")).await?;
    h.wait_condition("Route", "httpbin", "Programmed", "True", "Programmed")
        .await?;

    // Delete: its outputs are gone, the Microservice's stay.
    h.packlight("Route")
        .delete("httpbin", &DeleteParams::default())
        .await?;
    eventually(
        "VirtualService and DestinationRule gone",
        Duration::from_secs(30),
        || async {
            Ok(h.get_output("VirtualService", "httpbin").await?.is_none()
                && h.get_output("DestinationRule", "httpbin").await?.is_none())
        },
    )
    .await?;
    assert!(h.get_output("Deployment", "httpbin-v1-0").await?.is_some());
    h.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_renders_its_objects() -> anyhow::Result<()> {
    let h = Harness::start("op-kinds").await?;
    h.apply(
        r#"
apiVersion: packlight.dev/v1alpha1
kind: MeshPolicy
metadata: {name: default}
spec: {mtls: strict, access: deny, egress: deny}
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: httpbin}
spec:
  port: 8000
  versions: [{version: "1.0", image: "example/httpbin:1.0"}]
---
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: sleep}
spec:
  port: 8080
  versions: [{version: "1.0", image: "example/sleep:1.0"}]
---
apiVersion: packlight.dev/v1alpha1
kind: AccessPolicy
metadata: {name: httpbin}
spec:
  service: httpbin
  allow:
  - {from: [sleep], methods: [GET], paths: ["/status/*"]}
  - ingress: true
---
apiVersion: packlight.dev/v1alpha1
kind: EgressPolicy
metadata: {name: sleep-egress}
spec:
  service: sleep
  hosts: ["www.aliyun.com"]
---
apiVersion: packlight.dev/v1alpha1
kind: IngressPolicy
metadata: {name: data}
spec:
  hosts: ["data.example.com"]
  routes: [{pathPrefix: /httpbin, service: httpbin}]
  cors: {allowOrigins: ["https://console.example.com"], allowMethods: [GET]}
  rateLimit: {requests: 100, per: second}
"#,
    )
    .await?;
    for (kind, name) in [
        ("MeshPolicy", "default"),
        ("Microservice", "httpbin"),
        ("Microservice", "sleep"),
        ("AccessPolicy", "httpbin"),
        ("EgressPolicy", "sleep-egress"),
        ("IngressPolicy", "data"),
    ] {
        h.wait_condition(kind, name, "Programmed", "True", "Programmed")
            .await?;
    }
    let ns = h.name().to_string();
    let get = |kind: &'static str, name: String| {
        let h = &h;
        async move {
            h.get_output(kind, &name)
                .await?
                .with_context(|| format!("{kind} {name}"))
        }
    };
    let pa = get("PeerAuthentication", "default".into()).await?;
    assert_eq!(pa["spec"]["mtls"]["mode"], "STRICT");
    let deny = get("AuthorizationPolicy", "deny-all".into()).await?;
    assert_eq!(deny["spec"], json!({}));
    let allow = get("AuthorizationPolicy", "httpbin".into()).await?;
    assert!(
        allow["spec"]
            .to_string()
            .contains(&format!("cluster.local/ns/{ns}/sa/sleep")),
        "{}",
        allow["spec"]
    );
    let sidecar = get("Sidecar", "sleep".into()).await?;
    let hosts = sidecar["spec"]["egress"][0]["hosts"].to_string();
    assert!(hosts.contains("./www.aliyun.com"), "{hosts}");
    assert_eq!(
        sidecar["spec"]["outboundTrafficPolicy"]["mode"],
        "REGISTRY_ONLY"
    );
    get("Sidecar", "default".into()).await?;
    let se = get("ServiceEntry", "sleep-egress-www-aliyun-com-80-443".into()).await?;
    assert_eq!(se["spec"]["hosts"], json!(["www.aliyun.com"]));
    get("NetworkPolicy", "httpbin".into()).await?;
    let gw = get("Gateway", format!("{ns}-data")).await?;
    assert_eq!(
        gw["metadata"]["labels"]["packlight.dev/source-namespace"],
        ns.as_str()
    );
    let ivs = get("VirtualService", "ingress-data".into()).await?;
    assert!(
        ivs["spec"]["http"].to_string().contains("corsPolicy"),
        "{}",
        ivs["spec"]
    );
    get("EnvoyFilter", format!("{ns}-data")).await?;
    get("Service", "httpbin".into()).await?;
    get("ServiceAccount", "sleep".into()).await?;

    // The operator's endpoints report what it did.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(packlight_operator::http::serve(
        listener,
        h.stats.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    assert_eq!(support::http_get(addr, "/healthz").await?.0, 200);
    assert_eq!(support::http_get(addr, "/readyz").await?.0, 200);
    let (code, metrics) = support::http_get(addr, "/metrics").await?;
    assert_eq!(code, 200);
    let applies = h.stats.applies.load(Ordering::Relaxed);
    assert!(applies > 10, "{applies}");
    assert!(
        metrics.contains(&format!(
            "packlight_operator_writes_total{{operation=\"apply\"}} {applies}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("packlight_operator_leader 1"), "{metrics}");
    let reconciles = metric(&metrics, "packlight_operator_reconciles_total");
    assert!(reconciles.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(
        metric(&metrics, "packlight_operator_reconcile_errors_total").is_some(),
        "{metrics}"
    );
    // objects_managed is the count of labelled objects in the operator's
    // scope, as the API server lists them (taken at each reconcile's start:
    // the echo reconciles of its last writes bring it up to date).
    let mut live = 0usize;
    for (_, _, kind, _) in packlight_operator::outputs::OUTPUT_KINDS {
        let lp = ListParams::default().labels(packlight_operator::outputs::MANAGED_SELECTOR);
        live += h.output(kind).list(&lp).await?.items.len();
    }
    assert!(live > 10, "{live}");
    // One duration observed per reconcile (read again if a reconcile ends
    // between the two).
    let seen = std::cell::RefCell::new(String::new());
    eventually(
        "objects_managed equal to the labelled objects",
        Duration::from_secs(10),
        || {
            let seen = &seen;
            async move {
                let (_, text) = support::http_get(addr, "/metrics").await?;
                let ok = metric(&text, "packlight_operator_objects_managed") == Some(live as f64)
                    && metric(&text, "packlight_operator_reconcile_duration_seconds_count")
                        == metric(&text, "packlight_operator_reconciles_total");
                *seen.borrow_mut() = text;
                Ok(ok)
            }
        },
    )
    .await
    .with_context(|| {
        format!(
            "listed {live} labelled objects; metrics:\n{}",
            seen.borrow()
        )
    })?;
    let _ = stop_http.send(());
    http.await??;

    // /readyz: a leader whose watches have not listed everything yet is
    // not ready; a standby is.
    for (leader, synced, code) in [(1, 0, 503), (1, 1, 200), (0, 0, 200)] {
        let stats = std::sync::Arc::new(packlight_operator::Stats::default());
        stats.leader.store(leader, Ordering::Relaxed);
        stats.synced.store(synced, Ordering::Relaxed);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(packlight_operator::http::serve(
            listener,
            stats,
            async move {
                let _ = stopped.await;
            },
        ));
        let (got, _) = support::http_get(addr, "/readyz").await?;
        assert_eq!(got, code, "leader {leader}, synced {synced}");
        let _ = stop.send(());
        http.await??;
    }

    // An invalid EgressPolicy (a port out of range: the model's check, not
    // the CRD's) keeps its last good output, including the merged Sidecar.
    h.apply(
        r#"
apiVersion: packlight.dev/v1alpha1
kind: EgressPolicy
metadata: {name: sleep-egress}
spec:
  service: sleep
  hosts: ["www.aliyun.com", "new.example.com", "api.example.com:99999"]
"#,
    )
    .await?;
    let e = h
        .wait_condition(
            "EgressPolicy",
            "sleep-egress",
            "Accepted",
            "False",
            "Invalid",
        )
        .await?;
    assert!(
        condition(&e, "Accepted").unwrap()["message"]
            .to_string()
            .contains("99999"),
        "{}",
        e["status"]
    );
    let sidecar = get("Sidecar", "sleep".into()).await?;
    let hosts = sidecar["spec"]["egress"][0]["hosts"].to_string();
    assert!(
        hosts.contains("./www.aliyun.com") && !hosts.contains("new.example.com"),
        "{hosts}"
    );
    get("ServiceEntry", "sleep-egress-www-aliyun-com-80-443".into()).await?;
    assert!(
        h.get_output("ServiceEntry", "sleep-egress-new-example-com-80-443")
            .await?
            .is_none()
    );

    // The egress whitelist goes away: its ServiceEntry is deleted and the
    // Sidecar no longer lists the host.
    h.packlight("EgressPolicy")
        .delete("sleep-egress", &DeleteParams::default())
        .await?;
    eventually(
        "egress whitelist removed",
        Duration::from_secs(30),
        || async {
            let se = h
                .get_output("ServiceEntry", "sleep-egress-www-aliyun-com-80-443")
                .await?;
            let sc = h.get_output("Sidecar", "sleep").await?.unwrap_or_default();
            Ok(se.is_none() && !sc["spec"].to_string().contains("aliyun"))
        },
    )
    .await?;
    h.finish().await
}

/// An IngressPolicy with CSRF or a rate limit needs the gateway's shared
/// EnvoyFilter, which lives in the gateway's namespace (another
/// namespace's reconcile deletes it once unwanted): the policy is
/// `Programmed` only once that filter is in place, whichever namespace is
/// reconciled first. Here the operator watches only the policy's
/// namespace, so nothing but the policy's own reconcile could place it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_programmed_ingress_policy_has_the_gateways_shared_filters() -> anyhow::Result<()> {
    let h = Harness::setup("op-shared").await?;
    let gateway = packlight_testenv::namespace("op-shared-gw").await?;
    let mut config = h.config();
    config.render.gateway_namespace = gateway.name().to_string();
    let mut op = h.spawn(config);
    h.apply(MICROSERVICE).await?;
    h.apply(
        r#"
apiVersion: packlight.dev/v1alpha1
kind: IngressPolicy
metadata: {name: data}
spec:
  hosts: ["data.example.com"]
  routes: [{pathPrefix: /httpbin, service: httpbin}]
  csrf: {}
  rateLimit: {requests: 100, per: second}
"#,
    )
    .await?;
    let ing = h
        .wait_condition("IngressPolicy", "data", "Programmed", "True", "Programmed")
        .await?;
    let filters = h.output_in("EnvoyFilter", gateway.name());
    let shared = filters
        .get_opt(packlight_istio::filters::FILTERS_NAME)
        .await?
        .with_context(|| {
            format!(
                "IngressPolicy Programmed ({:?}) without the shared EnvoyFilter in {}",
                condition(&ing, "Programmed").map(|c| c["message"].clone()),
                gateway.name()
            )
        })?;
    let patches = shared.data["spec"]["configPatches"].to_string();
    assert!(
        patches.contains(packlight_istio::filters::CSRF)
            && patches.contains("envoy.filters.http.local_ratelimit"),
        "{patches}"
    );
    // Its own objects are counted with it.
    let per_policy = filters.get_opt(&format!("{}-data", h.name())).await?;
    assert!(per_policy.is_some(), "the policy's own EnvoyFilter");
    op.stop().await;
    h.finish().await
}

/// Many missing objects of one kind are checked with one list instead of a
/// read each: foreign objects found that way are never overwritten either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_objects_found_by_a_bulk_list_are_reported_not_overwritten() -> anyhow::Result<()> {
    let h = Harness::start("op-bulk-conflict").await?;
    const N: usize = 12;
    for i in 0..N {
        let foreign = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": format!("svc-{i}"), "namespace": h.name()},
            "spec": {"hosts": ["someone-else"], "http": [{"route": [{"destination": {"host": "someone-else"}}]}]},
        });
        h.output("VirtualService")
            .patch(
                &format!("svc-{i}"),
                &PatchParams::apply("someone"),
                &Patch::Apply(&foreign),
            )
            .await?;
    }
    let all: String = (0..N)
        .map(|i| format!("---\n{}", support::service_with_route(i, 80)))
        .collect();
    h.apply(&all).await?;
    for i in 0..N {
        let name = format!("svc-{i}");
        let r = h
            .wait_condition("Route", &name, "Accepted", "False", "Conflict")
            .await?;
        let msg = condition(&r, "Accepted").unwrap()["message"].to_string();
        assert!(msg.contains("not managed by packlight"), "{name}: {msg}");
        let vs = h.get_output("VirtualService", &name).await?.context("VS")?;
        assert_eq!(
            vs["spec"]["hosts"],
            json!(["someone-else"]),
            "{name} overwritten"
        );
        // Its DestinationRule, in nobody's way, is applied.
        assert!(
            h.get_output("DestinationRule", &name).await?.is_some(),
            "{name}"
        );
    }
    h.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_reported_and_foreign_objects_never_overwritten() -> anyhow::Result<()> {
    let h = Harness::start("op-conflict").await?;
    // Someone else's VirtualService named like the Route's output.
    let foreign = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "httpbin", "namespace": h.name()},
        "spec": {"hosts": ["someone-else"], "http": [{"route": [{"destination": {"host": "someone-else"}}]}]},
    });
    h.output("VirtualService")
        .patch(
            "httpbin",
            &PatchParams::apply("someone"),
            &Patch::Apply(&foreign),
        )
        .await?;
    h.apply(MICROSERVICE).await?;
    h.apply(&route(80, 20, "2.0")).await?;
    let r = h
        .wait_condition("Route", "httpbin", "Accepted", "False", "Conflict")
        .await?;
    let msg = condition(&r, "Accepted").unwrap()["message"].to_string();
    assert!(
        msg.contains("VirtualService") && msg.contains("not managed by packlight"),
        "{msg}"
    );
    let vs = h
        .get_output("VirtualService", "httpbin")
        .await?
        .context("VS")?;
    assert_eq!(vs["spec"]["hosts"], json!(["someone-else"]), "overwritten");
    // The DestinationRule, not in anyone's way, is applied.
    assert!(h.get_output("DestinationRule", "httpbin").await?.is_some());

    // Two Routes for one service: both report Conflict.
    h.apply(
        r#"
apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {name: web}
spec:
  port: 80
  versions: [{version: "1.0", image: "example/web:1.0"}]
---
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {name: web-a}
spec:
  service: web
  rules: [{version: "1.0", weight: 100}]
---
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {name: web-b}
spec:
  service: web
  rules: [{version: "1.0", weight: 100}]
"#,
    )
    .await?;
    for name in ["web-a", "web-b"] {
        let r = h
            .wait_condition("Route", name, "Accepted", "False", "Conflict")
            .await?;
        let msg = condition(&r, "Accepted").unwrap()["message"].to_string();
        assert!(msg.contains("web-a") && msg.contains("web-b"), "{msg}");
    }
    h.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_converges_and_rewrites_only_what_changed() -> anyhow::Result<()> {
    let mut h = Harness::start("op-restart").await?;
    h.apply(MICROSERVICE).await?;
    h.apply(&route_with(80, 20, "2.0", "  timeout: 5s\n"))
        .await?;
    h.wait_condition("Route", "httpbin", "Programmed", "True", "Programmed")
        .await?;
    h.wait_condition(
        "Microservice",
        "httpbin",
        "Programmed",
        "True",
        "Programmed",
    )
    .await?;
    h.shutdown().await;

    // While no operator runs: the timeout goes. Nothing else changes, so
    // the VirtualService without it is a subset of the live one; only its
    // digest annotation tells the new operator (empty caches) to apply it.
    h.apply(&route(80, 20, "2.0")).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let vs = h
        .get_output("VirtualService", "httpbin")
        .await?
        .context("VS")?;
    assert_eq!(default_split(&vs), pairs(&[("v1-0", 80), ("v1-1", 20)]));
    assert!(timeouts(&vs).iter().all(|t| t.as_deref() == Some("5s")));

    // A new operator (empty caches) converges, and applies only the
    // VirtualService: every other live object, defaults added by the API
    // server and all, is recognised as up to date.
    let mut op = h.spawn(h.config());
    let r = h
        .wait_condition("Route", "httpbin", "Programmed", "True", "Programmed")
        .await?;
    assert_eq!(r["status"]["observedGeneration"], 2);
    let vs = h
        .get_output("VirtualService", "httpbin")
        .await?
        .context("VS")?;
    assert_eq!(default_split(&vs), pairs(&[("v1-0", 80), ("v1-1", 20)]));
    assert!(
        timeouts(&vs).iter().all(Option::is_none),
        "{:?}",
        timeouts(&vs)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        op.stats.applies.load(Ordering::Relaxed),
        1,
        "only the VirtualService changed"
    );
    assert_eq!(op.stats.deletes.load(Ordering::Relaxed), 0);
    // Nothing duplicated.
    let lp = ListParams::default();
    assert_eq!(h.output("VirtualService").list(&lp).await?.items.len(), 1);
    assert_eq!(h.output("Deployment").list(&lp).await?.items.len(), 3);
    op.stop().await;
    h.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_dies() -> anyhow::Result<()> {
    let h = Harness::setup("op-leader").await?;
    h.allow_leases().await?;
    let lease = LeaseConfig {
        namespace: h.name().to_string(),
        name: "packlight-operator".to_string(),
        duration: Duration::from_secs(3),
    };
    let config = |id: &str| {
        let mut c = h.config();
        c.instance = Some(id.to_string());
        c.lease = Some(lease.clone());
        c
    };
    let mut a = h.spawn(config("a"));
    eventually("a leads", Duration::from_secs(15), || async {
        Ok(a.stats.leader.load(Ordering::Relaxed) == 1)
    })
    .await?;
    let mut b = h.spawn(config("b"));
    h.apply(MICROSERVICE).await?;
    h.apply(&route(80, 20, "2.0")).await?;
    h.wait_condition("Route", "httpbin", "Programmed", "True", "Programmed")
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.stats.leader.load(Ordering::Relaxed), 0);
    assert_eq!(b.stats.writes(), 0, "the standby wrote");
    let leases: kube::Api<Lease> = kube::Api::namespaced(h.admin.clone(), h.name());
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity);
    assert_eq!(
        holder(leases.get("packlight-operator").await?).as_deref(),
        Some("a")
    );

    // The leader dies without releasing the Lease; a change made now is
    // programmed by the standby once the Lease expires.
    a.kill();
    h.apply(&route(60, 40, "2.0")).await?;
    h.wait_output(
        "VirtualService",
        "httpbin",
        "the standby programs the change",
        |vs| default_split(vs) == pairs(&[("v1-0", 60), ("v1-1", 40)]),
    )
    .await?;
    assert_eq!(b.stats.leader.load(Ordering::Relaxed), 1);
    assert!(b.stats.writes() > 0);
    let l = leases.get("packlight-operator").await?;
    assert!(
        l.spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0)
            >= 1
    );
    assert_eq!(holder(l).as_deref(), Some("b"));

    // A graceful stop hands the Lease on.
    b.stop().await;
    assert_eq!(holder(leases.get("packlight-operator").await?), None);
    h.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_whose_weights_sum_to_90_is_refused_at_apply() -> anyhow::Result<()> {
    let h = Harness::setup("op-admission").await?;
    let err = h
        .apply(&route(70, 20, "2.0"))
        .await
        .expect_err("the API server refuses the Route");
    let text = format!("{err:#}");
    assert!(
        text.contains("weights of major 1 sum to 90, not 100"),
        "{text}"
    );
    let routes = h.packlight("Route").list(&ListParams::default()).await?;
    assert!(routes.items.is_empty(), "nothing was stored");
    h.finish().await
}

/// `deploy/webhook.yaml`'s ValidatingWebhookConfiguration, renamed to
/// `name`, pointed at `url` and limited to the namespace `ns`.
fn webhook_configuration(name: &str, url: &str, ns: &str) -> anyhow::Result<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/webhook.yaml");
    let text = std::fs::read_to_string(path).context("deploy/webhook.yaml")?;
    let mut vwc: Value = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .find(|d: &Value| d["kind"] == "ValidatingWebhookConfiguration")
        .context("no ValidatingWebhookConfiguration in deploy/webhook.yaml")?;
    assert_eq!(vwc["webhooks"][0]["failurePolicy"], "Ignore");
    vwc["metadata"]["name"] = json!(name);
    vwc["webhooks"][0]["clientConfig"] = json!({ "url": url });
    vwc["webhooks"][0]["namespaceSelector"] =
        json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
    Ok(vwc)
}

/// The serial number of the certificate PEM, by `openssl x509`.
fn serial_of(pem: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(pem.as_bytes())?;
    Ok(String::from_utf8(child.wait_with_output()?.stdout)?
        .trim()
        .to_string())
}

/// The certificate a TLS server at `addr` presents (`openssl s_client`).
fn served_certificate(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .context("no certificate")?;
    let end = text
        .find("-----END CERTIFICATE-----")
        .context("no certificate end")?;
    Ok(text[start..end + "-----END CERTIFICATE-----".len()].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_refuses_own_errors_warns_on_cross_resource_ones() -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Secret;
    use packlight_operator::admission::{self, WebhookConfig};

    let h = Harness::start("op-webhook").await?;
    let configuration = format!("packlight-{}", h.name());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let vwcs: kube::Api<ValidatingWebhookConfiguration> = kube::Api::all(h.admin.clone());
    let vwc = webhook_configuration(
        &configuration,
        &format!("https://{addr}/validate"),
        h.name(),
    )?;
    vwcs.patch(
        &configuration,
        &PatchParams::apply("packlight-test").force(),
        &Patch::Apply(&vwc),
    )
    .await?;

    // Short-lived certificates, so the test sees a renewal.
    let mut config = WebhookConfig::for_service("packlight-webhook", h.name());
    config.namespace = Some(h.name().to_string());
    config.configuration = configuration.clone();
    config.certs.ip_addresses = vec![addr.ip()];
    config.certs.validity = Duration::from_secs(40);
    config.certs.renew_before = Duration::from_secs(25);
    config.check_every = Duration::from_secs(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admission::serve(
        listener,
        h.client.clone(),
        config,
        async {
            let _ = stopped.await;
        },
    ));

    // Started before its rights (RBAC applied after the Deployment): the
    // Secret cannot be made yet, and the webhook keeps trying instead of
    // giving up.
    let secrets: kube::Api<Secret> = kube::Api::namespaced(h.admin.clone(), h.name());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !server.is_finished(),
        "the webhook gave up without its certificate"
    );
    assert!(secrets.get_opt("packlight-webhook-tls").await?.is_none());
    // Meanwhile a connection is closed at once, so the API server applies
    // the failurePolicy instead of waiting out its timeout.
    let mut probe = tokio::net::TcpStream::connect(addr).await?;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut probe, &mut byte),
    )
    .await
    .context("the webhook held a connection it cannot serve")?;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    h.allow_webhook(&configuration).await?;

    // The operator made the Secret and patched its CA into the configuration.
    let ca_of = |s: &Secret| {
        s.data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .map(|b| b.0.clone())
    };
    eventually("the caBundle patched", Duration::from_secs(20), || async {
        let Some(secret) = secrets.get_opt("packlight-webhook-tls").await? else {
            return Ok(false);
        };
        let vwc = vwcs.get(&configuration).await?;
        let bundle = vwc.webhooks.unwrap_or_default()[0]
            .client_config
            .ca_bundle
            .clone()
            .map(|b| b.0);
        Ok(bundle.is_some() && bundle == ca_of(&secret))
    })
    .await?;

    let ns_flag = format!("--namespace={}", h.name());
    let apply = |yaml: &str| h.kubectl(&["apply", &ns_flag, "-f", "-"], yaml);
    let (ok, _, err) = apply(MICROSERVICE)?;
    assert!(ok, "{err}");

    // An error of the Route alone that CEL cannot express (RE2 syntax).
    // The API server takes a moment to use the new configuration: probe
    // with dry runs until the webhook answers.
    let bad = route(80, 20, "2.0").replace(r#"{exact: "1"}"#, r#"{regex: "("}"#);
    assert_ne!(bad, route(80, 20, "2.0"));
    let mut refused = String::new();
    eventually("the webhook refuses", Duration::from_secs(30), || {
        let (ok, _, err) = h
            .kubectl(&["apply", &ns_flag, "--dry-run=server", "-f", "-"], &bad)
            .unwrap_or_default();
        refused = err;
        async move { Ok(!ok) }
    })
    .await?;
    let (ok, _, err) = apply(&bad)?;
    assert!(!ok, "applied: {err}");
    let want = format!(
        "Route {}/httpbin: spec.rules[3].matches[0].headers.gray.regex: \"(\" is not an RE2 regex",
        h.name()
    );
    assert!(
        err.contains("admission webhook \"validate.packlight.dev\" denied the request")
            && err.contains(&want)
            && err.contains("write an RE2 regex"),
        "{err}\n(dry run said: {refused})"
    );
    assert!(
        h.packlight("Route").get_opt("httpbin").await?.is_none(),
        "refused, yet stored"
    );

    // What depends on other objects is not refused (DESIGN.md: admission
    // cannot see a consistent whole): a version the Microservice lacks is
    // stored with a warning and reported in status.
    let (ok, _, err) = apply(&route(80, 20, "3.0"))?;
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!(
            "Warning: Route {}/httpbin: spec.rules[2].version: version 3.0 is not a version of Microservice {}/httpbin",
            h.name(),
            h.name()
        )) && err.contains("[stored; status Accepted=False until this is fixed]"),
        "{err}"
    );
    h.wait_condition("Route", "httpbin", "Accepted", "False", "Invalid")
        .await?;

    // A valid Route passes and is programmed.
    let (ok, _, err) = apply(&route(80, 20, "2.0"))?;
    assert!(ok, "{err}");
    h.wait_condition("Route", "httpbin", "Programmed", "True", "Programmed")
        .await?;

    // A second Route for the same service passes with a warning; both
    // report Conflict in status.
    let second =
        route(80, 20, "2.0").replace("metadata: {name: httpbin}", "metadata: {name: httpbin-2}");
    let (ok, _, err) = apply(&second)?;
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!(
            "Warning: Route {}/httpbin-2: spec.service: service httpbin has 2 Routes (",
            h.name()
        )) && err.contains("only one Route per service"),
        "{err}"
    );
    for name in ["httpbin", "httpbin-2"] {
        h.wait_condition("Route", name, "Accepted", "False", "Conflict")
            .await?;
    }
    let (ok, _, err) = h.kubectl(&["delete", &ns_flag, "route", "httpbin-2"], "")?;
    assert!(ok, "{err}");

    // Warnings pass, and kubectl prints them.
    let lonely = r#"
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {name: lonely}
spec:
  service: lonely
  rules: [{version: "1.0", weight: 100}]
"#;
    let (ok, _, err) = apply(lonely)?;
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!(
            "Warning: Route {}/lonely: spec.service: no Microservice lonely is given",
            h.name()
        )),
        "{err}"
    );

    // Renewal: the Secret gets a new certificate before the old one
    // expires, the server presents it, and the webhook still answers.
    let cert_of = |s: &Secret| {
        s.data
            .as_ref()
            .and_then(|d| d.get("tls.crt"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let first = cert_of(&secrets.get("packlight-webhook-tls").await?);
    let renewed = std::cell::RefCell::new(String::new());
    eventually("a renewed certificate", Duration::from_secs(40), || {
        let (secrets, renewed, first) = (&secrets, &renewed, &first);
        async move {
            let now = cert_of(&secrets.get("packlight-webhook-tls").await?);
            let changed = now != *first;
            *renewed.borrow_mut() = now;
            Ok(changed)
        }
    })
    .await?;
    let renewed = renewed.into_inner();
    let want_serial = serial_of(&renewed)?;
    eventually(
        "the renewed certificate served",
        Duration::from_secs(10),
        || {
            let got = served_certificate(addr).and_then(|c| serial_of(&c));
            let want = want_serial.clone();
            async move { Ok(got? == want) }
        },
    )
    .await?;
    let (ok, _, err) = apply(&bad)?;
    assert!(!ok && err.contains(&want), "after renewal: {err}");

    let _ = stop.send(());
    server.await??;
    vwcs.delete(&configuration, &DeleteParams::default())
        .await?;
    let _ = kube::Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(h.admin.clone())
        .delete(&configuration, &DeleteParams::default())
        .await;
    let _ = kube::Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(h.admin.clone())
        .delete(&configuration, &DeleteParams::default())
        .await;
    h.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_chart_passes_a_server_side_dry_run() -> anyhow::Result<()> {
    use kube::api::DynamicObject;
    use kube::core::GroupVersionKind;
    use kube::discovery::{Scope, pinned_kind};

    let ns = packlight_testenv::namespace("op-helm").await?;
    let client = ns.client();
    let objects = support::chart_objects(ns.name(), &[])?;
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for want in [
        "CustomResourceDefinition",
        "ClusterRole",
        "Deployment",
        "Service",
        "ValidatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&want), "no {want} in {kinds:?}");
    }
    let pp = PatchParams::apply("packlight-test")
        .dry_run()
        .validation_strict();
    for obj in &objects {
        let (group, version) = match obj["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .split_once('/')
        {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                obj["apiVersion"].as_str().unwrap_or_default().to_string(),
            ),
        };
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let (ar, caps) =
            pinned_kind(&client, &GroupVersionKind::gvk(&group, &version, kind)).await?;
        let api: kube::Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => kube::Api::namespaced_with(client.clone(), ns.name(), &ar),
            Scope::Cluster => kube::Api::all_with(client.clone(), &ar),
        };
        api.patch(name, &pp, &Patch::Apply(obj))
            .await
            .with_context(|| format!("server-side dry run of {kind} {name}"))?;
    }
    ns.delete().await
}

/// Gateway objects live in the gateway's namespace but belong to the
/// namespace of their IngressPolicy (label `packlight.dev/source-namespace`).
/// When that namespace is deleted, nothing of it is left in the gateway's
/// namespace: neither while the operator runs, nor when it was down during
/// the deletion (the gateway namespace adopts the orphans at start).
/// Cluster-wide, so on a bench of its own: an all-namespace operator on
/// the shared bench would act on every other test's namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_namespace_leaves_nothing_in_the_gateway_namespace() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;
    use kube::api::{DynamicObject, PostParams};

    let extra = packlight_testenv::start_extra().await?;
    let env = extra.env().await?;
    let admin = env.client()?;
    packlight_testenv::install_crds(&admin, &packlight_api::crds()).await?;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for ns in ["gw", "apps-1", "apps-2"] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        namespaces.create(&PostParams::default(), &obj).await?;
    }
    let config = || {
        let mut config = packlight_operator::OperatorConfig {
            namespace: None,
            instance: Some("test-adoption".into()),
            ..Default::default()
        };
        config.render.gateway_namespace = "gw".into();
        config
    };
    let apply = |ns: &'static str| {
        let admin = admin.clone();
        async move {
            // One host per namespace: two policies claiming one host
            // conflict, and neither would be programmed.
            let ingress = format!(
                r#"
apiVersion: packlight.dev/v1alpha1
kind: IngressPolicy
metadata: {{name: data}}
spec:
  hosts: ["{ns}.example.com"]
  routes: [{{pathPrefix: /httpbin, service: httpbin}}]
  csrf: {{}}
"#
            );
            let docs = support::documents(&format!("{MICROSERVICE}---{ingress}"));
            support::apply_packlight(&admin, ns, docs).await
        }
    };
    // The managed objects in `gw` that belong to `ns`, as "Kind/name".
    let owned_by = |ns: &'static str| {
        let admin = admin.clone();
        async move {
            let mut out = Vec::new();
            for kind in ["Gateway", "EnvoyFilter", "AuthorizationPolicy"] {
                let ar = packlight_operator::outputs::output_resource_named(kind)
                    .expect("an output kind");
                let list = Api::<DynamicObject>::namespaced_with(admin.clone(), "gw", &ar)
                    .list(
                        &ListParams::default()
                            .labels(&format!("{}={ns}", packlight_istio::meta::SOURCE_NAMESPACE)),
                    )
                    .await?;
                out.extend(
                    list.items
                        .iter()
                        .map(|o| format!("{kind}/{}", o.metadata.name.clone().unwrap_or_default())),
                );
            }
            anyhow::Ok(out)
        }
    };
    let gone = |ns: &'static str| {
        let namespaces = namespaces.clone();
        async move {
            namespaces.delete(ns, &DeleteParams::default()).await?;
            eventually(
                &format!("namespace {ns} deleted"),
                Duration::from_secs(60),
                || async { Ok(namespaces.get_opt(ns).await?.is_none()) },
            )
            .await
        }
    };

    // The operator's own identity (deploy/rbac.yaml's ClusterRole), as in
    // a cluster install.
    let kubeconfig = packlight_testenv::operator_kubeconfig(&env).await?;
    let file = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let identity = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(file, &Default::default()).await?,
    )?;
    let mut op = support::spawn(identity.clone(), config());
    apply("apps-1").await?;
    apply("apps-2").await?;
    for ns in ["apps-1", "apps-2"] {
        eventually(
            &format!("gateway objects of {ns}"),
            Duration::from_secs(60),
            || async {
                let owned = owned_by(ns).await?;
                Ok(owned.iter().any(|o| o.starts_with("Gateway/"))
                    && owned.iter().any(|o| o.starts_with("EnvoyFilter/")))
            },
        )
        .await?;
        // Settled: both resources report Programmed (their statuses are
        // written), so no reconcile of this setup is still under way.
        for kind in ["IngressPolicy", "Microservice"] {
            let api = support::packlight_api(&admin, ns, kind);
            let name = if kind == "IngressPolicy" {
                "data"
            } else {
                "httpbin"
            };
            eventually(
                &format!("{kind} {ns}/{name} Programmed"),
                Duration::from_secs(60),
                || async {
                    let obj = serde_json::to_value(api.get(name).await?)?;
                    Ok(condition(&obj, "Programmed").is_some_and(|c| c["status"] == "True"))
                },
            )
            .await?;
        }
    }
    let shared = |admin: kube::Client| async move {
        let ar = packlight_operator::outputs::output_resource_named("EnvoyFilter")
            .expect("an output kind");
        let filters = Api::<DynamicObject>::namespaced_with(admin, "gw", &ar);
        anyhow::Ok(
            filters
                .get_opt(packlight_istio::filters::FILTERS_NAME)
                .await?
                .is_some(),
        )
    };
    assert!(shared(admin.clone()).await?, "the gateway's shared filters");

    // Deleted while the operator runs: its gateway objects go, and no
    // reconcile fails on the way (nothing is created in a namespace being
    // deleted; the API server would refuse it, Events included).
    let errors = op.stats.errors.load(Ordering::Relaxed);
    gone("apps-1").await?;
    eventually(
        "apps-1's gateway objects removed",
        Duration::from_secs(60),
        || async { Ok(owned_by("apps-1").await?.is_empty()) },
    )
    .await?;
    assert_eq!(
        op.stats.errors.load(Ordering::Relaxed),
        errors,
        "reconciles failed while apps-1 was deleted"
    );
    assert!(
        !owned_by("apps-2").await?.is_empty(),
        "apps-2 keeps its gateway objects"
    );
    assert!(
        shared(admin.clone()).await?,
        "the shared filters stay while apps-2 needs them"
    );

    // Deleted while no operator runs: the orphans stay until one starts.
    op.stop().await;
    gone("apps-2").await?;
    let orphans = owned_by("apps-2").await?;
    assert!(
        !orphans.is_empty(),
        "nothing deleted them while no operator ran"
    );
    let mut op = support::spawn(identity.clone(), config());
    eventually(
        "apps-2's orphans adopted and removed, and the shared filters",
        Duration::from_secs(60),
        || async { Ok(owned_by("apps-2").await?.is_empty() && !shared(admin.clone()).await?) },
    )
    .await?;
    op.stop().await;
    Ok(())
}
