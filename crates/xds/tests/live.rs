//! Real traffic through real Envoy running the generated config (static
//! bootstrap): the weight split and the version header, match rules, path
//! majors, egress 502 for HTTP and CONNECT, RBAC 403.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use packlight_model::ir::ServiceKey;
use packlight_xds::{Instance, ProxyConfig, XdsOptions, sidecar};
use prost::Message;

struct Envoy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// An instance on three free loopback ports (no app listens on `app`).
fn free_instance() -> Instance {
    Instance {
        outbound: free_addr(),
        inbound: free_addr(),
        app: free_addr(),
    }
}

fn start(cfg: &ProxyConfig, wait_for: SocketAddr) -> Envoy {
    start_as(
        cfg,
        wait_for,
        &support::TestCa::new().identity("spiffe://cluster.local/ns/t/sa/t"),
    )
}

fn start_as(cfg: &ProxyConfig, wait_for: SocketAddr, id: &support::Identity) -> Envoy {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, support::bootstrap_with(cfg, id).encode_to_vec()).expect("write");
    let child = Command::new(support::envoy())
        .args(["--concurrency", "1", "--disable-hot-restart", "--log-level"])
        // PACKLIGHT_ENVOY_LOG=debug shows Envoy's log when a test fails.
        .arg(std::env::var("PACKLIGHT_ENVOY_LOG").unwrap_or_else(|_| "error".to_string()))
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("PACKLIGHT_ENVOY_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn envoy");
    let envoy = Envoy { child, _dir: dir };
    let t0 = Instant::now();
    while TcpStream::connect(wait_for).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "envoy did not listen on {wait_for}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    envoy
}

/// A tiny app answering every request with its version as the body.
fn app(version: &'static str) -> SocketAddr {
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
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{version}",
                version.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    addr
}

/// Sends one raw request; returns (status, headers lower-cased, body).
fn send(proxy: SocketAddr, request: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect(proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
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

fn get(proxy: SocketAddr, url: &str, extra: &str) -> (u16, BTreeMap<String, String>, String) {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    send(
        proxy,
        &format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

#[test]
fn split_matches_and_majors_through_a_real_sidecar() {
    let (a, b, c) = (app("1.0"), app("1.1"), app("2.0"));
    let yaml = format!(
        "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: httpbin, namespace: demo}}\nspec:\n  port: 8000\n  versions:\n  - {{version: \"1.0\", endpoints: [\"{a}\"]}}\n  - {{version: \"1.1\", endpoints: [\"{b}\"]}}\n  - {{version: \"2.0\", endpoints: [\"{c}\"]}}\n---\napiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {{name: httpbin, namespace: demo}}\nspec:\n  service: httpbin\n  rules:\n  - {{version: \"1.0\", weight: 80}}\n  - {{version: \"1.1\", weight: 20}}\n  - {{version: \"2.0\", weight: 100}}\n  - version: \"2.0\"\n    matches: [{{headers: {{gray: {{exact: \"1\"}}}}}}, {{queryParams: {{debug: {{exact: \"true\"}}}}}}]\n---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: sleep, namespace: demo}}\nspec:\n  port: 8080\n  versions: [{{version: \"1.0\", image: x}}]\n"
    );
    let (model, _) = packlight_model::load(&[(None, &yaml)], "default");
    assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
    let mesh = model.mesh;
    let inst = free_instance();
    // No instances for httpbin: its fixed endpoints, in plain text.
    let cfg = sidecar(
        &mesh,
        &ServiceKey::new("demo", "sleep"),
        &inst,
        &XdsOptions::default(),
    )
    .expect("sidecar");
    let _envoy = start(&cfg, inst.outbound);
    let mut counts = BTreeMap::new();
    let n = 400;
    for _ in 0..n {
        let (status, headers, body) = get(inst.outbound, "http://httpbin.demo:8000/get", "");
        assert_eq!(status, 200);
        assert_eq!(headers.get("x-packlight-version"), Some(&body));
        *counts.entry(body).or_insert(0u32) += 1;
    }
    let share = f64::from(counts.get("1.0").copied().unwrap_or(0)) / f64::from(n);
    assert!(
        (0.72..=0.88).contains(&share),
        "1.0 share {share}: {counts:?}"
    );
    assert_eq!(counts.get("2.0"), None, "{counts:?}");
    for (url, extra) in [
        ("http://httpbin:8000/v2/anything", ""),
        ("http://httpbin.demo.svc.cluster.local/v2", ""),
        ("http://httpbin.demo/get", "gray: 1\r\n"),
        ("http://httpbin.demo/v1/x?debug=true", ""),
    ] {
        let (status, headers, body) = get(inst.outbound, url, extra);
        assert_eq!((status, body.as_str()), (200, "2.0"), "{url} {extra}");
        assert_eq!(
            headers.get("x-packlight-version").map(String::as_str),
            Some("2.0")
        );
    }
    // /v20 is neither major 1 nor 2 (segment-aware): the default major.
    let (_, _, body) = get(inst.outbound, "http://httpbin.demo/v20", "");
    assert!(body.starts_with("1."), "{body}");
}

#[test]
fn egress_deny_refuses_http_and_connect() {
    let mesh = support::example("egress-sleep.yaml");
    let inst = free_instance();
    let cfg = sidecar(
        &mesh,
        &ServiceKey::new("demo", "sleep"),
        &inst,
        &XdsOptions::default(),
    )
    .expect("sidecar");
    let _envoy = start(&cfg, inst.outbound);
    let (status, _, _) = get(inst.outbound, "http://blocked.example.org/", "");
    assert_eq!(status, 502);
    let (status, _, _) = send(
        inst.outbound,
        "CONNECT blocked.example.org:443 HTTP/1.1\r\nHost: blocked.example.org:443\r\n\r\n",
    );
    assert_eq!(status, 502);
}

#[test]
fn access_deny_answers_403_rbac_access_denied() {
    // Permissive mTLS, deny by default: a plain-text caller has no identity.
    let yaml = "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default, namespace: demo}\nspec: {access: deny}\n---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: httpbin, namespace: demo}\nspec:\n  port: 8000\n  versions: [{version: \"1.0\", image: x}]\n";
    let (model, _) = packlight_model::load(&[(None, yaml)], "default");
    let app_addr = app("1.0");
    let inst = Instance {
        outbound: free_addr(),
        inbound: free_addr(),
        app: app_addr,
    };
    let cfg = sidecar(
        &model.mesh,
        &ServiceKey::new("demo", "httpbin"),
        &inst,
        &XdsOptions::default(),
    )
    .expect("sidecar");
    let _envoy = start(&cfg, inst.inbound);
    let (status, _, body) = get(inst.inbound, "http://httpbin/get", "");
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
}

/// STRICT mTLS with SPIFFE identities between two real sidecars, and the
/// AccessPolicy "sleep may GET /status/* and /get" enforced on them.
#[test]
fn mtls_and_access_policy_between_two_sidecars() {
    let mesh = support::example("access-sleep-httpbin.yaml");
    let (httpbin, sleep) = (
        ServiceKey::new("demo", "httpbin"),
        ServiceKey::new("demo", "sleep"),
    );
    let v = "1.0".parse::<packlight_model::Version>().expect("version");
    let app_addr = app("1.0");
    let hb = Instance {
        outbound: free_addr(),
        inbound: free_addr(),
        app: app_addr,
    };
    let sl = free_instance();
    let mut opts = XdsOptions::default();
    opts.instances
        .entry(httpbin.clone())
        .or_default()
        .insert(v.clone(), vec![hb.clone()]);
    opts.instances
        .entry(sleep.clone())
        .or_default()
        .insert(v, vec![sl.clone()]);
    let ca = support::TestCa::new();
    let hb_cfg = sidecar(&mesh, &httpbin, &hb, &opts).expect("httpbin sidecar");
    let sl_cfg = sidecar(&mesh, &sleep, &sl, &opts).expect("sleep sidecar");
    let _hb = start_as(&hb_cfg, hb.inbound, &ca.identity(&httpbin.spiffe_id()));
    {
        let _sl = start_as(&sl_cfg, sl.outbound, &ca.identity(&sleep.spiffe_id()));
        let (status, _, body) = get(sl.outbound, "http://httpbin.demo:8000/get", "");
        assert_eq!((status, body.as_str()), (200, "1.0"));
        let (status, _, _) = get(sl.outbound, "http://httpbin:8000/status/418", "");
        assert_eq!(status, 200);
        let (status, _, body) = get(sl.outbound, "http://httpbin:8000/headers", "");
        assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
        let (status, _, _) = send(
            sl.outbound,
            "POST http://httpbin:8000/get HTTP/1.1\r\nHost: httpbin:8000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 403);
        // Normalised before RBAC: no dodging a path rule with dot segments.
        let (status, _, _) = get(sl.outbound, "http://httpbin:8000/status/../headers", "");
        assert_eq!(status, 403);
    }
    // A caller without a mesh certificate cannot reach a STRICT inbound.
    let (status, _, _) = get(hb.inbound, "http://httpbin/get", "");
    assert_eq!(status, 0, "plain text must not get an HTTP answer");
    // Another identity with a valid certificate: authenticated, not allowed.
    let imposter = ca.identity("spiffe://cluster.local/ns/demo/sa/curl");
    let sl2 = free_instance();
    let sl2_cfg = sidecar(&mesh, &sleep, &sl2, &opts).expect("sidecar");
    let _sl2 = start_as(&sl2_cfg, sl2.outbound, &imposter);
    let (status, _, body) = get(sl2.outbound, "http://httpbin:8000/get", "");
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
}

/// A caller no rule of the callee's AccessPolicy names is answered by its
/// own sidecar, exactly as the callee's RBAC would answer it (the callee
/// is not even running here), for plain HTTP and CONNECT.
#[test]
fn a_caller_no_rule_names_gets_403_from_its_own_sidecar() {
    let text = std::fs::read_to_string(support::root().join("examples/access-sleep-httpbin.yaml"))
        .expect("example");
    let curl = "---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: curl, namespace: demo}\nspec:\n  port: 8080\n  versions: [{version: \"1.0\", image: x}]\n";
    let (model, _) = packlight_model::load(&[(None, &format!("{text}\n{curl}"))], "default");
    let inst = free_instance();
    let cfg = sidecar(
        &model.mesh,
        &ServiceKey::new("demo", "curl"),
        &inst,
        &XdsOptions::default(),
    )
    .expect("sidecar");
    assert!(
        cfg.clusters.iter().all(|c| !c.name.contains("httpbin")),
        "no cluster of a service the caller may not call"
    );
    let _envoy = start(&cfg, inst.outbound);
    for url in [
        "http://httpbin:8000/get",
        "http://httpbin.demo.svc.cluster.local:8000/status/200",
        "http://httpbin.demo/get",
    ] {
        let (status, headers, body) = get(inst.outbound, url, "");
        assert_eq!(
            (status, body.as_str()),
            (403, "RBAC: access denied"),
            "{url}"
        );
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("text/plain"),
            "{url}"
        );
    }
    let (status, _, _) = send(
        inst.outbound,
        "CONNECT httpbin:8000 HTTP/1.1\r\nHost: httpbin:8000\r\n\r\n",
    );
    assert_eq!(status, 403);
    // Not a mesh service: still the egress deny's 502.
    let (status, _, _) = get(inst.outbound, "http://elsewhere:8000/get", "");
    assert_eq!(status, 502);
}

/// Whitelisted destinations are reachable through the sidecar, by plain
/// HTTP (absolute URI) and through a CONNECT tunnel; others are not.
#[test]
fn whitelisted_egress_is_reachable_over_http_and_connect() {
    // An app on another loopback address, outside the mesh.
    let l = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let ext = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nexternal",
            );
        }
    });
    let yaml = format!(
        "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{name: default, namespace: demo}}\nspec: {{egress: deny}}\n---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: sleep, namespace: demo}}\nspec:\n  port: 8080\n  versions: [{{version: \"1.0\", image: x}}]\n---\napiVersion: packlight.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {{name: sleep, namespace: demo}}\nspec:\n  service: sleep\n  hosts: [\"{ext}\"]\n"
    );
    let (model, _) = packlight_model::load(&[(None, &yaml)], "default");
    assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
    let inst = free_instance();
    let cfg = sidecar(
        &model.mesh,
        &ServiceKey::new("demo", "sleep"),
        &inst,
        &XdsOptions::default(),
    )
    .expect("sidecar");
    let _envoy = start(&cfg, inst.outbound);
    let (status, _, body) = get(inst.outbound, &format!("http://{ext}/x"), "");
    assert_eq!((status, body.as_str()), (200, "external"));
    // Another port of the same address is not whitelisted.
    let other = format!("127.0.0.2:{}", ext.port().wrapping_add(1));
    assert_eq!(get(inst.outbound, &format!("http://{other}/x"), "").0, 502);
    // CONNECT to the whitelisted authority: 200, then HTTP through the tunnel.
    let mut s = TcpStream::connect(inst.outbound).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("CONNECT {ext} HTTP/1.1\r\nHost: {ext}\r\n\r\n").as_bytes())
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(format!("GET /x HTTP/1.1\r\nHost: {ext}\r\n\r\n").as_bytes())
        .expect("write");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(String::from_utf8_lossy(&rest).ends_with("external"));
}
