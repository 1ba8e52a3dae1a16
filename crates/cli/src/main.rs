//! # packlight — the command
//!
//! The edge: reads files and flags, calls the same code paths the
//! operator and the standalone engine run (model, translators), prints
//! results and diagnostics, and maps outcomes to exit codes
//! (0 ok, 1 invalid input or a refused change, 2 usage, 3 cannot reach the
//! engine). It builds no Istio or Envoy object by hand.
#![forbid(unsafe_code)]
// Diagnostics are large and returned only for rejected input (see
// packlight-model).
#![allow(clippy::result_large_err)]

mod input;
mod render;
mod standalone;

use std::process::ExitCode;

// Rendering builds and frees millions of small JSON nodes; glibc's malloc
// spent a third of `render` in consolidation and page faults (perf, see
// docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};

/// packlight: a small, declarative service-mesh API on Istio or on its own
/// Envoy proxies.
#[derive(Parser, Debug)]
#[command(name = "packlight", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Render packlight resources into Istio and Kubernetes objects.
    Render(render::RenderArgs),
    /// Validate packlight resources; print diagnostics only.
    Validate(render::ValidateArgs),
    /// Print packlight's CustomResourceDefinitions as YAML.
    Crds,
    /// Run the Kubernetes operator: reconcile packlight resources into Istio.
    Operator(packlight_operator::OperatorArgs),
    /// Run the standalone engine: the mesh on this machine with real Envoy.
    Up(standalone::UpArgs),
    /// Apply resources to a running standalone engine.
    Apply(standalone::ApplyArgs),
    /// Show resources of a running standalone engine.
    Get(standalone::GetArgs),
    /// Delete a resource of a running standalone engine.
    Delete(standalone::DeleteArgs),
    /// Run the login service alone (Kubernetes: Istio's CUSTOM provider).
    LoginService(standalone::LoginServiceArgs),
    /// Manage the login service's users (in the engine's data directory).
    User(standalone::UserArgs),
    /// Run the web console for standalone engines and Kubernetes contexts
    /// (see docs/console.md).
    Console(packlight_console::ConsoleArgs),
    /// Run the demo HTTP service (for demos and tests).
    #[command(disable_version_flag = true)]
    DemoApp(packlight_demo_app::DemoAppArgs),
}

/// How diagnostics are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DiagFormat {
    /// `file:line:column: Kind ns/name: field: message (hint)`.
    #[default]
    Text,
    /// A JSON list of diagnostics.
    Json,
}

/// Exit codes shared by every command.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Invalid input or a refused change.
    pub const INVALID: u8 = 1;
    /// Usage error (clap also exits with 2).
    pub const USAGE: u8 = 2;
    /// The engine cannot be reached.
    pub const UNREACHABLE: u8 = 3;
}

/// `packlight demo-app`: runs until SIGINT/SIGTERM; exit 0, or 1 on error.
fn demo_app(args: packlight_demo_app::DemoAppArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(packlight_demo_app::run(args)) {
        Ok(()) => Ok(exit::OK),
        Err(e) => {
            eprintln!("packlight demo-app: {e:#}");
            Ok(exit::INVALID)
        }
    }
}

/// `packlight operator`: runs until SIGINT/SIGTERM; exit 0, or 3 when the
/// API server cannot be reached.
fn operator(args: packlight_operator::OperatorArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(packlight_operator::run(args)) {
        Ok(()) => Ok(exit::OK),
        Err(e) => {
            eprintln!("packlight operator: {e:#}");
            Ok(exit::UNREACHABLE)
        }
    }
}

/// `packlight console`: runs until SIGINT/SIGTERM; exit 0, 2 on a usage
/// error (a flag, a listen address that is not loopback).
fn console(args: packlight_console::ConsoleArgs) -> anyhow::Result<u8> {
    standalone::init_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(packlight_console::run(args)) {
        Ok(()) => Ok(exit::OK),
        Err(e) => {
            eprintln!("packlight console: {e}");
            Ok(exit::USAGE)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render(args) => render::render(args),
        Command::Validate(args) => render::validate(args),
        Command::Crds => render::crds(),
        Command::DemoApp(args) => demo_app(args),
        Command::Operator(args) => operator(args),
        Command::Console(args) => console(args),
        Command::Up(args) => standalone::up(args),
        Command::Apply(args) => standalone::apply(args),
        Command::Get(args) => standalone::get(args),
        Command::Delete(args) => standalone::delete(args),
        Command::User(args) => standalone::user(args),
        Command::LoginService(args) => standalone::login_service(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("packlight: {e:#}");
            ExitCode::from(exit::USAGE)
        }
    }
}
