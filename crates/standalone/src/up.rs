//! `packlight up`: everything started in order, stopped on a signal.
//!
//! xDS server -> login service -> engine (store + CA) -> the resources
//! given -> gateway, sidecars and workloads -> ready -> API. The caller
//! (the CLI) reads the files and maps the outcome to an exit code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use packlight_model::Diagnostic;
use packlight_xds_server::{XdsEvent, XdsServer};
use tokio::sync::watch;

use crate::engine::{Engine, EngineConfig};
use crate::traffic::Traffic;

/// Settings of `packlight up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The data directory (store, CA, token, users, logs).
    pub data_dir: PathBuf,
    /// The ingress gateway's listener.
    pub ingress: SocketAddr,
    /// The API's listener.
    pub api: SocketAddr,
    /// Certificate lifetime.
    pub cert_ttl: Duration,
    /// Envoy binary.
    pub envoy: PathBuf,
    /// The packlight binary.
    pub packlight: PathBuf,
    /// Envoy's log level.
    pub envoy_log_level: String,
    /// How long to wait for every proxy and app to be ready.
    pub ready_timeout: Duration,
}

/// How `up` ended.
#[derive(Debug)]
pub enum UpOutcome {
    /// Stopped by a signal after running.
    Stopped,
    /// The resources were refused: nothing was started.
    Refused(Vec<Diagnostic>),
}

/// Finds Envoy: `PACKLIGHT_ENVOY`, else `envoy` on `PATH`.
pub fn find_envoy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PACKLIGHT_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("envoy"))
        .find(|p| p.is_file())
}

/// The API token of a data directory, created (random, 0600) if missing.
pub fn token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    let t: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir)?;
    crate::ca::write_private(&path, t.as_bytes(), true)?;
    Ok(t)
}

/// Runs the engine until SIGINT/SIGTERM. `texts` are the resources to
/// apply at start (file name, content); refused as a whole when invalid.
pub async fn run(opts: UpOptions, texts: Vec<(String, String)>) -> anyhow::Result<UpOutcome> {
    std::fs::create_dir_all(&opts.data_dir)?;
    let token = token(&opts.data_dir)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let xds = XdsServer::new();
    let xds_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let xds_addr = xds_listener.local_addr()?;
    let xds_task = tokio::spawn(xds.clone().serve(xds_listener, stopped(stop_rx.clone())));

    let login_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let login_addr = login_listener.local_addr()?;

    let engine = Engine::open(
        EngineConfig {
            data_dir: opts.data_dir.clone(),
            ingress: opts.ingress,
            cert_ttl: opts.cert_ttl,
            envoy: opts.envoy.clone(),
            packlight: opts.packlight.clone(),
            envoy_log_level: opts.envoy_log_level.clone(),
        },
        xds.clone(),
        xds_addr,
        Some(login_addr),
    )?;
    if !texts.is_empty() {
        let refs: Vec<(Option<&str>, &str)> = texts
            .iter()
            .map(|(f, t)| (Some(f.as_str()), t.as_str()))
            .collect();
        if let Err(refused) = engine.apply(&refs, "default", false).await? {
            let _ = stop_tx.send(true);
            return Ok(UpOutcome::Refused(refused.0));
        }
    }
    // The login page's path comes from what was accepted (the DIR given
    // and what the store already held).
    let auth = packlight_auth::AuthOptions {
        data_dir: opts.data_dir.clone(),
        login_url: engine.login_url().await,
        ..Default::default()
    };
    let login_task = tokio::spawn(packlight_auth::serve(
        login_listener,
        auth,
        stopped(stop_rx.clone()),
    ));
    let api_listener = tokio::net::TcpListener::bind(opts.api).await?;
    let api_addr = api_listener.local_addr()?;
    engine.start().await?;

    let traffic = Traffic::new(engine.clone());
    let traffic_task = tokio::spawn(traffic.clone().run(Duration::from_secs(2)));
    let rotation_task = {
        let engine = engine.clone();
        let every = (opts.cert_ttl / 10).clamp(Duration::from_millis(500), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = engine.rotate_certificates().await {
                    tracing::error!(error = %e, "certificate rotation");
                }
            }
        })
    };
    let nack_task = {
        let mut events = xds.events();
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(XdsEvent::Nack {
                        node,
                        type_url,
                        message,
                        ..
                    }) => {
                        tracing::warn!(%node, %type_url, %message, "an Envoy refused its config; it keeps the last good one");
                        engine.report_nack(&node, &message);
                    }
                    Ok(ev) => tracing::debug!(?ev, "xds"),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    };
    let app = crate::api::router(engine.clone(), traffic, token);
    let api_task = tokio::spawn({
        let stop = stopped(stop_rx.clone());
        async move {
            axum::serve(api_listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
    });

    println!("packlight: ingress http://{}", opts.ingress);
    println!(
        "packlight: api http://{api_addr} (token in {})",
        opts.data_dir.join("token").display()
    );
    if engine.wait_ready(opts.ready_timeout).await {
        println!("packlight: ready");
    } else {
        println!(
            "packlight: not every proxy is ready after {:?}; see {} (still running)",
            opts.ready_timeout,
            opts.data_dir.join("logs").display()
        );
    }

    wait_for_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    engine.stop().await;
    traffic_task.abort();
    rotation_task.abort();
    nack_task.abort();
    let _ = api_task.await;
    let _ = xds_task.await;
    let _ = login_task.await;
    Ok(UpOutcome::Stopped)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
