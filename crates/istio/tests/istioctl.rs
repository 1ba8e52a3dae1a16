//! Istio's own checks on every rendered object: `istioctl validate` on
//! each input's rendering, and `istioctl analyze --use-kube=false` on
//! each alone and on all together. Analyzer messages must be exactly the
//! allow-list documented in docs/testing.md ("Istio validation"): a new
//! warning fails the test. Negative tests prove the checks can fail.
//!
//! istioctl: `$PACKLIGHT_ISTIOCTL`, else the pinned build of
//! `scripts/build-istio-tools` (`$CACHE/istio-KEY/bin/istioctl`), else
//! `$CACHE/bin/istioctl`, with `CACHE=${PACKLIGHT_CACHE:-$HOME/.cache/packlight}`.
//! Missing, the test fails (never skips): run `scripts/build-istio-tools`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use packlight_istio::{RenderOptions, render};

/// Analyzer codes packlight's output is allowed to produce, with why
/// (docs/testing.md explains each).
const ALLOWED_ANALYZE: &[&str] = &[
    // "EnvoyFilter exposes internal implementation details": CSRF and
    // local rate limiting have no Istio API but EnvoyFilter.
    "IST0133",
];

/// `istioctl validate` warnings allowed (substring of the message).
const ALLOWED_VALIDATE: &[&str] = &["EnvoyFilter exposes internal implementation details"];

fn istioctl() -> PathBuf {
    if let Some(p) = std::env::var_os("PACKLIGHT_ISTIOCTL") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("PACKLIGHT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/packlight")
        });
    // Where scripts/build-istio-tools puts the pinned build: keyed by the
    // hash of tools/istio's go.mod, go.sum and tools.go.
    let key = Command::new("sh")
        .arg("-c")
        .arg("cat go.mod go.sum tools.go | sha256sum | cut -c1-16")
        .current_dir(common::root().join("tools/istio"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(key) = key.filter(|k| k.len() == 16) {
        let pinned = cache.join(format!("istio-{key}/bin/istioctl"));
        if pinned.is_file() {
            return pinned;
        }
    }
    cache.join("bin/istioctl")
}

fn checked_istioctl() -> PathBuf {
    let bin = istioctl();
    assert!(
        bin.is_file(),
        "istioctl not found at {} (set PACKLIGHT_ISTIOCTL, or run scripts/build-istio-tools to build the pinned one)",
        bin.display()
    );
    bin
}

struct Run {
    ok: bool,
    text: String,
}

fn run(args: &[&str], files: &[PathBuf]) -> Run {
    let out = Command::new(checked_istioctl())
        .args(args)
        .args(files)
        .output()
        .expect("istioctl runs");
    Run {
        ok: out.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn validate(file: &Path) -> Run {
    run(&["validate", "-f"], &[file.to_path_buf()])
}

fn analyze(files: &[PathBuf]) -> Run {
    run(&["analyze", "--use-kube=false", "-A"], files)
}

/// Analyzer codes in a log-format output: `Warning [IST0133] (...)`.
fn codes(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (level, rest) = l.split_once(" [")?;
            let (code, _) = rest.split_once(']')?;
            matches!(level, "Error" | "Warning" | "Info")
                .then(|| (level.to_string(), code.to_string()))
        })
        .collect()
}

fn write_renderings(dir: &Path) -> Vec<PathBuf> {
    common::inputs()
        .into_iter()
        .map(|(name, path)| {
            let file = dir.join(format!("{name}.yaml"));
            std::fs::write(&file, common::render_yaml(&common::load(&path))).unwrap();
            file
        })
        .collect()
}

#[test]
fn every_rendering_passes_istioctl_validate_and_analyze() {
    checked_istioctl();
    let dir = tempfile::tempdir().unwrap();
    let files = write_renderings(dir.path());
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let v = validate(file);
        let bad_lines: Vec<&str> = v
            .text
            .lines()
            .filter(|l| l.trim_start().starts_with("* "))
            .filter(|l| !ALLOWED_VALIDATE.iter().any(|a| l.contains(a)))
            .collect();
        if !v.ok || v.text.contains("Error") || !bad_lines.is_empty() {
            problems.push(format!("validate {}:\n{}", file.display(), v.text));
        }
        let a = analyze(std::slice::from_ref(file));
        if !a.ok || a.text.lines().any(|l| l.starts_with("Error [")) {
            problems.push(format!("analyze {}:\n{}", file.display(), a.text));
        }
        seen.extend(codes(&a.text));
    }
    let all = analyze(&files);
    if !all.ok || all.text.lines().any(|l| l.starts_with("Error [")) {
        problems.push(format!("analyze (all files):\n{}", all.text));
    }
    seen.extend(codes(&all.text));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let seen: BTreeSet<&str> = seen.iter().map(|(_, c)| c.as_str()).collect();
    let allowed: BTreeSet<&str> = ALLOWED_ANALYZE.iter().copied().collect();
    assert_eq!(
        seen, allowed,
        "analyzer codes differ from the allow-list: fix the rendering, or document the code in docs/testing.md (Istio validation) and ALLOWED_ANALYZE"
    );
}

/// A real rendering (route-weights example), as objects.
fn route_weights() -> Vec<serde_json::Value> {
    let model = common::load(&common::root().join("examples/route-weights.yaml"));
    render(&model.mesh, &RenderOptions::default())
}

fn find<'a>(objs: &'a mut [serde_json::Value], kind: &str) -> &'a mut serde_json::Value {
    objs.iter_mut()
        .find(|o| o["kind"] == kind)
        .expect("object of that kind")
}

#[test]
fn istioctl_validate_rejects_a_broken_virtual_service() {
    let dir = tempfile::tempdir().unwrap();
    // An unbalanced regex in a major route.
    let mut objs = route_weights();
    let vs = find(&mut objs, "VirtualService");
    vs["spec"]["http"][1]["match"][0]["uri"]["regex"] = "/v1(/.*".into();
    let file = dir.path().join("bad-regex.yaml");
    std::fs::write(&file, common::to_yaml(&objs)).unwrap();
    let v = validate(&file);
    assert!(
        !v.ok,
        "istioctl validate accepted an invalid regex:\n{}",
        v.text
    );
    assert!(v.text.contains("regex"), "{}", v.text);
    // A destination without a host.
    let mut objs = route_weights();
    let vs = find(&mut objs, "VirtualService");
    vs["spec"]["http"][1]["route"][0]["destination"]
        .as_object_mut()
        .unwrap()
        .remove("host");
    let file = dir.path().join("no-host.yaml");
    std::fs::write(&file, common::to_yaml(&objs)).unwrap();
    let v = validate(&file);
    assert!(
        !v.ok,
        "istioctl validate accepted a destination without host:\n{}",
        v.text
    );
}

#[test]
fn istioctl_analyze_rejects_a_missing_subset() {
    let dir = tempfile::tempdir().unwrap();
    let mut objs = route_weights();
    let dr = find(&mut objs, "DestinationRule");
    dr["spec"]["subsets"][1]["name"] = "v1-1-renamed".into();
    let file = dir.path().join("missing-subset.yaml");
    std::fs::write(&file, common::to_yaml(&objs)).unwrap();
    let a = analyze(&[file]);
    assert!(
        !a.ok,
        "istioctl analyze accepted a missing subset:\n{}",
        a.text
    );
    assert!(
        codes(&a.text).contains(&("Error".to_string(), "IST0101".to_string())),
        "{}",
        a.text
    );
}
