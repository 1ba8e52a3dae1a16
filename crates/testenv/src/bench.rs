//! Finding or starting the one bench a test binary uses.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};

/// Names a running bench to reuse instead of starting one (its admin
/// kubeconfig, as printed by `scripts/testenv up`).
pub const KUBECONFIG_ENV: &str = "PACKLIGHT_TEST_KUBECONFIG";

/// A file to copy the bench's log (klog output of etcd, kube-apiserver and
/// the controllers) into; by default only its end is kept, for errors.
pub const LOG_ENV: &str = "PACKLIGHT_TESTENV_LOG";

/// How long the bench may take to start (etcd, API server, CRDs). A cold
/// build of the binary comes before and is not counted.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// The bench of this test binary: its admin kubeconfig, and the process when
/// we started it. Kept in a static that is never dropped: the bench's stdin
/// stays open until this process exits, and the bench exits on its EOF.
struct Bench {
    kubeconfig: PathBuf,
    _process: Option<Mutex<(Child, ChildStdin)>>,
}

static BENCH: OnceLock<Result<Bench, String>> = OnceLock::new();

/// The test bench, admin view: where it is and how to reach it.
///
/// Cheap to obtain and clone; make clients from it inside each test, because
/// a [`kube::Client`] belongs to the tokio runtime that created it and every
/// `#[tokio::test]` has its own runtime.
#[derive(Clone)]
pub struct TestEnv {
    kubeconfig: PathBuf,
    config: kube::Config,
}

/// Returns the bench of this test binary, starting it on first use.
///
/// With `PACKLIGHT_TEST_KUBECONFIG` set, that bench is used and nothing is
/// started. Otherwise the cached binary is built if needed
/// (`scripts/testenv build`) and started on a free loopback port with a
/// temporary data directory; it exits, and removes its data, when this test
/// binary exits. The first call blocks its thread until the API server is
/// ready; a failure to start is returned to every caller, never skipped.
pub async fn env() -> anyhow::Result<TestEnv> {
    let kubeconfig = match BENCH.get_or_init(|| start().map_err(|e| format!("{e:#}"))) {
        Ok(bench) => bench.kubeconfig.clone(),
        Err(e) => bail!("the Kubernetes test bench did not start: {e}"),
    };
    let file = Kubeconfig::read_from(&kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))?;
    Ok(TestEnv { kubeconfig, config })
}

impl TestEnv {
    /// The view of the bench whose admin kubeconfig is `kubeconfig`.
    pub(crate) fn new(kubeconfig: PathBuf, config: kube::Config) -> TestEnv {
        TestEnv { kubeconfig, config }
    }

    /// The admin kubeconfig (user in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin client configuration.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// A client with admin rights (`system:masters`).
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.config.clone())?)
    }

    /// A client that authenticates with a bearer token only (e.g. a service
    /// account token from the TokenRequest API), so RBAC decides what it may do.
    pub fn client_with_token(&self, token: &str) -> anyhow::Result<kube::Client> {
        let mut config = self.config.clone();
        config.auth_info =
            serde_json::from_value::<AuthInfo>(serde_json::json!({ "token": token }))?;
        Ok(kube::Client::try_from(config)?)
    }
}

fn start() -> anyhow::Result<Bench> {
    if let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|p| !p.is_empty()) {
        let kubeconfig = PathBuf::from(path);
        if !kubeconfig.is_file() {
            bail!("{KUBECONFIG_ENV}={} is not a file", kubeconfig.display());
        }
        return Ok(Bench {
            kubeconfig,
            _process: None,
        });
    }
    let (kubeconfig, child, stdin) = spawn()?;
    Ok(Bench {
        kubeconfig,
        _process: Some(Mutex::new((child, stdin))),
    })
}

/// Builds (if needed) and starts one bench process; returns its admin
/// kubeconfig once the API server is ready, with the process and its stdin
/// (the bench exits, removing its data, when that stdin closes).
pub(crate) fn spawn() -> anyhow::Result<(PathBuf, Child, ChildStdin)> {
    let binary = script("build")?;
    let crds = script("crds")?;
    let data_dir = std::env::temp_dir().join(format!(
        "packlight-testenv-{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    ));

    let mut child = Command::new(&binary)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--crds")
        .arg(&crds)
        .args(["--exit-on-stdin-eof", "--remove-data-dir"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdin = child.stdin.take().context("bench stdin")?;
    let stdout = child.stdout.take().context("bench stdout")?;
    let stderr = child.stderr.take().context("bench stderr")?;
    let log = LogTail::drain(stderr)?;

    // Read stdout on a thread (std pipes have no timeout); it keeps draining
    // after the KUBECONFIG line so the bench never blocks on a full pipe.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(path) = line.strip_prefix("KUBECONFIG=").filter(|_| !sent) {
                sent = tx.send(PathBuf::from(path)).is_ok();
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(kubeconfig) => Ok((kubeconfig, child, stdin)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&data_dir);
            Err(anyhow!(
                "{} did not become ready ({}); the end of its log:\n{}",
                binary.display(),
                match e {
                    mpsc::RecvTimeoutError::Timeout => "timed out",
                    mpsc::RecvTimeoutError::Disconnected => "it exited",
                },
                log.text()
            ))
        }
    }
}

/// The bench's log (its stderr): the last [`LogTail::KEEP`] bytes are kept
/// for error messages; with `PACKLIGHT_TESTENV_LOG=<file>` all of it is
/// also written to that file.
#[derive(Clone)]
struct LogTail(Arc<Mutex<VecDeque<u8>>>);

impl LogTail {
    const KEEP: usize = 16 * 1024;

    fn drain(mut stderr: ChildStderr) -> anyhow::Result<Self> {
        let mut file = match std::env::var_os(LOG_ENV).filter(|p| !p.is_empty()) {
            Some(path) => Some(
                std::fs::File::create(&path)
                    .with_context(|| format!("{LOG_ENV}={}", Path::new(&path).display()))?,
            ),
            None => None,
        };
        let tail = LogTail(Arc::default());
        let keep = tail.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                let chunk = buf.get(..n).unwrap_or_default();
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(chunk);
                }
                if let Ok(mut q) = keep.0.lock() {
                    q.extend(chunk);
                    let excess = q.len().saturating_sub(Self::KEEP);
                    q.drain(..excess);
                }
            }
        });
        Ok(tail)
    }

    fn text(&self) -> String {
        match self.0.lock() {
            Ok(q) => String::from_utf8_lossy(&q.iter().copied().collect::<Vec<u8>>()).into_owned(),
            Err(_) => String::from("(log unavailable)"),
        }
    }
}

/// `scripts/testenv` in this checkout.
pub(crate) fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testenv")
}

/// Runs `scripts/testenv <verb>` and returns the path it prints last.
fn script(verb: &str) -> anyhow::Result<PathBuf> {
    let script = script_path();
    let output = Command::new("bash")
        .arg(&script)
        .arg(verb)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} {verb}", script.display()))?;
    if !output.status.success() {
        bail!(
            "`{} {verb}` failed with {}",
            script.display(),
            output.status
        );
    }
    let stdout = String::from_utf8(output.stdout)?;
    let last = stdout.lines().last().unwrap_or_default().trim();
    if last.is_empty() {
        bail!("`{} {verb}` printed no path", script.display());
    }
    Ok(PathBuf::from(last))
}
