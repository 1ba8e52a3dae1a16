//! The standalone engine's commands: `up` runs it; `apply`, `get`,
//! `delete` talk to a running one through `packlight-client`; `user`
//! manages the login service's users in a data directory.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use packlight_client::{Client, ClientError, Outcome, plural_of};
use packlight_standalone::up::{UpOptions, UpOutcome, find_envoy, run};

use crate::input::read_all;
use crate::render::print_diags;
use crate::{DiagFormat, exit};

/// Where the standalone engine keeps its state, unless `--data-dir` says.
const DEFAULT_DATA_DIR: &str = ".packlight";

/// `packlight up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Resource files or directories to apply at start (`.yaml`, `.yml`, `.json`).
    pub paths: Vec<PathBuf>,
    /// Store, CA, API token, users and logs.
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "PACKLIGHT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The ingress gateway's port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub ingress_port: u16,
    /// The API's address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub api: SocketAddr,
    /// Lifetime of sidecar certificates (renewed at half of it), e.g. `24h`, `30s`.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,
    /// Envoy's log level.
    #[arg(long, default_value = "warning")]
    pub envoy_log_level: String,
    /// How long to wait for every proxy and app at start.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// How diagnostics are printed.
    #[arg(long, value_enum, default_value_t)]
    pub format: DiagFormat,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 30s, 5m, 24h)"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("not a duration: {s:?} (units ms, s, m, h)")),
    };
    Ok(Duration::from_secs(secs))
}

/// Logs to stderr, level from `PACKLIGHT_LOG` (default `info`), JSON when
/// `PACKLIGHT_LOG_FORMAT=json`.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PACKLIGHT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("PACKLIGHT_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the engine until SIGINT/SIGTERM.
pub fn up(args: UpArgs) -> anyhow::Result<u8> {
    init_logs();
    let texts = match read_all(&args.paths) {
        Ok(t) => t,
        Err(diags) => {
            print_diags(&diags, args.format)?;
            return Ok(exit::INVALID);
        }
    };
    let Some(envoy) = find_envoy() else {
        eprintln!(
            "packlight up: Envoy not found: set PACKLIGHT_ENVOY or put `envoy` on PATH \
             (scripts/install-envoy installs it)"
        );
        return Ok(exit::USAGE);
    };
    let opts = UpOptions {
        data_dir: args.data_dir,
        ingress: SocketAddr::from(([127, 0, 0, 1], args.ingress_port)),
        api: args.api,
        cert_ttl: args.cert_ttl,
        envoy,
        packlight: std::env::current_exe()?,
        envoy_log_level: args.envoy_log_level,
        ready_timeout: args.ready_timeout,
    };
    let texts = texts.into_iter().map(|t| (t.name, t.text)).collect();
    match runtime()?.block_on(run(opts, texts))? {
        UpOutcome::Stopped => Ok(exit::OK),
        UpOutcome::Refused(diags) => {
            print_diags(&diags, args.format)?;
            Ok(exit::INVALID)
        }
    }
}

/// How to reach a running engine.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The engine's API (else `PACKLIGHT_SERVER`, else http://127.0.0.1:7400).
    #[arg(long)]
    pub server: Option<String>,
    /// Its data directory, for the token (else `PACKLIGHT_TOKEN`).
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "PACKLIGHT_DATA_DIR")]
    pub data_dir: PathBuf,
}

impl ServerArgs {
    fn client(&self) -> Client {
        Client::from_env(self.server.as_deref(), &self.data_dir)
    }
}

/// `packlight apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Files, directories, or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace for resources without one.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Validate against the engine's state only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How diagnostics are printed.
    #[arg(long, value_enum, default_value_t)]
    pub format: DiagFormat,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn client_error(e: ClientError, format: DiagFormat) -> anyhow::Result<u8> {
    match e {
        ClientError::Unreachable { .. } => {
            eprintln!("packlight: {e}");
            Ok(exit::UNREACHABLE)
        }
        ClientError::Status { diagnostics, .. } => {
            print_diags(&diagnostics, format)?;
            Ok(exit::INVALID)
        }
        ClientError::Decode(_) => {
            eprintln!("packlight: {e}");
            Ok(exit::UNREACHABLE)
        }
    }
}

/// Applies files to a running engine: all of them in one change.
pub fn apply(args: ApplyArgs) -> anyhow::Result<u8> {
    let texts = match read_all(&args.files) {
        Ok(t) => t,
        Err(diags) => {
            print_diags(&diags, args.format)?;
            return Ok(exit::INVALID);
        }
    };
    let client = args.server.client();
    runtime()?.block_on(async {
        // One text per file keeps file names in diagnostics; the engine
        // validates each apply against its whole store.
        let mut code = exit::OK;
        for t in &texts {
            match client
                .apply(
                    &t.text,
                    Some(&t.name),
                    args.namespace.as_deref(),
                    args.dry_run,
                )
                .await
            {
                Ok(Outcome::Accepted(applied)) => {
                    print_diags(&applied.diagnostics, args.format)?;
                    for r in applied.results {
                        let dry = if args.dry_run { " (dry run)" } else { "" };
                        println!(
                            "{}/{} {}/{} {}{dry}",
                            r.kind.to_lowercase(),
                            r.name,
                            r.namespace,
                            r.name,
                            r.action
                        );
                    }
                }
                Ok(Outcome::Refused(diags)) => {
                    print_diags(&diags, args.format)?;
                    code = exit::INVALID;
                }
                Err(e) => return client_error(e, args.format),
            }
        }
        Ok(code)
    })
}

/// `packlight get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Kind: `routes`, `route`, `Route`, a short name...
    pub kind: String,
    /// One object's name (else all of the kind).
    pub name: Option<String>,
    /// Namespace (default `default`).
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output: a table, `yaml` or `json`.
    #[arg(short, long, value_parser = ["table", "yaml", "json"], default_value = "table")]
    pub output: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn condition(obj: &serde_json::Value, ty: &str) -> String {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .map(|c| c["status"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// Lists or shows objects of a running engine.
pub fn get(args: GetArgs) -> anyhow::Result<u8> {
    let Some(plural) = plural_of(&args.kind) else {
        eprintln!(
            "packlight get: unknown kind {:?}: one of microservices, routes, egresspolicies, \
             accesspolicies, meshpolicies, ingresspolicies",
            args.kind
        );
        return Ok(exit::USAGE);
    };
    let client = args.server.client();
    runtime()?.block_on(async {
        let items = match &args.name {
            Some(name) => match client.get(plural, &args.namespace, name).await {
                Ok(Some(v)) => vec![v],
                Ok(None) => {
                    eprintln!(
                        "packlight get: {plural} {}/{name} not found",
                        args.namespace
                    );
                    return Ok(exit::INVALID);
                }
                Err(e) => return client_error(e, DiagFormat::Text),
            },
            None => {
                let ns = (!args.all_namespaces).then_some(args.namespace.as_str());
                match client.list(plural, ns).await {
                    Ok(v) => v,
                    Err(e) => return client_error(e, DiagFormat::Text),
                }
            }
        };
        let mut out = std::io::stdout().lock();
        match args.output.as_str() {
            "json" if args.name.is_some() => {
                writeln!(out, "{}", serde_json::to_string_pretty(&items[0])?)?
            }
            "json" => writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?,
            "yaml" => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        writeln!(out, "---")?;
                    }
                    write!(out, "{}", serde_yaml::to_string(item)?)?;
                }
            }
            _ => {
                writeln!(
                    out,
                    "{:<16} {:<24} {:<9} {:<11} EXTRA",
                    "NAMESPACE", "NAME", "ACCEPTED", "PROGRAMMED"
                )?;
                for item in &items {
                    let extra = item["status"]["split"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| {
                            item["spec"]["service"]
                                .as_str()
                                .map(|s| format!("service={s}"))
                        })
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{:<16} {:<24} {:<9} {:<11} {extra}",
                        item["metadata"]["namespace"].as_str().unwrap_or(""),
                        item["metadata"]["name"].as_str().unwrap_or(""),
                        condition(item, "Accepted"),
                        condition(item, "Programmed"),
                    )?;
                }
            }
        }
        Ok(exit::OK)
    })
}

/// `packlight delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace (default `default`).
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Deletes one object of a running engine.
pub fn delete(args: DeleteArgs) -> anyhow::Result<u8> {
    let Some(plural) = plural_of(&args.kind) else {
        eprintln!("packlight delete: unknown kind {:?}", args.kind);
        return Ok(exit::USAGE);
    };
    let client = args.server.client();
    runtime()?.block_on(async {
        match client.delete(plural, &args.namespace, &args.name).await {
            Ok(Outcome::Accepted(true)) => {
                println!("{plural} {}/{} deleted", args.namespace, args.name);
                Ok(exit::OK)
            }
            Ok(Outcome::Accepted(false)) => {
                eprintln!(
                    "packlight delete: {plural} {}/{} not found",
                    args.namespace, args.name
                );
                Ok(exit::INVALID)
            }
            Ok(Outcome::Refused(diags)) => {
                print_diags(&diags, DiagFormat::Text)?;
                Ok(exit::INVALID)
            }
            Err(e) => client_error(e, DiagFormat::Text),
        }
    })
}

/// `packlight login-service`: the login service alone, for the Kubernetes
/// engine (Istio's CUSTOM provider points at it; `deploy/login.yaml`).
#[derive(Args, Debug)]
pub struct LoginServiceArgs {
    /// Listen address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Users, signing key (`users.json`, `auth-key`).
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "PACKLIGHT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The login page's path (the IngressPolicies' `login.loginUrl`).
    #[arg(long, default_value = "/login")]
    pub login_url: String,
    /// Session lifetime, e.g. `12h`.
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    pub session_ttl: Duration,
}

/// Runs the login service until SIGINT/SIGTERM.
pub fn login_service(args: LoginServiceArgs) -> anyhow::Result<u8> {
    init_logs();
    let opts = packlight_auth::AuthOptions {
        data_dir: args.data_dir,
        session_ttl: args.session_ttl,
        login_url: args.login_url,
        ..Default::default()
    };
    if let Err(e) = opts.validate() {
        eprintln!("packlight login-service: {e}");
        return Ok(exit::USAGE);
    }
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        tracing::info!(address = %listener.local_addr()?, "login service");
        packlight_auth::serve(listener, opts, async {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        })
        .await?;
        Ok(exit::OK)
    })
}

/// `packlight user`.
#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    /// The engine's data directory (the users' store lives there).
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "PACKLIGHT_DATA_DIR", global = true)]
    pub data_dir: PathBuf,
}

/// User management.
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user, or set a user's password.
    Add {
        /// User name.
        name: String,
        /// Read the password from stdin (first line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user.
    Remove {
        /// User name.
        name: String,
    },
    /// List users.
    List,
}

/// Manages the login service's users.
pub fn user(args: UserArgs) -> anyhow::Result<u8> {
    let store = packlight_auth::UserStore::open(&args.data_dir)?;
    match args.command {
        UserCommand::Add {
            name,
            password_stdin,
        } => {
            if !password_stdin {
                eprintln!("packlight user add: pass the password on stdin with --password-stdin");
                return Ok(exit::USAGE);
            }
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            let password = s.lines().next().unwrap_or("").to_string();
            if password.is_empty() {
                eprintln!("packlight user add: empty password");
                return Ok(exit::INVALID);
            }
            match store.add(&name, &password) {
                Ok(()) => {
                    println!("user {name} added");
                    Ok(exit::OK)
                }
                Err(e) => {
                    eprintln!("packlight user add: {e}");
                    Ok(exit::INVALID)
                }
            }
        }
        UserCommand::Remove { name } => match store.remove(&name)? {
            true => {
                println!("user {name} removed");
                Ok(exit::OK)
            }
            false => {
                eprintln!("packlight user remove: no user {name}");
                Ok(exit::INVALID)
            }
        },
        UserCommand::List => {
            for u in store.list()? {
                println!("{u}");
            }
            Ok(exit::OK)
        }
    }
}
