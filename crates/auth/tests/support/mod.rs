//! Test support: a real ingress gateway Envoy on the config
//! `packlight_xds::ingress_gateway` generates (static bootstrap: EDS
//! inlined, RDS inlined), a tiny echo backend, and a raw HTTP/1 client.
//! The approach of `crates/xds/tests/support`, for plain-HTTP upstreams
//! (fixed endpoints, no SDS).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::cluster;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::google::protobuf::Any;
use packlight_xds::ProxyConfig;
use prost::{Message, Name};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An ephemeral loopback address nobody listens on yet.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Real Envoy (installed on demand; never skips).
pub fn envoy() -> PathBuf {
    packlight_testenv::envoy().expect("real Envoy")
}

fn pack<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

/// A static bootstrap with everything `cfg` has, and an admin listener
/// on an ephemeral port.
pub fn bootstrap(cfg: &ProxyConfig) -> Bootstrap {
    // The gateway declares its SDS secrets, but with fixed-endpoint
    // upstreams no transport socket uses them.
    assert!(
        cfg.clusters.iter().all(|c| c.transport_socket.is_none()),
        "this support runs plain-HTTP upstreams only"
    );
    let clusters = cfg
        .clusters
        .iter()
        .cloned()
        .map(|mut c| {
            if c.eds_cluster_config.is_some() {
                c.eds_cluster_config = None;
                c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Static as i32,
                ));
                c.load_assignment = cfg
                    .endpoints
                    .iter()
                    .find(|e| e.cluster_name == c.name)
                    .cloned();
            }
            c
        })
        .collect();
    let listeners = cfg
        .listeners
        .iter()
        .cloned()
        .map(|mut l| {
            for ch in &mut l.filter_chains {
                for f in &mut ch.filters {
                    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                        continue;
                    };
                    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
                    if let Some(http_connection_manager::RouteSpecifier::Rds(rds)) =
                        &hcm.route_specifier
                    {
                        let rc = cfg
                            .routes
                            .iter()
                            .find(|r| r.name == rds.route_config_name)
                            .cloned()
                            .expect("route config named by RDS");
                        hcm.route_specifier =
                            Some(http_connection_manager::RouteSpecifier::RouteConfig(rc));
                    }
                    *any = pack(&hcm);
                }
            }
            l
        })
        .collect();
    Bootstrap {
        admin: Some(Admin {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "127.0.0.1".to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            secrets: Vec::new(),
        }),
        ..Default::default()
    }
}

/// A running Envoy, killed on drop.
pub struct RunningEnvoy {
    child: Child,
    dir: tempfile::TempDir,
}

impl RunningEnvoy {
    /// Envoy's admin address (`--admin-address-path`).
    pub fn admin(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin")).unwrap_or_default()
    }
}

impl Drop for RunningEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs real Envoy on `cfg`; returns once `wait_for` accepts connections.
pub fn run_envoy(cfg: &ProxyConfig, wait_for: SocketAddr) -> RunningEnvoy {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, bootstrap(cfg).encode_to_vec()).expect("write bootstrap");
    let log = std::env::var("PACKLIGHT_ENVOY_LOG").unwrap_or_else(|_| "error".to_string());
    let child = Command::new(envoy())
        .args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            &log,
        ])
        .arg("--admin-address-path")
        .arg(dir.path().join("admin"))
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(if log == "error" {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .expect("spawn envoy");
    let mut running = RunningEnvoy { child, dir };
    let t0 = Instant::now();
    while TcpStream::connect(wait_for).is_err() {
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("envoy exited ({status}) before listening on {wait_for}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "envoy did not listen on {wait_for}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// A backend answering every request with 200 and the request head as
/// its body (so a test sees which headers arrived).
pub fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 64 * 1024 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let body = String::from_utf8_lossy(&got).to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    addr
}

/// One HTTP/1.1 response: status, lower-cased headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
pub fn send(
    to: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut s = TcpStream::connect(to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}
