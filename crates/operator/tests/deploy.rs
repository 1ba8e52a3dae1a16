//! `deploy/` stays in step with the code: the CRDs are exactly what
//! `packlight_api::crds()` (and so `packlight crds`) produces
//! (`PACKLIGHT_BLESS=1` rewrites the file), and the manifests parse.

use std::path::Path;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

fn crds_yaml() -> String {
    let mut out = String::from(
        "# Generated from packlight_api::crds(): the CRDs `packlight crds` prints.\n\
         # Regenerate: PACKLIGHT_BLESS=1 cargo test -p packlight-operator --test deploy\n",
    );
    for crd in packlight_api::crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("CRD as YAML"));
    }
    out
}

#[test]
fn crds_match_the_api_types() {
    let path = deploy("crds.yaml");
    let want = crds_yaml();
    if std::env::var_os("PACKLIGHT_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write deploy/crds.yaml");
    }
    let have = std::fs::read_to_string(&path).expect("deploy/crds.yaml");
    assert!(
        have == want,
        "deploy/crds.yaml is stale; run PACKLIGHT_BLESS=1 cargo test -p packlight-operator --test deploy"
    );
}

#[test]
fn manifests_parse_and_name_what_the_operator_needs() {
    let text = std::fs::read_to_string(deploy("operator.yaml")).expect("deploy/operator.yaml");
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "packlight-operator");
    let args = pod["containers"][0]["args"].to_string();
    assert!(args.contains("operator"), "{args}");
    let k8s: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(dep.clone()).expect("a valid Deployment");
    assert_eq!(k8s.spec.replicas, Some(2));
}
