//! Kubernetes traffic: PromQL against a context's Prometheus
//! (`--prometheus CONTEXT=URL`).
//!
//! In: the Prometheus URL. Out: the same rows a standalone engine's
//! `GET /traffic` returns ([`VersionTraffic`]: requests/s, 5xx share,
//! p50/p99 latency, count, per service and version), so the traffic page,
//! its server-sent events and its chart are the same for both engines.
//! The console never scrapes Envoy itself; Prometheus does.
//!
//! Two sources, the first that has data:
//! * Istio's standard metrics, `istio_requests_total` and
//!   `istio_request_duration_milliseconds` (reporter `destination`), by
//!   `destination_service_namespace`, `destination_service_name` and
//!   `destination_version` (the pods' `version` label, packlight's `1.0`);
//! * else Envoy's own statistics of the callers' outbound subset clusters,
//!   as Istio's bootstrap tags them:
//!   `envoy_cluster_upstream_rq_total{cluster_name="outbound|PORT|v1-0|SERVICE.NS.svc.cluster.local"}`,
//!   `envoy_cluster_upstream_rq{response_code_class="5xx"}` (stock Envoy's
//!   default tags: `envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}`)
//!   and `envoy_cluster_upstream_rq_time_bucket`. Sidecars export them only
//!   when the mesh config keeps `cluster.outbound` stats
//!   (`packlight render --mesh-config`). The subset is packlight's name of
//!   the version ([`Version::subset`]: `v1-0` is `1.0`); ports are summed.
//!
//! Rates are the increase over the last [`WINDOW`] divided by its seconds,
//! not `rate()`: Envoy creates a cluster's stats on its first request
//! (Istio's bootstrap defers them) and Istio's counters appear per label
//! set, so a counter often *appears* with its first requests already
//! counted, which `rate()` and `increase()` ignore (a new 1.1 read 18 %
//! of an 80/20 split on the bench, and a burst of 500s read 0 errors).
//! [`window_increase`] counts a series that has no sample a window ago
//! from zero, and a counter that went down (a restarted proxy) as no
//! increase. This room never decides anything about the mesh; it reads
//! numbers.

use std::collections::BTreeMap;
use std::time::Duration;

use packlight_client::VersionTraffic;
use packlight_model::Version;
use serde::Deserialize;

/// The window of every rate and quantile: the page shows the last minute.
pub const WINDOW: &str = "1m";
/// [`WINDOW`] in seconds.
const WINDOW_SECONDS: u32 = 60;

/// PromQL for the increase of the counters `selector` over the last
/// [`WINDOW`], per series: the difference with the sample a window ago,
/// never below zero; for a series without a sample then (created since,
/// starting from zero), its value.
pub fn window_increase(selector: &str) -> String {
    format!("(clamp_min({selector} - {selector} offset {WINDOW}, 0) or {selector})")
}

/// How long to wait for a connection to Prometheus.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for one query's answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(8);

/// A context's Prometheus.
#[derive(Clone, Debug)]
pub struct Prometheus {
    /// Its base URL (`http://HOST:PORT`, maybe with a path prefix).
    pub url: String,
    http: reqwest::Client,
}

/// What reading traffic from Prometheus can fail at.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// No answer (refused, timed out, not HTTP).
    #[error("Prometheus at {url} does not answer: {reason}")]
    Unreachable {
        /// Its URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Prometheus answered with an error (a bad query, an overloaded
    /// server) or something that is not its API.
    #[error("Prometheus at {url} refused the query ({status}): {message}")]
    Refused {
        /// Its URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Its `errorType: error`, or the start of the body.
        message: String,
    },
    /// The URL is not an http:// URL.
    #[error("--prometheus {0}: expected http://HOST:PORT")]
    BadUrl(String),
}

/// Which metrics the rows came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `istio_requests_total` and `istio_request_duration_milliseconds`.
    Istio,
    /// Envoy's outbound subset cluster stats.
    EnvoyClusters,
}

/// The PromQL queries of one [`Family`], rates over [`WINDOW`].
#[derive(Clone, Debug, PartialEq)]
pub struct Queries {
    /// Requests per second.
    pub rate: String,
    /// 5xx answers per second.
    pub errors: String,
    /// Median latency, ms.
    pub p50: String,
    /// 99th percentile latency, ms.
    pub p99: String,
    /// Requests counted by the current proxies (the counters' sum).
    pub total: String,
}

/// Istio's labels that name a service version.
const ISTIO_BY: &str =
    "destination_service_namespace, destination_service_name, destination_version";
/// The label the Envoy queries group by: `SUBSET|FQDN` (the cluster name
/// without direction and port, so the ports of a service add up).
const ENVOY_TARGET: &str = "packlight_target";
/// Outbound clusters of one subset: `outbound|PORT|SUBSET|FQDN`.
const ENVOY_CLUSTERS: &str = r#"cluster_name=~"outbound\\|[0-9]+\\|[^|]+\\|.+""#;

impl Family {
    /// The queries of this family.
    pub fn queries(self) -> Queries {
        match self {
            Family::Istio => {
                let sel = r#"reporter="destination""#;
                let rate = |filter: &str| {
                    format!(
                        "sum by ({ISTIO_BY}) ({}) / {WINDOW_SECONDS}",
                        window_increase(&format!("istio_requests_total{{{sel}{filter}}}"))
                    )
                };
                let quantile = |q: &str| {
                    format!(
                        "histogram_quantile({q}, sum by ({ISTIO_BY}, le) ({}))",
                        window_increase(&format!(
                            "istio_request_duration_milliseconds_bucket{{{sel}}}"
                        ))
                    )
                };
                Queries {
                    rate: rate(""),
                    errors: rate(r#",response_code=~"5..""#),
                    p50: quantile("0.5"),
                    p99: quantile("0.99"),
                    total: format!("sum by ({ISTIO_BY}) (istio_requests_total{{{sel}}})"),
                }
            }
            Family::EnvoyClusters => {
                // label_replace keeps SUBSET|FQDN of outbound|PORT|SUBSET|FQDN.
                let target = |inner: String| {
                    format!(
                        r#"label_replace({inner}, "{ENVOY_TARGET}", "$1", "cluster_name", "outbound\\|[0-9]+\\|(.+)")"#
                    )
                };
                let increase = |metric: &str, filter: &str, by: &str| {
                    format!(
                        "sum by ({ENVOY_TARGET}{by}) ({})",
                        target(window_increase(&format!(
                            "{metric}{{{ENVOY_CLUSTERS}{filter}}}"
                        )))
                    )
                };
                let summed = |metric: &str, filter: &str, by: &str| {
                    format!("{} / {WINDOW_SECONDS}", increase(metric, filter, by))
                };
                let quantile = |q: &str| {
                    format!(
                        "histogram_quantile({q}, {})",
                        increase("envoy_cluster_upstream_rq_time_bucket", "", ", le")
                    )
                };
                Queries {
                    rate: summed("envoy_cluster_upstream_rq_total", "", ""),
                    errors: format!(
                        "({}) or ({})",
                        summed(
                            "envoy_cluster_upstream_rq",
                            r#",response_code_class="5xx""#,
                            ""
                        ),
                        summed(
                            "envoy_cluster_upstream_rq_xx",
                            r#",envoy_response_code_class="5""#,
                            ""
                        )
                    ),
                    p50: quantile("0.5"),
                    p99: quantile("0.99"),
                    total: format!(
                        "sum by ({ENVOY_TARGET}) ({})",
                        target(format!(
                            "envoy_cluster_upstream_rq_total{{{ENVOY_CLUSTERS}}}"
                        ))
                    ),
                }
            }
        }
    }

    /// `(namespace, service, version)` of one series' labels, or `None`
    /// when they name no packlight version (another DestinationRule's
    /// subset, a pod without `version`).
    pub fn key(self, labels: &BTreeMap<String, String>) -> Option<(String, String, String)> {
        match self {
            Family::Istio => {
                let ns = labels.get("destination_service_namespace")?;
                let svc = labels.get("destination_service_name")?;
                let version: Version = labels.get("destination_version")?.parse().ok()?;
                Some((ns.clone(), svc.clone(), version.to_string()))
            }
            Family::EnvoyClusters => {
                let (subset, fqdn) = labels.get(ENVOY_TARGET)?.split_once('|')?;
                let version = version_of_subset(subset)?;
                let mut parts = fqdn.split('.');
                let (svc, ns) = (parts.next()?, parts.next()?);
                if parts.next() != Some("svc") || svc.is_empty() || ns.is_empty() {
                    return None;
                }
                Some((ns.to_string(), svc.to_string(), version))
            }
        }
    }
}

/// The packlight version a DestinationRule subset names: the inverse of
/// [`Version::subset`] (`v1-0` → `1.0`, `v2-1-3` → `2.1.3`); `None` for a
/// subset packlight did not name.
pub fn version_of_subset(subset: &str) -> Option<String> {
    let dotted = subset.strip_prefix('v')?.replace('-', ".");
    let version: Version = dotted.parse().ok()?;
    (version.subset() == subset).then(|| version.to_string())
}

/// `GET /api/v1/query`'s answer.
#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Sample>,
}

/// One series of an instant vector: its labels and `[time, "value"]`.
#[derive(Debug, Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// An instant vector: each series' labels and value (`NaN` when
/// Prometheus says so, e.g. a quantile of no requests).
pub type Vector = Vec<(BTreeMap<String, String>, f64)>;

/// Decodes a query answer's body (any HTTP status: Prometheus puts its
/// error in the same JSON shape).
pub fn decode(url: &str, status: u16, body: &[u8]) -> Result<Vector, PrometheusError> {
    let refused = |message: String| PrometheusError::Refused {
        url: url.to_string(),
        status,
        message,
    };
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        let start: String = String::from_utf8_lossy(body).chars().take(200).collect();
        refused(format!("not a Prometheus query answer ({e}): {start}"))
    })?;
    if answer.status != "success" {
        return Err(refused(format!(
            "{}: {}",
            answer.error_type.unwrap_or_default(),
            answer.error.unwrap_or_default()
        )));
    }
    let data = answer
        .data
        .ok_or_else(|| refused("a success without data".into()))?;
    if data.result_type != "vector" {
        return Err(refused(format!(
            "expected an instant vector, got {}",
            data.result_type
        )));
    }
    Ok(data
        .result
        .into_iter()
        .map(|s| (s.metric, s.value.1.parse().unwrap_or(f64::NAN)))
        .collect())
}

/// The rows of one family's five answers, sorted by namespace, service,
/// version. Series naming no packlight version are left out; a version
/// with a rate and no latency (no request in the window) has `None`s.
pub fn rows(
    family: Family,
    rate: &Vector,
    errors: &Vector,
    p50: &Vector,
    p99: &Vector,
    total: &Vector,
) -> Vec<VersionTraffic> {
    type Key = (String, String, String);
    let index = |v: &Vector| -> BTreeMap<Key, f64> {
        let mut m = BTreeMap::new();
        for (labels, value) in v {
            if let Some(k) = family.key(labels) {
                *m.entry(k).or_insert(0.0) += value;
            }
        }
        m
    };
    let (errors, p50, p99, total) = (index(errors), index(p50), index(p99), index(total));
    let finite = |x: Option<&f64>| x.copied().filter(|x| x.is_finite());
    index(rate)
        .into_iter()
        .map(|(k, rps)| {
            let rps = if rps.is_finite() { rps } else { 0.0 };
            let errs = finite(errors.get(&k)).unwrap_or(0.0);
            VersionTraffic {
                requests_per_second: rps,
                error_rate: if rps > 0.0 {
                    (errs / rps).clamp(0.0, 1.0)
                } else {
                    0.0
                },
                p50_ms: finite(p50.get(&k)),
                p99_ms: finite(p99.get(&k)),
                // Counters are whole numbers; the cast drops float noise.
                requests_total: finite(total.get(&k)).map_or(0, |t| t.max(0.0).round() as u64),
                namespace: k.0,
                service: k.1,
                version: k.2,
            }
        })
        .collect()
}

impl Prometheus {
    /// A client for the Prometheus at `url` (`http://HOST:PORT`).
    pub fn new(url: &str) -> Result<Prometheus, PrometheusError> {
        if !url.starts_with("http://") {
            return Err(PrometheusError::BadUrl(url.to_string()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(QUERY_TIMEOUT)
            .build()
            .map_err(|e| PrometheusError::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Prometheus {
            url: url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// One instant query.
    pub async fn query(&self, promql: &str) -> Result<Vector, PrometheusError> {
        let unreachable = |e: reqwest::Error| PrometheusError::Unreachable {
            url: self.url.clone(),
            reason: error_chain(&e),
        };
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unreachable)?;
        decode(&self.url, status, &body)
    }

    /// Traffic per service and version over the last [`WINDOW`]: Istio's
    /// metrics when Prometheus has any, else Envoy's cluster stats.
    pub async fn traffic(&self) -> Result<(Family, Vec<VersionTraffic>), PrometheusError> {
        for family in [Family::Istio, Family::EnvoyClusters] {
            let q = family.queries();
            let (rate, errors, p50, p99, total) = tokio::try_join!(
                self.query(&q.rate),
                self.query(&q.errors),
                self.query(&q.p50),
                self.query(&q.p99),
                self.query(&q.total),
            )?;
            if family == Family::Istio && rate.is_empty() && total.is_empty() {
                continue;
            }
            return Ok((family, rows(family, &rate, &errors, &p50, &p99, &total)));
        }
        Ok((Family::EnvoyClusters, Vec::new()))
    }
}

/// An error and its causes (reqwest's own text says only "error sending
/// request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn subsets_map_back_to_versions() {
        assert_eq!(version_of_subset("v1-0").as_deref(), Some("1.0"));
        assert_eq!(version_of_subset("v2-1-3").as_deref(), Some("2.1.3"));
        for other in ["v1", "1-0", "v1-0-", "canary", "v01-0", ""] {
            assert_eq!(version_of_subset(other), None, "{other}");
        }
    }

    #[test]
    fn envoy_target_names_service_namespace_and_version() {
        let f = Family::EnvoyClusters;
        let key = |t: &str| f.key(&labels(&[(ENVOY_TARGET, t)]));
        assert_eq!(
            key("v1-1|httpbin.demo.svc.cluster.local"),
            Some(("demo".into(), "httpbin".into(), "1.1".into()))
        );
        assert_eq!(key("v1|reviews.bookinfo.svc.cluster.local"), None);
        assert_eq!(key("v1-0|example.com"), None);
    }

    #[test]
    fn decodes_a_vector_and_prometheus_errors() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"packlight_target":"v1-0|httpbin.demo.svc.cluster.local"},"value":[1764300000.1,"40.5"]},
            {"metric":{"packlight_target":"v1-1|httpbin.demo.svc.cluster.local"},"value":[1764300000.1,"NaN"]}]}}"#;
        let v = decode("http://p", 200, body).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].1, 40.5);
        assert!(v[1].1.is_nan());

        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        let e = decode("http://p", 400, bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "Prometheus at http://p refused the query (400): bad_data: parse error at char 5"
        );
        let html = decode("http://p", 404, b"<html>not found</html>")
            .unwrap_err()
            .to_string();
        assert!(html.contains("not a Prometheus query answer"), "{html}");
        assert!(html.contains("<html>not found"), "{html}");
    }

    #[test]
    fn rows_join_the_five_answers_and_sum_ports() {
        let f = Family::EnvoyClusters;
        let v1 = "v1-0|httpbin.demo.svc.cluster.local";
        let v2 = "v1-1|httpbin.demo.svc.cluster.local";
        let s = |t: &str, x: f64| (labels(&[(ENVOY_TARGET, t)]), x);
        let rate = vec![s(v1, 30.0), s(v1, 10.0), s(v2, 10.0), s("v1|x.y.svc", 5.0)];
        let errors = vec![s(v2, 1.0)];
        let p50 = vec![s(v1, 2.5), s(v2, f64::NAN)];
        let p99 = vec![s(v1, 9.0)];
        let total = vec![s(v1, 2400.0), s(v2, 600.0)];
        let r = rows(f, &rate, &errors, &p50, &p99, &total);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].version.as_str(), r[0].requests_per_second),
            ("1.0", 40.0)
        );
        assert_eq!((r[0].p50_ms, r[0].p99_ms), (Some(2.5), Some(9.0)));
        assert_eq!(r[0].requests_total, 2400);
        assert_eq!(r[0].error_rate, 0.0);
        assert_eq!((r[1].version.as_str(), r[1].error_rate), ("1.1", 0.1));
        assert_eq!((r[1].p50_ms, r[1].p99_ms), (None, None));
        assert_eq!(
            (r[1].namespace.as_str(), r[1].service.as_str()),
            ("demo", "httpbin")
        );
    }

    #[test]
    fn istio_rows_use_destination_version() {
        let l = labels(&[
            ("destination_service_namespace", "demo"),
            ("destination_service_name", "httpbin"),
            ("destination_version", "2.0"),
        ]);
        assert_eq!(
            Family::Istio.key(&l),
            Some(("demo".into(), "httpbin".into(), "2.0".into()))
        );
        let q = Family::Istio.queries();
        let sel = r#"istio_requests_total{reporter="destination"}"#;
        assert_eq!(
            q.rate,
            format!(
                "sum by (destination_service_namespace, destination_service_name, \
                 destination_version) ((clamp_min({sel} - {sel} offset 1m, 0) or {sel})) / 60"
            )
        );
        assert!(q.errors.contains(r#"response_code=~"5..""#), "{}", q.errors);
    }

    #[test]
    fn envoy_queries_select_outbound_subset_clusters() {
        let q = Family::EnvoyClusters.queries();
        let sel =
            r#"envoy_cluster_upstream_rq_total{cluster_name=~"outbound\\|[0-9]+\\|[^|]+\\|.+"}"#;
        assert_eq!(
            q.rate,
            format!(
                r#"sum by (packlight_target) (label_replace((clamp_min({sel} - {sel} offset 1m, 0) or {sel}), "packlight_target", "$1", "cluster_name", "outbound\\|[0-9]+\\|(.+)")) / 60"#
            )
        );
        assert!(
            q.p99
                .starts_with("histogram_quantile(0.99, sum by (packlight_target, le)")
        );
        assert!(q.errors.contains(r#"response_code_class="5xx""#));
        assert!(q.errors.contains(r#"envoy_response_code_class="5""#));
    }
}
