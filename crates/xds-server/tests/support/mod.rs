//! Test support: find and run real Envoy against an in-test control plane,
//! small HTTP apps and a raw HTTP client, a test CA (rcgen) for SDS.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use packlight_xds_server::{Mode, XdsServer, bootstrap};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Real Envoy: `PACKLIGHT_ENVOY`, else `envoy` on PATH, else the venv of
/// `scripts/install-envoy` (run if missing). Panics, never skips.
pub fn envoy_binary() -> PathBuf {
    packlight_testenv::envoy().expect("real Envoy")
}

/// Polls `f` every 50 ms until it returns `Some`, at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the node's ACKed generation reaches `generation`.
pub fn wait_acked(server: &XdsServer, node: &str, generation: u64) {
    let rx = server.acked(node);
    wait_for(
        &format!("{node} to ACK generation {generation}"),
        Duration::from_secs(30),
        || (*rx.borrow() >= generation).then_some(()),
    );
}

/// An ephemeral loopback address nobody listens on (yet).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// An in-test control plane: the server on its own runtime thread.
pub struct ControlPlane {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl ControlPlane {
    /// Serves `server` on an ephemeral loopback port.
    pub fn start(server: XdsServer) -> Self {
        Self::start_on(server, "127.0.0.1:0".parse().expect("addr"))
    }

    /// Serves `server` on `addr`.
    pub fn start_on(server: XdsServer, addr: SocketAddr) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.expect("bind xds");
                ready_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("ready");
                server
                    .serve(listener, async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
            let _ = done_tx.send(());
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("control plane listening");
        ControlPlane {
            addr,
            stop: Some(stop),
            done,
        }
    }

    /// Stops the server and waits (bounded) until `serve` returned.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            self.done
                .recv_timeout(Duration::from_secs(20))
                .expect("server stopped after its shutdown future");
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A real Envoy bootstrapped against a control plane, killed on drop.
pub struct Envoy {
    child: Child,
    _dir: tempfile::TempDir,
    pub admin: SocketAddr,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    /// Starts Envoy as node `node` of the server at `xds`.
    pub fn start(node: &str, xds: SocketAddr, mode: Mode) -> Envoy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bootstrap.json");
        let admin_path = dir.path().join("admin");
        let admin: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        std::fs::write(&config, bootstrap(node, "test", xds, admin, mode)).expect("write");
        let log = std::env::var("PACKLIGHT_ENVOY_LOG").ok();
        let child = Command::new(envoy_binary())
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level"])
            // PACKLIGHT_ENVOY_LOG=debug shows Envoy's log when a test fails.
            .arg(log.as_deref().unwrap_or("error"))
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(if log.is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy {
            child,
            _dir: dir,
            admin,
        };
        envoy.admin = wait_for("envoy admin address", Duration::from_secs(20), || {
            std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        });
        envoy
    }

    /// GET on the admin interface; the body.
    pub fn admin_get(&self, path: &str) -> String {
        let (status, _, body) = send(
            self.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 200, "admin {path}: {body}");
        body
    }

    /// Every `update_success`/`update_rejected` counter, by name.
    pub fn update_stats(&self) -> BTreeMap<String, u64> {
        self.admin_get("/stats?filter=update_(success|rejected)$")
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect()
    }
}

/// The counters of `after` that differ from `before`, with their increase.
pub fn stat_changes(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let old = before.get(k).copied().unwrap_or(0);
            (*v != old).then(|| (k.clone(), v.saturating_sub(old)))
        })
        .collect()
}

/// A tiny app answering every request with `body` (HTTP/1.1, close).
pub fn app(body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// One raw HTTP/1.1 exchange; (status, lower-cased headers, body). Status
/// 0 when the connection failed or closed without an answer.
pub fn send(to: SocketAddr, request: &str) -> (u16, BTreeMap<String, String>, String) {
    let Ok(mut s) = TcpStream::connect(to) else {
        return (0, BTreeMap::new(), String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(request.as_bytes()).is_err() {
        return (0, BTreeMap::new(), String::new());
    }
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
    (status, headers, body.to_string())
}

/// GET `url` through the HTTP proxy `proxy` (absolute URI).
pub fn get(proxy: SocketAddr, url: &str) -> (u16, BTreeMap<String, String>, String) {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    send(
        proxy,
        &format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends `n` requests; counts bodies by answer (`"<status> <body>"`).
pub fn count(proxy: SocketAddr, url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let (status, _, body) = get(proxy, url);
        *counts.entry(format!("{status} {body}")).or_insert(0) += 1;
    }
    counts
}

/// A test CA issuing SPIFFE certificates.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "packlight xds-server test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    /// SDS secrets `default` (a leaf for `spiffe_id` with `serial`) and
    /// `ROOTCA` (this CA).
    pub fn secrets(&self, spiffe_id: &str, serial: u64) -> Vec<Secret> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(spiffe_id).expect("uri"),
        )];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, spiffe_id);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let inline = |s: String| {
            Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(s)),
                ..Default::default()
            })
        };
        vec![
            Secret {
                name: "ROOTCA".to_string(),
                r#type: Some(secret::Type::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: inline(self.issuer.pem()),
                        ..Default::default()
                    },
                )),
            },
            Secret {
                name: "default".to_string(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(cert.pem()),
                    private_key: inline(key.serialize_pem()),
                    ..Default::default()
                })),
            },
        ]
    }
}
