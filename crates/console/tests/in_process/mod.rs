//! The console run in the test's own process from command-line flags, as
//! `packlight console` would parse them (`kubernetes.rs` and
//! `kubernetes_traffic.rs`: their Kubernetes contexts are files the test
//! writes, so there is no binary to start).

use std::sync::Arc;

use clap::Parser;
use packlight_console::{Console, ConsoleArgs, clusters_from_args};
use tokio::sync::oneshot;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    console: ConsoleArgs,
}

/// The flags as `packlight console` parses them.
pub fn args(flags: &[&str]) -> anyhow::Result<ConsoleArgs> {
    let mut argv = vec!["console", "--listen", "127.0.0.1:0", "--token", "t0ken"];
    argv.extend(flags);
    Ok(Flags::try_parse_from(argv)?.console)
}

/// The console, in this process, on the given flags; its base URL and
/// login URL. Stopped when the sender drops.
pub async fn console(flags: &[&str]) -> anyhow::Result<(String, String, oneshot::Sender<()>)> {
    let args = args(flags)?;
    let clusters = clusters_from_args(&args).await?;
    let console = Arc::new(Console::new(clusters, args.token.clone())?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(packlight_console::serve(listener, console, async {
        let _ = rx.await;
    }));
    Ok((base.clone(), format!("{base}/login?token=t0ken"), tx))
}
