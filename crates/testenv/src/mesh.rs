//! The Istio traffic bench: real istiod and real Envoy sidecars on the
//! bench's API server, with "pods" in network namespaces (see
//! `docs/testing.md`, "Istio traffic bench").
//!
//! All namespaces and processes are made by `scripts/testenv` (`mesh-up`,
//! `netns`, `sidecar`, `run`) and recorded in the mesh's directory;
//! [`Mesh`]'s `Drop` runs `scripts/testenv mesh-down`, which removes them.
//! This module writes the objects no kubelet or controller writes here: Pods
//! (with their status), EndpointSlices, and each pod's `/etc/netns/*/hosts`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod as KubePod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde_json::json;
use tokio::process::Command;

use crate::bench::{TestEnv, script_path};

mod prometheus;
pub use prometheus::Prometheus;

/// Where meshes keep their state (outside `/root`: the sidecar's uid 1337
/// must reach its binaries). `scripts/testenv down` removes all of them.
pub const MESH_ROOT_ENV: &str = "PACKLIGHT_MESH_ROOT";

/// The field manager of everything this module and [`Mesh::apply_yaml`]
/// write.
const MANAGER: &str = "packlight-testenv";

/// How long a sidecar may take to receive its first configuration.
const SIDECAR_READY: Duration = Duration::from_secs(120);

/// One mesh: a bridge, a "cp" namespace running istiod, and pods.
pub struct Mesh {
    dir: PathBuf,
    client: Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_ip: u8,
    pods: Vec<Pod>,
    /// Extra `/etc/hosts` lines for every pod (name, address).
    hosts: Vec<(String, String)>,
    /// Every proxy's Envoy, as Prometheus scrapes it: (address, Kubernetes
    /// namespace, Pod name).
    proxies: Vec<(Ipv4Addr, String, String)>,
}

/// A "pod": a network namespace on the mesh's bridge, with or without a
/// sidecar.
#[derive(Clone, Debug)]
pub struct Pod {
    /// The pod's short name on the bench (its network namespace is
    /// `pl<mesh id><name>`).
    pub name: String,
    /// The Kubernetes namespace (empty for a namespace outside the mesh).
    pub namespace: String,
    /// Its address on the bridge (10.244.0.x).
    pub ip: Ipv4Addr,
    /// Its `app` label, if any.
    pub app: Option<String>,
    dir: PathBuf,
}

/// What to run in a pod.
#[derive(Clone, Debug, Default)]
pub struct PodSpec {
    /// The Pod object's name.
    pub name: String,
    /// Its Kubernetes namespace.
    pub namespace: String,
    /// The Pod's labels (`app`, `version`, ...), also given to the sidecar.
    pub labels: BTreeMap<String, String>,
    /// Its service account (the sidecar's SPIFFE identity).
    pub service_account: String,
    /// The workload's command line (run as uid 1000); none: no workload.
    pub command: Vec<String>,
    /// The workload's environment.
    pub env: Vec<(String, String)>,
    /// `None`: no sidecar (a plain-text caller). `Some("sidecar")` or
    /// `Some("router")` (an ingress gateway: no traffic capture).
    pub proxy: Option<&'static str>,
}

/// One answer, as counted by [`Pod::requests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status; 0 when curl got no answer (reset, refused).
    pub status: u16,
    /// The `x-packlight-version` header, if any.
    pub version: Option<String>,
}

/// One answer in full, from [`Pod::request`].
#[derive(Clone, Debug)]
pub struct FullReply {
    /// The HTTP status; 0 when curl got no answer.
    pub status: u16,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// curl's exit code (0 ok, 7 refused, 52 empty reply, 56 reset, ...).
    pub curl_exit: i32,
}

impl Mesh {
    /// Starts a mesh on `env`'s API server: the bridge, istiod in the "cp"
    /// namespace (built by `scripts/build-istio-tools` on first use), and
    /// the `istio-system` namespace. Needs root.
    pub async fn start(env: &TestEnv) -> anyhow::Result<Mesh> {
        let client = env.client()?;
        ensure_namespace(&client, "istio-system").await?;
        let root = std::env::var_os(MESH_ROOT_ENV)
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from("/tmp/packlight-mesh"), PathBuf::from);
        let kubeconfig = env.kubeconfig().display().to_string();
        // The bench's start-up (namespaces, forwarders, istiod) is tried
        // twice: a failed first try is printed in full, its remains removed
        // (the Mesh's Drop), and a second failure is the test's error. What
        // the tests check starts after this.
        let mut attempt = 1;
        loop {
            let mesh = Mesh {
                dir: root.join(format!(
                    "{}-{}",
                    std::process::id(),
                    SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
                )),
                client: client.clone(),
                state: Mutex::new(State {
                    next_ip: 10,
                    ..State::default()
                }),
            };
            let dir = mesh.dir.display().to_string();
            match run_script(&["mesh-up", &dir, &kubeconfig]).await {
                Ok(_) => return Ok(mesh),
                Err(e) if attempt == 1 => {
                    eprintln!("packlight-testenv: mesh-up failed, trying once more: {e:#}");
                    attempt += 1;
                }
                Err(e) => return Err(e.context("starting istiod")),
            }
        }
    }

    /// The mesh's state directory (logs: `istiod.log`, `pods/*/agent.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Every pod started so far, in order.
    pub fn pods(&self) -> Vec<Pod> {
        self.state
            .lock()
            .map(|s| s.pods.clone())
            .unwrap_or_default()
    }

    /// Applies a multi-document YAML text (server-side apply, forced), each
    /// object in its own namespace or else `namespace`.
    pub async fn apply_yaml(&self, namespace: Option<&str>, text: &str) -> anyhow::Result<()> {
        apply_yaml(&self.client, namespace, text).await
    }

    fn next_ip(&self) -> anyhow::Result<Ipv4Addr> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| anyhow!("mesh state poisoned"))?;
        if state.next_ip >= 250 {
            bail!("the mesh's bridge has no address left");
        }
        let ip = Ipv4Addr::new(10, 244, 0, state.next_ip);
        state.next_ip += 1;
        Ok(ip)
    }

    /// Starts a namespace on the bridge running `command` as uid 1000,
    /// without sidecar and without Pod object (a server outside the mesh,
    /// or a caller outside it).
    pub async fn outside(&self, name: &str, command: &[String]) -> anyhow::Result<Pod> {
        let ip = self.next_ip()?;
        let dir = self.dir.display().to_string();
        run_script(&["netns", &dir, name, &ip.to_string()]).await?;
        let pod = Pod {
            name: name.to_owned(),
            namespace: String::new(),
            ip,
            app: None,
            dir: self.dir.clone(),
        };
        if !command.is_empty() {
            let log = self.dir.join(format!("{name}.log")).display().to_string();
            let mut args = vec!["run", &dir, name, &log];
            args.extend(command.iter().map(String::as_str));
            run_script(&args).await?;
        }
        self.state
            .lock()
            .map_err(|_| anyhow!("mesh state poisoned"))?
            .pods
            .push(pod.clone());
        self.write_hosts().await?;
        Ok(pod)
    }

    /// Starts a pod: its Pod object (status Running/Ready at its address),
    /// network namespace, sidecar (with traffic capture) and workload;
    /// returns once its Envoy reports ready.
    pub async fn pod(&self, spec: &PodSpec) -> anyhow::Result<Pod> {
        let pod = self.start_pod(spec).await?;
        if spec.proxy.is_some() {
            pod.wait_proxy_ready().await?;
        }
        Ok(pod)
    }

    /// [`Mesh::pod`] without waiting for its Envoy.
    async fn start_pod(&self, spec: &PodSpec) -> anyhow::Result<Pod> {
        let ip = self.next_ip()?;
        let short = format!("p{}", ip.octets()[3]);
        let pods: Api<KubePod> = Api::namespaced(self.client.clone(), &spec.namespace);
        let labels = injected_labels(spec);
        let object: KubePod = serde_json::from_value(json!({
            "metadata": {"name": spec.name, "labels": labels},
            "spec": {
                "serviceAccountName": spec.service_account,
                "containers": [{"name": "app", "image": "packlight.invalid/bench"}],
            },
        }))?;
        // The ServiceAccount may not be written yet (the operator makes it).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match pods.create(&PostParams::default(), &object).await {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 409 => break,
                Err(e) if Instant::now() < deadline => {
                    note(&format!("pod {}: {e}; retrying", spec.name));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).context(format!("creating pod {}", spec.name)),
            }
        }
        let ready = if spec.proxy.is_some() {
            "True"
        } else {
            "False"
        };
        pods.patch_status(
            &spec.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running",
                "podIP": ip.to_string(),
                "podIPs": [{"ip": ip.to_string()}],
                "hostIP": "10.244.0.1",
                "conditions": [{"type": "Ready", "status": ready}],
            }})),
        )
        .await
        .with_context(|| format!("pod {} status", spec.name))?;

        let dir = self.dir.display().to_string();
        run_script(&["netns", &dir, &short, &ip.to_string()]).await?;
        let pod = Pod {
            name: short.clone(),
            namespace: spec.namespace.clone(),
            ip,
            app: spec.labels.get("app").cloned(),
            dir: self.dir.clone(),
        };
        self.state
            .lock()
            .map_err(|_| anyhow!("mesh state poisoned"))?
            .pods
            .push(pod.clone());
        if let Some(kind) = spec.proxy {
            self.state
                .lock()
                .map_err(|_| anyhow!("mesh state poisoned"))?
                .proxies
                .push((ip, spec.namespace.clone(), spec.name.clone()));
            self.write_scrape_targets().await?;
            let labels = serde_json::to_string(&labels)?;
            run_script(&[
                "sidecar",
                &dir,
                &short,
                &spec.name,
                &spec.namespace,
                &spec.service_account,
                &labels,
                kind,
            ])
            .await?;
        }
        if !spec.command.is_empty() {
            let log = self
                .dir
                .join(format!("{short}-app.log"))
                .display()
                .to_string();
            let mut args: Vec<String> = vec!["run".into(), dir.clone(), short.clone(), log];
            args.push("env".into());
            args.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
            args.extend(spec.command.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_script(&args).await?;
        }
        self.write_hosts().await?;
        Ok(pod)
    }

    /// The kubelet's part: one pod per replica of every Deployment in
    /// `namespace`, running `<packlight> demo-app` as the service and
    /// version of its labels on the container's port, with a sidecar.
    /// Then [`Mesh::sync`].
    pub async fn start_deployments(
        &self,
        namespace: &str,
        packlight: &Path,
    ) -> anyhow::Result<Vec<Pod>> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let mut started = Vec::new();
        for d in deployments.list(&ListParams::default()).await? {
            let name = d.metadata.name.clone().unwrap_or_default();
            let spec = d.spec;
            let template = spec.template;
            let labels: BTreeMap<String, String> =
                template.metadata.and_then(|m| m.labels).unwrap_or_default();
            let pod_spec = template.spec.unwrap_or_default();
            let sa = pod_spec.service_account_name.clone().unwrap_or_default();
            let container = pod_spec.containers.first().cloned().unwrap_or_default();
            let mut env: Vec<(String, String)> = container
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.name, e.value.unwrap_or_default()))
                .collect();
            env.push((
                "PACKLIGHT_SERVICE".into(),
                labels.get("app").cloned().unwrap_or_default(),
            ));
            env.push((
                "PACKLIGHT_VERSION".into(),
                labels.get("version").cloned().unwrap_or_default(),
            ));
            for i in 0..spec.replicas.unwrap_or(1) {
                let pod = self
                    .start_pod(&PodSpec {
                        name: format!("{name}-{i}"),
                        namespace: namespace.to_owned(),
                        labels: labels.clone(),
                        service_account: sa.clone(),
                        command: vec![
                            packlight.display().to_string(),
                            "demo-app".into(),
                            "--listen-address".into(),
                            "0.0.0.0".into(),
                        ],
                        env: env.clone(),
                        proxy: Some("sidecar"),
                    })
                    .await?;
                started.push(pod);
            }
        }
        // The Envoys start together; waiting for each in turn cost a
        // sidecar's start-up per pod.
        let mut ready = tokio::task::JoinSet::new();
        for pod in started.clone() {
            ready.spawn(async move { pod.wait_proxy_ready().await });
        }
        while let Some(r) = ready.join_next().await {
            r.context("waiting for a sidecar")??;
        }
        self.sync().await?;
        Ok(started)
    }

    /// The EndpointSlice controller's part: one EndpointSlice per Service
    /// of every namespace with pods, listing the Ready pods its selector
    /// matches; and every pod's hosts file (the mesh's Services by their
    /// ClusterIPs, short names within their namespace).
    pub async fn sync(&self) -> anyhow::Result<()> {
        let namespaces: Vec<String> = {
            let state = self
                .state
                .lock()
                .map_err(|_| anyhow!("mesh state poisoned"))?;
            let mut v: Vec<String> = state
                .pods
                .iter()
                .filter(|p| !p.namespace.is_empty())
                .map(|p| p.namespace.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        for ns in &namespaces {
            let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
            let pods: Api<KubePod> = Api::namespaced(self.client.clone(), ns);
            let pods = pods.list(&ListParams::default()).await?;
            let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
            for svc in services.list(&ListParams::default()).await? {
                let name = svc.metadata.name.clone().unwrap_or_default();
                let Some(spec) = svc.spec else { continue };
                let selector = spec.selector.unwrap_or_default();
                let ports: Vec<_> = spec
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        let target = match p.target_port {
                            Some(
                                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n),
                            ) => n,
                            _ => p.port,
                        };
                        let mut port = json!({"name": p.name, "port": target, "protocol": "TCP"});
                        if let Some(app) = p.app_protocol {
                            port["appProtocol"] = json!(app);
                        }
                        port
                    })
                    .collect();
                let endpoints: Vec<_> = pods
                    .items
                    .iter()
                    .filter(|p| {
                        let labels = p.metadata.labels.clone().unwrap_or_default();
                        !selector.is_empty()
                            && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
                    .filter_map(|p| {
                        let ip = p.status.as_ref()?.pod_ip.clone()?;
                        Some(json!({
                            "addresses": [ip],
                            "conditions": {"ready": true, "serving": true, "terminating": false},
                            "targetRef": {"kind": "Pod", "namespace": ns, "name": p.metadata.name},
                        }))
                    })
                    .collect();
                let slice = json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": format!("{name}-bench"),
                        "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "packlight-testenv"},
                    },
                    "addressType": "IPv4",
                    "ports": ports,
                    "endpoints": endpoints,
                });
                slices
                    .patch(
                        &format!("{name}-bench"),
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(slice),
                    )
                    .await
                    .with_context(|| format!("EndpointSlice for {ns}/{name}"))?;
            }
        }
        self.write_hosts().await
    }

    /// Adds `name` → `ip` to every pod's hosts file (e.g. a server outside
    /// the mesh).
    pub async fn add_host(&self, name: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
        self.state
            .lock()
            .map_err(|_| anyhow!("mesh state poisoned"))?
            .hosts
            .push((name.to_owned(), ip.to_string()));
        self.write_hosts().await
    }

    async fn write_hosts(&self) -> anyhow::Result<()> {
        let (pods, extra) = {
            let state = self
                .state
                .lock()
                .map_err(|_| anyhow!("mesh state poisoned"))?;
            (state.pods.clone(), state.hosts.clone())
        };
        let services = Api::<Service>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        for pod in &pods {
            let mut text = format!("127.0.0.1 localhost\n{} {}\n", pod.ip, pod.name);
            for (name, ip) in &extra {
                let _ = writeln!(text, "{ip} {name}");
            }
            for svc in &services.items {
                let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
                    continue;
                };
                let Some(ip) = svc.spec.as_ref().and_then(|s| s.cluster_ip.clone()) else {
                    continue;
                };
                if ip == "None" || ns == "default" {
                    continue;
                }
                let short = if *ns == pod.namespace {
                    name.as_str()
                } else {
                    ""
                };
                let _ = writeln!(
                    text,
                    "{ip} {name}.{ns}.svc.cluster.local {name}.{ns} {short}"
                );
            }
            // Written in place: `ip netns exec` bind-mounts this very file.
            let path = PathBuf::from("/etc/netns").join(pod.netns()?).join("hosts");
            tokio::fs::write(&path, text)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let status = std::process::Command::new("bash")
            .arg(script_path())
            .arg("mesh-down")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "packlight-testenv: mesh-down {} failed: {status:?}",
                self.dir.display()
            );
        }
    }
}

impl Pod {
    /// The pod's network namespace.
    pub fn netns(&self) -> anyhow::Result<String> {
        let id = std::fs::read_to_string(self.dir.join("id")).context("mesh id")?;
        Ok(format!("pl{}{}", id.trim(), self.name))
    }

    /// Runs `curl ARGS` inside the pod as uid 1000 (its traffic is captured
    /// by the sidecar, if any).
    pub async fn curl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let netns = self.netns()?;
        let output = Command::new("ip")
            .args(["netns", "exec", &netns])
            .args([
                "setpriv",
                "--reuid",
                "1000",
                "--regid",
                "1000",
                "--clear-groups",
            ])
            .arg("curl")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("running curl in the pod")?;
        Ok(output)
    }

    /// Sends `count` GET requests to `url` (one curl process, one
    /// connection kept alive) and returns each status and version header.
    /// At most 5 s per request and 30 s + 50 ms per request in all.
    pub async fn requests(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        count: usize,
    ) -> anyhow::Result<Vec<Reply>> {
        let mut config = String::new();
        for (k, v) in headers {
            let _ = writeln!(config, "header = \"{k}: {v}\"");
        }
        for _ in 0..count {
            let _ = writeln!(config, "url = \"{url}\"\noutput = \"/dev/null\"");
        }
        let file = self
            .dir
            .join(format!("requests-{}-{}.curl", self.name, unique()));
        tokio::fs::write(&file, config).await?;
        let file_arg = file.display().to_string();
        let limit = Duration::from_secs(30) + Duration::from_millis(50) * u32::try_from(count)?;
        let output = tokio::time::timeout(
            limit,
            self.curl(&[
                "-s",
                "--max-time",
                "5",
                "-w",
                "%{http_code} %header{x-packlight-version}\\n",
                "--config",
                &file_arg,
            ]),
        )
        .await
        .with_context(|| format!("{count} requests took over {limit:?}"))??;
        let _ = tokio::fs::remove_file(&file).await;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text
            .lines()
            .map(|line| {
                let (code, version) = line.split_once(' ').unwrap_or((line, ""));
                Reply {
                    status: code.trim().parse().unwrap_or(0),
                    version: Some(version.trim())
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned),
                }
            })
            .collect())
    }

    /// One request (`curl -X METHOD URL -H ... [EXTRA...]`), in full.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        extra: &[&str],
    ) -> anyhow::Result<FullReply> {
        let mut args: Vec<String> = vec![
            "-s".into(),
            "--max-time".into(),
            "5".into(),
            "-i".into(),
            "-X".into(),
            method.into(),
        ];
        for (k, v) in headers {
            args.push("-H".into());
            args.push(format!("{k}: {v}"));
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(url.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.curl(&args).await?;
        let text = String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(FullReply {
            status,
            headers,
            body: body.to_owned(),
            curl_exit: output.status.code().unwrap_or(-1),
        })
    }

    /// The sidecar's Envoy stats (admin on 127.0.0.1:15000 in the pod).
    pub async fn envoy_stats(&self, filter: &str) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:15000/stats?filter={filter}");
        let out = self.curl(&["-s", "--max-time", "5", &url]).await?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn wait_proxy_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SIDECAR_READY;
        loop {
            let out = self
                .curl(&[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                    "http://127.0.0.1:15021/healthz/ready",
                ])
                .await?;
            if out.stdout == b"200" {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(
                    self.dir.join("pods").join(&self.name).join("agent.log"),
                )
                .unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!(
                    "the sidecar of {} was not ready in time:\n{tail}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn unique() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn note(msg: &str) {
    eprintln!("packlight-testenv: {msg}");
}

async fn ensure_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// Applies a multi-document YAML text with server-side apply (forced,
/// field manager `packlight-testenv`); objects without a namespace go to
/// `namespace` when their kind is namespaced.
pub async fn apply_yaml(
    client: &Client,
    namespace: Option<&str>,
    text: &str,
) -> anyhow::Result<()> {
    use serde::Deserialize as _;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value.clone())?;
        let types = obj
            .types
            .clone()
            .context("an object without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("no API for {}/{}", types.api_version, types.kind))?;
        let name = obj
            .metadata
            .name
            .clone()
            .context("an object without a name")?;
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => {
                let ns = obj
                    .metadata
                    .namespace
                    .as_deref()
                    .or(namespace)
                    .context("a namespaced object without a namespace")?;
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await
        .with_context(|| format!("applying {} {name}", types.kind))?;
    }
    Ok(())
}

/// The pod's labels as Istio's sidecar injector leaves them: with a
/// sidecar, `security.istio.io/tlsMode: istio` (without it istiod's auto
/// mTLS sends plain text to the pod, which STRICT mTLS then resets) and the
/// canonical service name and revision.
fn injected_labels(spec: &PodSpec) -> BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    if spec.proxy == Some("sidecar") {
        labels.insert("security.istio.io/tlsMode".into(), "istio".into());
        let name = spec.labels.get("app").unwrap_or(&spec.name).clone();
        labels
            .entry("service.istio.io/canonical-name".into())
            .or_insert(name);
        let revision = spec
            .labels
            .get("version")
            .cloned()
            .unwrap_or_else(|| "latest".into());
        labels
            .entry("service.istio.io/canonical-revision".into())
            .or_insert(revision);
    }
    labels
}

/// Runs `scripts/testenv ARGS...`. Its stderr is passed on to the test's
/// (libtest shows it with a failure) and, when the script fails, its last
/// lines are the error's, so a failed start says which command failed.
async fn run_script(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("bash")
        .arg(script_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .context("running scripts/testenv")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    if !output.status.success() {
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        bail!(
            "`scripts/testenv {}` failed with {}; its stderr ends:\n{tail}",
            args.join(" "),
            output.status
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
