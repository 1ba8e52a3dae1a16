//! Traffic per service and version, from the engine's own Envoys: each
//! sidecar's inbound cluster (`inbound|PORT||`, the calls its app served)
//! is sampled from its admin `/stats`; rates are differences between two
//! samples (never lifetime counters), latency quantiles are Envoy's own
//! interval histograms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::engine::Engine;

pub use packlight_client::types::VersionTraffic;

/// Namespace, service, version.
type VersionKey = (String, String, String);

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    total: u64,
    errors: u64,
}

#[derive(Default)]
struct TrafficState {
    last: BTreeMap<VersionKey, (Instant, Sample)>,
    report: Vec<VersionTraffic>,
}

/// The sampler (cheap handle).
#[derive(Clone)]
pub struct Traffic {
    engine: Engine,
    state: Arc<Mutex<TrafficState>>,
}

/// One instance's inbound counters and quantiles.
struct InstanceStats {
    total: u64,
    errors: u64,
    p50: Option<f64>,
    p99: Option<f64>,
}

impl Traffic {
    /// A sampler of `engine`'s sidecars.
    pub fn new(engine: Engine) -> Self {
        Traffic {
            engine,
            state: Arc::default(),
        }
    }

    /// Samples every `interval` until the task is dropped.
    pub async fn run(self, interval: Duration) {
        loop {
            self.sample().await;
            tokio::time::sleep(interval).await;
        }
    }

    /// The latest report.
    pub async fn report(&self) -> Vec<VersionTraffic> {
        self.state.lock().await.report.clone()
    }

    /// Takes one sample of every sidecar.
    pub async fn sample(&self) {
        let mut per_version: BTreeMap<VersionKey, (Sample, Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for inst in self.engine.instances().await {
            if inst.service == "ingress" && inst.namespace == "packlight-system" {
                continue;
            }
            let Ok(admin) = inst.admin.parse::<SocketAddr>() else {
                continue;
            };
            let Some(stats) = inbound_stats(admin).await else {
                continue;
            };
            let e = per_version
                .entry((inst.namespace, inst.service, inst.version))
                .or_default();
            e.0.total += stats.total;
            e.0.errors += stats.errors;
            e.1.extend(stats.p50);
            e.2.extend(stats.p99);
        }
        let now = Instant::now();
        let mut st = self.state.lock().await;
        let mut report = Vec::new();
        let mut last = BTreeMap::new();
        for (key, (sample, p50, p99)) in per_version {
            let (rps, err) = match st.last.get(&key) {
                Some((t, prev)) if sample.total >= prev.total => {
                    let dt = now.duration_since(*t).as_secs_f64().max(0.001);
                    let dn = sample.total - prev.total;
                    let de = sample.errors.saturating_sub(prev.errors);
                    (
                        dn as f64 / dt,
                        if dn == 0 { 0.0 } else { de as f64 / dn as f64 },
                    )
                }
                _ => (0.0, 0.0),
            };
            report.push(VersionTraffic {
                namespace: key.0.clone(),
                service: key.1.clone(),
                version: key.2.clone(),
                requests_per_second: rps,
                error_rate: err,
                p50_ms: max(&p50),
                p99_ms: max(&p99),
                requests_total: sample.total,
            });
            last.insert(key, (now, sample));
        }
        st.last = last;
        st.report = report;
    }
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

/// GET on an Envoy admin port (HTTP/1.1, `Connection: close`, read to the
/// end; Envoy refuses HTTP/1.0 with 426), bounded in
/// time.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        let chunked = head
            .lines()
            .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
        if chunked {
            dechunk(body)
        } else {
            Some(body.to_string())
        }
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

async fn inbound_stats(admin: SocketAddr) -> Option<InstanceStats> {
    let body = admin_get(
        admin,
        "/stats?format=json&filter=%5Ecluster%5C.inbound%5C%7C",
    )
    .await?;
    let v: Value = serde_json::from_str(&body).ok()?;
    let mut out = InstanceStats {
        total: 0,
        errors: 0,
        p50: None,
        p99: None,
    };
    for stat in v["stats"].as_array()? {
        if let Some(name) = stat["name"].as_str() {
            let n = stat["value"].as_u64().unwrap_or(0);
            if name.ends_with(".upstream_rq_total") {
                out.total += n;
            } else if name.ends_with(".upstream_rq_5xx") {
                out.errors += n;
            }
        }
        let h = &stat["histograms"];
        if h.is_object() {
            let q = h["supported_quantiles"].as_array();
            let idx = |want: f64| q.and_then(|q| q.iter().position(|x| x.as_f64() == Some(want)));
            for cq in h["computed_quantiles"].as_array().into_iter().flatten() {
                if !cq["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(".upstream_rq_time"))
                {
                    continue;
                }
                let values = cq["values"].as_array();
                let at = |i: Option<usize>| {
                    i.and_then(|i| values.and_then(|v| v.get(i)))
                        .and_then(|x| x["interval"].as_f64())
                };
                out.p50 = at(idx(50.0));
                out.p99 = at(idx(99.0));
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dechunks() {
        assert_eq!(
            super::dechunk("4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\n").as_deref(),
            Some("abcdef")
        );
        assert_eq!(super::dechunk("zz\r\n"), None);
    }
}
