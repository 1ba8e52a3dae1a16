//! The running proxies and workloads: which instances the mesh asks for,
//! their addresses, their sidecar Envoys and their apps.
//!
//! [`Fleet::converge`] compares what the IR asks for with what runs and
//! starts or stops the difference; it never builds Envoy configuration
//! (that is `packlight-xds`, called by the engine).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use packlight_model::Version;
use packlight_model::ir::{Mesh, ServiceKey};
use packlight_xds::Instance;
use packlight_xds_server::{Mode, bootstrap};

use crate::supervise::{Spec, Supervised};

/// One instance of one version of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstanceKey {
    /// The service.
    pub service: ServiceKey,
    /// The version.
    pub version: Version,
    /// 0-based replica index.
    pub index: usize,
}

impl InstanceKey {
    /// Its proxy's node id: `sidecar~NS~NAME~SUBSET~INDEX`.
    pub fn node(&self) -> String {
        format!(
            "sidecar~{}~{}~{}~{}",
            self.service.namespace,
            self.service.name,
            self.version.subset(),
            self.index
        )
    }
}

/// What an instance runs: its app command (or a fixed endpoint packlight
/// does not start).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Workload {
    Command(Vec<String>),
    Fixed(SocketAddr),
}

/// A running instance.
#[derive(Debug)]
pub struct Running {
    /// Its addresses (sidecar listeners, app).
    pub ports: Instance,
    /// The file where its sidecar writes its admin address (see
    /// [`admin_address`]).
    pub admin: PathBuf,
    workload: Workload,
    sidecar: Supervised,
    app: Option<Supervised>,
}

impl Running {
    /// Whether packlight started the app (false: a fixed endpoint).
    pub fn started_app(&self) -> bool {
        self.app.is_some()
    }

    /// Restarts of the sidecar and the app so far.
    pub fn restarts(&self) -> (u32, u32) {
        (
            self.sidecar.restarts(),
            self.app.as_ref().map(Supervised::restarts).unwrap_or(0),
        )
    }
}

/// What the fleet needs to start processes.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Envoy binary.
    pub envoy: PathBuf,
    /// The packlight binary (replaces a command's `packlight`).
    pub packlight: PathBuf,
    /// The ADS server.
    pub xds: SocketAddr,
    /// Where bootstraps and logs go (`DATA_DIR/run`, `DATA_DIR/logs`).
    pub data_dir: PathBuf,
    /// Envoy's log level.
    pub envoy_log_level: String,
}

/// A free loopback port (bound, then released: the process that uses it
/// binds it a moment later). Taken below the kernel's ephemeral port range
/// (`net.ipv4.ip_local_port_range`), walking from a random start: a port
/// from the ephemeral range could be handed by the kernel to anyone's
/// port-0 bind or outgoing connection (an Envoy admin, a client socket)
/// before our process binds it — seen as an Envoy NACK "cannot bind:
/// Address already in use" and a proxy that never became ready. Falls back
/// to a port-0 bind when the range below is exhausted.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    const BASE: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let top = ephemeral_low().max(BASE + 1_000);
    let span = top - BASE;
    if NEXT.load(Ordering::Relaxed) == 0 {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        // Only the first caller's seed counts; a lost race is fine.
        let _ = NEXT.compare_exchange(
            0,
            (seed % u64::from(span)) as u32 + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    for _ in 0..span {
        let port = BASE + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// The lowest port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Every running instance, by key.
#[derive(Debug, Default)]
pub struct Fleet {
    running: BTreeMap<InstanceKey, Running>,
}

/// An Envoy started by [`start_envoy`].
#[derive(Debug)]
pub struct Envoy {
    /// The supervised process.
    pub process: Supervised,
    /// The file where it writes its admin address once it listens.
    pub admin: PathBuf,
}

/// Starts an Envoy for `node` with its bootstrap in `DATA_DIR/run`.
///
/// Its admin listens on a port the kernel picks (written to
/// `DATA_DIR/run/NODE.N.admin`, there only while it runs): a port chosen
/// beforehand could be taken before Envoy binds it, and then every restart
/// would fail the same way. Hot restart is off: packlight restarts an
/// Envoy by starting a new one, and a hot-restart base id leaves a shared
/// memory file in `/dev/shm` behind every Envoy.
pub fn start_envoy(cfg: &FleetConfig, node: &str, cluster: &str) -> std::io::Result<Envoy> {
    let run = cfg.data_dir.join("run");
    std::fs::create_dir_all(&run)?;
    let file = run.join(format!("{}.json", file_name(node)));
    // One file per Envoy started: an instance replaced under the same
    // node name never shares it with its predecessor.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let admin = run.join(format!("{}.{seq}.admin", file_name(node)));
    std::fs::write(
        &file,
        bootstrap(node, cluster, cfg.xds, loopback(0), Mode::Delta),
    )?;
    let process = Supervised::start(Spec {
        name: node.to_string(),
        program: cfg.envoy.clone(),
        args: vec![
            "-c".into(),
            file.display().to_string(),
            "--concurrency".into(),
            "1".into(),
            "--disable-hot-restart".into(),
            "--admin-address-path".into(),
            admin.display().to_string(),
            "--log-level".into(),
            cfg.envoy_log_level.clone(),
            "--drain-time-s".into(),
            "1".into(),
        ],
        env: Vec::new(),
        log: log_path(&cfg.data_dir, node),
        fresh: Some(admin.clone()),
    });
    Ok(Envoy { process, admin })
}

/// The admin address an Envoy wrote to `file` (`--admin-address-path`);
/// `None` while it is not up.
pub fn admin_address(file: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn file_name(node: &str) -> String {
    node.replace('~', "_")
}

fn log_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir
        .join("logs")
        .join(format!("{}.log", file_name(name)))
}

/// The instances the mesh asks for: `replicas` (at least one) per version
/// with a `command`, one per fixed IP endpoint otherwise.
fn desired(mesh: &Mesh) -> BTreeMap<InstanceKey, Workload> {
    let mut out = BTreeMap::new();
    for svc in mesh.services.values() {
        let Some(w) = &svc.workload else { continue };
        for (v, dep) in &w.versions {
            let key = |index| InstanceKey {
                service: svc.key.clone(),
                version: v.clone(),
                index,
            };
            if let Some(cmd) = dep.command.as_ref().filter(|c| !c.is_empty()) {
                let n = usize::try_from(dep.replicas.max(0)).unwrap_or(1);
                for i in 0..n {
                    out.insert(key(i), Workload::Command(cmd.clone()));
                }
            } else {
                let ips = dep
                    .endpoints
                    .iter()
                    .filter_map(|e| e.host.parse::<IpAddr>().ok().map(|ip| (ip, e.port)));
                for (i, (ip, port)) in ips.enumerate() {
                    out.insert(key(i), Workload::Fixed(SocketAddr::new(ip, port)));
                }
            }
        }
    }
    out
}

impl Fleet {
    /// Starts what the mesh asks for and is missing, stops what it no
    /// longer asks for, restarts an app whose command changed. Returns
    /// whether the set of instances changed (addresses to re-render).
    pub fn converge(&mut self, mesh: &Mesh, cfg: &FleetConfig) -> std::io::Result<bool> {
        let want = desired(mesh);
        let mut changed = false;
        let gone: Vec<InstanceKey> = self
            .running
            .iter()
            .filter(|(k, r)| want.get(*k) != Some(&r.workload))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(r) = self.running.remove(&k) {
                tracing::info!(node = %k.node(), "stopping instance");
                drop(r);
                changed = true;
            }
        }
        for (key, workload) in want {
            if self.running.contains_key(&key) {
                continue;
            }
            let running = self.start(&key, workload, cfg)?;
            tracing::info!(node = %key.node(), app = %running.ports.app, "started instance");
            self.running.insert(key, running);
            changed = true;
        }
        Ok(changed)
    }

    fn start(
        &self,
        key: &InstanceKey,
        workload: Workload,
        cfg: &FleetConfig,
    ) -> std::io::Result<Running> {
        let app = match &workload {
            Workload::Fixed(addr) => *addr,
            Workload::Command(_) => loopback(free_port()?),
        };
        let ports = Instance {
            outbound: loopback(free_port()?),
            inbound: loopback(free_port()?),
            app,
        };
        let node = key.node();
        let cluster = format!("{}.{}", key.service.name, key.service.namespace);
        let Envoy {
            process: sidecar,
            admin,
        } = start_envoy(cfg, &node, &cluster)?;
        let app = match &workload {
            Workload::Fixed(_) => None,
            Workload::Command(cmd) => {
                let proxy = format!("http://{}", ports.outbound);
                let (program, args) = match cmd.split_first() {
                    Some((p, rest)) if p == "packlight" => (cfg.packlight.clone(), rest.to_vec()),
                    Some((p, rest)) => (PathBuf::from(p), rest.to_vec()),
                    None => return Err(std::io::Error::other("empty command")),
                };
                let name = format!(
                    "app~{}~{}~{}~{}",
                    key.service.namespace,
                    key.service.name,
                    key.version.subset(),
                    key.index
                );
                Some(Supervised::start(Spec {
                    log: log_path(&cfg.data_dir, &name),
                    name,
                    program,
                    args,
                    fresh: None,
                    env: vec![
                        ("PORT".into(), ports.app.port().to_string()),
                        ("HTTP_PROXY".into(), proxy.clone()),
                        ("HTTPS_PROXY".into(), proxy.clone()),
                        ("http_proxy".into(), proxy.clone()),
                        ("https_proxy".into(), proxy),
                        ("NO_PROXY".into(), String::new()),
                        ("no_proxy".into(), String::new()),
                        ("PACKLIGHT_SERVICE".into(), key.service.name.clone()),
                        ("PACKLIGHT_NAMESPACE".into(), key.service.namespace.clone()),
                        ("PACKLIGHT_VERSION".into(), key.version.to_string()),
                    ],
                }))
            }
        };
        Ok(Running {
            ports,
            admin,
            workload,
            sidecar,
            app,
        })
    }

    /// Every running instance.
    pub fn iter(&self) -> impl Iterator<Item = (&InstanceKey, &Running)> {
        self.running.iter()
    }

    /// The instances as `XdsOptions::instances` wants them.
    pub fn instances(&self) -> BTreeMap<ServiceKey, BTreeMap<Version, Vec<Instance>>> {
        let mut out: BTreeMap<ServiceKey, BTreeMap<Version, Vec<Instance>>> = BTreeMap::new();
        for (k, r) in &self.running {
            out.entry(k.service.clone())
                .or_default()
                .entry(k.version.clone())
                .or_default()
                .push(r.ports.clone());
        }
        out
    }

    /// Stops everything.
    pub async fn stop(&mut self) {
        let all = std::mem::take(&mut self.running);
        for (_, r) in all {
            if let Some(app) = r.app {
                app.stop().await;
            }
            r.sidecar.stop().await;
        }
    }
}
