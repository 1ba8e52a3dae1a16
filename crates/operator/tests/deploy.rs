//! `deploy/` stays in step with the code: the CRDs are exactly what
//! `packlight_api::crds()` (and so `packlight crds`) produces
//! (`PACKLIGHT_BLESS=1` rewrites the file and the chart's copy), the
//! manifests parse, and the Helm chart (`deploy/helm/packlight`, by the
//! `helm` that scripts/build-helm builds) lints and renders with its
//! default values exactly the objects of deploy/.

mod support;

use std::path::Path;

use support::{chart_objects, documents, run_helm};

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
    let chart = deploy("helm/packlight/crds/crds.yaml");
    if std::env::var_os("PACKLIGHT_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write deploy/crds.yaml");
        std::fs::write(&chart, &want).expect("write the chart's crds.yaml");
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

#[test]
fn the_chart_lints_and_renders_what_deploy_holds() {
    let chart = deploy("helm/packlight");
    let out = run_helm(&["lint", "--strict", chart.to_str().expect("UTF-8 path")]);
    assert!(out.contains("0 chart(s) failed"), "{out}");

    // The chart's CRDs are deploy/crds.yaml, byte for byte.
    let crds = std::fs::read_to_string(deploy("crds.yaml")).expect("deploy/crds.yaml");
    let chart_crds =
        std::fs::read_to_string(deploy("helm/packlight/crds/crds.yaml")).expect("chart CRDs");
    assert!(
        crds == chart_crds,
        "deploy/helm/packlight/crds/crds.yaml differs from deploy/crds.yaml"
    );

    // Every object of deploy/ (but the Namespace, which is the release's)
    // is rendered by the chart with its default values, exactly; and the
    // chart renders nothing deploy/ lacks.
    let rendered = chart_objects("packlight-system", &[]).expect("rendered");
    let key = |o: &serde_json::Value| {
        (
            o["kind"].as_str().unwrap_or_default().to_string(),
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    let mut want = Vec::new();
    for file in ["crds.yaml", "rbac.yaml", "operator.yaml", "webhook.yaml"] {
        let text = std::fs::read_to_string(deploy(file)).expect("deploy file");
        want.extend(
            documents(&text)
                .into_iter()
                .filter(|o| o["kind"] != "Namespace"),
        );
    }
    let mut have: Vec<_> = rendered.iter().map(key).collect();
    let mut expected: Vec<_> = want.iter().map(key).collect();
    have.sort();
    expected.sort();
    assert_eq!(
        have, expected,
        "the chart and deploy/ hold different objects"
    );
    for w in &want {
        let r = rendered
            .iter()
            .find(|r| key(r) == key(w))
            .expect("rendered");
        assert_eq!(r, w, "{:?} differs between the chart and deploy/", key(w));
    }

    // Values reach the objects.
    let custom = chart_objects(
        "ops",
        &[
            "--set",
            "replicas=3",
            "--set",
            "image.repository=registry.example/packlight",
            "--set",
            "image.tag=1.2.3",
            "--set",
            "logLevel=debug",
            "--set",
            "resources.limits.memory=1Gi",
            "--set",
            "webhook.failurePolicy=Fail",
        ],
    )
    .expect("rendered");
    let dep = custom
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment");
    assert_eq!(dep["metadata"]["namespace"], "ops");
    assert_eq!(dep["spec"]["replicas"], 3);
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example/packlight:1.2.3");
    assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
    assert!(
        c["env"].to_string().contains(r#""value":"debug""#),
        "{}",
        c["env"]
    );
    let vwc = custom
        .iter()
        .find(|o| o["kind"] == "ValidatingWebhookConfiguration")
        .expect("webhook configuration");
    assert_eq!(vwc["webhooks"][0]["failurePolicy"], "Fail");
    assert_eq!(
        vwc["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "ops"
    );
}
