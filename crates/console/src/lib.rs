//! # packlight-console — the web console
//!
//! The room where people look at and steer their meshes: `packlight
//! console` serves server-rendered pages (maud) with htmx for the round
//! trips and uPlot for the traffic chart, both embedded in the binary
//! ([`assets`]). Every `--standalone URL` is a `packlight up` engine, talked
//! to through `packlight-client` (never the engine's own code); every
//! `--context` of a kubeconfig is a Kubernetes cluster, talked to with that
//! context's credentials only ([`kubernetes`]), its traffic read with
//! PromQL from the context's Prometheus ([`prometheus`]). Validation,
//! the preview of where sample requests go and the diff are computed here by
//! the same `packlight-model` code the CLI and the engines run; no rule is
//! written again in JavaScript.
//!
//! Security: the console listens on loopback only, requires a random token
//! (printed at start, or `--token`) that the first visit turns into an
//! HttpOnly, SameSite=Strict cookie, and every form carries a CSRF token.
//! Nothing is served from a CDN.
#![forbid(unsafe_code)]
// Diagnostics are large and returned only for rejected input (see
// packlight-model).
#![allow(clippy::result_large_err)]

pub mod assets;
mod auth;
pub mod cluster;
pub mod diff;
pub mod edit;
pub mod kubernetes;
pub mod match_form;
pub mod pages;
pub mod policies;
pub mod prometheus;
mod server;
pub mod yaml;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use cluster::{Cluster, Reach, Snapshot};
pub use server::router;

/// `packlight console` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsoleArgs {
    /// Where to listen (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// A standalone engine (`packlight up`): `URL`, or `URL#TOKEN_FILE`
    /// to read its API token from that file (the engine's
    /// `DATA_DIR/token`). Without `#`: `PACKLIGHT_TOKEN`, else
    /// `.packlight/token`. Repeatable.
    #[arg(long = "standalone", value_name = "URL[#TOKEN_FILE]")]
    pub standalone: Vec<String>,
    /// Kubeconfig for Kubernetes clusters (default: `KUBECONFIG`, else
    /// `~/.kube/config`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context to show as a cluster, with its credentials
    /// (repeatable; default with --kubeconfig: the current context).
    #[arg(long = "context", value_name = "NAME")]
    pub contexts: Vec<String>,
    /// The Prometheus of a context (`CONTEXT=URL`, http): the source of
    /// its traffic page (repeatable, one per context).
    #[arg(long = "prometheus", value_name = "CONTEXT=URL")]
    pub prometheus: Vec<String>,
    /// The console's access token (default: random, printed at start).
    #[arg(long, env = "PACKLIGHT_CONSOLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// What `packlight console` can fail at.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A flag is wrong.
    #[error("{0}")]
    Usage(String),
    /// The listener could not be bound or served.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No random bytes for the token.
    #[error("no random source for the console token: {0}")]
    Random(String),
}

/// The console's state: its clusters and its secrets.
#[derive(Debug)]
pub struct Console {
    /// The clusters, in the order given.
    pub clusters: Vec<Cluster>,
    /// The access token (cookie value).
    pub token: String,
    /// The CSRF token every form and htmx call carries.
    pub csrf: String,
}

impl Console {
    /// A console over `clusters` with `token` (random when `None`).
    pub fn new(clusters: Vec<Cluster>, token: Option<String>) -> Result<Self, ConsoleError> {
        let token = match token {
            Some(t) if !t.is_empty() => t,
            _ => auth::random_hex()?,
        };
        Ok(Console {
            clusters,
            token,
            csrf: auth::random_hex()?,
        })
    }
}

/// The clusters named by the flags: the standalone engines, then the
/// kubeconfig contexts. Must run inside the runtime that serves the
/// console (Kubernetes clients belong to it).
pub async fn clusters_from_args(args: &ConsoleArgs) -> Result<Vec<Cluster>, ConsoleError> {
    let kubernetes = args.kubeconfig.is_some() || !args.contexts.is_empty();
    if args.standalone.is_empty() && !kubernetes {
        return Err(ConsoleError::Usage(
            "no cluster: give --standalone URL[#TOKEN_FILE] or --kubeconfig PATH [--context NAME] \
             at least once"
                .into(),
        ));
    }
    let mut clusters: Vec<Cluster> = args
        .standalone
        .iter()
        .map(|s| Cluster::standalone_from_flag(s).map_err(ConsoleError::Usage))
        .collect::<Result<_, _>>()?;
    if kubernetes {
        let mut contexts = kubernetes::load(args.kubeconfig.as_deref(), &args.contexts)
            .await
            .map_err(ConsoleError::Usage)?;
        attach_prometheus(&mut contexts, &args.prometheus)?;
        clusters.extend(contexts.into_iter().map(Cluster::kubernetes));
    } else if let Some(flag) = args.prometheus.first() {
        return Err(ConsoleError::Usage(format!(
            "--prometheus {flag}: Prometheus serves Kubernetes contexts; give --kubeconfig or \
             --context"
        )));
    }
    Ok(clusters)
}

/// Gives each context named by a `--prometheus CONTEXT=URL` flag its
/// Prometheus; a context not shown, a second URL for one context or a URL
/// that is not http:// is refused.
pub fn attach_prometheus(
    contexts: &mut [kubernetes::KubeCluster],
    flags: &[String],
) -> Result<(), ConsoleError> {
    for flag in flags {
        let Some((name, url)) = flag.split_once('=') else {
            return Err(ConsoleError::Usage(format!(
                "--prometheus {flag}: expected CONTEXT=URL"
            )));
        };
        let known = contexts
            .iter()
            .map(|c| c.context.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let Some(context) = contexts.iter_mut().find(|c| c.context == name) else {
            return Err(ConsoleError::Usage(format!(
                "--prometheus {flag}: {name} is not one of the contexts shown ({known})"
            )));
        };
        if context.prometheus.is_some() {
            return Err(ConsoleError::Usage(format!(
                "--prometheus {flag}: {name} has a Prometheus already"
            )));
        }
        let p = prometheus::Prometheus::new(url)
            .map_err(|e| ConsoleError::Usage(format!("--prometheus {flag}: {e}")))?;
        context.prometheus = Some(p);
    }
    Ok(())
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Arc<Console>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(console))
        .with_graceful_shutdown(shutdown)
        .await
}

/// `packlight console`: binds, prints the URL with the token, serves
/// until SIGINT or SIGTERM.
pub async fn run(args: ConsoleArgs) -> Result<(), ConsoleError> {
    if !args.listen.ip().is_loopback() {
        return Err(ConsoleError::Usage(format!(
            "--listen {}: the console listens on loopback only",
            args.listen
        )));
    }
    let clusters = clusters_from_args(&args).await?;
    let console = Arc::new(Console::new(clusters, args.token.clone())?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ConsoleError::Listen {
            addr: args.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ConsoleError::Listen {
            addr: args.listen,
            source,
        })?;
    println!(
        "packlight console: http://{addr}/login?token={}",
        console.token
    );
    tracing::info!(%addr, clusters = console.clusters.len(), "console listening");
    serve(listener, console, shutdown_signal())
        .await
        .map_err(|source| ConsoleError::Listen { addr, source })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context that is never called (a client for a URL nothing serves).
    fn context(name: &str) -> kubernetes::KubeCluster {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        kubernetes::KubeCluster {
            client: kube::Client::try_from(config).unwrap(),
            context: name.into(),
            namespace: "default".into(),
            prometheus: None,
        }
    }

    fn attach(flags: &[&str]) -> Result<Vec<Option<String>>, String> {
        let mut contexts = vec![context("eu"), context("us")];
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        attach_prometheus(&mut contexts, &flags).map_err(|e| e.to_string())?;
        Ok(contexts
            .iter()
            .map(|c| c.prometheus.as_ref().map(|p| p.url.clone()))
            .collect())
    }

    #[tokio::test]
    async fn prometheus_flags_name_a_shown_context_once() {
        assert_eq!(
            attach(&["us=http://127.0.0.1:9090/"]).unwrap(),
            [None, Some("http://127.0.0.1:9090".to_string())]
        );
        let refused = |flags: &[&str], want: &str| {
            let e = attach(flags).unwrap_err();
            assert!(e.contains(want), "{flags:?}: {e}");
        };
        refused(
            &["asia=http://p:9090"],
            "asia is not one of the contexts shown (eu, us)",
        );
        refused(
            &["eu=http://a:9090", "eu=http://b:9090"],
            "eu has a Prometheus already",
        );
        refused(&["eu=https://p:9090"], "expected http://HOST:PORT");
        refused(&["http://p:9090"], "expected CONTEXT=URL");
    }

    #[tokio::test]
    async fn prometheus_without_a_context_is_refused() {
        let args = ConsoleArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            standalone: vec!["http://127.0.0.1:7400".into()],
            kubeconfig: None,
            contexts: vec![],
            prometheus: vec!["eu=http://127.0.0.1:9090".into()],
            token: None,
        };
        let e = clusters_from_args(&args).await.unwrap_err().to_string();
        assert!(e.contains("Prometheus serves Kubernetes contexts"), "{e}");
    }
}
