//! Golden files: every example and `tests/golden/inputs/*.yaml` rendered
//! with default options must equal `tests/golden/out/NAME.istio.yaml`.
//! `PACKLIGHT_BLESS=1 cargo test -p packlight-istio --test golden`
//! rewrites them; review the diff like code.

mod common;

use std::collections::BTreeSet;

use packlight_istio::{RenderOptions, render};

/// Every object is complete, managed by packlight, and named uniquely.
#[test]
fn objects_are_complete_and_unique() {
    for (name, path) in common::inputs() {
        let model = common::load(&path);
        let objs = render(&model.mesh, &RenderOptions::default());
        let mut keys = BTreeSet::new();
        for o in &objs {
            for field in [
                "/apiVersion",
                "/kind",
                "/metadata/name",
                "/metadata/namespace",
            ] {
                assert!(
                    o.pointer(field)
                        .and_then(|v| v.as_str())
                        .is_some_and(|s| !s.is_empty()),
                    "{name}: {field} missing in {o}"
                );
            }
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "packlight",
                "{name}: {o}"
            );
            assert!(o["metadata"].get("ownerReferences").is_none());
            let key = packlight_istio::meta::sort_key(o);
            assert!(keys.insert(key.clone()), "{name}: {key:?} rendered twice");
        }
        let mut sorted = objs.clone();
        sorted.sort_by_cached_key(packlight_istio::meta::sort_key);
        assert_eq!(objs, sorted, "{name}: output not sorted");
    }
}

#[test]
fn golden_outputs() {
    let bless = std::env::var("PACKLIGHT_BLESS").is_ok_and(|v| v == "1");
    let out_dir = common::root().join("tests/golden/out");
    let mut failures = Vec::new();
    for (name, path) in common::inputs() {
        let model = common::load(&path);
        let got = common::render_yaml(&model);
        let again = common::render_yaml(&common::load(&path));
        assert_eq!(got, again, "{name}: rendering is not deterministic");
        let file = out_dir.join(format!("{name}.istio.yaml"));
        if bless {
            std::fs::create_dir_all(&out_dir).unwrap();
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(want) if want == got => {}
            Ok(_) => failures.push(format!(
                "{}: differs (PACKLIGHT_BLESS=1 to rewrite)",
                file.display()
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (PACKLIGHT_BLESS=1 to write)",
                file.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `packlight render --mesh-config` (the same `---` + YAML) must equal
/// `tests/golden/out/mesh-config.yaml`, which the Istio traffic bench's
/// istiod and sidecars read as their MeshConfig (`scripts/testenv
/// mesh-up`): the bench runs on exactly what packlight tells users to set.
#[test]
fn golden_mesh_config() {
    let got = common::to_yaml(&[packlight_istio::mesh_config(&RenderOptions::default())]);
    let file = common::root().join("tests/golden/out/mesh-config.yaml");
    if std::env::var("PACKLIGHT_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&file, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (PACKLIGHT_BLESS=1 to write)", file.display()));
    assert_eq!(
        want,
        got,
        "{}: differs (PACKLIGHT_BLESS=1 to rewrite)",
        file.display()
    );
}
