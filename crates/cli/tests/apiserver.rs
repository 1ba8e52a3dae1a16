//! `packlight crds` against a real kube-apiserver (`packlight-testenv`):
//! the CRDs install and become Established; every example resource is
//! accepted; what one object alone gets wrong is rejected *by the API
//! server* with the CEL or schema message; and the model agrees with the
//! API server on each case.

use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

fn packlight(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_packlight"))
        .args(args)
        .output()
        .expect("packlight runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Installs the CRDs `packlight crds` prints (so the printed form is what
/// the API server accepts).
async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    let crds: Vec<CustomResourceDefinition> = documents(&packlight(&["crds"]))
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()?;
    assert_eq!(crds.len(), 6);
    packlight_testenv::install_crds(client, &crds).await
}

async fn apply(client: &kube::Client, ns: &str, obj: &Value) -> Result<(), String> {
    let mut obj = obj.clone();
    obj["metadata"]["namespace"] = ns.into();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let plural = format!("{}s", kind.to_lowercase()).replace("policys", "policies");
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("packlight.dev", "v1alpha1", &kind),
        &plural,
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.patch(
        &name,
        &PatchParams::apply("packlight-test").validation_strict(),
        &Patch::Apply(&obj),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// The model's verdict on one document (as YAML text).
fn model_accepts(obj: &Value) -> bool {
    let text = serde_yaml::to_string(obj).expect("YAML");
    let (model, inputs) = packlight_model::load(&[(Some("case.yaml"), &text)], "default");
    // A Route alone only warns that its Microservice is missing.
    !inputs.is_empty() && !model.has_errors()
}

const ROUTE: &str = r#"
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {name: httpbin}
spec:
  service: httpbin
  rules:
  - {version: "1.0", weight: 80}
  - {version: "1.1", weight: 20}
  - {version: "2.0", weight: 100}
"#;

fn with(base: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v: Value = serde_yaml::from_str(base).expect("YAML");
    edit(&mut v);
    v
}

#[tokio::test]
async fn crds_install_and_the_api_server_enforces_them() -> anyhow::Result<()> {
    let ns = packlight_testenv::namespace("crds").await?;
    let client = ns.client();
    install_crds(&client).await?;

    // Every example resource is accepted, and the model agrees.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut accepted = 0;
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "yaml"))
    {
        for obj in documents(&std::fs::read_to_string(f)?) {
            apply(&client, ns.name(), &obj)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            accepted += 1;
        }
    }
    assert!(accepted >= 10, "only {accepted} example resources");

    // What one object alone gets wrong: (case, object, text the API
    // server's refusal must contain).
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "weights of major 1 sum to 90",
            with(ROUTE, |v| v["spec"]["rules"][0]["weight"] = 70.into()),
            "weights of major 1 sum to 90, not 100",
        ),
        (
            "weights of major 2 sum to 150",
            with(ROUTE, |v| {
                v["spec"]["rules"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"version": "2.1", "weight": 50}))
            }),
            "weights of major 2 sum to 150, not 100",
        ),
        (
            "unknown field",
            with(ROUTE, |v| v["spec"]["rules"][0]["wieght"] = 1.into()),
            // Server-side apply refuses it before validation, in its own words.
            ".spec.rules[0].wieght: field not declared in schema",
        ),
        (
            "bad version string",
            with(ROUTE, |v| v["spec"]["rules"][2]["version"] = "2.x".into()),
            "spec.rules[2].version",
        ),
        (
            "weight and matches together",
            with(ROUTE, |v| {
                v["spec"]["rules"][2]["matches"] =
                    serde_json::json!([{"headers": {"gray": {"exact": "1"}}}])
            }),
            "a rule has either weight (weight rule) or matches (match rule), not both",
        ),
        (
            "query prefix",
            with(ROUTE, |v| {
                v["spec"]["rules"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"version": "2.0", "matches": [{"queryParams": {"debug": {"prefix": "t"}}}]}))
            }),
            "query parameters match by exact or regex only",
        ),
        (
            "no weight rule",
            serde_json::json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "Route", "metadata": {"name": "only-matches"},
                "spec": {"service": "httpbin", "rules": [{"version": "2.0", "matches": [{"headers": {"gray": {"exact": "1"}}}]}]}}),
            "a Route needs at least one weight rule",
        ),
        (
            "defaultMajor without weights",
            with(ROUTE, |v| v["spec"]["defaultMajor"] = "3".into()),
            "defaultMajor 3 has no weight rule",
        ),
        (
            "MeshPolicy not named default",
            serde_json::json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "MeshPolicy", "metadata": {"name": "strict"}, "spec": {"mtls": "strict"}}),
            "a MeshPolicy must be named default",
        ),
        (
            "egress host form",
            serde_json::json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "EgressPolicy", "metadata": {"name": "e"}, "spec": {"hosts": ["http://example.com/"]}}),
            "spec.hosts[0]",
        ),
        (
            "access rule without callers",
            serde_json::json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "a"}, "spec": {"service": "httpbin", "allow": [{"methods": ["GET"]}]}}),
            "an allow rule names its callers",
        ),
        (
            "CORS credentials with *",
            serde_json::json!({"apiVersion": "packlight.dev/v1alpha1", "kind": "IngressPolicy", "metadata": {"name": "i"},
                "spec": {"hosts": ["a.example.com"], "routes": [{"pathPrefix": "/", "service": "httpbin"}], "cors": {"allowOrigins": ["*"], "allowCredentials": true}}}),
            "allowCredentials cannot be used with the origin '*'",
        ),
    ];
    let mut failures = Vec::new();
    for (name, obj, want) in &cases {
        match apply(&client, ns.name(), obj).await {
            Ok(()) => failures.push(format!("{name}: accepted by the API server")),
            Err(e) if !e.contains(want) => {
                failures.push(format!("{name}: refused, but without {want:?}: {e}"))
            }
            Err(_) => {}
        }
        if model_accepts(obj) {
            failures.push(format!(
                "{name}: the API server refuses it but the model accepts it"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
