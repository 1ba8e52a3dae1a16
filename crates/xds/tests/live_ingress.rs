//! Real traffic through a real ingress gateway Envoy running the generated
//! config: grayscale at the ingress, CORS, CSRF, login (ext_authz against
//! an in-test login service) with its exclusions, local rate limit.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use packlight_xds::{XdsOptions, ingress_gateway};

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A tiny HTTP server: `answer(request head)` gives (status, body).
fn server(answer: fn(&str) -> (u16, String)) -> SocketAddr {
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
            let (status, body) = answer(&String::from_utf8_lossy(&got));
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    addr
}

fn send(to: SocketAddr, req: &str) -> (u16, String) {
    let mut s = TcpStream::connect(to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn req(method: &str, host: &str, path: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

fn version(answer: &str) -> &str {
    answer.rsplit("\r\n\r\n").next().unwrap_or("")
}

#[test]
fn ingress_gateway_serves_the_policies() {
    let v10 = server(|_| (200, "1.0".to_string()));
    let v11 = server(|_| (200, "1.1".to_string()));
    let v20 = server(|_| (200, "2.0".to_string()));
    // The login service: a session cookie passes, anything else is 401.
    let login = server(|head| {
        if head.to_ascii_lowercase().contains("cookie: session=ok") {
            (200, String::new())
        } else {
            (401, "{\"error\":\"login required\"}".to_string())
        }
    });
    let yaml = format!(
        r#"apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {{name: httpbin, namespace: demo}}
spec:
  port: 8000
  versions:
  - {{version: "1.0", endpoints: ["{v10}"]}}
  - {{version: "1.1", endpoints: ["{v11}"]}}
  - {{version: "2.0", endpoints: ["{v20}"]}}
---
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {{name: httpbin, namespace: demo}}
spec:
  service: httpbin
  rules:
  - {{version: "1.0", weight: 80}}
  - {{version: "1.1", weight: 20}}
  - {{version: "2.0", weight: 100}}
  - version: "2.0"
    matches: [{{headers: {{gray: {{exact: "1"}}}}}}]
---
apiVersion: packlight.dev/v1alpha1
kind: IngressPolicy
metadata: {{name: data, namespace: demo}}
spec:
  hosts: ["data.example.com"]
  routes:
  - {{pathPrefix: /httpbin, service: httpbin}}
  cors: {{allowOrigins: ["https://console.example.com"], allowMethods: [GET, POST], allowCredentials: true, maxAge: 1h}}
  csrf: {{enabled: true, exclude: ["/httpbin/webhooks"]}}
  login: {{provider: builtin, loginUrl: /login, exclude: ["/httpbin/status", "/httpbin/webhooks"]}}
---
apiVersion: packlight.dev/v1alpha1
kind: IngressPolicy
metadata: {{name: limited, namespace: demo}}
spec:
  hosts: ["limited.example.com"]
  routes:
  - {{pathPrefix: /, service: httpbin}}
  rateLimit: {{requests: 3, per: minute}}
"#
    );
    let (model, _) = packlight_model::load(&[(None, &yaml)], "default");
    assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
    let opts = XdsOptions {
        ingress: free_addr(),
        login: Some(login),
        ..XdsOptions::default()
    };
    let cfg = ingress_gateway(&model.mesh, &opts).expect("ingress");
    // The gateway's identity does not matter here: bootstrap() uses a
    // test identity too.
    let ca = support::TestCa::new();
    let id = ca.identity("spiffe://cluster.local/ns/test/sa/test");
    let _envoy = support::run_envoy(&cfg, &id, opts.ingress);
    let gw = opts.ingress;
    let host = "data.example.com";
    let session = "Cookie: session=ok\r\n";

    // Login: none -> 401 from the login service; with a session -> 200.
    let (status, _) = send(gw, &req("GET", host, "/httpbin/get", ""));
    assert_eq!(status, 401);
    let (status, a) = send(gw, &req("GET", host, "/httpbin/get", session));
    assert_eq!(status, 200, "{a}");
    assert!(
        a.to_ascii_lowercase().contains("x-packlight-version: "),
        "{a}"
    );
    // Login exclusion: no session needed; host with a port matches too.
    let (status, _) = send(
        gw,
        &req("GET", "data.example.com:8080", "/httpbin/status/200", ""),
    );
    assert_eq!(status, 200);

    // Grayscale at the ingress: /httpbin/v2 and gray: 1 reach 2.0.
    let (_, a) = send(gw, &req("GET", host, "/httpbin/v2/x", session));
    assert_eq!(version(&a), "2.0");
    let (_, a) = send(
        gw,
        &req(
            "GET",
            host,
            "/httpbin/anything",
            &format!("{session}gray: 1\r\n"),
        ),
    );
    assert_eq!(version(&a), "2.0");
    let (_, a) = send(gw, &req("GET", host, "/httpbin/v1/x", session));
    assert!(version(&a).starts_with("1."), "{a}");

    // CORS preflight: allowed origin gets the headers, a foreign one none.
    let pre = |origin: &str| {
        format!("Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n{session}")
    };
    let (_, a) = send(
        gw,
        &req(
            "OPTIONS",
            host,
            "/httpbin/get",
            &pre("https://console.example.com"),
        ),
    );
    assert!(
        a.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://console.example.com"),
        "{a}"
    );
    let (_, a) = send(
        gw,
        &req(
            "OPTIONS",
            host,
            "/httpbin/get",
            &pre("https://evil.example"),
        ),
    );
    assert!(
        !a.to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{a}"
    );

    // CSRF: foreign Origin 403, allowed CORS origin and same host pass,
    // no Origin at all 403; excluded prefix passes.
    let post = |extra: &str| {
        send(
            gw,
            &req("POST", host, "/httpbin/post", &format!("{session}{extra}")),
        )
    };
    assert_eq!(post("Origin: https://evil.example\r\n").0, 403);
    assert_eq!(post("Origin: https://console.example.com\r\n").0, 200);
    assert_eq!(post("Origin: http://data.example.com\r\n").0, 200);
    assert_eq!(post("").0, 403);
    let (status, _) = send(
        gw,
        &req(
            "POST",
            host,
            "/httpbin/webhooks/x",
            "Origin: https://evil.example\r\n",
        ),
    );
    assert_eq!(status, 200);

    // Rate limit: 3 per minute on limited.example.com, then 429.
    let statuses: Vec<u16> = (0..5)
        .map(|_| send(gw, &req("GET", "limited.example.com", "/get", "")).0)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // Unknown host: no virtual host (404), never another policy's routes.
    assert_eq!(
        send(
            gw,
            &req("GET", "other.example.com", "/httpbin/get", session)
        )
        .0,
        404
    );
}

/// The gateway reaches a STRICT sidecar over mTLS with its own identity,
/// which `ingress: true` in an AccessPolicy allows.
#[test]
fn ingress_reaches_a_strict_sidecar_with_its_identity() {
    let app = server(|_| (200, "1.0".to_string()));
    let text = std::fs::read_to_string(support::root().join("examples/access-sleep-httpbin.yaml"))
        .expect("example");
    let ingress = "\n---\napiVersion: packlight.dev/v1alpha1\nkind: IngressPolicy\nmetadata: {name: data, namespace: demo}\nspec:\n  hosts: [data.example.com]\n  routes: [{pathPrefix: /httpbin, service: httpbin}]\n";
    let (model, _) = packlight_model::load(&[(None, &format!("{text}{ingress}"))], "default");
    assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
    let httpbin = packlight_model::ir::ServiceKey::new("demo", "httpbin");
    let hb = packlight_xds::Instance {
        outbound: free_addr(),
        inbound: free_addr(),
        app,
    };
    let mut opts = XdsOptions {
        ingress: free_addr(),
        ..XdsOptions::default()
    };
    let v = "1.0".parse::<packlight_model::Version>().expect("version");
    opts.instances
        .entry(httpbin.clone())
        .or_default()
        .insert(v, vec![hb.clone()]);
    let ca = support::TestCa::new();
    let hb_cfg = packlight_xds::sidecar(&model.mesh, &httpbin, &hb, &opts).expect("sidecar");
    let _hb = support::run_envoy(&hb_cfg, &ca.identity(&httpbin.spiffe_id()), hb.inbound);
    let gw_cfg = ingress_gateway(&model.mesh, &opts).expect("ingress");
    let gw_id = ca.identity("spiffe://cluster.local/ns/packlight-system/sa/ingress");
    let _gw = support::run_envoy(&gw_cfg, &gw_id, opts.ingress);
    let (status, a) = send(
        opts.ingress,
        &req("POST", "data.example.com", "/httpbin/anything", ""),
    );
    assert_eq!(status, 200, "{a}");
    assert_eq!(version(&a), "1.0");
    // The same gateway with another identity is refused by RBAC.
    let other = XdsOptions {
        ingress: free_addr(),
        ..opts.clone()
    };
    let gw2_cfg = ingress_gateway(&model.mesh, &other).expect("ingress");
    let _gw2 = support::run_envoy(
        &gw2_cfg,
        &ca.identity("spiffe://cluster.local/ns/elsewhere/sa/gateway"),
        other.ingress,
    );
    let (status, a) = send(
        other.ingress,
        &req("GET", "data.example.com", "/httpbin/get", ""),
    );
    assert_eq!(status, 403, "{a}");
}
