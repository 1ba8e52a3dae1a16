//! Shared by the integration tests: the inputs and how a rendering is
//! written out.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use packlight_istio::{RenderOptions, render};
use packlight_model::build::Model;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every example and golden input: (name, path), sorted.
pub fn inputs() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in ["examples", "tests/golden/inputs"] {
        let dir = root().join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let stem = f.file_stem().unwrap().to_string_lossy().to_string();
            out.push((stem, f));
        }
    }
    out
}

/// Loads one input file, asserting the model has no errors.
pub fn load(path: &Path) -> Model {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.display().to_string();
    let (model, _) = packlight_model::load(&[(Some(name.as_str()), text.as_str())], "default");
    assert!(
        !model.has_errors(),
        "{}: {:#?}",
        path.display(),
        model.diagnostics
    );
    model
}

/// Multi-document YAML of a rendering with default options.
pub fn render_yaml(model: &Model) -> String {
    to_yaml(&render(&model.mesh, &RenderOptions::default()))
}

/// Multi-document YAML, `---` separated.
pub fn to_yaml(objects: &[serde_json::Value]) -> String {
    objects
        .iter()
        .map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap()))
        .collect()
}
