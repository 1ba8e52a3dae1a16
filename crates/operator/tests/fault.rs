//! Fault: the API server is stopped and started again while the operator
//! runs; the same operator process recovers, converges, and nothing is lost
//! or duplicated.
//!
//! This binary starts its own bench process (not the shared one of
//! `packlight-testenv`, which cannot be restarted): the bench binary with a
//! data directory and port of our own, stopped with SIGTERM and started
//! again on the same directory (etcd's data survives) and the same port.
//!
//! The bench makes new certificates on every start (a new CA, a new
//! service-account signing key). So the operator's client here trusts any
//! server certificate and reads its bearer token from a file, as in a pod
//! (kube-rs re-reads it about once a minute); after the restart the test
//! writes a token from the new key into that file. A real cluster keeps
//! its CA and signing key across an API server restart.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use packlight_operator::{Operator, OperatorConfig, outputs};
use serde_json::{Value, json};
use support::{condition, documents, eventually};

const NS: &str = "fault";

/// A bench process of our own; killed on drop, its data removed.
struct Bench {
    binary: PathBuf,
    crds: PathBuf,
    data: PathBuf,
    port: u16,
    child: Option<Child>,
    kubeconfig: PathBuf,
}

fn script(verb: &str) -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testenv");
    let out = Command::new("bash")
        .arg(&script)
        .arg(verb)
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "scripts/testenv {verb} failed");
    let text = String::from_utf8(out.stdout)?;
    Ok(PathBuf::from(
        text.lines().last().unwrap_or_default().trim(),
    ))
}

impl Bench {
    fn new() -> anyhow::Result<Bench> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data =
            std::env::temp_dir().join(format!("packlight-fault-{}-{port}", std::process::id()));
        Ok(Bench {
            binary: script("build")?,
            crds: script("crds")?,
            data,
            port,
            child: None,
            kubeconfig: PathBuf::new(),
        })
    }

    /// Starts the bench on the data directory and port; waits until ready.
    fn start(&mut self) -> anyhow::Result<()> {
        let mut child = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--crds")
            .arg(&self.crds)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the bench")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("KUBECONFIG=") {
                    let _ = tx.send(PathBuf::from(p));
                }
            }
        });
        self.child = Some(child);
        self.kubeconfig = rx
            .recv_timeout(Duration::from_secs(300))
            .context("the bench did not become ready")?;
        Ok(())
    }

    /// Stops it as an operator of the cluster would (SIGTERM), and waits.
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        for _ in 0..600 {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.kill()?;
        child.wait()?;
        bail!("the bench did not stop within 60 s")
    }

    async fn admin(&self) -> anyhow::Result<kube::Client> {
        let file = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn api_of(client: &kube::Client, group: &str, kind: &str) -> Api<DynamicObject> {
    if group == "packlight.dev" {
        return support::packlight_api(client, NS, kind);
    }
    let ar = outputs::output_resource_named(kind).expect("an output kind");
    Api::namespaced_with(client.clone(), NS, &ar)
}

fn service(i: usize, w10: u32) -> Vec<Value> {
    vec![
        json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "Microservice",
            "metadata": {"name": format!("svc-{i}"), "namespace": NS},
            "spec": {"port": 8000, "versions": [
                {"version": "1.0", "image": "example/app:1.0"},
                {"version": "1.1", "image": "example/app:1.1"}]}}),
        json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": format!("svc-{i}"), "namespace": NS},
            "spec": {"service": format!("svc-{i}"), "rules": [
                {"version": "1.0", "weight": w10},
                {"version": "1.1", "weight": 100 - w10}]}}),
    ]
}

async fn apply(client: &kube::Client, docs: Vec<Value>) -> anyhow::Result<()> {
    support::apply_packlight(client, NS, docs).await
}

/// Weight of subset v1-0 on the default route of a VirtualService.
fn weight_10(vs: &Value) -> Option<u64> {
    vs["spec"]["http"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == "default")?["route"]
        .as_array()?
        .iter()
        .find(|d| d["destination"]["subset"] == "v1-0")
        .map(|d| d["weight"].as_u64().unwrap_or(100))
}

/// A token for the operator's ServiceAccount, written to `path`.
async fn write_token(admin: &kube::Client, path: &Path) -> anyhow::Result<()> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create_token_request("packlight-operator", &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .context("no token")?;
    std::fs::write(path, token)?;
    Ok(())
}

/// Sets up CRDs, the namespace and the operator's identity as admin.
async fn setup(admin: &kube::Client) -> anyhow::Result<()> {
    let pp = PatchParams::apply("packlight-test").force();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in packlight_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &pp, &Patch::Apply(&crd)).await?;
    }
    for crd in packlight_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        eventually("CRD established", Duration::from_secs(30), || async {
            let c = crds.get(&name).await?;
            Ok(c.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await?;
    }
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(admin.clone())
        .patch(NS, &pp, &Patch::Apply(&ns))
        .await?;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rbac.yaml");
    let docs = documents(&std::fs::read_to_string(path)?);
    let role: ClusterRole = serde_json::from_value(
        docs.into_iter()
            .find(|d| d["kind"] == "ClusterRole")
            .context("ClusterRole")?,
    )?;
    Api::<ClusterRole>::all(admin.clone())
        .patch("packlight-operator", &pp, &Patch::Apply(&role))
        .await?;
    let sa: ServiceAccount = serde_json::from_value(
        json!({"metadata": {"name": "packlight-operator", "namespace": NS}}),
    )?;
    Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .patch("packlight-operator", &pp, &Patch::Apply(&sa))
        .await?;
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "packlight-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "packlight-operator"},
        "subjects": [{"kind": "ServiceAccount", "name": "packlight-operator", "namespace": NS}],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch("packlight-operator", &pp, &Patch::Apply(&crb))
        .await?;
    Ok(())
}

/// Waits until every Route and every Microservice is Programmed at its
/// generation and every Route's VirtualService has `want(i)` as the v1-0
/// weight: the operator has nothing left to write.
async fn converged(
    admin: &kube::Client,
    want: &[(usize, u64)],
    limit: Duration,
) -> anyhow::Result<()> {
    let routes = api_of(admin, "packlight.dev", "Route");
    let vss = api_of(admin, "networking.istio.io", "VirtualService");
    let services = api_of(admin, "packlight.dev", "Microservice");
    let last = std::cell::RefCell::new(String::new());
    eventually("convergence", limit, || {
        let (routes, vss, services, last) = (&routes, &vss, &services, &last);
        async move {
            for m in services.list(&ListParams::default()).await?.items {
                let m = serde_json::to_value(m)?;
                let programmed = condition(&m, "Programmed").is_some_and(|c| {
                    c["status"] == "True" && c["observedGeneration"] == m["metadata"]["generation"]
                });
                if !programmed {
                    *last.borrow_mut() =
                        format!("Microservice {}: not programmed", m["metadata"]["name"]);
                    return Ok(false);
                }
            }
            for (i, w) in want {
                let r = serde_json::to_value(routes.get(&format!("svc-{i}")).await?)?;
                let programmed = condition(&r, "Programmed").is_some_and(|c| {
                    c["status"] == "True" && c["observedGeneration"] == r["metadata"]["generation"]
                });
                let vs = vss
                    .get_opt(&format!("svc-{i}"))
                    .await?
                    .map(|v| serde_json::to_value(v).unwrap_or_default());
                let got = vs.as_ref().and_then(weight_10);
                if !programmed || got != Some(*w) {
                    *last.borrow_mut() = format!("svc-{i}: programmed={programmed} weight={got:?}");
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await
    .with_context(|| format!("last: {}", last.borrow()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_recovers_when_the_api_server_restarts() -> anyhow::Result<()> {
    // The operator's log (each apply names its object and the first field
    // that differed) is shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "packlight_operator=info,kube_runtime=warn",
        ))
        .with_test_writer()
        .try_init();
    let mut bench = Bench::new()?;
    bench.start()?;
    let admin = bench.admin().await?;
    setup(&admin).await?;
    let token = bench.data.join("operator.token");
    write_token(&admin, &token).await?;

    // The operator's client: its token from a file, any server certificate
    // (the bench's CA changes on restart; see the module doc).
    let mut config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&bench.kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    config.auth_info =
        serde_json::from_value::<AuthInfo>(json!({ "tokenFile": token.to_string_lossy() }))?;
    config.root_cert = None;
    config.root_cert_file = None;
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config)?;
    let routes: Api<packlight_api::Route> = Api::namespaced(client.clone(), NS);
    eventually(
        "the operator may list routes",
        Duration::from_secs(20),
        || async { Ok(routes.list(&ListParams::default()).await.is_ok()) },
    )
    .await?;

    let mut oc = OperatorConfig {
        namespace: Some(NS.into()),
        instance: Some("fault".into()),
        ..OperatorConfig::default()
    };
    oc.render.gateway_namespace = NS.into();
    let operator = Operator::new(client, oc);
    let stats = operator.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));

    for i in 0..4 {
        apply(&admin, service(i, 80)).await?;
    }
    converged(
        &admin,
        &[(0, 80), (1, 80), (2, 80), (3, 80)],
        Duration::from_secs(60),
    )
    .await?;

    // Mid-way: a change lands and the API server goes down at once.
    apply(&admin, service(0, 60)).await?;
    bench.stop()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    bench.start()?;
    let admin = bench.admin().await?;
    write_token(&admin, &token).await?;

    // Changes while the operator is still reconnecting.
    apply(&admin, service(1, 30)).await?;
    apply(&admin, service(4, 70)).await?;
    api_of(&admin, "packlight.dev", "Route")
        .delete("svc-2", &Default::default())
        .await?;

    converged(
        &admin,
        &[(0, 60), (1, 30), (3, 80), (4, 70)],
        Duration::from_secs(180),
    )
    .await?;
    let vss = api_of(&admin, "networking.istio.io", "VirtualService");
    eventually(
        "svc-2's VirtualService removed",
        Duration::from_secs(60),
        || async { Ok(vss.get_opt("svc-2").await?.is_none()) },
    )
    .await?;

    // Nothing lost, nothing duplicated: exactly the expected objects, each
    // with one owner.
    let lp = ListParams::default();
    let names = |objs: Vec<DynamicObject>| {
        let mut n: Vec<String> = objs
            .iter()
            .map(|o| o.metadata.name.clone().unwrap_or_default())
            .collect();
        n.sort();
        for o in &objs {
            assert_eq!(
                o.metadata.owner_references.as_ref().map(Vec::len),
                Some(1),
                "{:?}",
                o.metadata
            );
        }
        n
    };
    let vs = names(vss.list(&lp).await?.items);
    assert_eq!(vs, ["svc-0", "svc-1", "svc-3", "svc-4"]);
    let drs = names(
        api_of(&admin, "networking.istio.io", "DestinationRule")
            .list(&lp)
            .await?
            .items,
    );
    assert_eq!(drs, ["svc-0", "svc-1", "svc-3", "svc-4"]);
    let deps = names(api_of(&admin, "apps", "Deployment").list(&lp).await?.items);
    let want: Vec<String> = (0..5)
        .flat_map(|i| [format!("svc-{i}-v1-0"), format!("svc-{i}-v1-1")])
        .collect();
    assert_eq!(deps, want);

    // Steady state after the outage writes nothing.
    let counts = |s: &packlight_operator::Stats| {
        use std::sync::atomic::Ordering::Relaxed;
        (
            s.applies.load(Relaxed),
            s.deletes.load(Relaxed),
            s.status_writes.load(Relaxed),
        )
    };
    let before = counts(&stats);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        counts(&stats),
        before,
        "writes in steady state (applies, deletes, status writes)"
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    bench.stop()?;
    Ok(())
}
