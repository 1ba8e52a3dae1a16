//! The operator's own HTTP endpoints: `/healthz` (the process serves),
//! `/readyz` (a standby, or a leader whose watches have listed
//! everything), `/metrics` (Prometheus text format: reconciles, errors,
//! reconcile duration, writes by operation, objects managed, leader).
//!
//! Labels are bounded (operation names only): never a namespace, a
//! resource name or a path.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::Stats;

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(stats);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(stats): State<Arc<Stats>>) -> impl IntoResponse {
    let leading = stats.leader.load(Ordering::Relaxed) == 1;
    if !leading || stats.synced.load(Ordering::Relaxed) == 1 {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced")
    }
}

async fn metrics(State(stats): State<Arc<Stats>>) -> impl IntoResponse {
    match render(&stats) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "encoding failed".to_string(),
        ),
    }
}

/// The metrics in Prometheus/OpenMetrics text format.
pub fn render(stats: &Stats) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("packlight_operator");
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    r.register(
        "reconciles",
        "Namespace reconciles run",
        ConstCounter::new(load(&stats.reconciles)),
    );
    r.register(
        "reconcile_errors",
        "Namespace reconciles that failed (requeued with backoff)",
        ConstCounter::new(load(&stats.errors)),
    );
    r.register(
        "reconcile_duration_seconds",
        "Time per namespace reconcile",
        stats.duration.clone(),
    );
    let writes: Family<Vec<(String, String)>, prometheus_client::metrics::counter::Counter> =
        Family::default();
    for (op, n) in [
        ("apply", load(&stats.applies)),
        ("delete", load(&stats.deletes)),
        ("status", load(&stats.status_writes)),
    ] {
        writes
            .get_or_create(&vec![("operation".to_string(), op.to_string())])
            .inc_by(n);
    }
    r.register("writes", "Write requests sent to the API server", writes);
    r.register(
        "objects_managed",
        "Objects labelled managed-by packlight in the watched scope",
        ConstGauge::new(i64::try_from(load(&stats.managed)).unwrap_or(i64::MAX)),
    );
    r.register(
        "leader",
        "1 while this replica leads",
        ConstGauge::new(i64::try_from(load(&stats.leader)).unwrap_or(0)),
    );
    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_text_with_bounded_labels() {
        let stats = Stats::default();
        stats.applies.store(3, Ordering::Relaxed);
        stats.duration.observe(0.02);
        let text = render(&stats).unwrap();
        assert!(
            text.contains("packlight_operator_writes_total{operation=\"apply\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("packlight_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("packlight_operator_leader 0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
