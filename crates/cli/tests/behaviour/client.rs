//! Sending a case's request the way its `from` says: through a workload's
//! sidecar (an HTTP proxy), through its demo-app's `/call`, to the
//! ingress gateway, or straight to an instance address; CONNECT tunnels
//! over a raw socket.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::check::Outcome;
use super::table::Request;

/// One request's timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A keep-alive client, optionally through an HTTP proxy.
pub fn client(proxy: Option<&str>) -> Result<reqwest::Client, String> {
    let b = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    let b = match proxy {
        Some(p) => b.proxy(reqwest::Proxy::all(format!("http://{p}")).map_err(|e| e.to_string())?),
        None => b.no_proxy(),
    };
    b.build().map_err(|e| e.to_string())
}

fn method(req: &Request) -> Result<reqwest::Method, String> {
    let m = req.method.as_deref().unwrap_or("GET");
    reqwest::Method::from_bytes(m.as_bytes()).map_err(|_| format!("bad method {m:?}"))
}

/// Sends `req` to `url` with `extra` headers (Host, session) added.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    req: &Request,
    extra: &[(String, String)],
) -> Result<Outcome, String> {
    let mut b = client.request(method(req)?, url);
    for (k, v) in req.headers.iter().chain(extra.iter().map(|(k, v)| (k, v))) {
        b = b.header(k.as_str(), v.as_str());
    }
    if let Some(body) = &req.body {
        b = b.body(body.clone());
    }
    Ok(match b.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = header_map(resp.headers());
            match resp.text().await {
                Ok(body) => Outcome::Response {
                    status,
                    headers,
                    body,
                },
                Err(e) => Outcome::Failed(chain(&e)),
            }
        }
        Err(e) => Outcome::Failed(chain(&e)),
    })
}

/// Asks the demo-app at `app` to call `req.url` (`GET /call`); unwraps
/// its report into the upstream's outcome.
pub async fn send_via_call(
    client: &reqwest::Client,
    app: &str,
    req: &Request,
) -> Result<Outcome, String> {
    let url = req.url.as_deref().ok_or("request.url is required")?;
    let mut query: Vec<(&str, String)> = vec![("url", url.to_owned())];
    if let Some(m) = &req.method {
        query.push(("method", m.clone()));
    }
    for (k, v) in &req.headers {
        query.push(("header", format!("{k}:{v}")));
    }
    let mut target =
        reqwest::Url::parse(&format!("http://{app}/call")).map_err(|e| e.to_string())?;
    target
        .query_pairs_mut()
        .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    let resp = match client.get(target).send().await {
        Ok(r) => r,
        Err(e) => {
            return Ok(Outcome::Failed(format!(
                "the demo-app itself: {}",
                chain(&e)
            )));
        }
    };
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    call_outcome(status, &text)
}

/// The outcome a demo-app's `/call` answer (`status`, JSON `text`)
/// reports: the called service's answer, or the call's failure.
pub fn call_outcome(status: u16, text: &str) -> Result<Outcome, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("/call answered {status} {text:?}: {e}"))?;
    if status == 502
        && let Some(err) = v.get("error").and_then(|e| e.as_str())
    {
        return Ok(Outcome::Failed(err.to_owned()));
    }
    if status != 200 {
        return Err(format!("/call answered {status}: {text}"));
    }
    let headers = v
        .get("headers")
        .and_then(|h| h.as_object())
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Outcome::Response {
        status: v.get("status").and_then(|s| s.as_u64()).unwrap_or(0) as u16,
        headers,
        body: v
            .get("body")
            .and_then(|b| b.as_str())
            .unwrap_or_default()
            .to_owned(),
    })
}

/// `CONNECT authority` through the proxy at `proxy`; on `200` and with
/// `tunnel` set, a `GET tunnel` through it, whose answer is the outcome.
/// A refused CONNECT is its status (or a failure when the proxy closes).
pub async fn connect(proxy: &str, authority: &str, tunnel: Option<&str>) -> Outcome {
    match tokio::time::timeout(REQUEST_TIMEOUT, connect_inner(proxy, authority, tunnel)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::Failed(format!("CONNECT {authority}: timed out")),
    }
}

async fn connect_inner(
    proxy: &str,
    authority: &str,
    tunnel: Option<&str>,
) -> Result<Outcome, String> {
    let mut s = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect {proxy}: {e}"))?;
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (status, headers, rest) = read_head(&mut s).await?;
    if status != 200 || tunnel.is_none() {
        return Ok(Outcome::Response {
            status,
            headers,
            body: String::from_utf8_lossy(&rest).into_owned(),
        });
    }
    let path = tunnel.unwrap_or("/");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let (status, headers, mut body) = read_head(&mut s).await?;
    let _ = s.read_to_end(&mut body).await;
    Ok(Outcome::Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Reads an HTTP/1 response head: status, headers, bytes after the head.
async fn read_head(s: &mut TcpStream) -> Result<(u16, BTreeMap<String, String>, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed without a response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, buf[end + 4..].to_vec()))
}

fn header_map(h: &reqwest::header::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in h {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        out.entry(k.as_str().to_owned())
            .and_modify(|x| {
                x.push_str(", ");
                x.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
