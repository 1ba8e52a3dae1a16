//! # The behaviour table on the Kubernetes engine (issue 10)
//!
//! The second runner of `tests/behaviour/` (format: docs/behaviour.md; the
//! standalone runner is `behaviour.rs`): per case file, a fresh namespace
//! on the bench's API server stands for `demo`, the file's resources are
//! applied there, `packlight operator` (all namespaces) programs Istio, a
//! real istiod drives real Envoy sidecars in network namespaces, with an
//! ingress gateway (`pilot-agent proxy router`) and packlight's login
//! service behind Istio's CUSTOM provider. Requests are sent with curl from
//! inside the pods. Root only (network namespaces, iptables).
//!
//! How each `from` is carried out here (docs/behaviour.md, "Kubernetes
//! runner"): a workload sends from inside its pod (its sidecar captures
//! the traffic; `via: call` asks its demo-app's `/call`); `CONNECT host:port`
//! becomes what an app without a proxy does, a direct HTTP request to
//! `host:port`; `ingress` and `outside` send from a namespace on the bridge
//! without a sidecar; `api` is the Kubernetes API (server-side apply as
//! `kubectl apply --server-side` does, and GETs of the same paths).
//! `PACKLIGHT_BEHAVIOUR=ingress` runs only files whose name contains it.

#[allow(dead_code)]
#[path = "behaviour/check.rs"]
mod check;
#[allow(dead_code)]
#[path = "behaviour/client.rs"]
mod client;
mod istio_bench;
#[path = "behaviour/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "behaviour/table.rs"]
mod table;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use check::{Outcome, Tally};
use k8s_openapi::api::core::v1::Service;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use packlight_testenv::TestEnv;
use packlight_testenv::mesh::{Mesh, Pod, PodSpec};
use report::{CaseReport, Verdict, form_escape};
use table::{Case, CaseFile, Engine, From, LoginMode, Port, Via};

use istio_bench::{PACKLIGHT, install_crds, operator};
use packlight_testenv::Operator;

/// Time budget of one case's request loop (as the standalone runner).
const CASE_BUDGET: Duration = Duration::from_secs(180);
/// How long the operator and istiod may take to program a file's mesh.
const PROGRAMMED: Duration = Duration::from_secs(120);
/// The field manager of the runner's applies.
const MANAGER: &str = "packlight-behaviour";
/// The port the outside server listens on.
const EGRESS_PORT: u16 = 80;
/// Every port it listens on: also those the egress cases expect the mesh
/// to refuse (HTTPS, and another port of the whitelisted host).
const OUTSIDE_PORTS: [u16; 3] = [EGRESS_PORT, 443, 9];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `demo` of the case files is namespace `ns` here: in resources, mesh
/// host names, API paths and `from`.
fn rename_namespace(text: &str, ns: &str) -> String {
    text.replace("namespace: demo", &format!("namespace: {ns}"))
        .replace(".demo.", &format!(".{ns}."))
        .replace("/namespaces/demo/", &format!("/namespaces/{ns}/"))
        .replace("from: demo/", &format!("from: {ns}/"))
        .replace("service: demo/", &format!("service: {ns}/"))
}

/// The file's resources as one multi-document text.
fn resources_text(file: &CaseFile) -> Result<String, String> {
    let mut text = String::new();
    if let Some(name) = &file.resources.example {
        let dir = root().join("examples").join(name);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        paths.sort();
        for p in paths {
            let t = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let _ = write!(text, "\n---\n{t}");
        }
    }
    if let Some(inline) = &file.resources.inline {
        let _ = write!(text, "\n---\n{inline}");
    }
    Ok(text)
}

/// Server-side apply of one object (`kubectl apply --server-side
/// --force-conflicts`), optionally as a dry run: the answer's status and
/// message as kubectl prints them.
async fn apply_doc(client: &Client, value: &serde_json::Value, dry_run: bool) -> (u16, String) {
    let obj: DynamicObject = match serde_json::from_value(value.clone()) {
        Ok(o) => o,
        Err(e) => return (400, e.to_string()),
    };
    let Some(types) = obj.types.clone() else {
        return (400, "an object without apiVersion/kind".into());
    };
    let Ok(gvk) = GroupVersionKind::try_from(&types) else {
        return (400, format!("bad apiVersion {}", types.api_version));
    };
    let (resource, _) = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(x) => x,
        Err(e) => return (404, format!("no API for {}: {e}", types.kind)),
    };
    let name = obj.metadata.name.clone().unwrap_or_default();
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let mut pp = PatchParams::apply(MANAGER).force();
    pp.dry_run = dry_run;
    let what = format!("{}.{}/{name}", resource.plural, resource.group);
    match api.patch(&name, &pp, &Patch::Apply(value)).await {
        Ok(_) if dry_run => (200, format!("{what} configured (server dry run)")),
        Ok(_) => (200, format!("{what} configured")),
        Err(kube::Error::Api(s)) => (s.code, format!("{} ({})", s.message, s.reason)),
        Err(e) => (0, e.to_string()),
    }
}

/// Every document of `text`.
fn documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_json::Value::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The bench's pieces every file shares the shape of.
struct Bench {
    env: TestEnv,
    client: Client,
    /// Users of every file, for the login service.
    users: Vec<table::User>,
}

/// One file's engine: its mesh, operator and namespace.
struct FileEngine {
    // Dropped in this order: the operator, then the mesh.
    _operator: Operator,
    mesh: Mesh,
    ns: String,
    gateway: Pod,
    client_pod: Pod,
    /// Service name -> its app's port (the demo-app's `/call`).
    app_ports: BTreeMap<String, u16>,
    /// Seconds from the start at which each step of the start ended.
    steps: String,
}

impl Bench {
    /// Starts the mesh of one file: istiod, the ingress gateway, the login
    /// service, an outside server and client, then the file's resources
    /// and their pods; returns once every resource is Programmed and
    /// istiod has every proxy in sync.
    async fn start_file(&self, ns: &str, resources: &str) -> Result<FileEngine, String> {
        let t0 = Instant::now();
        let mut steps = Vec::new();
        let mut step = |what: &str| steps.push(format!("{what} {:.1}", t0.elapsed().as_secs_f64()));
        let mesh = Mesh::start(&self.env)
            .await
            .map_err(|e| format!("istiod: {e:#}"))?;
        let operator = operator(&self.env, None)
            .await
            .map_err(|e| format!("operator: {e:#}"))?;
        let fixtures = r#"
apiVersion: v1
kind: Namespace
metadata: {name: packlight-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: istio-ingressgateway-service-account, namespace: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: packlight-login, namespace: packlight-system}
---
apiVersion: v1
kind: Service
metadata: {name: packlight-login, namespace: packlight-system}
spec:
  selector: {app.kubernetes.io/name: packlight-login}
  ports: [{name: http, port: 8080, targetPort: 8080, appProtocol: http}]
"#;
        mesh.apply_yaml(None, fixtures)
            .await
            .map_err(|e| format!("fixtures: {e:#}"))?;
        let data = self.login_data(mesh.dir())?;
        mesh.pod(&PodSpec {
            name: "packlight-login".into(),
            namespace: "packlight-system".into(),
            labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "packlight-login".to_owned(),
            )]),
            service_account: "packlight-login".into(),
            command: vec![
                PACKLIGHT.into(),
                "login-service".into(),
                "--listen".into(),
                "0.0.0.0:8080".into(),
                "--data-dir".into(),
                data.display().to_string(),
            ],
            env: vec![("RUST_LOG".into(), "warn".into())],
            proxy: Some("sidecar"),
        })
        .await
        .map_err(|e| format!("login service: {e:#}"))?;
        let gateway = mesh
            .pod(&PodSpec {
                name: "istio-ingressgateway".into(),
                namespace: "istio-system".into(),
                labels: BTreeMap::from([
                    ("istio".to_owned(), "ingressgateway".to_owned()),
                    ("app".to_owned(), "istio-ingressgateway".to_owned()),
                ]),
                service_account: "istio-ingressgateway-service-account".into(),
                command: Vec::new(),
                env: Vec::new(),
                proxy: Some("router"),
            })
            .await
            .map_err(|e| format!("ingress gateway: {e:#}"))?;
        let client_pod = mesh
            .outside("client", &[])
            .await
            .map_err(|e| format!("client: {e:#}"))?;
        outside_server(&mesh, &client_pod).await?;
        step("istiod, gateway, login, outside");

        for doc in documents(resources)? {
            let (status, msg) = apply_doc(&self.client, &doc, false).await;
            if status != 200 {
                return Err(format!("applying the file's resources: {status} {msg}"));
            }
        }
        wait_programmed(&self.client, ns).await?;
        step("Programmed");
        mesh.start_deployments(ns, Path::new(PACKLIGHT))
            .await
            .map_err(|e| format!("pods: {e:#}"))?;
        step("pods");
        let mut app_ports = BTreeMap::new();
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        for s in services
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            let port = s
                .spec
                .and_then(|s| s.ports)
                .and_then(|p| p.into_iter().next())
                .map(|p| match p.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n,
                    _ => p.port,
                });
            if let (Some(name), Some(port)) = (s.metadata.name, port) {
                app_ports.insert(name, u16::try_from(port).unwrap_or(0));
            }
        }
        let mut engine = FileEngine {
            steps: String::new(),
            _operator: operator,
            mesh,
            ns: ns.to_owned(),
            gateway,
            client_pod,
            app_ports,
        };
        engine.wait_synced(&self.client).await?;
        step("istiod in sync");
        engine.steps = steps.join(", ");
        Ok(engine)
    }

    /// A login data directory with every file's users, readable by the
    /// login service (uid 1000).
    fn login_data(&self, mesh_dir: &Path) -> Result<PathBuf, String> {
        let dir = mesh_dir.join("login-data");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for u in &self.users {
            let mut child = std::process::Command::new(PACKLIGHT)
                .args(["user", "add", &u.name, "--password-stdin", "--data-dir"])
                .arg(&dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write as _;
                writeln!(stdin, "{}", u.password).map_err(|e| e.to_string())?;
            }
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("packlight user add {}: {status}", u.name));
            }
        }
        let status = std::process::Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("chown {}: {status}", dir.display()));
        }
        Ok(dir)
    }
}

/// packlight's six kinds, as the API server serves them (from the CRD
/// types themselves).
fn packlight_kinds() -> [ApiResource; 6] {
    use packlight_api::{
        AccessPolicy, EgressPolicy, IngressPolicy, MeshPolicy, Microservice, Route,
    };
    [
        ApiResource::erase::<Microservice>(&()),
        ApiResource::erase::<Route>(&()),
        ApiResource::erase::<EgressPolicy>(&()),
        ApiResource::erase::<AccessPolicy>(&()),
        ApiResource::erase::<MeshPolicy>(&()),
        ApiResource::erase::<IngressPolicy>(&()),
    ]
}

/// Waits until every packlight resource in `ns` is `Programmed=True` for
/// its generation.
async fn wait_programmed(client: &Client, ns: &str) -> Result<(), String> {
    let deadline = Instant::now() + PROGRAMMED;
    loop {
        let mut pending = Vec::new();
        for ar in packlight_kinds() {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            for o in list {
                let generation = o.metadata.generation.unwrap_or(0);
                let programmed = o.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c["type"] == "Programmed"
                            && c["status"] == "True"
                            && c["observedGeneration"].as_i64() == Some(generation)
                    });
                if !programmed {
                    pending.push(format!(
                        "{} {}: {}",
                        ar.kind,
                        o.metadata.name.unwrap_or_default(),
                        o.data["status"]["conditions"]
                    ));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not Programmed within {PROGRAMMED:?}: {}",
                pending.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

impl FileEngine {
    /// Runs `curl URL` in istiod's network namespace: the body.
    async fn istiod_get(&self, path: &str) -> Result<String, String> {
        let id = std::fs::read_to_string(self.mesh.dir().join("id"))
            .map_err(|e| format!("mesh id: {e}"))?;
        let netns = format!("pl{}cp", id.trim());
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &netns, "curl", "-s", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:8080{path}"))
            .output()
            .await
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until istiod holds every Istio object packlight manages at
    /// its current resourceVersion (`/debug/configz`), then until it has
    /// sent every connected proxy its configuration and each ACKed it
    /// (`/debug/syncz`). `Programmed` says the objects are in the API
    /// server; istiod's watch may still be behind, and a proxy that is in
    /// sync with an older push looks the same as one in sync with the
    /// newest.
    async fn wait_synced(&self, client: &Client) -> Result<(), String> {
        let deadline = Instant::now() + PROGRAMMED;
        let mut last;
        loop {
            let wanted = managed_istio_objects(client).await?;
            let configz = self.istiod_get("/debug/configz").await?;
            match istiod_holds(&configz, &wanted) {
                Ok(()) => break,
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "istiod has not seen packlight's objects within {PROGRAMMED:?}: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let want = self
            .mesh
            .pods()
            .iter()
            .filter(|p| !p.namespace.is_empty())
            .count();
        // istiod pushes 100 ms after the last change it saw (its debounce);
        // then two quiet checks in a row, half a second apart.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut quiet = 0;
        last = String::new();
        loop {
            let text = self.istiod_get("/debug/syncz").await?;
            match synced(&text, want) {
                Ok(()) => quiet += 1,
                Err(e) => {
                    quiet = 0;
                    last = e;
                }
            }
            if quiet >= 2 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("istiod not in sync within {PROGRAMMED:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// On failure: the gateway's route tables, istiod's log and the
    /// proxies' logs, copied out of the mesh before it is removed.
    async fn keep_evidence(&self, stem: &str) {
        let dir = std::env::temp_dir().join(format!("packlight-behaviour-{stem}"));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(out) = self
            .gateway
            .curl(&[
                "-s",
                "--max-time",
                "5",
                "http://127.0.0.1:15000/config_dump?resource=dynamic_route_configs",
            ])
            .await
        {
            let _ = std::fs::write(dir.join("gateway-routes.json"), out.stdout);
        }
        let _ = std::process::Command::new("cp")
            .args(["-r", "--no-preserve=mode"])
            .arg(self.mesh.dir().join("istiod.log"))
            .arg(self.mesh.dir().join("pods"))
            .arg(&dir)
            .status();
        eprintln!(
            "behaviour (kubernetes): evidence of the failure kept in {}",
            dir.display()
        );
    }

    fn pod_of(&self, ns: Option<&str>, service: &str) -> Result<Pod, String> {
        let ns = ns.unwrap_or(&self.ns);
        self.mesh
            .pods()
            .into_iter()
            .find(|p| p.namespace == ns && p.app.as_deref() == Some(service))
            .ok_or_else(|| {
                format!(
                    "no pod of {ns}/{service} (the Kubernetes engine runs only versions with an image)"
                )
            })
    }
}

/// Every Istio object packlight manages, in every namespace:
/// (kind, namespace, name) → resourceVersion.
async fn managed_istio_objects(
    client: &Client,
) -> Result<BTreeMap<(String, String, String), String>, String> {
    let mut out = BTreeMap::new();
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=packlight");
    for i in 0..packlight_operator::outputs::OUTPUT_KINDS.len() {
        let Some(ar) = packlight_operator::outputs::output_resource(i) else {
            continue;
        };
        if !ar.group.ends_with("istio.io") {
            continue;
        }
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let list = api
            .list_metadata(&lp)
            .await
            .map_err(|e| format!("listing {}: {e}", ar.plural))?;
        for o in list {
            out.insert(
                (
                    ar.kind.clone(),
                    o.metadata.namespace.unwrap_or_default(),
                    o.metadata.name.unwrap_or_default(),
                ),
                o.metadata.resource_version.unwrap_or_default(),
            );
        }
    }
    Ok(out)
}

/// Checks istiod's `/debug/configz` answer: every wanted object present
/// at its resourceVersion.
fn istiod_holds(
    text: &str,
    wanted: &BTreeMap<(String, String, String), String>,
) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("configz: {e}: {text:.200}"))?;
    let configs = v
        .as_array()
        .ok_or_else(|| format!("configz is not a list: {text:.200}"))?;
    let held: BTreeMap<(String, String, String), &str> = configs
        .iter()
        .filter_map(|c| {
            let m = &c["metadata"];
            Some((
                (
                    c["kind"].as_str()?.to_string(),
                    m["namespace"].as_str()?.to_string(),
                    m["name"].as_str()?.to_string(),
                ),
                m["resourceVersion"].as_str().unwrap_or_default(),
            ))
        })
        .collect();
    for (key, rv) in wanted {
        match held.get(key) {
            Some(h) if h == rv => {}
            Some(h) => return Err(format!("{key:?}: istiod has {h}, the API server {rv}")),
            None => return Err(format!("{key:?}: not in istiod's store yet")),
        }
    }
    Ok(())
}

/// Checks istiod's `/debug/syncz` answer: `want` proxies, each with every
/// type it was sent ACKed at the nonce sent.
fn synced(text: &str, want: usize) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("syncz: {e}: {text:.200}"))?;
    let proxies = v
        .as_array()
        .ok_or_else(|| format!("syncz is not a list of proxies: {text:.200}"))?;
    if proxies.len() < want {
        return Err(format!("{} of {want} proxies connected", proxies.len()));
    }
    for p in proxies {
        let id = p["proxy"]
            .as_str()
            .ok_or_else(|| format!("syncz entry without proxy: {p}"))?;
        for t in ["cluster", "listener", "route", "endpoint"] {
            let sent = &p[format!("{t}_sent")];
            let acked = &p[format!("{t}_acked")];
            if !sent.is_null() && sent != acked {
                return Err(format!("{id}: {t} sent {sent}, acked {acked}"));
            }
        }
    }
    Ok(())
}

/// One curl batch: `count` identical requests from `pod`, on one
/// connection where curl can keep it, each answer in full.
async fn batch(
    pod: &Pod,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&str>,
    count: u32,
) -> Result<Vec<Outcome>, String> {
    let dir = tempfile::Builder::new()
        .prefix("packlight-bt-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    // curl runs as uid 1000 and writes the bodies here.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .map_err(|e| format!("chmod {}: {e}", dir.path().display()))?;
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut config = String::new();
    let _ = writeln!(config, "request = \"{}\"", quote(method));
    for (k, v) in headers {
        let _ = writeln!(config, "header = \"{}: {}\"", quote(k), quote(v));
    }
    if let Some(b) = body {
        let file = dir.path().join("body");
        std::fs::write(&file, b).map_err(|e| e.to_string())?;
        let _ = writeln!(config, "data-binary = \"@{}\"", file.display());
    }
    for i in 0..count {
        let _ = writeln!(
            config,
            "url = \"{}\"\noutput = \"{}/b{i}\"",
            quote(url),
            dir.path().display()
        );
    }
    let cfg = dir.path().join("config");
    std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let cfg = cfg.display().to_string();
    let limit = CASE_BUDGET;
    let out = tokio::time::timeout(
        limit,
        pod.curl(&[
            "-s",
            "--max-time",
            "10",
            "-w",
            "\\n@@%{http_code}@@%{header_json}@@END\\n",
            "--config",
            &cfg,
        ]),
    )
    .await
    .map_err(|_| format!("{count} requests took over {limit:?}"))?
    .map_err(|e| format!("curl: {e:#}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut outcomes = Vec::new();
    for (i, chunk) in text.split("@@END").enumerate() {
        let Some(start) = chunk.find("@@") else {
            continue;
        };
        let rest = &chunk[start + 2..];
        let (code, json) = rest.split_once("@@").unwrap_or((rest, "{}"));
        let code: u16 = code.trim().parse().unwrap_or(0);
        if code == 0 {
            outcomes.push(Outcome::Failed(format!(
                "no HTTP answer (curl exit {:?})",
                out.status.code()
            )));
            continue;
        }
        let hv: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        let headers = hv
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let val = v
                            .as_array()
                            .and_then(|a| a.first())
                            .and_then(|x| x.as_str())
                            .unwrap_or_default();
                        (k.to_ascii_lowercase(), val.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = std::fs::read_to_string(dir.path().join(format!("b{i}"))).unwrap_or_default();
        outcomes.push(Outcome::Response {
            status: code,
            headers,
            body,
        });
    }
    Ok(outcomes)
}

/// State of one file's run.
struct Run<'a> {
    bench: &'a Bench,
    engine: &'a FileEngine,
    /// Session name -> the header that carries it.
    sessions: BTreeMap<String, (String, String)>,
}

/// The Host a case sends to the ingress by default: the example's public
/// host. (Istio reads a host without a dot in a VirtualService as a short
/// service name of the VirtualService's namespace, so the example's
/// `localhost` is served by the standalone gateway only; docs/behaviour.md.)
const INGRESS_HOST: &str = "data.example.com";

impl Run<'_> {
    fn gateway_url(&self, path: &str) -> String {
        format!("http://{}:80{path}", self.engine.gateway.ip)
    }

    async fn case(&mut self, case: &Case) -> Vec<String> {
        if let Some(login) = &case.login {
            return match self.login(login).await {
                Ok(()) => Vec::new(),
                Err(e) => vec![e],
            };
        }
        match self.requests(case).await {
            Ok(p) => p,
            Err(e) => vec![e],
        }
    }

    async fn login(&mut self, login: &table::Login) -> Result<(), String> {
        let host = login.host.clone().unwrap_or_else(|| INGRESS_HOST.into());
        let session = login.session.clone().unwrap_or_else(|| login.user.clone());
        let mut headers = vec![
            ("host".to_owned(), host.clone()),
            ("origin".to_owned(), format!("http://{host}")),
        ];
        let url = self.gateway_url(&login.url);
        match login.mode {
            LoginMode::Bearer => {
                headers.push(("content-type".into(), "application/json".into()));
                headers.push(("accept".into(), "application/json".into()));
                let body = serde_json::json!({"username": login.user, "password": login.password})
                    .to_string();
                let out = batch(
                    &self.engine.client_pod,
                    "POST",
                    &url,
                    &headers,
                    Some(&body),
                    1,
                )
                .await?;
                match out.first() {
                    Some(Outcome::Response {
                        status: 200, body, ..
                    }) => {
                        let token = serde_json::from_str::<serde_json::Value>(body)
                            .ok()
                            .and_then(|v| v.get("token")?.as_str().map(str::to_owned))
                            .ok_or_else(|| format!("login answered 200 without token: {body}"))?;
                        self.sessions
                            .insert(session, ("authorization".into(), format!("Bearer {token}")));
                        Ok(())
                    }
                    other => Err(format!("login as {} answered {other:?}", login.user)),
                }
            }
            LoginMode::Cookie => {
                headers.push((
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ));
                let form = format!(
                    "username={}&password={}",
                    form_escape(&login.user),
                    form_escape(&login.password)
                );
                let out = batch(
                    &self.engine.client_pod,
                    "POST",
                    &url,
                    &headers,
                    Some(&form),
                    1,
                )
                .await?;
                match out.first() {
                    Some(Outcome::Response {
                        status: 200 | 302 | 303,
                        headers,
                        ..
                    }) if headers.contains_key("set-cookie") => {
                        let cookie = headers["set-cookie"]
                            .split(';')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        self.sessions.insert(session, ("cookie".into(), cookie));
                        Ok(())
                    }
                    other => Err(format!("form login as {} answered {other:?}", login.user)),
                }
            }
        }
    }

    async fn requests(&self, case: &Case) -> Result<Vec<String>, String> {
        let req = &case.request;
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(s) = &case.session {
            let h = self
                .sessions
                .get(s)
                .ok_or_else(|| format!("no session {s:?} (its login step failed or is missing)"))?;
            headers.push(h.clone());
        }
        let method = req.method.clone().unwrap_or_else(|| "GET".into());
        let (pod, url) = match &case.from {
            From::Ingress => {
                let host = req.host.clone().unwrap_or_else(|| INGRESS_HOST.into());
                headers.push(("host".into(), host));
                let path = req.path.as_deref().unwrap_or("/");
                (self.engine.client_pod.clone(), self.gateway_url(path))
            }
            From::Api => {
                if let Some(text) = &case.apply {
                    return self.apply(case, text).await;
                }
                let path = req.path.as_deref().unwrap_or("/");
                let (status, body) = self.api_get(path).await;
                let mut tally = Tally::default();
                tally.add(
                    &case.expect,
                    &Outcome::Response {
                        status,
                        headers: BTreeMap::new(),
                        body,
                    },
                );
                return Ok(tally.verdict(&case.expect, 1));
            }
            From::Outside => {
                let to = case.to.as_ref().ok_or("from: outside needs to")?;
                let (ns, svc) = match to.service.split_once('/') {
                    Some((ns, svc)) => (Some(ns), svc),
                    None => (None, to.service.as_str()),
                };
                if to.port == Port::App {
                    return Err(
                        "port: app has no Kubernetes form (every inbound port is captured by the sidecar); mark the case engines: [standalone]".into(),
                    );
                }
                let target = self.engine.pod_of(ns, svc)?;
                let port = self.engine.app_ports.get(svc).copied().unwrap_or(80);
                let path = req.path.as_deref().unwrap_or("/");
                (
                    self.engine.client_pod.clone(),
                    format!("http://{}:{port}{path}", target.ip),
                )
            }
            From::Workload { namespace, service } => {
                let pod = self.engine.pod_of(namespace.as_deref(), service)?;
                if method == "CONNECT" {
                    let authority = req.authority.clone().unwrap_or_default();
                    let path = req.tunnel.as_deref().unwrap_or("/");
                    (pod, format!("http://{authority}{path}"))
                } else if case.via == Via::Call {
                    let port = self
                        .engine
                        .app_ports
                        .get(service)
                        .copied()
                        .ok_or_else(|| format!("no Service for {service}"))?;
                    return self.call(case, &pod, port).await;
                } else {
                    (pod, req.url.clone().unwrap_or_default())
                }
            }
        };
        let method = if method == "CONNECT" {
            "GET".into()
        } else {
            method
        };
        let outcomes = batch(
            &pod,
            &method,
            &url,
            &headers,
            req.body.as_deref(),
            case.count,
        )
        .await?;
        let mut tally = Tally::default();
        for o in &outcomes {
            tally.add(&case.expect, o);
        }
        Ok(tally.verdict(&case.expect, case.count))
    }

    /// `via: call`: the pod's demo-app makes the request (`GET /call`).
    async fn call(&self, case: &Case, pod: &Pod, port: u16) -> Result<Vec<String>, String> {
        let req = &case.request;
        let url = req.url.as_deref().ok_or("request.url is required")?;
        let mut args: Vec<String> = vec![
            "-s".into(),
            "--max-time".into(),
            "20".into(),
            "-G".into(),
            "-w".into(),
            "\\n%{http_code}".into(),
            "--data-urlencode".into(),
            format!("url={url}"),
        ];
        if let Some(m) = &req.method {
            args.push("--data-urlencode".into());
            args.push(format!("method={m}"));
        }
        for (k, v) in &req.headers {
            args.push("--data-urlencode".into());
            args.push(format!("header={k}:{v}"));
        }
        args.push(format!("http://127.0.0.1:{port}/call"));
        let mut tally = Tally::default();
        for _ in 0..case.count {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = pod.curl(&a).await.map_err(|e| format!("{e:#}"))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
            let status: u16 = code.trim().parse().unwrap_or(0);
            let outcome = if status == 0 {
                Outcome::Failed(format!("the demo-app itself: curl exit {:?}", out.status))
            } else {
                client::call_outcome(status, body)?
            };
            tally.add(&case.expect, &outcome);
        }
        Ok(tally.verdict(&case.expect, case.count))
    }

    /// A GET of a Kubernetes path of one namespaced object
    /// (`/apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME`), the object as
    /// JSON.
    async fn api_get(&self, path: &str) -> (u16, String) {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ["apis", group, version, "namespaces", ns, plural, name] = parts[..] else {
            return (
                0,
                format!("the Kubernetes runner GETs only namespaced objects, not {path}"),
            );
        };
        let ar = kube::api::ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: String::new(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.bench.client.clone(), ns, &ar);
        match api.get(name).await {
            Ok(o) => (200, serde_json::to_string(&o).unwrap_or_default()),
            Err(kube::Error::Api(s)) => (s.code, s.message),
            Err(e) => (0, e.to_string()),
        }
    }

    /// `apply`: server-side apply of each document; after a real apply
    /// that succeeded, waits until the resources are Programmed and
    /// istiod's proxies are in sync.
    async fn apply(&self, case: &Case, text: &str) -> Result<Vec<String>, String> {
        let mut status = 200;
        let mut body = String::new();
        for doc in documents(text)? {
            let (s, m) = apply_doc(&self.bench.client, &doc, case.dry_run).await;
            let _ = writeln!(body, "{m}");
            if s != 200 {
                status = s;
                break;
            }
        }
        let mut tally = Tally::default();
        tally.add(
            &case.expect,
            &Outcome::Response {
                status,
                headers: BTreeMap::new(),
                body,
            },
        );
        let mut problems = tally.verdict(&case.expect, 1);
        if status == 200 && !case.dry_run {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Err(e) = wait_programmed(&self.bench.client, &self.engine.ns).await {
                problems.push(format!("after the apply: {e}"));
            }
            if let Err(e) = self.engine.wait_synced(&self.bench.client).await {
                problems.push(format!("after the apply: {e}"));
            }
        }
        Ok(problems)
    }
}

/// Runs one case file on its own mesh.
async fn run_file(bench: &Bench, path: &Path, index: usize) -> Vec<CaseReport> {
    let fname = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |case: &str, msg: String| CaseReport::failed(&fname, case, msg);
    let raw = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![fail("(file)", e.to_string())],
    };
    let stem = fname.trim_end_matches(".yaml").replace('_', "-");
    let ns = format!("bt{index}-{stem}");
    let vars: BTreeMap<&str, String> = BTreeMap::from([
        ("EGRESS_PORT", EGRESS_PORT.to_string()),
        ("EGRESS_HOST", "egress.outside.test".to_string()),
        ("EGRESS", format!("egress.outside.test:{EGRESS_PORT}")),
        ("INGRESS_PORT", "80".to_string()),
        ("INGRESS", format!("{INGRESS_HOST}:80")),
        ("INGRESS_HOST", INGRESS_HOST.to_string()),
    ]);
    let text = match table::substitute(&raw, &vars) {
        Ok(t) => rename_namespace(&t, &ns),
        Err(e) => return vec![fail("(file)", e)],
    };
    let file = match CaseFile::parse(&text) {
        Ok(f) => f,
        Err(e) => return vec![fail("(file)", format!("cannot parse: {e}"))],
    };
    if !CaseFile::applies(&file.engines, Engine::Kubernetes) {
        return file
            .cases
            .iter()
            .map(|c| CaseReport {
                file: fname.clone(),
                case: c.name.clone(),
                verdict: Verdict::Skipped("not for kubernetes".into()),
                differs: None,
            })
            .collect();
    }
    let resources = match resources_text(&file) {
        Ok(t) => rename_namespace(&t, &ns),
        Err(e) => return vec![fail("(file)", e)],
    };
    if let Err(e) = bench.ensure_namespace(&ns).await {
        return vec![fail("(file)", e)];
    }
    eprintln!(
        "behaviour (kubernetes): {fname} ({}): starting its mesh",
        file.name
    );
    let started = Instant::now();
    let engine = match bench.start_file(&ns, &resources).await {
        Ok(e) => e,
        Err(e) => return vec![fail("(start)", e)],
    };
    eprintln!(
        "behaviour (kubernetes): {fname}: mesh programmed in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        engine.steps
    );
    let mut run = Run {
        bench,
        engine: &engine,
        sessions: BTreeMap::new(),
    };
    let mut out = Vec::new();
    for case in &file.cases {
        let verdict = if !CaseFile::applies(&case.engines, Engine::Kubernetes) {
            Verdict::Skipped("not for kubernetes".into())
        } else {
            if let Some(p) = case.pause_seconds {
                tokio::time::sleep(Duration::from_secs_f64(p)).await;
            }
            report::verdict(case, run.case(case).await)
        };
        report::record(&mut out, "behaviour (kubernetes)", &fname, case, verdict);
    }
    if out.iter().any(|r| matches!(r.verdict, Verdict::Fail(_))) {
        engine.keep_evidence(&stem).await;
    }
    // Outputs in the gateway's namespace go with their IngressPolicy.
    bench.remove_ingress(&ns).await;
    out
}

impl Bench {
    async fn ensure_namespace(&self, ns: &str) -> Result<(), String> {
        let text = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n");
        packlight_testenv::mesh::apply_yaml(&self.client, None, &text)
            .await
            .map_err(|e| format!("namespace {ns}: {e:#}"))
    }

    /// Deletes the file's IngressPolicies and waits (bounded) until the
    /// operator removed their objects from the gateway's namespace, so the
    /// next file's gateway starts clean.
    async fn remove_ingress(&self, ns: &str) {
        let ar = ApiResource::erase::<packlight_api::IngressPolicy>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let _ = api
            .delete_collection(&Default::default(), &ListParams::default())
            .await;
        let gateways =
            packlight_operator::outputs::output_resource_named("Gateway").expect("Gateway");
        let gw: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), "istio-system", &gateways);
        let lp = ListParams::default().labels(&format!("packlight.dev/source-namespace={ns}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match gw.list(&lp).await {
                Ok(l) if l.items.is_empty() => return,
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        eprintln!("behaviour (kubernetes): {ns}: ingress objects still present after 30 s");
    }
}

/// The "outside" HTTP server (a demo-app reporting service `egress`)
/// on its own address, named `egress.outside.test`, and the other
/// outside names the files use pointing at it too (so a refused
/// request is the mesh's doing, never DNS).
async fn outside_server(mesh: &Mesh, client: &Pod) -> Result<(), String> {
    let script = format!(
        "for p in {ports}; do PORT=$p PACKLIGHT_SERVICE=egress PACKLIGHT_VERSION=0.0 \
         {PACKLIGHT} demo-app --listen-address 0.0.0.0 & done; wait",
        ports = OUTSIDE_PORTS.map(|p| p.to_string()).join(" ")
    );
    let server = mesh
        .outside("egress", &["sh".into(), "-c".into(), script])
        .await
        .map_err(|e| format!("outside server: {e:#}"))?;
    for name in ["egress.outside.test", "www.example.com", "httpbin.org"] {
        mesh.add_host(name, server.ip)
            .await
            .map_err(|e| format!("hosts: {e:#}"))?;
    }
    // Every port answers a caller outside the mesh: a refusal in a case
    // is the mesh's doing.
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in OUTSIDE_PORTS {
        let url = format!("http://egress.outside.test:{port}/");
        loop {
            let got = batch(client, "GET", &url, &[], None, 1).await?;
            if matches!(got.first(), Some(Outcome::Response { status: 200, .. })) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the outside server does not answer {url}: {got:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_table_kubernetes() {
    let filter = std::env::var("PACKLIGHT_BEHAVIOUR").unwrap_or_default();
    let files: Vec<PathBuf> = table::case_files(&root().join("tests/behaviour"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&filter))
        })
        .collect();
    assert!(!files.is_empty(), "no case files matching {filter:?}");
    let env = packlight_testenv::env().await.expect("test bench");
    install_crds(&env).await;
    let client = env.client().expect("client");
    let mut users = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("case file");
        if let Ok(text) = table::substitute(
            &text,
            &BTreeMap::from([
                ("EGRESS_PORT", String::new()),
                ("EGRESS_HOST", String::new()),
                ("EGRESS", String::new()),
                ("INGRESS_PORT", String::new()),
                ("INGRESS", String::new()),
                ("INGRESS_HOST", String::new()),
            ]),
        ) && let Ok(file) = CaseFile::parse(&text)
        {
            users.extend(file.users);
        }
    }
    let bench = Bench { env, client, users };
    let mut reports = Vec::new();
    for (i, f) in files.iter().enumerate() {
        reports.extend(run_file(&bench, f, i).await);
    }
    report::conclude(&reports, "kubernetes");
}
