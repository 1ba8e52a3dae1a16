//! Process supervision: Envoys and workloads are started, restarted with
//! backoff when they exit, and stopped (their whole process group) when
//! the engine lets go of them or stops.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

/// How to start one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// A name for logs (`sidecar~demo~httpbin~v1-0~0`, `app demo/httpbin 1.0 #0`).
    pub name: String,
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// File that receives stdout and stderr (appended).
    pub log: PathBuf,
    /// A file the process writes once it is up (Envoy's
    /// `--admin-address-path`): removed before every start and whenever
    /// the process is down, so a reader never sees a dead run's.
    pub fresh: Option<PathBuf>,
}

/// A supervised process: restarted when it exits, until dropped or
/// [`Supervised::stop`]ped.
#[derive(Debug)]
pub struct Supervised {
    spec: Spec,
    stop: watch::Sender<bool>,
    pid: Arc<AtomicU32>,
    restarts: Arc<AtomicU32>,
    task: Option<tokio::task::JoinHandle<()>>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long is healthy again: backoff resets.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Time between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// Lines of a process's log quoted when it exits.
const TAIL_LINES: usize = 3;
/// At most this much of the log's end is read for them.
const TAIL_BYTES: u64 = 4096;

impl Supervised {
    /// Starts `spec` and keeps it running.
    pub fn start(spec: Spec) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let pid = Arc::new(AtomicU32::new(0));
        let restarts = Arc::new(AtomicU32::new(0));
        let task = {
            let spec = spec.clone();
            let pid = pid.clone();
            let restarts = restarts.clone();
            tokio::spawn(async move {
                let mut backoff = BACKOFF_MIN;
                loop {
                    // A stop that came as the backoff ended: never start
                    // again (it would remove a successor's fresh file).
                    if *stopped.borrow() {
                        forget(&spec);
                        return;
                    }
                    let started = tokio::time::Instant::now();
                    match spawn(&spec) {
                        Ok(mut child) => {
                            let id = child.id().unwrap_or(0);
                            pid.store(id, Ordering::Relaxed);
                            tracing::debug!(process = %spec.name, pid = id, "started");
                            tokio::select! {
                                status = child.wait() => {
                                    pid.store(0, Ordering::Relaxed);
                                    // What it wrote once up is stale now.
                                    forget(&spec);
                                    // The log's last lines say why (Envoy
                                    // prints a bad bootstrap or a port it
                                    // cannot bind there, then exits 1).
                                    let tail = log_tail(&spec.log, TAIL_LINES);
                                    tracing::warn!(process = %spec.name, ?status, log = %spec.log.display(), %tail, "exited; restarting");
                                }
                                _ = wait_stop(&mut stopped) => {
                                    terminate(id, &mut child).await;
                                    pid.store(0, Ordering::Relaxed);
                                    forget(&spec);
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::error!(process = %spec.name, program = %spec.program.display(), error = %e, "cannot start");
                        }
                    }
                    restarts.fetch_add(1, Ordering::Relaxed);
                    if started.elapsed() > HEALTHY_AFTER {
                        backoff = BACKOFF_MIN;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = wait_stop(&mut stopped) => {
                            forget(&spec);
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            })
        };
        Supervised {
            spec,
            stop,
            pid,
            restarts,
            task: Some(task),
        }
    }

    /// What it runs.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The current process id (0 while it is down).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// How many times it exited and was started again.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Stops the process group (SIGTERM, SIGKILL after a grace period) and
    /// waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Dropped without `stop`: signal the task; it kills the group.
        let _ = self.stop.send(true);
        let pid = self.pid();
        if pid != 0 {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
}

/// Resolves once a stop was requested (or the handle is gone).
async fn wait_stop(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// The last `n` non-empty lines of the file at `path` (from its last
/// [`TAIL_BYTES`]), joined by ` | `; empty when it cannot be read.
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text
        .lines()
        // A cut first line is partial: skip it unless the file is whole.
        .skip(usize::from(start > 0))
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let keep = lines.len().saturating_sub(n);
    lines.drain(..keep);
    lines.join(" | ")
}

/// Removes the spec's fresh file (nothing to do when there is none).
fn remove_fresh(spec: &Spec) -> std::io::Result<()> {
    match spec.fresh.as_deref().map(std::fs::remove_file) {
        None | Some(Ok(())) => Ok(()),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Some(Err(e)) => Err(e),
    }
}

/// The process is down: its fresh file no longer describes it.
fn forget(spec: &Spec) {
    if let Err(e) = remove_fresh(spec) {
        tracing::warn!(process = %spec.name, error = %e, "cannot remove its stale file");
    }
}

fn spawn(spec: &Spec) -> std::io::Result<tokio::process::Child> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    remove_fresh(spec)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let err = log.try_clone()?;
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        // Its own process group, so stopping it stops its children too.
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn()
}

async fn terminate(pid: u32, child: &mut tokio::process::Child) {
    if pid != 0 {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        if pid != 0 {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, script: &str) -> Spec {
        Spec {
            name: "test".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            log: dir.join("test.log"),
            fresh: None,
        }
    }

    #[test]
    fn log_tail_quotes_the_last_lines_of_a_whole_or_a_long_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        assert_eq!(log_tail(&path, 3), "", "no file");
        std::fs::write(&path, "one\n\ntwo\nthree\nfour\n\n").unwrap();
        assert_eq!(log_tail(&path, 3), "two | three | four");
        assert_eq!(log_tail(&path, 9), "one | two | three | four");
        // Longer than TAIL_BYTES: the cut first line is dropped.
        let long = format!("{}\nlast error\n", "x".repeat(TAIL_BYTES as usize * 2));
        std::fs::write(&path, long).unwrap();
        assert_eq!(log_tail(&path, 3), "last error");
    }

    #[tokio::test]
    async fn the_fresh_file_is_removed_before_every_start() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("address");
        std::fs::write(&fresh, "old").unwrap();
        // Each run appends whether it found the file, then writes it.
        let script = format!(
            "if [ -e {f} ]; then echo found; else echo absent; fi; echo run > {f}; exit 1",
            f = fresh.display()
        );
        let mut spec = spec(dir.path(), &script);
        spec.fresh = Some(fresh.clone());
        let s = Supervised::start(spec);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while s.restarts() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.stop().await;
        let log = std::fs::read_to_string(dir.path().join("test.log")).unwrap();
        let runs: Vec<&str> = log.lines().collect();
        assert!(runs.len() >= 2, "{log}");
        assert!(runs.iter().all(|l| *l == "absent"), "{log}");
        assert!(!fresh.exists(), "left behind by a stopped process");
    }

    #[tokio::test]
    async fn the_fresh_file_goes_when_the_process_exits_and_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("address");
        let marker = dir.path().join("ran");
        // The first run writes the file and exits; later runs never write
        // it (they sleep).
        let script = format!(
            "if [ -e {m} ]; then exec sleep 300; fi; touch {m}; echo up > {f}; sleep 0.3; exit 1",
            m = marker.display(),
            f = fresh.display()
        );
        let mut spec = spec(dir.path(), &script);
        spec.fresh = Some(fresh.clone());
        let s = Supervised::start(spec);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !fresh.exists() {
            assert!(tokio::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while s.restarts() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never exited");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Counted as exited (the restart is 200 ms away): already gone.
        assert!(!fresh.exists(), "a dead run's file is still there");
        // The second run writes nothing; stopping leaves nothing either.
        std::fs::write(&fresh, "planted").unwrap();
        s.stop().await;
        assert!(!fresh.exists(), "left behind by a stopped process");
    }

    #[tokio::test]
    async fn restarts_what_exits_and_stops_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let s = Supervised::start(spec(dir.path(), "echo $GREETING; exit 3"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while s.restarts() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(s.restarts() >= 2);
        s.stop().await;
        let log = std::fs::read_to_string(dir.path().join("test.log")).unwrap();
        assert!(log.lines().filter(|l| *l == "hello").count() >= 2);
    }

    #[tokio::test]
    async fn stop_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let s = Supervised::start(spec(dir.path(), &script));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        s.stop().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The grandchild is gone too: no process, or a zombie waiting for
        // a reaper (a container's init may not reap).
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        assert!(matches!(state, None | Some('Z') | Some('X')), "{stat}");
    }
}
