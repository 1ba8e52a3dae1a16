//! The demo app over real sockets: echo, status codes, `/call` direct and
//! through an HTTP proxy, and `502` when the call itself fails.

use std::net::SocketAddr;

use packlight_demo_app::{Identity, router, router_via_proxy};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn identity(service: &str, version: &str) -> Identity {
    Identity {
        service: service.to_owned(),
        version: version.to_owned(),
    }
}

async fn start(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn echoes_identity_and_request_without_version_header() {
    let addr = start(router(identity("httpbin", "1.1")).unwrap()).await;
    let resp = client()
        .post(format!("http://{addr}/anything/x?debug=true&a=b"))
        .header("Gray", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-packlight-version").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["service"], "httpbin");
    assert_eq!(body["version"], "1.1");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/anything/x?debug=true&a=b");
    assert_eq!(body["headers"]["gray"], "1");
    assert_eq!(body["headers"]["host"], addr.to_string());
}

#[tokio::test]
async fn status_path_answers_that_status() {
    let addr = start(router(identity("s", "1.0")).unwrap()).await;
    for code in [200u16, 418, 503] {
        let resp = client()
            .get(format!("http://{addr}/status/{code}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code);
    }
    let resp = client()
        .get(format!("http://{addr}/status/abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn call_reports_upstream_status_body_and_headers() {
    let upstream = start(router(identity("httpbin", "2.0")).unwrap()).await;
    // `router` reads proxies from the environment; the proxied path is
    // tested below with `router_via_proxy`.
    let direct = start(router(identity("sleep", "1.0")).unwrap()).await;
    if std::env::var_os("HTTP_PROXY").is_some() || std::env::var_os("http_proxy").is_some() {
        return; // cannot test the direct path under a proxied environment
    }
    let resp = client()
        .get(format!("http://{direct}/call"))
        .query(&[
            ("url", format!("http://{upstream}/status/201")),
            ("method", "PUT".to_owned()),
            ("header", "X-One: 1".to_owned()),
            ("header", "X-Two:2".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 201);
    assert!(
        body["headers"]["content-type"]
            .as_str()
            .unwrap()
            .contains("json")
    );
    let inner: Value = serde_json::from_str(body["body"].as_str().unwrap()).unwrap();
    assert_eq!(inner["version"], "2.0");
    assert_eq!(inner["method"], "PUT");
    assert_eq!(inner["headers"]["x-one"], "1");
    assert_eq!(inner["headers"]["x-two"], "2");
}

/// A one-shot HTTP proxy on a real socket: records the request line it got
/// and answers with a fixed response.
async fn one_shot_proxy(answer: &'static str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        sock.write_all(answer.as_bytes()).await.unwrap();
        sock.shutdown().await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });
    (addr, task)
}

#[tokio::test]
async fn call_goes_through_the_proxy() {
    let (proxy, seen) = one_shot_proxy(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 6\r\nconnection: close\r\n\r\ndenied",
    )
    .await;
    let app =
        start(router_via_proxy(identity("sleep", "1.0"), &format!("http://{proxy}")).unwrap())
            .await;
    let resp = client()
        .get(format!("http://{app}/call"))
        .query(&[("url", "http://www.example.invalid/get?x=1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 502);
    assert_eq!(body["body"], "denied");
    let request = seen.await.unwrap();
    assert!(
        request.starts_with("GET http://www.example.invalid/get?x=1 HTTP/1.1\r\n"),
        "proxy saw {request:?}"
    );
}

#[tokio::test]
async fn failed_call_is_502_with_error() {
    // A port that was just free: connection refused.
    let free = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let app =
        start(router_via_proxy(identity("sleep", "1.0"), &format!("http://{free}")).unwrap()).await;
    let resp = client()
        .get(format!("http://{app}/call"))
        .query(&[("url", "http://httpbin:8000/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().len() > 3, "{body}");

    let resp = client()
        .get(format!("http://{app}/call"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(packlight_demo_app::serve(
        listener,
        identity("a", "1.0"),
        async {
            let _ = rx.await;
        },
    ));
    tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
