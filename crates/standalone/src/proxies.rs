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
/// binds it a moment later). Taken outside the kernel's ephemeral port
/// range (`net.ipv4.ip_local_port_range`; see [`port_window`]), walking
/// from a random start: a port from the ephemeral range could be handed
/// by the kernel to anyone's port-0 bind or outgoing connection (an Envoy
/// admin, a client socket) before our process binds it — seen as an Envoy
/// NACK "cannot bind: Address already in use" and a proxy that never
/// became ready. Falls back to a port-0 bind when the window is exhausted.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = ephemeral_range();
    let (base, span) = port_window(low, high);
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
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % span;
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

/// The ports [`free_port`] walks, as (first, count), given the kernel's
/// ephemeral range `low..=high`: the larger of the two gaps around it,
/// from port 10,000 up to `low` or from `high` + 1 up to 65,535 (Linux's
/// default 32768–60999 leaves 10,000–32,767). A machine whose range
/// leaves neither gap 1,000 ports wide gets 10,000–10,999, inside the
/// range: the best there is.
pub fn port_window(low: u32, high: u32) -> (u32, u32) {
    const BASE: u32 = 10_000;
    const MIN_SPAN: u32 = 1_000;
    let below = low.saturating_sub(BASE);
    let above = 65_535u32.saturating_sub(high.max(BASE - 1));
    if below >= above && below >= MIN_SPAN {
        (BASE, below)
    } else if above >= MIN_SPAN {
        (65_536 - above, above)
    } else {
        (BASE, MIN_SPAN)
    }
}

/// The kernel's ephemeral port range (32768–60999 when unknown).
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(str::parse::<u32>);
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_window_is_the_larger_gap_outside_the_ephemeral_range() {
        // Linux's default: below it.
        assert_eq!(port_window(32_768, 60_999), (10_000, 22_768));
        // A range reaching down to 1024: above it.
        assert_eq!(port_window(1_024, 49_151), (49_152, 16_384));
        // Above is larger than below.
        assert_eq!(port_window(12_000, 50_000), (50_001, 15_535));
        // No gap of 1,000 ports: 10,000-10,999, the old fallback.
        assert_eq!(port_window(1_024, 65_535), (10_000, 1_000));
        assert_eq!(port_window(10_500, 65_000), (10_000, 1_000));
        // Every window stays within 10,000..=65,535.
        for (low, high) in [(0, 0), (0, 65_535), (65_535, 65_535), (20_000, 9_000)] {
            let (base, span) = port_window(low, high);
            assert!(base >= 10_000 && base + span - 1 <= 65_535, "{low} {high}");
        }
    }

    #[test]
    fn free_ports_are_distinct_bindable_and_in_the_window() {
        let (low, high) = ephemeral_range();
        let (base, span) = port_window(low, high);
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in ports {
            let p32 = u32::from(p);
            assert!(
                p32 >= base && p32 < base + span,
                "{p} outside {base}+{span}"
            );
            assert!(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok());
        }
    }
}
